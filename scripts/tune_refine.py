"""Choose a flow model's Lucas-Kanade refinement (``refine``) on training footage.

    .venv/bin/python scripts/tune_refine.py --weights mine.safetensors --analysis-pixels 131072 \
        --schedules '[[], [4], [2], [4, 2], [2, 2]]' --json out/tune_refine.json

The settings of a model are tuned on training data only (../shared/DATA.md: the evaluation
sets are never tuned against).  The footage is ../shared/data/train_video/: six clips by
default (the four 720p ones, gopro_drone_480p and intel_cars_432p).  From each, eight
windows of five frames are taken, starting at frames 10, 35, ..., 185.  The first, third and
fifth frames of a window make a gap-2 triplet (frames s and s+2 give s+1) and a gap-4
triplet (frames s and s+4 give s+2).  Each triplet is scored by RGB PSNR of the 8-bit
output at t = 0.5, at the scale ``scale=None`` takes for the clip's size (the
``--analysis-pixels`` rule).  The script prints one line per schedule: the mean PSNR over
each gap's triplets, and the milliseconds of ``refine_flows`` for one 720p frame on one
thread.

``--window`` and ``--lam`` set ``refine_window`` and ``refine_lambda`` for every schedule.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIPS = ("sam2_blocks_720p.mp4", "sam2_juggle_720p.mp4", "sintel_720p_10s.mp4", "udacity_highway_720p.mp4",
         "gopro_drone_480p.mp4", "intel_cars_432p.mp4")
STARTS = tuple(range(10, 200, 25))


def read_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The frames of ``path`` numbered in ``wanted`` (decoded in order, RGB24)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    got: dict[int, np.ndarray] = {}
    try:
        for i, buf in enumerate(reader):
            if i in wanted:
                got[i] = np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            if i >= max(wanted):
                break
    finally:
        reader.close()
    return got


def triplets(data: Path, clips: list[str]) -> list[tuple[str, int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(clip, gap, frame 0, frame 1, the true middle)`` as ``(1, 3, h, w)`` tensors in 0..1."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255.0

    out = []
    for clip in clips:
        path = data / clip
        if not path.is_file():
            raise SystemExit(f"tune_refine: {path}: no such clip")
        got = read_frames(path, {s + k for s in STARTS for k in range(5)})
        for s in STARTS:
            if s + 4 in got:
                out.append((clip, 2, tensor(got[s]), tensor(got[s + 2]), tensor(got[s + 1])))
                out.append((clip, 4, tensor(got[s]), tensor(got[s + 4]), tensor(got[s + 2])))
    return out


def score(net, spec, sets) -> dict[int, float]:
    """Mean RGB PSNR (dB) of the 8-bit outputs per gap."""
    per_gap: dict[int, list[float]] = {}
    t = torch.full((1, 1, 1, 1), 0.5)
    with torch.inference_mode():
        for _, gap, a, b, truth in sets:
            scale = spec.default_scale(a.shape[-1], a.shape[-2])
            out = net.synthesize(net.encode(a, b, scale), t)
            mse = float(((out * 255.0).round() / 255.0 - truth).pow(2).mean())
            per_gap.setdefault(gap, []).append(10 * math.log10(1.0 / max(mse, 1e-10)))
    return {g: round(float(np.mean(v)), 3) for g, v in sorted(per_gap.items())}


def cost_ms(net, repeat: int = 20) -> float:
    """Milliseconds of refine_flows for one 720p frame at scale 0.25, one thread."""
    if not net.refine:
        return 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        y0, y1 = torch.rand(1, 1, 720, 1280, generator=g), torch.rand(1, 1, 720, 1280, generator=g)
        hf, wf = 768 // 4, 1280 // 4  # the analysed, padded grid of 720p at 0.25
        flows = torch.randn(1, 4, hf, wf, generator=g) * 0.1
        t = torch.full((1, 1, 1, 1), 0.5)
        with torch.inference_mode():
            g0, g1 = net.refine_guides(y0), net.refine_guides(y1)
            net.refine_flows(flows, t, 0.25, g0, g1)
            start = time.perf_counter()
            for _ in range(repeat):
                net.refine_flows(flows, t, 0.25, g0, g1)
        return (time.perf_counter() - start) / repeat * 1000.0
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="an exported generator (train_interp.py --export)")
    ap.add_argument("--analysis-pixels", type=int, default=131072, help="its scale=None rule (default 131072)")
    ap.add_argument("--schedules", type=json.loads, default=[[], [4], [2], [4, 2], [2, 2]], metavar="JSON",
                    help="refine schedules to score (default: [[], [4], [2], [4, 2], [2, 2]])")
    ap.add_argument("--window", type=int, default=8, help="refine_window (default 8)")
    ap.add_argument("--lam", type=float, default=1e-5, help="refine_lambda (default 1e-5)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "train_video"),
                    help="the training footage (default ../shared/data/train_video)")
    ap.add_argument("--clips", default=",".join(CLIPS), help="comma-separated clip names under --data")
    ap.add_argument("--json", help="write the rows here too")
    a = ap.parse_args()

    from vs_vgan.models.loader import exported_spec, load_model

    rows = []
    sets = triplets(Path(a.data), [c for c in a.clips.split(",") if c])
    print(f"tune_refine: {len(sets)} triplets from {a.data}", file=sys.stderr)
    for schedule in a.schedules:
        try:
            spec = exported_spec(a.weights, a.analysis_pixels, {"refine": list(schedule), "refine_window": a.window,
                                                                "refine_lambda": a.lam})
        except (OSError, ValueError) as exc:
            raise SystemExit(f"tune_refine: {exc}") from None
        net = load_model(spec, torch.device("cpu"), torch.float32)
        row = {"refine": list(schedule), "window": a.window, "lambda": a.lam, "psnr_by_gap": score(net, spec, sets),
               "refine_ms_720p": round(cost_ms(net), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"weights": a.weights, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
