"""Render a conversion across the machines of a Ray cluster (``vs-vgan ... --cluster``).

A node's frames are the same whatever order they are asked for and on whichever machine
(the README's *Determinism*), so a conversion splits into ranges of output frames
(:mod:`vs_vgan.chunks`: fixed lengths, an edge near a scene cut moved onto it).  Each
range is a Ray task: on whichever machine Ray runs it, the task builds the same graph
(a picklable factory: :class:`vs_vgan.cli.CommandGraph`, :class:`ScriptClip`, or any
callable that pickles), pipes its frames ``[start, end)`` into ffmpeg with the same
encoder settings (:func:`vs_vgan.cli.video_options`) and writes ``chunk-NNNNN.EXT`` into
the chunk folder, checked by its frame count.  When all are there, this process joins
them with ffmpeg's concat demuxer, copying the video (no re-encoding; the timestamps are
put back on the output's frame grid, so they equal a one-machine run's), muxes the audio
and subtitles as the one-machine path does, and renames the file to OUTPUT only when it
holds every frame (:func:`vs_vgan.cli.check_written`).

Storage: INPUT (and model files, a script), and the chunk folder, must be at the same
path on every machine (a shared file system).  Before rendering, one task on each
machine that can take a chunk checks that it reads INPUT and sees and writes the chunk
folder this process sees, within a time limit, so that a machine without the storage is
a clear error, not a hang.  Each chunk task checks INPUT and the folder again first.

Faults: Ray runs a chunk whose task died (a killed worker, a crash, an exception) again,
up to ``retries`` times; then the job fails, naming the chunk.  A failure that another
attempt can't mend (a wrong setting, unreadable INPUT: vs_vgan's one-line messages) is
not retried.  Finished chunks stay in the chunk folder with a manifest of the job's
settings: running the same job again renders only the missing chunks; different
settings are refused (``clean=True`` starts over).  Interrupted (Ctrl-C), the job cancels
its tasks and leaves no OUTPUT and no partial chunk; the chunk folder stays for the
resume (``clean=True`` removes it).

Ray is imported only here, and only when a job runs: vs_vgan imports without it
(``pip install 'vs_vgan[cluster]'``).  Nothing is printed: progress goes to the
``progress`` callback, per-worker lines to the ``vs_vgan`` logger at DEBUG.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import __version__
from .chunks import DEFAULT_CHUNK_SECONDS, chunk_length, cut_window, nominal_edges, plan_chunks
from .cli import (EXIT_MISSING, WRITE_REFUSED, CliError, check_output, check_rate, check_written, count_video_frames,
                  find_ffmpeg, output_command, partial_output, pipe_frames, required_ffmpeg, user_error_line,
                  video_options)
from .errors import type_error, value_error

if TYPE_CHECKING:  # pragma: no cover
    import vapoursynth as vs

__all__ = ["Encoding", "ScriptClip", "ChunkStats", "RenderReport", "render", "require_ray", "default_chunk_dir",
           "source_scene_starts", "snap_expression", "DEFAULT_RETRIES", "PREFLIGHT_TIMEOUT"]

log = logging.getLogger("vs_vgan")

#: Attempts after the first for a chunk whose task died or raised.
DEFAULT_RETRIES = 3
#: Seconds each machine has to show that it reads INPUT and writes the chunk folder.
PREFLIGHT_TIMEOUT = 60.0
_MANIFEST = "manifest.json"
_LOCK = "lock"
_CONCAT = "concat.txt"


def require_ray() -> Any:
    """The ``ray`` module; CliError (exit code 3) where it is not installed."""
    try:
        import ray
    except ImportError:
        raise CliError("vs-vgan: rendering on a cluster needs Ray: pip install 'vs_vgan[cluster]' (or pip install ray)",
                       EXIT_MISSING) from None
    return ray


@dataclass(frozen=True)
class Encoding:
    """The encoder settings every chunk is written with (the one-machine path's options:
    :func:`vs_vgan.cli.video_options`, then ``extra``), and the audio codec of the join."""

    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    audio_codec: str = "copy"
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScriptClip:
    """Output ``index`` of a VapourSynth script as a picklable factory, run as vspipe runs
    it (``__name__`` is ``"__vapoursynth__"``; ``args`` are its global variables, as
    ``vspipe -a key=value`` gives them)."""

    path: str
    args: Mapping[str, str] = field(default_factory=dict)
    index: int = 0

    def __call__(self) -> vs.VideoNode:
        import runpy

        import vapoursynth as vs

        vs.clear_outputs()
        runpy.run_path(self.path, init_globals=dict(self.args), run_name="__vapoursynth__")
        out = vs.get_outputs().get(self.index)
        clip = out.clip if isinstance(out, vs.VideoOutputTuple) else None
        if clip is None:
            raise value_error("distributed.render", "the script", f"one that sets a video output {self.index}",
                              self.path)
        return clip


@dataclass
class ChunkStats:
    """One chunk of a job: output frames ``[start, end)``, where it was rendered and how
    long it took, in seconds.  ``setup_s``: in the task, before the frames (storage check,
    graph and model); ``render_s``: from starting ffmpeg to the last frame piped into it;
    ``task_s``: the whole task (after ``render_s``: ffmpeg's end, the frame count check);
    ``wall_s``: from submitting it to having its result here, so ``wall_s - render_s`` is
    the chunk's overhead.  ``kept``: finished by an earlier run."""

    index: int
    start: int
    end: int
    host: str = ""
    pid: int = 0
    setup_s: float = 0.0
    render_s: float = 0.0
    task_s: float = 0.0
    wall_s: float = 0.0
    kept: bool = False
    failure: str | None = None

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass
class RenderReport:
    """What :func:`render` did: the chunks (with their timings), how many were kept from an
    earlier run, the machines, and the wall time of each phase in seconds."""

    output: str
    frames: int
    fps: str
    chunk_dir: str
    workers: int
    chunks: list[ChunkStats]
    connect_s: float = 0.0
    plan_s: float = 0.0
    preflight_s: float = 0.0
    render_s: float = 0.0
    join_s: float = 0.0
    wall_s: float = 0.0

    @property
    def kept(self) -> int:
        return sum(c.kept for c in self.chunks)

    @property
    def hosts(self) -> list[str]:
        return sorted({c.host for c in self.chunks if c.host})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept": self.kept, "hosts": self.hosts}


def default_chunk_dir(output: str | os.PathLike[str]) -> Path:
    """The chunk folder of ``output`` when none is given: ``.NAME.vs-vgan-chunks`` beside it."""
    path = Path(os.path.abspath(output))
    return path.with_name(f".{path.name}.vs-vgan-chunks")


def _chunk_name(index: int, suffix: str) -> str:
    return f"chunk-{index:05d}{suffix}"


def _host() -> str:
    return socket.gethostname()


# ---------------------------------------------------------------------- scene cuts (this process)
def source_scene_starts(clip: vs.VideoNode, first: int, end: int, threshold: float) -> list[int]:
    """The source frames ``j`` in ``(first, end)`` that begin a new scene: a cut between
    frames ``j - 1`` and ``j`` by the nodes' rule (:func:`vs_vgan.engine.is_cut`: the
    frames' scene-change props, else the detector of :func:`vs_vgan.engine.scene_cuts` at
    ``threshold``).  Reads frames ``first .. end - 1`` and their thumbnails only."""
    from .engine import is_cut, scene_cuts

    lo, hi = max(first, 0), min(end, clip.num_frames)
    if hi - lo < 2:
        return []
    verdicts = scene_cuts(clip, threshold)
    frames = [clip.get_frame_async(i) for i in range(lo, hi)]
    judged = [verdicts.get_frame_async(i) for i in range(lo, hi - 1)]
    return [lo + k + 1 for k in range(hi - lo - 1)
            if is_cut(frames[k].result(), frames[k + 1].result(), judged[k].result())]


# ---------------------------------------------------------------------- on the workers
@dataclass(frozen=True)
class _Job:
    """What each chunk task needs (pickled to the workers)."""

    source: Callable[[], vs.VideoNode]
    chunk_dir: str
    suffix: str
    encoding: Encoding
    ffmpeg: str | None  # as given (--ffmpeg): each machine resolves its own
    inputs: tuple[str, ...]
    total: int
    fps: Fraction
    threads: int


def _check_storage(inputs: Sequence[str], chunk_dir: str, token: str | None = None) -> None:
    """CliError unless this process reads each of ``inputs`` and writes ``chunk_dir`` (and,
    with ``token``, reads the driver's token file there and leaves its own answer)."""
    host = _host()
    for path in inputs:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as err:
            raise CliError(f"vs-vgan: the worker on {host} can't read {path!r}: {err.strerror or err}; INPUT and the "
                           f"chunk folder must be on storage every worker reads, at the same path") from None
    folder = Path(chunk_dir)
    probe = folder / f".probe-{host}-{os.getpid()}"
    try:
        probe.write_bytes(b"vs-vgan")
        probe.unlink()
    except OSError as err:
        raise CliError(f"vs-vgan: the worker on {host} can't write into the chunk folder {chunk_dir!r}: "
                       f"{err.strerror or err}; it must be on storage every worker writes, at the same path") from None
    if token is not None:
        mark = folder / f".preflight-{token}"
        try:
            seen = mark.read_text() == token
        except OSError:
            seen = False
        if not seen:
            raise CliError(f"vs-vgan: the chunk folder {chunk_dir!r} on {host} is not the one this machine sees (a "
                           f"local folder at the same path?); it must be on storage every worker shares")
        (folder / f".preflight-{token}-{host}-{os.getpid()}").write_text(host)


def _storage_check(inputs: Sequence[str], chunk_dir: str, token: str) -> tuple[str, int, str | None]:
    """The preflight task: ``(host, pid, None)``, or the failure's one line."""
    try:
        _check_storage(inputs, chunk_dir, token)
    except CliError as err:
        return _host(), os.getpid(), str(err)
    return _host(), os.getpid(), None


class _Board:
    """A Ray actor: each chunk's frames done and where, as its task reports them."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, str, int]] = {}

    def report(self, index: int, done: int, host: str, pid: int) -> None:
        self.done[index] = (done, host, pid)

    def snapshot(self) -> dict[int, tuple[int, str, int]]:
        return dict(self.done)


class _Reporter:
    """A chunk task's VapourSynth progress callback: its frames done, to the board, at most
    every half second; when the last frame went to ffmpeg (``finished``)."""

    def __init__(self, board: Any, index: int) -> None:
        self.board, self.index = board, index
        self.host, self.pid = _host(), os.getpid()
        self.last = 0.0
        self.finished: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done >= total:
            self.finished = now
        elif now - self.last < 0.5:
            return
        self.last = now
        self.board.report.remote(self.index, done, self.host, self.pid)


def _render_chunk(job: _Job, index: int, start: int, end: int, board: Any) -> ChunkStats:
    """The chunk task: output frames ``[start, end)`` of ``job.source()`` into
    ``chunk-NNNNN.EXT``, written as a partial file and renamed when it holds every frame.
    A failure with one of vs_vgan's one-line messages comes back in the result (no retry:
    another attempt would fail alike); anything else raises, and Ray runs the task again."""
    t0 = time.perf_counter()
    stats = ChunkStats(index, start, end, _host(), os.getpid())
    path = Path(job.chunk_dir) / _chunk_name(index, job.suffix)
    tmp = path.with_name(f"{path.stem}.part-{stats.host}-{stats.pid}{path.suffix}")
    try:
        _check_storage(job.inputs, job.chunk_dir)
        import vapoursynth as vs

        vs.core.num_threads = job.threads
        clip = job.source()
        fps = Fraction(clip.fps.numerator, clip.fps.denominator)
        if (clip.num_frames, fps) != (job.total, job.fps):
            raise CliError(f"vs-vgan: the graph built on {stats.host} gives {clip.num_frames} frames at {fps} fps, "
                           f"the driver's {job.total} at {job.fps}: every machine needs the same INPUT, vs_vgan and "
                           f"models")
        ffmpeg = required_ffmpeg(find_ffmpeg(job.ffmpeg))
        enc = job.encoding
        cmd = output_command(ffmpeg, ["-f", "yuv4mpegpipe", "-i", "pipe:0"], None, path, tmp,
                             video=video_options(enc.codec, enc.crf, enc.preset), audio_codec=enc.audio_codec,
                             extra=enc.extra)
        t1 = time.perf_counter()
        stats.setup_s = t1 - t0
        reporter = _Reporter(board, index)
        try:
            pipe_frames(clip[start:end], cmd, tmp, path, ffmpeg, counted=True, progress=reporter,
                        what=f"chunk {index}")
            stats.render_s = (reporter.finished or time.perf_counter()) - t1
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    except (TypeError, ValueError, OSError) as err:  # vs_vgan's messages and the system's: no retry
        line = user_error_line(err)
        if line is None:
            raise
        stats.failure = line
    except CliError as err:
        stats.failure = str(err)
    stats.task_s = time.perf_counter() - t0
    return stats


# ---------------------------------------------------------------------- this process (the driver)
def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fingerprint(factory: Callable[[], vs.VideoNode]) -> dict[str, Any]:
    """What identifies a factory's clip between runs: a script's path, contents and
    arguments, else the sha256 of the pickled factory."""
    if isinstance(factory, ScriptClip):
        digest = hashlib.sha256(Path(factory.path).read_bytes()).hexdigest()
        return {"script": factory.path, "sha256": digest, "args": dict(factory.args), "index": factory.index}
    try:
        data = pickle.dumps(factory, protocol=4)
    except (pickle.PicklingError, TypeError, AttributeError):
        data = require_ray().cloudpickle.dumps(factory)
    return {"factory": type(factory).__name__, "sha256": hashlib.sha256(data).hexdigest()}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the chunk folder (created where missing) for this run: a lock file naming the
    host and process; one left by a process of this host that no longer runs is taken over."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"vs-vgan: can't make the chunk folder {str(folder)!r}: {err.strerror}") from None
    lock = folder / _LOCK
    me = f"{_host()} {os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, _, pid = lock.read_text().partition(" ")
            except OSError:
                continue
            if host == _host() and pid.isdigit() and not _running(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise CliError(f"vs-vgan: the chunk folder {str(folder)!r} is in use by process {pid} on {host} (its "
                           f"lock file {str(lock)!r}); if no such run is going on, remove that file") from None
        except OSError as err:
            raise CliError(f"vs-vgan: can't write into the chunk folder {str(folder)!r}: {err.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise CliError(f"vs-vgan: can't take the lock file {str(lock)!r} of the chunk folder")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _plan(folder: Path, params: dict[str, Any], total: int, length: int, window: int,
          scene_starts: Callable[[int, int], Iterable[int]] | Iterable[int] | None) -> list[tuple[int, int]]:
    """The job's chunks: the manifest's where the folder holds this job's (same settings),
    else a new plan written to the manifest; CliError where it holds another job's."""
    params = json.loads(json.dumps(params, default=str))  # as the manifest holds them (tuples as lists)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    path = folder / _MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
            old_key, old_params, chunks = old["key"], old["params"], old["chunks"]
        except (OSError, ValueError, KeyError, TypeError):
            old_key = None
        if old_key == key:
            return [(int(a), int(b)) for a, b in chunks]
        if old_key is not None:
            new, was = _flat(params), _flat(old_params)
            differ = [f"{k} ({new.get(k)!r}, was {was.get(k)!r})" for k in sorted(set(new) | set(was))
                      if new.get(k) != was.get(k)]
            raise CliError(f"vs-vgan: the chunk folder {str(folder)!r} holds chunks of another job (it differs in "
                           f"{'; '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}); pass --clean (clean=True) "
                           f"to discard them, or name another chunk folder")
    cuts: set[int] = set()
    if window and scene_starts is not None:
        if callable(scene_starts):
            find = scene_starts
        else:
            given = list(scene_starts)

            def find(lo: int, hi: int) -> Iterable[int]:
                return given

        for edge in nominal_edges(total, length):
            lo, hi = max(0, edge - window), min(total, edge + window + 1)
            cuts.update(k for k in find(lo, hi) if lo <= k < hi)
    plan = plan_chunks(total, length, scene_starts=cuts, window=window)
    tmp = path.with_name(f".{_MANIFEST}.{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "params": params, "chunks": plan, "scene_starts": sorted(cuts)},
                              indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return plan


def snap_expression(time_base: Fraction, fps: Fraction) -> str:
    """The ``setts`` bitstream filter's options putting each packet's timestamps on the
    frame grid of ``fps`` in ``time_base``, as one machine's encode rescales frame numbers
    (to the nearest tick, halves away from zero): integer arithmetic in ffmpeg's doubles,
    exact for any timestamp below 2**53 / (time_base numerator x fps numerator)."""
    a, b = time_base.numerator * fps.numerator, time_base.denominator * fps.denominator

    def snap(ts: str) -> str:
        return f"round(round({ts}*{a}/{b})*{b}/{a})"

    return f"setts=pts={snap('PTS')}:dts={snap('DTS')}"


def _time_base(path: Path, ffmpeg: str) -> Fraction:
    """The time base of the first video stream of ``path`` as its demuxer gives it."""
    r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                        "-frames:v", "1", "-f", "framemd5", "-"], capture_output=True, text=True, errors="replace")
    for line in r.stdout.splitlines():
        if line.startswith("#tb "):
            return Fraction(line.split(":", 1)[1].strip())
    raise CliError(f"vs-vgan: can't read the chunk {str(path)!r}: {r.stderr.strip() or 'no video stream'}")


def _join(folder: Path, plan: Sequence[tuple[int, int]], suffix: str, output: Path, audio: str | None,
          audio_offset: float, encoding: Encoding, ffmpeg: str, fps: Fraction, total: int) -> None:
    """The chunks joined by ffmpeg's concat demuxer into OUTPUT (video copied, timestamps
    snapped to the frame grid), with the audio and subtitles of ``audio`` as the one-machine
    path muxes them; renamed to OUTPUT only when it holds all ``total`` frames."""
    if suffix.lower() == ".y4m":
        _join_y4m(folder, len(plan), output, ffmpeg, total)
        return
    listing = folder / _CONCAT
    lines = ["ffconcat version 1.0"]
    for i, (start, end) in enumerate(plan):
        # each file lasts exactly its frames: the demuxer then starts each on its own first frame
        span = round(end * 10**6 / fps) - round(start * 10**6 / fps)
        quoted = str(folder / _chunk_name(i, suffix)).replace("'", "'\\''")
        lines += [f"file '{quoted}'", f"duration {span}us"]
    listing.write_text("\n".join(lines) + "\n")
    snap = snap_expression(_time_base(folder / _chunk_name(0, suffix), ffmpeg), fps)
    with partial_output(output) as tmp:
        cmd = output_command(ffmpeg, ["-f", "concat", "-safe", "0", "-i", str(listing)], audio, output, tmp,
                             video=["-c:v", "copy", "-bsf:v", snap], audio_codec=encoding.audio_codec,
                             extra=encoding.extra, audio_offset=audio_offset)
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        err = r.stderr.strip()
        if r.returncode != 0 and not WRITE_REFUSED.search(err):
            raise CliError(f"vs-vgan: ffmpeg failed joining the chunks ({r.returncode}): "
                           f"{err.splitlines()[-1] if err else 'no message'}; the chunks are kept in {str(folder)!r}")
        check_written(tmp, output, ffmpeg, err, total)


def _join_y4m(folder: Path, count: int, output: Path, ffmpeg: str, total: int) -> None:
    """y4m chunks joined as they are: the first one's header, then every chunk's frames
    (y4m holds no timestamps, no audio, and ffmpeg's y4m muxer takes no copied video)."""
    with partial_output(output) as tmp, tmp.open("wb") as dst:
        header = None
        for i in range(count):
            with (folder / _chunk_name(i, ".y4m")).open("rb") as src:
                line = src.readline()
                if header is None:
                    header = line
                    dst.write(line)
                elif line != header:
                    raise CliError(f"vs-vgan: chunk {i} has another y4m header than chunk 0 ({line!r}, "
                                   f"{header!r}); the chunks are kept in {str(folder)!r}")
                shutil.copyfileobj(src, dst, 1 << 22)
        dst.flush()
        check_written(tmp, output, ffmpeg, "", total)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """CliError unless something answers at a cluster's ``HOST:PORT`` (``ray://`` too)
    within ``timeout`` seconds: Ray itself waits minutes for an address nobody serves."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise CliError(f"vs-vgan: nothing answers at the Ray cluster address {address!r} "
                       f"({err.strerror or err}): is `ray start --head` running there?") from None


@contextlib.contextmanager
def _connected(ray: Any, cluster: str | None, num_cpus: int | None,
               runtime_env: Mapping[str, Any] | None) -> Iterator[None]:
    """This process connected to Ray: as it is where it already is (ray.init was called),
    else to ``cluster`` (``"local"`` or None: a new Ray on this machine; ``"auto"``:
    ``$RAY_ADDRESS`` or the one ``ray start`` runs here; an address), disconnected at the end."""
    if ray.is_initialized():
        yield
        return
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if runtime_env is not None:
        kw["runtime_env"] = dict(runtime_env)
    address = "local" if cluster in (None, "local") else cluster
    if address == "local" and num_cpus is not None:
        kw["num_cpus"] = num_cpus
    _check_reachable(os.environ.get("RAY_ADDRESS", "") if address == "auto" else address)
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = " ($RAY_ADDRESS, else a cluster `ray start --head` runs on this machine)" if address == "auto" else ""
        raise CliError(f"vs-vgan: can't connect to the Ray cluster {address!r}{where}: {first}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _preflight(ray: Any, inputs: Sequence[str], folder: Path, task_cpus: float, task_gpus: float,
               timeout: float) -> list[str]:
    """One storage check on each machine that can take a chunk (:func:`_check_storage`),
    each within ``timeout`` seconds; the machines' names."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= task_cpus
             and n["Resources"].get("GPU", 0) >= task_gpus]
    if not nodes:
        raise CliError(f"vs-vgan: no machine of the Ray cluster can take a chunk (each asks for {task_cpus:g} CPUs and "
                       f"{task_gpus:g} GPUs)")
    token = uuid.uuid4().hex
    mark = folder / f".preflight-{token}"
    mark.write_text(token)
    check = ray.remote(num_cpus=0, max_retries=0)(_storage_check)
    refs = {check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(list(inputs), str(folder), token): n for n in nodes}
    try:
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in pending:
            ray.cancel(ref, force=True)
        if pending:
            where = ", ".join(sorted(str(refs[r].get("NodeManagerAddress", refs[r]["NodeID"])) for r in pending))
            raise CliError(f"vs-vgan: the worker on {where} did not finish the storage check within {timeout:g} s: is "
                           f"the storage of INPUT and the chunk folder mounted there? (They must be on storage every "
                           f"worker reads, at the same path.)")
        hosts = []
        for ref in ready:
            host, pid, failure = ray.get(ref)
            if failure:
                raise CliError(failure)
            answer = folder / f".preflight-{token}-{host}-{pid}"
            deadline = time.monotonic() + 5
            while not answer.exists() and time.monotonic() < deadline:  # a network file system may lag
                time.sleep(0.2)
            if not answer.exists():
                raise CliError(f"vs-vgan: what the worker on {host} writes into the chunk folder {str(folder)!r} does "
                               f"not reach this machine's; it must be on storage every worker shares")
            hosts.append(host)
        return sorted(set(hosts))
    finally:
        for p in folder.glob(f".preflight-{token}*"):
            with contextlib.suppress(OSError):
                p.unlink()


def _cause(err: BaseException) -> str:
    """One line for a task's failure as Ray reports it."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": ")
    name = type(err).__name__
    if "WorkerCrashed" in name or "NodeDied" in name or "ActorDied" in name:
        return "its worker process died (killed, crashed or out of memory)"
    text = str(err).strip().splitlines()
    return f"{name}: {text[0] if text else ''}".rstrip(": ")


def _cancel(ray: Any, refs: Sequence[Any], folder: Path) -> None:
    """Cancel running chunk tasks (each stops its ffmpeg and removes its partial file),
    those that don't stop within 5 s by killing their worker; then remove partial chunks."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    if refs:
        with contextlib.suppress(Exception):
            _, left = ray.wait(list(refs), num_returns=len(refs), timeout=5)
            for ref in left:
                ray.cancel(ref, force=True)
    _remove_partials(folder)


def _remove_partials(folder: Path) -> None:
    for p in folder.glob("chunk-*.part-*"):
        with contextlib.suppress(OSError):
            p.unlink()


def _render_args(source: str | os.PathLike[str] | Callable[[], vs.VideoNode], script_args: Mapping[str, str] | None,
                 retries: int | None, workers: int | None, task_cpus: float | None,
                 task_gpus: float | None) -> tuple[Callable[[], vs.VideoNode], int, float]:
    """:func:`render`'s checks of its arguments: (the clip factory, retries, task CPUs)."""
    func = "distributed.render"
    factory: Callable[[], vs.VideoNode]
    if isinstance(source, (str, os.PathLike)):
        factory = ScriptClip(os.path.abspath(source), dict(script_args or {}))
    elif callable(source):
        factory = source
    else:
        raise type_error(func, "source", "a script's path or a callable returning a clip", source)
    if retries is None:
        retries = DEFAULT_RETRIES
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise value_error(func, "retries", "an int >= 0", retries)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise value_error(func, "workers", "None or an int >= 1", workers)
    cpus = 1.0 if task_cpus is None else float(task_cpus)
    if not cpus > 0:
        raise value_error(func, "task_cpus", "a number > 0", task_cpus)
    if task_gpus is not None and not task_gpus >= 0:
        raise value_error(func, "task_gpus", "None or a number >= 0", task_gpus)
    return factory, retries, cpus


def render(
    source: str | os.PathLike[str] | Callable[[], vs.VideoNode],
    output: str | os.PathLike[str],
    /,
    *,
    clip: vs.VideoNode | None = None,
    cluster: str | None = None,
    script_args: Mapping[str, str] | None = None,
    audio: str | os.PathLike[str] | None = None,
    audio_offset: float = 0.0,
    encoding: Encoding = Encoding(),
    ffmpeg: str | None = None,
    worker_ffmpeg: str | None = None,
    chunk_seconds: float | None = None,
    chunk_frames: int | None = None,
    scene_starts: Callable[[int, int], Iterable[int]] | Iterable[int] | None = None,
    workers: int | None = None,
    task_cpus: float | None = None,
    task_gpus: float | None = None,
    retries: int | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    chunk_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    clean: bool = False,
    keep_chunks: bool = False,
    progress: Callable[[int, int], None] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    preflight_timeout: float = PREFLIGHT_TIMEOUT,
    runtime_env: Mapping[str, Any] | None = None,
) -> RenderReport:
    """Render a clip across the machines of a Ray cluster into ``output``.

    Args:
        source: a VapourSynth script's path (its output 0, run with ``script_args`` as
            vspipe's ``-a``), or a picklable callable that returns the clip; each worker
            calls it to build the same graph.  Its clip must have a constant rate.
        output: the file to write (its suffix picks the container, as for one machine).
        clip: ``source()``'s clip where the caller has it already (else it is built here).
        cluster: where Ray runs, used only where this process has not called ``ray.init``
            itself: ``"local"`` or None, a new Ray on this machine (its CPUs, or enough for
            ``workers``); ``"auto"``, ``$RAY_ADDRESS`` or the cluster ``ray start`` runs here;
            or a cluster's address (``"host:6379"``, ``"ray://host:10001"``).
        audio: the file whose audio (and, into .mkv, subtitles) go into OUTPUT, delayed by
            ``audio_offset`` seconds; None: video only.
        encoding: the encoder settings of every chunk and the join's audio codec.
        ffmpeg: this machine's ffmpeg (the join; default: :func:`vs_vgan.ffmpeg.find_ffmpeg`'s);
            ``worker_ffmpeg``: the one each worker resolves (``--ffmpeg``; default: its own).
        chunk_seconds, chunk_frames: output seconds (default 60) or frames per chunk.
        scene_starts: output frames that begin a new scene (or a function of a range
            ``[lo, hi)`` of output frames giving those in it, asked near each edge only):
            an edge within :func:`vs_vgan.chunks.cut_window` of one moves onto it.  None:
            fixed lengths.
        workers: chunks rendered at once (default: as many as the cluster's CPUs, or GPUs,
            allow).  task_cpus: CPUs each chunk reserves and VapourSynth threads it runs
            (default 1); task_gpus: GPUs each reserves (default 1 where the cluster has
            GPUs, else 0; 0.5 puts two on a GPU).
        retries: attempts after the first for a chunk whose task died or raised (default 3).
        inputs: more files each worker must read (INPUT, model files); ``audio`` and a
            script are checked too.
        chunk_dir: the chunk folder (default :func:`default_chunk_dir`), on storage every
            worker reads and writes at the same path.
        overwrite: replace an existing ``output``.
        clean: remove an earlier run's chunk folder first (no resume), and this run's when
            it fails or is interrupted.  keep_chunks: keep it after success too.
        progress: called with (frames done, total) across all workers, a few times a second.
        fingerprint: what identifies the clip between runs (the manifest's check before a
            resume); default: a script's path, contents and arguments, or the pickled
            factory's hash.
        preflight_timeout: seconds each machine has for its storage check.
        runtime_env: Ray's runtime environment for the job, where this call connects.

    Returns:
        A :class:`RenderReport`.  Failures raise :class:`vs_vgan.cli.CliError` (one line,
        naming the chunk or the machine); KeyboardInterrupt cancels the tasks and leaves no
        OUTPUT.
    """
    t_start = time.perf_counter()
    ray = require_ray()
    factory, retries, task_cpus = _render_args(source, script_args, retries, workers, task_cpus, task_gpus)
    out_path = Path(os.path.abspath(output))
    audio_path = os.path.abspath(audio) if audio is not None else None
    check_output(audio_path, out_path, overwrite)
    join_ffmpeg = ffmpeg or required_ffmpeg(find_ffmpeg(None))
    if clip is None:
        clip = factory()
    fps = check_rate(clip)
    total = clip.num_frames
    length = chunk_length(fps, frames=chunk_frames) if chunk_frames is not None else \
        chunk_length(fps, seconds=DEFAULT_CHUNK_SECONDS if chunk_seconds is None else chunk_seconds)
    window = cut_window(length, fps) if scene_starts is not None else 0
    folder = Path(os.path.abspath(chunk_dir)) if chunk_dir is not None else default_chunk_dir(out_path)
    suffix = out_path.suffix
    checked = [os.path.abspath(p) for p in inputs] + ([audio_path] if audio_path else [])
    if isinstance(factory, ScriptClip):
        checked.append(factory.path)
    params = {"vs_vgan": __version__, "source": dict(fingerprint) if fingerprint is not None else _fingerprint(factory),
              "frames": total, "fps": str(fps), "chunk_frames": length, "cut_window": window,
              "encoding": asdict(encoding), "suffix": suffix}
    done = owned = False
    try:
        with _locked(folder):
            owned = True
            if clean:  # start over: everything of an earlier run goes (the lock is this run's)
                for p in folder.iterdir():
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    elif p.name != _LOCK:
                        p.unlink()
            t0 = time.perf_counter()
            plan = _plan(folder, params, total, length, window, scene_starts)
            _remove_partials(folder)
            chunks = [ChunkStats(i, a, b) for i, (a, b) in enumerate(plan)]
            for c in chunks:
                path = folder / _chunk_name(c.index, suffix)
                if path.exists():
                    frames, _ = count_video_frames(path, join_ffmpeg)
                    if frames == c.frames:
                        c.kept = True
                    else:
                        log.info("distributed: chunk %d holds %d of %d frames; rendering it again", c.index, frames,
                                 c.frames)
                        path.unlink()
            plan_s = time.perf_counter() - t0
            missing = [c for c in chunks if not c.kept]
            report = RenderReport(str(out_path), total, str(fps), str(folder), 0, chunks, plan_s=plan_s)
            if missing:
                cpus_needed = None if workers is None else max(os.cpu_count() or 1, math.ceil(workers * task_cpus))
                t0 = time.perf_counter()
                with _connected(ray, cluster, cpus_needed, runtime_env):
                    report.connect_s = time.perf_counter() - t0
                    _render_missing(ray, report, missing, factory, folder, suffix, encoding, worker_ffmpeg, checked,
                                    fps, workers, task_cpus, task_gpus, retries, preflight_timeout, progress,
                                    join_ffmpeg)
            elif progress is not None:
                progress(total, total)
            t0 = time.perf_counter()
            _join(folder, plan, suffix, out_path, audio_path, audio_offset, encoding, join_ffmpeg, fps, total)
            report.join_s = time.perf_counter() - t0
            done = True
    finally:
        # kept: after a failure or an interrupt, finished chunks for the resume (unless clean);
        # after success, with keep_chunks only.  Never another run's folder (the lock said so).
        if owned and ((not keep_chunks) if done else (clean or not any(folder.glob("chunk-*")))):
            shutil.rmtree(folder, ignore_errors=True)
    report.wall_s = time.perf_counter() - t_start
    return report


def _render_missing(ray: Any, report: RenderReport, missing: list[ChunkStats], factory: Callable[[], vs.VideoNode],
                    folder: Path, suffix: str, encoding: Encoding, worker_ffmpeg: str | None, checked: Sequence[str],
                    fps: Fraction, workers: int | None, task_cpus: float, task_gpus: float | None, retries: int,
                    preflight_timeout: float, progress: Callable[[int, int], None] | None, ffmpeg: str) -> None:
    """Size the job to the cluster, check every machine's storage, and render ``missing``
    chunks as Ray tasks, at most ``workers`` at once; CliError naming the chunk when one
    fails for good."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus_each = (1.0 if gpus >= 1 else 0.0) if task_gpus is None else float(task_gpus)
    if gpus_each > 0 and gpus < gpus_each:
        raise CliError(f"vs-vgan: each chunk asks for {gpus_each:g} GPU(s) and the Ray cluster has {gpus:g}; "
                       f"--task-gpus 0 (or --device cpu) renders on the CPUs")
    if cpus < task_cpus:
        raise CliError(f"vs-vgan: each chunk asks for {task_cpus:g} CPUs and the Ray cluster has {cpus:g}")
    slots = int(cpus // task_cpus)
    if gpus_each > 0:
        slots = min(slots, int(gpus // gpus_each))
    report.workers = workers or max(1, slots)
    t0 = time.perf_counter()
    hosts = _preflight(ray, checked, folder, task_cpus, gpus_each, preflight_timeout)
    report.preflight_s = time.perf_counter() - t0
    log.debug("distributed: %d chunk(s) of %d to render on %s, %d at once (%g CPUs, %g GPUs each)", len(missing),
              len(report.chunks), ", ".join(hosts), report.workers, task_cpus, gpus_each)
    threads = max(1, math.ceil(task_cpus), 2 if gpus_each > 0 else 1)
    job = _Job(factory, str(folder), suffix, encoding, worker_ffmpeg, tuple(checked), report.frames, fps, threads)
    task = ray.remote(_render_chunk).options(num_cpus=task_cpus, num_gpus=gpus_each, max_retries=retries,
                                             retry_exceptions=True)
    board = ray.remote(num_cpus=0)(_Board).remote()
    kept_frames = sum(c.frames for c in report.chunks if c.kept)
    finished = kept_frames
    queue = collections.deque(missing)
    running: dict[Any, tuple[ChunkStats, float]] = {}
    seen: dict[int, tuple[int, float]] = {}
    t0 = time.perf_counter()
    shown = kept_frames
    if progress is not None:
        progress(kept_frames, report.frames)
    try:
        while queue or running:
            while queue and len(running) < report.workers:
                c = queue.popleft()
                running[task.remote(job, c.index, c.start, c.end, board)] = (c, time.perf_counter())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
            for ref in ready:
                c, submitted = running.pop(ref)
                where = f"chunk {c.index} (output frames {c.start}-{c.end - 1})"
                try:
                    stats = ray.get(ref)
                except ray.exceptions.RayError as err:
                    raise CliError(f"vs-vgan: {where} failed after {retries + 1} attempts: {_cause(err)}; the finished "
                                   f"chunks are kept in {str(folder)!r} (run the job again to resume)") from None
                if stats.failure:
                    raise CliError(f"vs-vgan: {where} failed on {stats.host}: "
                                   f"{stats.failure.removeprefix('vs-vgan: ')}")
                path = folder / _chunk_name(c.index, suffix)
                frames, said = count_video_frames(path, ffmpeg) if path.exists() else (0, "no such file")
                if frames != c.frames:
                    raise CliError(f"vs-vgan: {where} written on {stats.host} holds {frames} of {c.frames} frames in "
                                   f"the chunk folder as this machine sees it ({said or 'no error'}): is "
                                   f"{str(folder)!r} on storage shared with {stats.host}?")
                for name in ("host", "pid", "setup_s", "render_s", "task_s"):
                    setattr(c, name, getattr(stats, name))
                c.wall_s = time.perf_counter() - submitted
                finished += c.frames
                log.debug("distributed: %s done on %s (pid %d): %.2f s in the task (%.2f s set-up), %.2f s from "
                          "submission", where, c.host, c.pid, c.task_s, c.setup_s, c.wall_s)
            if progress is not None or log.isEnabledFor(logging.DEBUG):
                snapshot = ray.get(board.snapshot.remote())
                live = {c.index for c, _ in running.values()}
                now = time.perf_counter()
                for index in live & set(snapshot):
                    frames, host, pid = snapshot[index]
                    if index not in seen or (frames != seen[index][0] and now - seen[index][1] >= 5):
                        seen[index] = (frames, now)
                        log.debug("distributed: chunk %d on %s (pid %d): %d frames done", index, host, pid, frames)
                now_done = finished + sum(snapshot[i][0] for i in live & set(snapshot))
                if progress is not None and now_done != shown:
                    shown = now_done
                    progress(now_done, report.frames)
    except BaseException:
        _cancel(ray, list(running), folder)
        raise
    report.render_s = time.perf_counter() - t0
