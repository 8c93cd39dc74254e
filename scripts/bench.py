#!/usr/bin/env python3
"""Throughput of vs_vgan.interpolate beside MVTools FlowFPS and ffmpeg minterpolate, in one run.

    .venv/bin/python scripts/bench.py --clip bigbuckbunny.mp4 --json out/bench.json
    .venv/bin/python scripts/bench.py --clip bigbuckbunny.mp4 --soak 20000 --json out/soak.json

What it measures, for each size (``--sizes``, default 480,720,1080: the clip scaled to that
height) and conversion (``--conversions``: ``2x``, 23.976 to 47.952, and ``24-60``,
24000/1001 to 60000/1001):

* end to end: output frames/s of ``vspipe -c y4m scripts/bench.vpy -`` into a pipe that
  is read and thrown away, for vs_vgan (``--vgan NAME=JSON`` settings; default: the
  default model, ``scale=0.5`` and ``scale=0.25``), MVTools FlowFPS (the shared bench's
  settings), and ``source`` (decoding and y4m packing alone: the floor every method
  pays).  The rate is vspipe's own "Output N frames in S seconds", so script loading
  (imports, model load) is left out.  ffmpeg minterpolate (mci, aobmc, bidir, as the
  shared bench runs it) reads the same file and writes y4m into a pipe; its rate is its
  wall time.  Peak RSS of each process (``wait4``, under a small launcher), and on CUDA the GPU memory torch
  held at its peak.
* model only: milliseconds per frame analysis (``prepare``), per pair (``pair``) and
  per synthesized frame (``synthesize``, RGB) on random tensors of the size, one call at
  a time after a warm-up, synchronized; the synthesized frames/s they allow.
* the frame bridge: one more end-to-end run of the default setting (2x) with the
  bridge's conversions timed: their share of the thread time spent in the node's
  callbacks (on CUDA each conversion is timed from an idle stream to its finished copy,
  so the share is what the bridge costs, not time spent waiting for the network).
* ``--soak N``: N output frames of each node of ``--soak-nodes`` (default all four:
  ``interpolate`` at 2x, ``predict``, ``extend`` of 8 frames by N - 8, ``repair`` with
  duplicates found and rebuilt, a scene cut every 10 frames and a repeat before each) on
  the clip at ``--soak-size`` (looped), with RSS and GPU memory every 500 frames: the
  memory at the start (after the first 10%) and at the end.  The first ``--vgan``
  setting is interpolate's; the prediction nodes take its device, precision and scale
  with their default models.

* ``--cluster ADDRESS``: instead, one machine against a Ray cluster (``local``: one Ray
  started on this machine, ``auto`` or an address; ``vs-vgan ... --cluster``): the wall
  time of ``vs-vgan upconvert --factor 2`` (FFV1, the first ``--vgan`` setting's model,
  scale, device and precision) of each size run as one process, then with ``--cluster``,
  ``--workers`` (2) chunks at once of ``--chunk-frames`` (an eighth of the output); whether
  the two outputs' frames are identical (``-f framemd5``); each chunk's overhead (its wall
  time from submission to result, less the time its frames took) and set-up time in the
  task; the seconds per output frame in a worker; and the job's fixed costs (connecting
  to Ray, the storage check, planning, joining).  The command lines are timed whole,
  process start, INPUT's indexing and Ray's start included, as a user waits for them.

The source of each size is made once with ffmpeg (raw y4m, yuv420p, 24000/1001
frames/s, under ``--work``; this ffmpeg, minterpolate's too, is ``vs_vgan.ffmpeg.find_ffmpeg()``'s:
``VS_VGAN_FFMPEG``, PATH, else imageio-ffmpeg's) from the clip's first ``--frames`` frames; every method
reads that file, and it is looped to ``--frames`` source frames where the clip is
shorter.  Output: a table on stdout, JSON with the machine, versions, device, precision
and thread counts to ``--json``, progress on stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover  (vs_vgan is imported where it is needed)
    from vs_vgan.models import ModelSpec

ROOT = Path(__file__).resolve().parent.parent
VPY = ROOT / "scripts" / "bench.vpy"
VSPIPE_RATE = re.compile(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)")
SOURCE_RATE = Fraction(24000, 1001)
CONVERSIONS = {"2x": SOURCE_RATE * 2, "24-60": Fraction(60000, 1001)}
SIZES = {480: 854, 720: 1280, 1080: 1920}  # height -> width (16:9)
MAX_SOURCE = 240  # frames in a prepared source file; longer runs loop it
SOAK_NODES = {"interpolate": "vgan", "predict": "predict", "extend": "extend", "repair": "repair"}  # -> bench.vpy method
DEFAULT_VGAN = ['default={}', 'scale0.5={"scale": 0.5}', 'scale0.25={"scale": 0.25}']
MINTERP = "minterpolate=fps={}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- processes
# Peak RSS: wait4's ru_maxrss of a process forked straight from this script would be
# this script's own peak (torch loaded): Linux carries the parent's across fork and
# exec.  So each command runs under a small launcher (Python without site, about 10 MB)
# that forks it and reports its ru_maxrss through a pipe.
_LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _run(cmd: list[str], env: dict | None = None) -> tuple[int, str, int, float, int]:
    """Run ``cmd`` with its stdout read and thrown away: (exit code, stderr, stdout bytes,
    wall seconds, peak RSS in bytes)."""
    t0 = time.perf_counter()
    rfd, wfd = os.pipe()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(wfd), *cmd], stdout=subprocess.PIPE,
                                stderr=err, env=env, pass_fds=(wfd,))
        os.close(wfd)
        size = 0
        while chunk := proc.stdout.read(1 << 22):
            size += len(chunk)
        proc.wait()
        wall = time.perf_counter() - t0
        with os.fdopen(rfd, "rb") as f:
            maxrss = int(f.read() or 0)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return proc.returncode, text, size, wall, maxrss * 1024


def find_vspipe() -> str | None:
    """The vspipe binary itself: the wheel's ``vspipe`` command is a Python wrapper that
    runs it as a child, which would leave the work (and its memory) out of our process."""
    import vapoursynth

    binary = Path(vapoursynth.__file__).with_name("vspipe")
    if binary.is_file() and os.access(binary, os.X_OK):
        return str(binary)
    bindir = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("vspipe", path=bindir)


def make_source(clip: str, width: int, height: int, frames: int, work: Path, ffmpeg: str) -> Path:
    """The clip's first ``frames`` frames (at most) at ``width`` x ``height``, raw y4m
    (FFV1 would cost the 1080p runs 20 ms of decoding a frame, ahead of every method)."""
    dest = work / f"src_{width}x{height}_{frames}.y4m"
    if dest.is_file():
        return dest
    scale = f"scale={width}:{height}:flags=bicubic"
    tmp = dest.with_suffix(".part.y4m")
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", clip, "-frames:v", str(frames),
           "-vf", f"{scale},setpts=N/(24000/1001)/TB", "-r", "24000/1001", "-an", "-sn",
           "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.rename(dest)
    return dest


#: --weights: the candidate (vs_vgan.models.loader.exported_spec) that vs_vgan settings
#: without a "model" run; bench.vpy builds the same spec from its path and analysis_pixels
CANDIDATE: ModelSpec | None = None


def vspipe_run(vspipe: str, src: Path, method: str, rate: Fraction, frames: int, kw: dict | None = None,
               probe: Path | None = None, profile: bool = False) -> dict:
    cmd = [vspipe, "-c", "y4m", "-a", f"src={src}", "-a", f"method={method}", "-a", f"num={rate.numerator}",
           "-a", f"den={rate.denominator}", "-a", f"frames={frames}"]
    if kw:
        cmd += ["-a", f"kw={json.dumps(kw)}"]
    if CANDIDATE is not None and method == "vgan" and "model" not in (kw or {}):
        cmd += ["-a", f"weights={CANDIDATE.weights}", "-a", f"analysis_pixels={CANDIDATE.analysis_pixels}",
                "-a", f"model_kwargs={json.dumps(dict(CANDIDATE.kwargs))}"]
    if probe is not None:
        cmd += ["-a", f"probe={probe}"]
    if profile:
        cmd += ["-a", "profile=1"]
    cmd += [str(VPY), "-"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code, err, size, wall, rss = _run(cmd, env)
    m = VSPIPE_RATE.search(err)
    if code or not m:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({code}):\n{err[-3000:]}")
    row = dict(frames=int(m.group(1)), seconds=float(m.group(2)), fps=float(m.group(3)),
               wall_seconds=round(wall, 2), peak_rss_mb=round(rss / 2**20, 1), bytes=size)
    if probe is not None and probe.is_file():
        rows = [json.loads(line) for line in probe.read_text().splitlines() if line.strip()]
        row["probe"] = rows
        gpu = [r["gpu_peak_reserved"] for r in rows if "gpu_peak_reserved" in r]
        if gpu:
            row["peak_gpu_mb"] = round(max(gpu) / 2**20, 1)
            row["peak_gpu_allocated_mb"] = round(max(r["gpu_peak_allocated"] for r in rows) / 2**20, 1)
    return row


def minterp_run(ffmpeg: str, src: Path, rate: Fraction, frames: int, size: tuple[int, int]) -> dict:
    loops = math.ceil(frames / _frame_count(src)) - 1
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-stream_loop", str(max(0, loops)), "-i", str(src),
           "-frames:v", str(math.ceil(frames * rate / SOURCE_RATE)),
           "-vf", MINTERP.format(f"{rate.numerator}/{rate.denominator}"), "-f", "yuv4mpegpipe", "-"]
    code, err, nbytes, wall, rss = _run(cmd)
    if code:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({code}):\n{err[-3000:]}")
    w, h = size
    out_frames = round(nbytes / (w * h * 3 // 2 + len(b"FRAME\n")))  # y4m: a short header, then frames
    return dict(frames=out_frames, seconds=round(wall, 3), fps=round(out_frames / wall, 3),
                wall_seconds=round(wall, 2), peak_rss_mb=round(rss / 2**20, 1), bytes=nbytes)


_COUNTS: dict[Path, int] = {}


def _frame_count(src: Path) -> int:
    if src not in _COUNTS:
        import vapoursynth as vs

        _COUNTS[src] = vs.core.bs.VideoSource(str(src)).num_frames
    return _COUNTS[src]


# ---------------------------------------------------------------------- one machine against a cluster
def upconvert_run(src: Path, out: Path, kw: dict, cluster: str | None = None, workers: int = 2,
                  chunk_frames: int = 0, report: Path | None = None) -> float:
    """Wall seconds of ``vs-vgan upconvert SRC -o OUT --factor 2`` into FFV1 with ``kw``'s model,
    scale, device and precision, on this machine or (``cluster``) across a Ray cluster."""
    cmd = [sys.executable, "-m", "vs_vgan", "upconvert", str(src), "-o", str(out), "--factor", "2", "--codec", "ffv1",
           "--quiet", "--overwrite"]
    for key in ("model", "scale", "device", "precision"):
        if key in kw and kw[key] is not None:
            cmd += [f"--{key}", str(kw[key])]
    if cluster:
        cmd += ["--cluster", cluster, "--workers", str(workers), "--chunk-frames", str(chunk_frames),
                "--report", str(report)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall


def _framemd5(path: Path, ffmpeg: str) -> str:
    out = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("#software"))


def cluster_bench(src: Path, size: tuple[int, int], kw: dict, cluster: str, workers: int, chunk_frames: int | None,
                  work: Path, ffmpeg: str) -> dict:
    """One machine against the cluster on ``src`` (see the module's docstring)."""
    one, spread, rep = work / "one.mkv", work / "cluster.mkv", work / "cluster.json"
    out_frames = 2 * _frame_count(src)
    chunk = chunk_frames or max(8, out_frames // 8)
    t_one = upconvert_run(src, one, kw)
    t_cluster = upconvert_run(src, spread, kw, cluster, workers, chunk, rep)
    job = json.loads(rep.read_text())
    chunks = job["chunks"]
    overhead = sorted(c["wall_s"] - c["render_s"] for c in chunks)
    # a worker's first chunk also pays its process start and imports (torch, VapourSynth)
    firsts = {min(c["index"] for c in chunks if c["pid"] == pid) for pid in {c["pid"] for c in chunks}}
    cold = [c["wall_s"] - c["render_s"] for c in chunks if c["index"] in firsts]
    warm = [c["wall_s"] - c["render_s"] for c in chunks if c["index"] not in firsts]
    per_frame = sum(c["render_s"] for c in chunks) / max(1, sum(c["end"] - c["start"] for c in chunks))
    row = dict(size=f"{size[0]}x{size[1]}", height=size[1], output_frames=out_frames, method=kw.get("name", ""),
               kwargs={k: v for k, v in kw.items() if k != "name"}, cluster=cluster, workers=job["workers"],
               hosts=job["hosts"], chunk_frames=chunk, chunks=len(chunks),
               one_machine_s=round(t_one, 2), cluster_s=round(t_cluster, 2), speedup=round(t_one / t_cluster, 3),
               one_machine_fps=round(out_frames / t_one, 2), cluster_fps=round(out_frames / t_cluster, 2),
               identical=_framemd5(one, ffmpeg) == _framemd5(spread, ffmpeg),
               chunk_overhead_s=dict(mean=round(sum(overhead) / len(overhead), 3),
                                     median=round(overhead[len(overhead) // 2], 3), max=round(overhead[-1], 3),
                                     first_on_a_worker=round(sum(cold) / len(cold), 3),
                                     later=round(sum(warm) / len(warm), 3) if warm else None),
               chunk_setup_s=dict(mean=round(sum(c["setup_s"] for c in chunks) / len(chunks), 3),
                                  max=round(max(c["setup_s"] for c in chunks), 3)),
               worker_s_per_frame=round(per_frame, 5),
               job_s={k: round(job[k], 3) for k in ("connect_s", "plan_s", "preflight_s", "render_s", "join_s",
                                                    "wall_s")},
               outside_job_s=round(t_cluster - job["wall_s"], 3))
    for path in (one, spread, rep):
        path.unlink(missing_ok=True)
    return row


def cluster_table(rows: list[dict]) -> str:
    out = ["| size | output frames | one machine s | cluster s (workers) | speed-up | identical | chunks | "
           "overhead s/chunk: first on a worker, later | worker s/frame | Ray connect s | join s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, j = r["chunk_overhead_s"], r["job_s"]
        later = f"{o['later']:.2f}" if o["later"] is not None else "-"
        out.append(f"| {r['size']} | {r['output_frames']} | {r['one_machine_s']:.1f} | {r['cluster_s']:.1f} "
                   f"({r['workers']}) | {r['speedup']:.2f}x | {r['identical']} | {r['chunks']} | "
                   f"{o['first_on_a_worker']:.2f}, {later} | {r['worker_s_per_frame']:.4f} | "
                   f"{j['connect_s']:.1f} | {j['join_s']:.2f} |")
    return "\n".join(out)


# ---------------------------------------------------------------------- model only
def model_only(size: tuple[int, int], device: str, precision: str, iters: int) -> dict:
    """Per-stage milliseconds of the default model (the --weights candidate, at the scale
    its ``scale=None`` takes for ``size``) on random RGB tensors of ``size``."""
    import torch

    from vs_vgan import devices
    from vs_vgan.models import DEFAULT_INTERPOLATION_MODEL, get_spec, load_model

    dev = devices.resolve_device(device, func="bench")
    dtype = devices.resolve_dtype(precision, device=dev, func="bench")
    spec = CANDIDATE or get_spec(DEFAULT_INTERPOLATION_MODEL, task="interpolate", func="bench")
    net = load_model(spec, dev, dtype, func="bench")
    w, h = size
    scale = spec.default_scale(w, h)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x0, x1 = (torch.rand((1, 3, h, w), generator=gen).to(dev, dtype) for _ in range(2))
    t = torch.full((1, 1, 1, 1), 0.5, device=dev, dtype=dtype)

    def timed(fn) -> float:
        fn()  # warm-up
        devices.synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        devices.synchronize(dev)
        return (time.perf_counter() - t0) / iters * 1e3

    with torch.inference_mode():
        a, b = net.prepare(x0, scale), net.prepare(x1, scale)
        state = net.pair(a, b)
        ms = dict(prepare_ms=timed(lambda: net.prepare(x0, scale)), pair_ms=timed(lambda: net.pair(a, b)),
                  synthesize_ms=timed(lambda: net.synthesize(state, t)))
    total = sum(ms.values())
    return {**{k: round(v, 3) for k, v in ms.items()}, "synthesized_fps": round(1e3 / total, 2),
            "model": spec.name, "scale": scale,
            "dtype": str(dtype).replace("torch.", ""), "device": str(dev), "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- report
def machine(device: str, precision: str, ffmpeg: str) -> dict:
    import torch
    import vapoursynth as vs

    import vs_vgan
    from vs_vgan import devices
    from vs_vgan.engine import CUDA_STREAMS

    dev = devices.resolve_device(device, func="bench")
    core = vs.core
    lanes, threads = devices.cpu_plan(core.num_threads)
    ff = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    plugins = {p.namespace: str(getattr(p, "plugin_version", getattr(p, "version", "")))
               for p in core.plugins() if p.namespace in ("mv", "bs")}
    return dict(
        machine=platform.machine(), cpu=devices.device_name(torch.device("cpu")), cores=devices.cpu_cores(),
        os=platform.platform(), python=platform.python_version(), torch=torch.__version__,
        vapoursynth=str(vs.__version__), vs_vgan=getattr(vs_vgan, "__version__", "?"), ffmpeg=ff,
        plugins=plugins, device=str(dev), device_name=devices.device_name(dev), precision=precision,
        dtype=str(devices.resolve_dtype(precision, device=dev, func="bench")).replace("torch.", ""),
        core_threads=core.num_threads,
        streams=(lanes if dev.type == "cpu" else min(core.num_threads, CUDA_STREAMS)),
        torch_threads_per_stream=(threads if dev.type == "cpu" else None),
        cuda=getattr(torch.version, "cuda", None),
    )


def table(rows: list[dict]) -> str:
    out = ["| size | conversion | method | output frames/s | vs MVTools | peak RSS MB | peak GPU MB |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next((x for x in rows if x["size"] == r["size"] and x["conversion"] == r["conversion"]
                    and x["method"] == "mvflow"), None)
        ratio = f"{r['fps'] / ref['fps']:.2f}x" if ref else "-"
        gpu = r.get("peak_gpu_mb", "-")
        out.append(f"| {r['size']} | {r['conversion']} | {r['method']} | {r['fps']:.2f} | {ratio} | "
                   f"{r['peak_rss_mb']:.0f} | {gpu} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="the input (any file ffmpeg reads), e.g. bigbuckbunny.mp4")
    ap.add_argument("--sizes", default="480,720,1080", help="output heights, comma separated")
    ap.add_argument("--conversions", default="2x,24-60", help=f"of {', '.join(CONVERSIONS)}")
    ap.add_argument("--frames", type=int, default=None,
                    help="source frames per run (default 48 on the CPU, 960 on CUDA)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16 (vs_vgan and model-only)")
    ap.add_argument("--vgan", action="append", default=[], metavar="NAME=JSON",
                    help="a vs_vgan.interpolate setting (repeatable); default: default, scale0.5, scale0.25")
    ap.add_argument("--weights", help="time this safetensors file (from train_interp.py --export) as the model of "
                    "every vs_vgan setting that names none, and in the model-only figures: for candidates before "
                    "they ship")
    ap.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                    help="with --weights: architecture kwargs over the file's, e.g. '{\"refine\": 2}'")
    ap.add_argument("--analysis-pixels", type=int, default=0, help="with --weights: the candidate's "
                    "ModelSpec.analysis_pixels (the frame area it analyses at scale=None; 0: scale=None is 1.0)")
    ap.add_argument("--peers", default="mvflow,minterp,source", help="peer methods, comma separated ('' for none)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per method, taken in turns round the methods; the best is kept")
    ap.add_argument("--model-iters", type=int, default=None, help="model-only calls per stage (3 CPU, 50 CUDA)")
    ap.add_argument("--no-model", action="store_true", help="skip the model-only figures")
    ap.add_argument("--no-bridge", action="store_true", help="skip the bridge-share run")
    ap.add_argument("--soak", type=int, default=0, metavar="N", help="instead: a soak run of N output frames")
    ap.add_argument("--soak-size", default="320x180", help="WxH of the soak run")
    ap.add_argument("--soak-nodes", default=",".join(SOAK_NODES),
                    help=f"the nodes of the soak run, comma separated (of {', '.join(SOAK_NODES)})")
    ap.add_argument("--cluster", metavar="ADDRESS", help="instead: one machine against a Ray cluster (local, auto "
                    "or an address): vs-vgan upconvert --factor 2 of each size, with and without --cluster")
    ap.add_argument("--workers", type=int, default=2, help="--cluster: chunks rendered at once (default 2)")
    ap.add_argument("--chunk-frames", type=int, default=None,
                    help="--cluster: output frames per chunk (default: an eighth of the output, at least 8)")
    ap.add_argument("--work", default=None, help="folder for the prepared sources (default: a temporary one)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    global CANDIDATE
    if (a.analysis_pixels or a.model_kwargs) and not a.weights:
        raise SystemExit("bench: --analysis-pixels and --model-kwargs are for the candidate of --weights")
    if a.weights:
        if not Path(a.weights).is_file():
            raise SystemExit(f"bench: --weights {a.weights}: no such file")
        from vs_vgan.models.loader import exported_spec

        try:
            CANDIDATE = exported_spec(a.weights, a.analysis_pixels, a.model_kwargs)
        except ValueError as exc:
            raise SystemExit(f"bench: --weights {a.weights}: {exc}") from None

    from vs_vgan import devices
    from vs_vgan.ffmpeg import find_ffmpeg

    vspipe = find_vspipe()
    if not vspipe:
        raise SystemExit("bench: vspipe not found (pip install vapoursynth)")
    try:
        found = find_ffmpeg()  # VS_VGAN_FFMPEG, PATH, else imageio-ffmpeg's: no system ffmpeg needed
    except ValueError as exc:
        raise SystemExit(f"bench: {exc}") from None
    if found is None:
        raise SystemExit("bench: no ffmpeg found (none on PATH, and no imageio-ffmpeg: pip install imageio-ffmpeg)")
    ffmpeg = found.path

    dev = devices.resolve_device(a.device, func="bench")
    frames = a.frames or (960 if dev.type == "cuda" else 48)
    vgan_kw = {"device": a.device, "precision": a.precision}
    settings = []
    for item in a.vgan or DEFAULT_VGAN:
        name, _, js = item.partition("=")
        settings.append((name, {**vgan_kw, **json.loads(js or "{}")}))
    peers = [p for p in a.peers.split(",") if p]
    work_ctx = tempfile.TemporaryDirectory(prefix="vs_vgan_bench_") if a.work is None else None
    work = Path(a.work or work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    meta = machine(a.device, a.precision, ffmpeg)
    meta.update(clip=os.path.basename(a.clip), source_frames=frames)
    if CANDIDATE is not None:
        meta.update(weights=CANDIDATE.weights, weights_sha256=CANDIDATE.sha256,
                    analysis_pixels=CANDIDATE.analysis_pixels, model_kwargs=json.loads(json.dumps(dict(CANDIDATE.kwargs))))
    log(f"{meta['device_name']} ({meta['device']}, {meta['dtype']}), {meta['cores']} cores, "
        f"core.num_threads {meta['core_threads']}, torch {meta['torch']}, VapourSynth {meta['vapoursynth']}")
    report: dict = {"meta": meta}

    if a.cluster:
        rows = []
        name, kw = settings[0]
        for height in [int(s) for s in a.sizes.split(",") if s]:
            size = (SIZES.get(height) or 2 * round(height * 8 / 9), height)  # 16:9
            log(f"{height}p: preparing the source")
            src = make_source(a.clip, *size, min(frames, MAX_SOURCE), work, ffmpeg)
            log(f"{height}p 2x {name}: one machine, then --cluster {a.cluster} --workers {a.workers}")
            row = cluster_bench(src, size, {**kw, "name": name}, a.cluster, a.workers, a.chunk_frames, work, ffmpeg)
            log(f"{height}p: {row['one_machine_s']} s on one machine, {row['cluster_s']} s on the cluster "
                f"({row['speedup']}x; identical frames: {row['identical']}); {row['chunk_overhead_s']['mean']} s "
                f"overhead per chunk")
            rows.append(row)
        report["cluster"] = rows
        print(cluster_table(rows))
    elif a.soak:
        w, h = (int(v) for v in a.soak_size.lower().split("x"))
        nodes = [n for n in a.soak_nodes.split(",") if n]
        unknown = set(nodes) - set(SOAK_NODES)
        if unknown or not nodes:
            raise SystemExit(f"bench: --soak-nodes must name some of {', '.join(SOAK_NODES)}; got {a.soak_nodes!r}")
        soaks = []
        for node in nodes:
            src_frames = math.ceil(a.soak / 2) if node == "interpolate" else a.soak
            src = make_source(a.clip, w, h, min(src_frames, MAX_SOURCE), work, ffmpeg)
            kw = settings[0][1] if node == "interpolate" else {
                k: v for k, v in settings[0][1].items() if k in ("device", "precision", "scale")}
            probe = work / f"soak_{time.time_ns()}.jsonl"
            log(f"soak: {node}, {a.soak} output frames at {w}x{h}, {kw}")
            row = vspipe_run(vspipe, src, SOAK_NODES[node], CONVERSIONS["2x"], src_frames, kw, probe=probe)
            samples = row.pop("probe")
            begin = next(s for s in samples if s["frame"] >= a.soak // 10)
            end = samples[-1]
            keys = [k for k in ("rss", "gpu_allocated", "gpu_reserved") if k in end]
            row.update(node=node, size=f"{w}x{h}", method=settings[0][0] if node == "interpolate" else "default",
                       kwargs=kw, samples=samples, start={k: begin[k] for k in ["frame"] + keys},
                       end={k: end[k] for k in ["frame"] + keys},
                       rss_range_mb=[round(min(s["rss"] for s in samples if s["frame"] >= begin["frame"]) / 2**20, 1),
                                     round(max(s["rss"] for s in samples if s["frame"] >= begin["frame"]) / 2**20, 1)])
            log(f"soak {node}: RSS {begin['rss'] / 2**20:.1f} MB at frame {begin['frame']}, "
                f"{end['rss'] / 2**20:.1f} MB at frame {end['frame']}; {row['fps']:.1f} frames/s")
            soaks.append(row)
        report["soak"] = soaks
        print(f"| node ({w}x{h}) | output frames | frames/s | RSS MB at frame ~{a.soak // 10} | RSS MB at the end | "
              "RSS MB from there on (min-max) | peak RSS MB |" + "".join(
                  f" {k} MB start / end |" for k in ("gpu_allocated", "gpu_reserved") if k in soaks[0]["end"]))
        print("|---|---|---|---|---|---|---|" + "---|" * sum(k in soaks[0]["end"] for k in ("gpu_allocated", "gpu_reserved")))
        for row in soaks:
            gpu = "".join(f" {row['start'][k] / 2**20:.1f} / {row['end'][k] / 2**20:.1f} |"
                          for k in ("gpu_allocated", "gpu_reserved") if k in row["end"])
            print(f"| {row['node']} | {row['frames']} | {row['fps']:.1f} | {row['start']['rss'] / 2**20:.1f} | "
                  f"{row['end']['rss'] / 2**20:.1f} | {row['rss_range_mb'][0]}-{row['rss_range_mb'][1]} | "
                  f"{row['peak_rss_mb']:.0f} |{gpu}")
    else:
        rows, models, bridges = [], [], []
        sizes = [int(s) for s in a.sizes.split(",") if s]
        for height in sizes:
            log(f"{height}p: preparing the source")
            size = (SIZES.get(height) or 2 * round(height * 8 / 9), height)  # 16:9
            src = make_source(a.clip, *size, min(frames, MAX_SOURCE), work, ffmpeg)
            for conv in [c for c in a.conversions.split(",") if c]:
                rate = CONVERSIONS[conv]
                jobs = [(p, None) for p in peers] + settings
                # repeats go round all the methods in turn, so that a slower or faster
                # spell of the machine falls on every method alike; the best run is kept
                runs: dict[str, list[dict]] = {name: [] for name, _ in jobs}
                for _ in range(a.repeat):
                    for name, kw in jobs:
                        if name == "minterp":
                            r = minterp_run(ffmpeg, src, rate, frames, size)
                        elif kw is None:
                            r = vspipe_run(vspipe, src, name, rate, frames)
                        else:
                            probe = work / f"probe_{time.time_ns()}.jsonl" if dev.type == "cuda" else None
                            r = vspipe_run(vspipe, src, "vgan", rate, frames, kw, probe=probe)
                            r.pop("probe", None)
                        runs[name].append(r)
                for name, kw in jobs:
                    best = max(runs[name], key=lambda r: r["fps"])
                    row = dict(size=f"{size[0]}x{size[1]}", height=height, conversion=conv, method=name,
                               kwargs=kw, **best, all_fps=[r["fps"] for r in runs[name]])
                    log(f"{height}p {conv} {name}: {row['fps']:.2f} frames/s (runs: {row['all_fps']}), "
                        f"peak RSS {row['peak_rss_mb']:.0f} MB"
                        + (f", GPU {row['peak_gpu_mb']} MB" if "peak_gpu_mb" in row else ""))
                    rows.append(row)
            if not a.no_bridge:
                probe = work / f"bridge_{time.time_ns()}.jsonl"
                r = vspipe_run(vspipe, src, "vgan", CONVERSIONS["2x"], frames, settings[0][1], probe=probe,
                               profile=True)
                last = max(r["probe"], key=lambda s: s["node_s"])
                share = last["bridge_s"] / last["node_s"] if last["node_s"] else float("nan")
                bridges.append(dict(size=f"{size[0]}x{size[1]}", height=height, method=settings[0][0],
                                    bridge_share=round(share, 4), bridge_seconds=round(last["bridge_s"], 3),
                                    node_seconds=round(last["node_s"], 3), bridge_calls=last["bridge_calls"],
                                    node_calls=last["node_calls"], profiled_fps=r["fps"],
                                    bridge_ms_per_output_frame=round(1e3 * last["bridge_s"] / r["frames"], 3)))
                log(f"{height}p bridge: {100 * share:.1f}% of the node's thread time "
                    f"({bridges[-1]['bridge_ms_per_output_frame']} ms per output frame)")
            if not a.no_model:
                m = model_only(size, a.device, a.precision, a.model_iters or (50 if dev.type == "cuda" else 3))
                models.append(dict(size=f"{size[0]}x{size[1]}", height=height, **m))
                log(f"{height}p model only: {m}")
        report.update(rows=rows, bridge=bridges, model=models)
        print(table(rows))
        if bridges:
            print("\n| size | bridge share of the node's time | bridge ms per output frame |\n|---|---|---|")
            for b in bridges:
                print(f"| {b['size']} | {100 * b['bridge_share']:.1f}% | {b['bridge_ms_per_output_frame']:.2f} |")
        if models:
            print("\n| size | prepare ms | pair ms | synthesize ms | synthesized frames/s (model only) |"
                  "\n|---|---|---|---|---|")
            for m in models:
                print(f"| {m['size']} | {m['prepare_ms']:.1f} | {m['pair_ms']:.1f} | {m['synthesize_ms']:.1f} | "
                      f"{m['synthesized_fps']:.1f} |")
    print(f"\n{meta['device_name']} ({meta['device']}, {meta['dtype']}); {meta['cpu']}, {meta['cores']} cores; "
          f"core.num_threads {meta['core_threads']}, {meta['streams']} stream(s)"
          + (f" x {meta['torch_threads_per_stream']} torch thread(s)" if meta["torch_threads_per_stream"] else "")
          + f"; Python {meta['python']}, torch {meta['torch']}, VapourSynth {meta['vapoursynth']}, "
          f"vs_vgan {meta['vs_vgan']}; {meta['ffmpeg']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=1))
    if work_ctx is not None:
        work_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
