#!/usr/bin/env python3
"""End-to-end 2x speed through vspipe: vs_vgan beside MVTools FlowFPS, in one run.

    .venv/bin/python scripts/bench_speed.py --clip /path/to/bigbuckbunny.mp4 --json out/bench_speed.json

Each method renders ``clip`` at twice its rate with ``vspipe -c y4m scripts/bench_speed.vpy``
into a pipe that is read and thrown away (the y4m packing is part of the cost, the encoder
is not).  The rate is vspipe's own "Output N frames in S seconds" figure, so script
loading (imports, model load) is left out.  Methods: ``mvflow`` (MVTools FlowFPS exactly
as ../shared/bench/heldout.py scores it), ``minterp`` is not run here (it is ffmpeg's, not
a VapourSynth node), and vs_vgan settings given as ``--vgan NAME=JSON`` (default:
``vgan={}``, ``vgan-0.5={"scale": 0.5}`` and ``vgan-0.25={"scale": 0.25}``).  Repeats: the best of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VPY = ROOT / "scripts" / "bench_speed.vpy"
PATTERN = re.compile(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)")


def run(vspipe: str, clip: str, method: str, kw: dict | None, bench: str) -> dict:
    cmd = [vspipe, "-c", "y4m", "-a", f"clip={clip}", "-a", f"method={'vgan' if kw is not None else method}",
           "-a", f"bench={bench}"]
    if kw is not None:
        cmd += ["-a", f"kw={json.dumps(kw)}"]
    cmd += [str(VPY), "-"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    size = 0
    while chunk := proc.stdout.read(1 << 22):
        size += len(chunk)
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    wall = time.perf_counter() - t0
    m = PATTERN.search(err)
    if proc.returncode or not m:
        raise SystemExit(f"bench_speed: {' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return dict(frames=int(m.group(1)), seconds=float(m.group(2)), fps=float(m.group(3)), wall_seconds=round(wall, 2),
                bytes=size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="the input (any file bestsource reads), e.g. bigbuckbunny.mp4")
    ap.add_argument("--methods", default="mvflow", help="peer methods, comma separated ('' for none)")
    ap.add_argument("--vgan", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    vspipe = shutil.which("vspipe", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if not vspipe:
        raise SystemExit("bench_speed: vspipe not found (pip install vapoursynth, then run `vapoursynth config`)")
    methods: list[tuple[str, dict | None]] = [(m, None) for m in a.methods.split(",") if m]
    for item in a.vgan or ['vgan={}', 'vgan-0.5={"scale": 0.5}', 'vgan-0.25={"scale": 0.25}']:
        name, _, js = item.partition("=")
        methods.append((name, json.loads(js or "{}")))
    import torch
    import vapoursynth as vs

    from vs_vgan.devices import cpu_plan

    rows = []
    for name, kw in methods:
        best = None
        for _ in range(a.repeat):
            r = run(vspipe, a.clip, name, kw, a.bench)
            best = r if best is None or r["fps"] > best["fps"] else best
        row = dict(method=name, kwargs=kw, **best)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    ref = next((r for r in rows if r["method"] == "mvflow"), None)
    print("| method | output frames/s | vs MVTools FlowFPS |\n|---|---|---|")
    for r in rows:
        ratio = f"{r['fps'] / ref['fps']:.2f}x" if ref else "-"
        print(f"| {r['method']} {json.dumps(r['kwargs']) if r['kwargs'] else ''} | {r['fps']:.2f} | {ratio} |")
    meta = dict(machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(),
                python=platform.python_version(), torch=torch.__version__, vapoursynth=vs.__version__,
                core_threads=vs.core.num_threads, clip=os.path.basename(a.clip))
    # what vs_vgan.interpolate does with those threads on the CPU (lanes, torch threads per lane)
    meta["cpu_lanes"], meta["torch_threads_per_lane"] = cpu_plan(vs.core.num_threads)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
