"""vs_vgan.distributed and ``vs-vgan ... --cluster``, on a local Ray cluster this module
starts (``ray.init(num_cpus=2)`` in a temporary folder) and stops.  The cluster's workers
import tests/distributed_helpers.py (clip factories that fail on purpose) and, through
its hook, can't see one folder (as a machine without that storage).  The one-machine run
of the same command is the reference: with FFV1 the joined output's ``-f framemd5`` equals
it frame for frame; with x264 the frame count, timestamps and audio do."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ffmpeg_exe, make_tiny_flow_spec, packets
from vs_vgan import cli

ray = pytest.importorskip("ray", reason="needs Ray (pip install 'vs_vgan[cluster]'; the test extra has it)")

from vs_vgan import distributed  # noqa: E402  (after the skip: it needs nothing of Ray to import)
from distributed_helpers import HIDE_ENV, Broken, KillOnce, Upconvert  # noqa: E402

TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Cluster:
    address: str
    hidden: Path  # a folder the workers can't see


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    hidden = tmp_path_factory.mktemp("unreachable")
    temp = tempfile.mkdtemp(prefix="vsray", dir="/tmp")  # short: Ray's socket paths must be
    path = os.pathsep.join([str(TESTS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, _temp_dir=temp,
             runtime_env={"env_vars": {"PYTHONPATH": path, HIDE_ENV: str(hidden)},
                          "worker_process_setup_hook": "distributed_helpers.hide_storage"})
    try:
        yield Cluster(ray.get_runtime_context().gcs_address, hidden)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def ff(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def cut_clip(path: Path, first: int = 17, second: int = 23, size: str = "64x48") -> Path:
    """24 fps: ``first`` frames of a moving test pattern, then ``second`` of colour bars (a
    scene cut before frame ``first``), FFV1; a sine tone as PCM as long as the video."""
    ff("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=24", "-f", "lavfi", "-i", f"smptebars=size={size}:rate=24",
       "-f", "lavfi", "-i", f"sine=frequency=440:duration={(first + second) / 24}",
       "-filter_complex", f"[0:v]trim=end_frame={first}[a];[1:v]trim=end_frame={second}[b];"
                          "[a][b]concat=n=2:v=1:a=0,format=yuv420p[v]",
       "-map", "[v]", "-map", "2:a", "-c:v", "ffv1", "-c:a", "pcm_s16le", str(path))
    return path


def framemd5(path: Path, streams: str = "0") -> list[str]:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-i", str(path), "-map", streams,
                          "-f", "framemd5", "-"], check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if not line.startswith("#software")]


def keyframes(path: Path) -> list[int]:
    """The output frame numbers of the keyframes of ``path`` (only they are decoded)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-skip_frame", "nokey", "-i", str(path),
                          "-map", "0:v", "-fps_mode", "passthrough", "-f", "framemd5", "-"], check=True,
                         capture_output=True, text=True).stdout
    return [int(line.split(",")[2]) for line in out.splitlines() if line and not line.startswith("#")]


def timing(path: Path) -> dict[str, list]:
    """Each stream's packets as (pts, duration), in presentation order."""
    found: dict[str, list] = {}
    for kind, pts, duration in packets(path):
        found.setdefault(kind, []).append((pts, duration))
    return {k: sorted(v) for k, v in found.items()}


def chunk_files(folder: Path, finished: bool = False) -> list[str]:
    """The chunk files in ``folder`` (``finished``: not the partial ones being written)."""
    found = sorted(p.name for p in folder.glob("chunk-*")) if folder.is_dir() else []
    return [name for name in found if ".part-" not in name] if finished else found


# ---------------------------------------------------------------------- no cluster needed
def test_cluster_options_need_cluster_and_ray(tmp_path, capsys, monkeypatch):
    """--workers without --cluster is wrong usage; an address nobody serves is one line at
    once (Ray itself would wait minutes); without Ray, exit 3 with what to install."""
    src = cut_clip(tmp_path / "in.mkv", 4, 4)
    out = tmp_path / "out.mkv"
    assert cli.main(["upconvert", str(src), "-o", str(out), "--workers", "2", "--model", "blend"]) == cli.EXIT_USAGE
    assert "--workers only go with --cluster" in capsys.readouterr().err
    if not ray.is_initialized():  # (this process's connection would be used instead)
        code = cli.main(["upconvert", str(src), "-o", str(out), "--model", "blend", "--cluster", "127.0.0.1:1"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == cli.EXIT_FAILED and len(lines) == 1, lines
        assert "nothing answers at the Ray cluster address '127.0.0.1:1'" in lines[0], lines
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert cli.main(["upconvert", str(src), "-o", str(out), "--cluster", "local", "--model", "blend"]) == \
        cli.EXIT_MISSING
    assert "pip install 'vs_vgan[cluster]'" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------- on the cluster
def test_same_frames_as_one_machine_across_chunk_edges_and_a_scene_cut(cluster, tmp_path, capsys):
    """FFV1: framemd5 (video and audio) equal to one machine's; the edge near the scene cut
    (source frame 17, output frame 33 at 2x) moved onto it; one progress bar, per-worker
    lines at DEBUG (-v)."""
    src = cut_clip(tmp_path / "in.mkv")
    one, out, report = tmp_path / "one.mkv", tmp_path / "out.mkv", tmp_path / "report.json"
    common = ["upconvert", str(src), "--factor", "2", "--model", "blend", "--codec", "ffv1"]
    assert cli.main([*common, "-o", str(one), "--quiet"]) == cli.EXIT_OK
    capsys.readouterr()
    code = cli.main([*common, "-o", str(out), "--cluster", "auto", "--chunk-frames", "16", "--report", str(report),
                     "-v"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    done = json.loads(report.read_text())
    assert [(c["start"], c["end"]) for c in done["chunks"]] == [(0, 16), (16, 33), (33, 48), (48, 64), (64, 80)]
    assert framemd5(out) == framemd5(one)
    assert "80/80 frames" in err and err.count("80/80 frames") == 1, err  # one bar for the whole job
    assert "distributed: chunk 1 (output frames 16-32) done on" in err, err
    assert "5 chunks on 1 machine(s)" in err
    assert not distributed.default_chunk_dir(out).exists()  # removed after success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "one.mkv", "out.mkv", "report.json"]


def test_lossy_chunks_start_on_keyframes_with_the_timestamps_and_audio_of_one_machine(cluster, tmp_path, capsys):
    """x264 (medium: B-frames) into MKV with the audio delayed (extend at the start) and
    into MP4 at 60000/1001 with AAC: the frame count, every frame's timestamp and duration,
    and the audio packets equal one machine's; each chunk starts on a keyframe."""
    src = cut_clip(tmp_path / "in.mkv", 20, 20)
    jobs = {"longer.mkv": ["extend", str(src), "--frames", "6", "--side", "start", "--device", "cpu"],
            "ntsc.mp4": ["upconvert", str(src), "--fps", "60000/1001", "--model", "blend", "--audio-codec", "aac"]}
    for name, args in jobs.items():
        one, out, report = tmp_path / f"one-{name}", tmp_path / name, tmp_path / f"{name}.json"
        assert cli.main([*args, "-o", str(one), "--quiet"]) == cli.EXIT_OK
        assert cli.main([*args, "-o", str(out), "--quiet", "--cluster", "auto", "--chunk-frames", "12",
                         "--report", str(report)]) == cli.EXIT_OK, capsys.readouterr().err
        mine, theirs = timing(out), timing(one)
        assert len(mine["video"]) == len(theirs["video"]) == json.loads(report.read_text())["frames"]
        assert mine == theirs, name
        starts = [c["start"] for c in json.loads(report.read_text())["chunks"]]
        assert len(starts) >= 3 and set(starts) <= set(keyframes(out)), (name, starts, keyframes(out))


def test_a_killed_task_is_retried_and_a_failing_chunk_fails_the_job_by_name(cluster, tmp_path):
    """The Python API with the tiny seeded flow network: the first worker to build the graph
    is killed (SIGKILL), Ray runs its chunk again, and the output still equals one machine's.
    A graph that raises in every worker fails the job after the retries, naming the chunk,
    with no OUTPUT and, with clean=True, no chunk folder."""
    src = cut_clip(tmp_path / "in.mkv", 12, 12)
    spec = make_tiny_flow_spec(tmp_path)
    graph = Upconvert(str(src), spec)
    ffv1 = distributed.Encoding(codec="ffv1")
    one = tmp_path / "one.mkv"
    cli.encode(graph(), str(src), one, codec="ffv1", crf=18, preset="medium", audio_codec="copy", extra=[],
               overwrite=False)
    marker = tmp_path / "killed"
    out = tmp_path / "out.mkv"
    report = distributed.render(KillOnce(graph, str(marker), os.getpid()), out, audio=src, encoding=ffv1,
                                chunk_frames=12, inputs=[src, spec.weights], retries=2)
    assert marker.exists()  # a worker was killed ...
    assert framemd5(out) == framemd5(one)  # ... and its chunk rendered again
    assert len(report.chunks) == 4 and report.kept == 0

    broken = tmp_path / "broken.mkv"
    with pytest.raises(cli.CliError) as failed:
        distributed.render(Broken(graph, os.getpid()), broken, encoding=ffv1, chunk_frames=12, retries=1,
                           clean=True)
    message = str(failed.value)
    assert message.startswith("vs-vgan: chunk ") and "(output frames " in message, message
    assert "failed after 2 attempts: RuntimeError: a bug in the graph" in message, message
    assert not broken.exists() and not distributed.default_chunk_dir(broken).exists()


def test_resume_after_an_interrupt_renders_only_what_is_missing(cluster, tmp_path, capsys):
    """Ctrl-C (SIGINT) in the middle of a run on the cluster at $RAY_ADDRESS (--cluster
    auto, another process): exit 130, no OUTPUT, no partial chunk, the finished chunks kept; a rerun with other settings is refused; the same command again keeps the
    finished chunks and renders the rest, into the frames of one machine."""
    src = cut_clip(tmp_path / "in.mkv", 30, 30)
    out, one, report = tmp_path / "out.mkv", tmp_path / "one.mkv", tmp_path / "report.json"
    folder = distributed.default_chunk_dir(out)
    job = ["upconvert", str(src), "-o", str(out), "--model", "blend", "--codec", "ffv1", "--chunk-frames", "8"]
    # SIGINT as Ctrl-C delivers it, even where pytest itself runs with SIGINT ignored (a
    # background job of a non-interactive shell): Python then never installs its handler
    proc = subprocess.Popen([sys.executable, "-m", "vs_vgan", *job, "--cluster", "auto", "--workers", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": cluster.address},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while len(chunk_files(folder, finished=True)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "interrupted; no output written" in err and "run the same command again to resume" in err, err
    kept = chunk_files(folder, finished=True)
    assert kept == chunk_files(folder) and 2 <= len(kept) < 15, (kept, err)  # no partial chunk left
    assert not out.exists() and not (folder / "lock").exists()
    stamps = {name: (folder / name).stat().st_mtime_ns for name in kept}

    assert cli.main([*job, "--crf", "20", "--cluster", "auto", "--quiet"]) == cli.EXIT_FAILED
    refused = capsys.readouterr().err
    assert "holds chunks of another job (it differs in encoding.crf (20, was 18))" in refused, refused
    assert {name: (folder / name).stat().st_mtime_ns for name in kept} == stamps

    assert cli.main([*job, "--cluster", "auto", "--keep-chunks", "--report", str(report)]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert f"{len(kept)} of 15 chunks from an earlier run" in err and "120/120 frames" in err, err
    done = json.loads(report.read_text())
    assert done["kept"] == len(kept) and sum(not c["kept"] and c["host"] != "" for c in done["chunks"]) == 15 - len(kept)
    assert {name: (folder / name).stat().st_mtime_ns for name in kept} == stamps  # not rendered again
    assert cli.main(["upconvert", str(src), "-o", str(one), "--model", "blend", "--codec", "ffv1", "--quiet"]) == 0
    assert framemd5(out) == framemd5(one)


def test_storage_a_worker_lacks_is_a_clear_error_not_a_hang(cluster, tmp_path, capsys):
    """INPUT in a folder the workers don't have: one line naming INPUT, exit 1, no OUTPUT.
    An input whose read never returns (a FIFO nobody writes, like a dead network mount):
    the storage check's time limit ends the job with a clear line."""
    src = cut_clip(cluster.hidden / "in.mkv", 4, 4)

    @ray.remote
    def sees(path: str) -> bool:
        return os.path.exists(path)

    if ray.get(sees.remote(str(src))):
        pytest.skip("can't hide a folder from the workers here (a mount namespace needs root)")
    out = tmp_path / "out.mkv"
    started = time.monotonic()
    code = cli.main(["upconvert", str(src), "-o", str(out), "--model", "blend", "--quiet", "--cluster", "auto"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_FAILED and len(lines) == 1, lines
    assert f"can't read {str(src)!r}: No such file or directory" in lines[0], lines
    assert "storage every worker reads" in lines[0] and time.monotonic() - started < 30
    assert not out.exists() and not distributed.default_chunk_dir(out).exists()

    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    clip = cut_clip(tmp_path / "in.mkv", 4, 4)
    with pytest.raises(cli.CliError, match=r"did not finish the storage check within 2 s: is the storage of INPUT"):
        distributed.render(lambda: __import__("vapoursynth").core.bs.VideoSource(str(clip)), out, inputs=[fifo],
                           preflight_timeout=2, clean=True)
    assert not out.exists()


def test_a_script_renders_across_the_cluster(cluster, tmp_path):
    """render() with a .vpy script's path and vspipe-style arguments: each worker runs it;
    into FFV1 the same frames as one machine's, into y4m the same bytes."""
    script = tmp_path / "grey.vpy"
    script.write_text("import vapoursynth as vs\n"
                      "frames = [vs.core.std.BlankClip(width=32, height=24, length=1, fpsnum=25, format=vs.YUV420P8,\n"
                      "                                color=[16 + 9 * n, 128, 128]) for n in range(int(length))]\n"
                      "vs.core.std.Splice(frames).set_output()\n")
    out = tmp_path / "grey.mkv"
    job = dict(script_args={"length": "20"}, chunk_frames=8, encoding=distributed.Encoding(codec="ffv1"))
    report = distributed.render(script, out, keep_chunks=True, **job)
    assert [(c.start, c.end) for c in report.chunks] == [(0, 8), (8, 16), (16, 20)] and report.kept == 0
    again = distributed.render(script, out, overwrite=True, **job)  # every chunk there: only the join
    assert again.kept == 3 and again.workers == 0 and not distributed.default_chunk_dir(out).exists()
    assert distributed.render(script, out, overwrite=True, keep_chunks=True, **job).kept == 0
    assert distributed.render(script, out, overwrite=True, clean=True, **job).kept == 0  # clean: start over
    ref = tmp_path / "ref.mkv"
    cli.encode(distributed.ScriptClip(str(script), {"length": "20"})(), None, ref, codec="ffv1", crf=18,
               preset="medium", audio_codec="copy", extra=[], overwrite=False)
    assert framemd5(out) == framemd5(ref) and len(framemd5(out)) > 20
    raw, raw_ref = tmp_path / "grey.y4m", tmp_path / "ref.y4m"
    distributed.render(script, raw, script_args={"length": "20"}, chunk_frames=6,
                       encoding=distributed.Encoding(codec="wrapped_avframe"))
    cli.encode(distributed.ScriptClip(str(script), {"length": "20"})(), None, raw_ref, codec="wrapped_avframe",
               crf=18, preset="medium", audio_codec="copy", extra=[], overwrite=False)
    assert raw.read_bytes() == raw_ref.read_bytes() and raw.read_bytes().count(b"FRAME") == 20
