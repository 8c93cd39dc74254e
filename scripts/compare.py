#!/usr/bin/env python3
"""Pictures before numbers: side-by-side crops of each method's in-between frames.

    .venv/bin/python scripts/compare.py bigbuckbunny.mp4 --out out/compare
    .venv/bin/python scripts/compare.py bigbuckbunny.mp4 --gap 4 --rife out/rife/flownet.pkl
    .venv/bin/python scripts/compare.py --middlebury            # ../shared/data/middlebury_others

On a clip, every ``--gap``-th frame is kept and interpolated back by ``--gap`` as the shared
bench does (../shared/bench/heldout.py, imported through eval_interp.py, not copied); the
dropped frames between two kept ones are the candidates, those every method has an output
frame for (ffmpeg's minterpolate ends a few frames early: 27 of 30 from 15 kept frames).  With ``--middlebury [DIR]`` each
triplet's frame10i11 is synthesized from frame10 and frame11 (../shared/bench/triplets.py).
Put CLIP first when both are given (``--middlebury`` takes an optional folder).

The methods are eval_interp.py's: ``--methods`` (default ``blend,mvflow,minterp``: linear
blend, MVTools FlowFPS, ffmpeg minterpolate; ``dup`` too), each ``--vgan NAME=JSON``
setting of vs_vgan.interpolate (default ``vgan={}``; ``--weights FILE`` makes a candidate
safetensors file their model), and RIFE with ``--rife PATH/flownet.pkl``.  minterpolate runs
``vs_vgan.ffmpeg.find_ffmpeg()``'s ffmpeg (imageio-ffmpeg's where PATH has none:
eval_interp.bench_ffmpeg_on_path).  MVTools without the plugin and minterpolate without any
ffmpeg are left out with a message; minterpolate and ``dup`` are not part of the triplet
bench, so they are left out on Middlebury.

Choosing what to show: for each candidate frame, every method's 8-bit RGB output; their
*spread* is the per-sample variance across the methods' outputs (ground truth not
included), averaged over the frame and given as its square root (8-bit levels, RMS about
the methods' mean).  The ``--frames`` frames with the largest spread are shown (ties: the
earlier frame); in each, the ``--crop WxH`` window (clipped to the frame) holding the
largest summed variance (an integral image; ties: the top-left one).

Each chosen frame is one PNG: a panel per method, left to right ground truth, the
``--methods``, the ``--vgan`` settings, RIFE, each crop enlarged ``--zoom`` times (nearest
neighbour) under a label strip naming the method with its RGB PSNR over the crop and over
the whole frame (the bench's PSNR: 99 for identical frames); panels ``GAP`` pixels apart.
PNGs are palette images of ``--colors`` colours (0: full RGB) saved optimised, so that a
handful stays within a few hundred KB; the PSNRs are of the true outputs, not of the
palette image.  Beside them a JSON (``<clip>-gap<N>.json``, ``middlebury.json``) records the
methods, what was chosen, every candidate's PSNRs and the layout.  stdout: the chosen
frames with every method's PSNR, each file with its size, the total; progress on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import types
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from eval_interp import bench_ffmpeg_on_path, load_bench  # noqa: E402

PEERS = ("dup", "blend", "mvflow", "minterp")
LABELS = {"gt": "ground truth", "dup": "repeat", "blend": "blend", "mvflow": "MVTools", "minterp": "minterpolate"}
GAP = 2           # pixels between panels
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
DEFAULT_MIDDLEBURY = str(ROOT.parent / "shared" / "data" / "middlebury_others")


def log(msg: str) -> None:
    print(f"compare: {msg}", file=sys.stderr, flush=True)


class Method:
    """A method to show: ``kw`` None for a bench peer, else vs_vgan.interpolate's kwargs."""

    def __init__(self, name: str, kw: dict | None = None, label: str = "") -> None:
        self.name, self.kw = name, kw
        self.label = label or LABELS.get(name, name)


class Candidate:
    """One frame (``key`` its number) or triplet (its name): the ground truth and every
    method's output, (H, W, 3) uint8; ``spread`` and ``psnr`` filled in by :func:`score`."""

    def __init__(self, key: str, gt: np.ndarray, outs: dict[str, np.ndarray], t: str = "1/2") -> None:
        self.key, self.gt, self.outs, self.t = key, gt, outs, t
        self.spread = 0.0
        self.psnr: dict[str, float] = {}


def hwc(planes: np.ndarray) -> np.ndarray:
    """(3, H, W) planes as (H, W, 3)."""
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def variance_map(outs: list[np.ndarray]) -> np.ndarray:
    """(H, W): the variance across the outputs, summed over the three channels."""
    stack = np.stack([o.astype(np.float32) for o in outs])
    return stack.var(axis=0, dtype=np.float64).sum(axis=-1)


def spread(outs: list[np.ndarray]) -> float:
    """RMS of the outputs about their mean, over every sample (8-bit levels); 0 for one output."""
    return float(np.sqrt(variance_map(outs).mean() / 3)) if len(outs) > 1 else 0.0


def best_window(diff: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the ``width`` x ``height`` window (clipped to the map) with the largest
    sum of ``diff``; ties go to the first in row-major order."""
    rows, cols = diff.shape
    w, h = min(width, cols), min(height, rows)
    ii = np.zeros((rows + 1, cols + 1))
    ii[1:, 1:] = diff.astype(np.float64).cumsum(0).cumsum(1)
    sums = ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), w, h


def keep_top(top: list[Candidate], cand: Candidate, k: int) -> list[Candidate]:
    """The ``k`` candidates of largest spread, the earlier first on ties (candidates arrive in order)."""
    top = top + [cand]
    top.sort(key=lambda c: -c.spread)  # stable: earlier stays first on ties
    return top[:k]


def available(method: Method, on_triplets: bool) -> str | None:
    """Why ``method`` cannot run here, or None."""
    import vapoursynth as vs

    if method.kw is not None:
        return None
    if on_triplets and method.name in ("dup", "minterp"):
        return "not part of the triplet bench (held-out clip only)"
    if method.name == "mvflow" and not hasattr(vs.core, "mv"):
        return "needs the MVTools plugin (vapoursynth-mvtools), which is not loaded"
    if method.name == "minterp":
        from vs_vgan.ffmpeg import find_ffmpeg

        try:
            found = find_ffmpeg()
        except ValueError as exc:  # VS_VGAN_FFMPEG naming no program
            return str(exc)
        if found is None:
            return "needs ffmpeg (none on PATH, and no imageio-ffmpeg: pip install imageio-ffmpeg)"
    return None


def usable(methods: list[Method], on_triplets: bool, skipped: dict[str, str]) -> list[Method]:
    kept = []
    for m in methods:
        why = available(m, on_triplets)
        if why:
            log(f"{m.name} left out: {why}")
            skipped[m.name] = why
        else:
            kept.append(m)
    return kept


@contextlib.contextmanager
def scratch(hb):
    """While open, the bench's ``m_minterp`` puts its .y4m files (it leaves them in a
    ``tempfile.mkdtemp()`` folder, several hundred MB for a 720p clip) in a folder removed
    on leaving; the frames must have been read by then."""
    saved = hb.tempfile
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        hb.tempfile = types.SimpleNamespace(mkdtemp=lambda: tempfile.mkdtemp(dir=tmp))
        try:
            yield
        finally:
            hb.tempfile = saved


def clip_candidates(hb, clip_path: str, methods: list[Method], gap: int, max_frames: int | None,
                    keep: int, skipped: dict[str, str]):
    """The top ``keep`` candidates and a row per candidate (spread, PSNRs) of a clip: every
    ``gap``-th frame kept and interpolated back by ``gap`` as the shared bench does, the
    frames between two kept ones that every method's output reaches the candidates."""
    import vapoursynth as vs

    if not hasattr(vs.core, "bs"):
        raise SystemExit("compare: reading a clip needs the bestsource plugin (core.bs), which is not loaded")
    src = hb.load(clip_path, max_frames)
    last_kept = ((src.num_frames - 1) // gap) * gap  # as the shared bench's score()
    if last_kept < gap or src.num_frames < gap + 1:
        raise SystemExit(f"compare: the clip needs at least {gap + 1} frames for --gap {gap}; "
                         f"got {src.num_frames}")
    even = src[::gap]
    outs = {}
    for m in usable(methods, False, skipped):
        t0 = time.perf_counter()
        try:
            with bench_ffmpeg_on_path() if m.kw is None and m.name == "minterp" else contextlib.nullcontext():
                out = hb.m_vgan(even, m.kw, gap) if m.kw is not None else getattr(hb, "m_" + m.name)(even, gap)
        except Exception as e:
            if m.kw is not None:  # the user's setting: say what is wrong with it
                raise SystemExit(f"compare: {m.name}: {type(e).__name__}: {e}") from e
            log(f"{m.name} left out: {type(e).__name__}: {e}")  # a peer's tool failing (ffmpeg, a plugin)
            skipped[m.name] = f"{type(e).__name__}: {e}"
            continue
        outs[m.name] = hb.to_rgb24(out)
        log(f"{m.name}: graph built in {time.perf_counter() - t0:.1f} s")
    if not outs:
        raise SystemExit("compare: no method could run")
    s_rgb = hb.to_rgb24(src)
    n = min([src.num_frames] + [o.num_frames for o in outs.values()])
    frames = [i for i in range(1, min(n, last_kept)) if i % gap]
    top, table = [], []
    for k, i in enumerate(frames):
        t0 = time.perf_counter()
        gt = hwc(hb.planes(s_rgb.get_frame(i)))
        got = {name: hwc(hb.planes(o.get_frame(i))) for name, o in outs.items()}
        cand = Candidate(str(i), gt, got, t=str(Fraction(i % gap, gap)))
        score(hb, cand)
        table.append(dict(frame=i, t=cand.t, spread=round(cand.spread, 3), psnr=cand.psnr))
        top = keep_top(top, cand, keep)
        log(f"frame {i} ({k + 1}/{len(frames)}): spread {cand.spread:.2f} in {time.perf_counter() - t0:.1f} s")
    return top, table


def triplet_candidates(hb, tb, root: str, methods: list[Method], keep: int, skipped: dict[str, str]):
    """As :func:`clip_candidates` for the triplets under ``root`` (input/<name>/frame10.png,
    frame11.png, gt/<name>/frame10i11.png)."""
    base = Path(root)
    if not (base / "input").is_dir() or not (base / "gt").is_dir():
        raise SystemExit(f"compare: --middlebury must be a folder with input/ and gt/; got {root!r}")
    names = sorted(p.name for p in (base / "input").iterdir() if p.is_dir())
    if not names:
        raise SystemExit(f"compare: no triplets under {base / 'input'}")
    runnable = usable(methods, True, skipped)
    if not runnable:
        raise SystemExit("compare: no method could run on the triplets")
    top, table = [], []
    for k, item in enumerate(names):
        t0 = time.perf_counter()
        i0 = tb.read_rgb(str(base / "input" / item / "frame10.png"))
        i1 = tb.read_rgb(str(base / "input" / item / "frame11.png"))
        gt = tb.read_rgb(str(base / "gt" / item / "frame10i11.png"))
        clip = tb.clip_from_frames([i0, i1])
        got = {}
        for m in runnable:
            if m.kw is not None:
                try:
                    out = tb.m_vgan(clip, m.kw)
                except Exception as e:
                    raise SystemExit(f"compare: {m.name}: {type(e).__name__}: {e}") from e
            else:
                out = tb.m_linear(clip) if m.name == "blend" else getattr(tb, "m_" + m.name)(clip)
            got[m.name] = np.ascontiguousarray(tb.frame_rgb(out, 1))
        cand = Candidate(item, np.ascontiguousarray(gt), got)
        score(hb, cand)
        table.append(dict(item=item, spread=round(cand.spread, 3), psnr=cand.psnr))
        top = keep_top(top, cand, keep)
        log(f"{item} ({k + 1}/{len(names)}): spread {cand.spread:.2f} in {time.perf_counter() - t0:.1f} s")
    return top, table


def score(hb, cand: Candidate) -> None:
    cand.psnr = {name: round(hb.psnr(o, cand.gt), 3) for name, o in cand.outs.items()}
    cand.spread = spread(list(cand.outs.values()))


def font():
    from PIL import ImageFont

    return ImageFont.load_default()


def label_height() -> int:
    """Height of the label strip above each crop: three lines and a margin."""
    return 3 * line_height() + 6


def line_height() -> int:
    left, top, right, bottom = font().getbbox("Ag(0)")
    return bottom + 2


def panel(crop: np.ndarray, lines: list[str], zoom: int):
    """One method's panel: the label strip, then the crop enlarged ``zoom`` times."""
    from PIL import Image, ImageDraw

    h, w, _ = crop.shape
    img = Image.new("RGB", (w * zoom, label_height() + h * zoom), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(lines):
        draw.text((3, 3 + k * line_height()), text, fill=INK, font=font())
    pic = Image.fromarray(crop)
    if zoom > 1:
        pic = pic.resize((w * zoom, h * zoom), Image.Resampling.NEAREST)
    img.paste(pic, (0, label_height()))
    return img


def render(hb, cand: Candidate, methods: list[Method], crop_size: tuple[int, int], zoom: int,
           title: str) -> tuple[object, dict]:
    """The picture of one candidate and what it shows (the crop and every PSNR)."""
    from PIL import Image

    shown = [m for m in methods if m.name in cand.outs]
    x, y, w, h = best_window(variance_map([cand.outs[m.name] for m in shown]), *crop_size)
    crop = lambda a: a[y:y + h, x:x + w]  # noqa: E731
    gt = crop(cand.gt)
    psnr_crop = {m.name: round(hb.psnr(crop(cand.outs[m.name]), gt), 3) for m in shown}
    panels = [panel(gt, [LABELS["gt"], title, f"x {x} y {y}"], zoom)]
    for m in shown:
        panels.append(panel(crop(cand.outs[m.name]),
                            [m.label, f"crop {psnr_crop[m.name]:.2f} dB", f"frame {cand.psnr[m.name]:.2f} dB"], zoom))
    pw, ph = panels[0].size
    sheet = Image.new("RGB", (len(panels) * pw + (len(panels) - 1) * GAP, ph), BACKGROUND)
    for k, p in enumerate(panels):
        sheet.paste(p, (k * (pw + GAP), 0))
    info = dict(crop=dict(x=x, y=y, w=w, h=h), psnr_crop=psnr_crop, psnr_frame=dict(cand.psnr),
                spread=round(cand.spread, 3), panels=["gt"] + [m.name for m in shown])
    return sheet, info


def save_png(img, path: Path, colors: int) -> int:
    from PIL import Image

    if colors:
        img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img.save(path, optimize=True)
    return path.stat().st_size


def write_set(hb, name: str, top: list[Candidate], table: list[dict], methods: list[Method], a,
              meta: dict, is_clip: bool) -> list[tuple[Path, int]]:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    crop_size = parse_crop(a.crop)
    written, chosen = [], []
    for cand in top:
        if is_clip:
            png = out / f"{name}-f{int(cand.key):04d}.png"
            title = f"frame {cand.key} (t {cand.t})"
        else:
            png = out / f"{name}-{cand.key}.png"
            title = cand.key
        sheet, info = render(hb, cand, methods, crop_size, a.zoom, title)
        size = save_png(sheet, png, a.colors)
        written.append((png, size))
        key = dict(frame=int(cand.key), t=cand.t) if is_clip else dict(item=cand.key)
        chosen.append(dict(**key, png=png.name, bytes=size, width=sheet.width, height=sheet.height, **info))
        psnrs = ", ".join(f"{m.label} {cand.psnr[m.name]:.2f} dB (crop {info['psnr_crop'][m.name]:.2f})"
                          for m in methods if m.name in cand.outs)
        c = info["crop"]
        print(f"{title}: spread {cand.spread:.2f}, crop {c['w']}x{c['h']} at ({c['x']}, {c['y']}): {psnrs}")
        print(f"  {png} {size / 1024:.1f} KB")
    js = out / f"{name}.json"
    doc = dict(meta, chosen=chosen, candidates=table,
               layout=dict(zoom=a.zoom, gap=GAP, label_height=label_height(), colors=a.colors))
    js.write_text(json.dumps(doc, indent=1))
    print(f"  {js} {js.stat().st_size / 1024:.1f} KB")
    written.append((js, js.stat().st_size))
    return written


def parse_crop(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        size = int(w), int(h)
    except ValueError:
        size = None
    if not sep or size is None or min(size) < 1:
        raise SystemExit(f"compare: --crop must be WIDTHxHEIGHT in pixels, e.g. 256x160; got {text!r}")
    return size


def show(kw: dict | None) -> dict | None:
    """kwargs as JSON can hold them (a ModelSpec by its name and weights)."""
    if kw is None:
        return None
    return {k: (f"{v.name} ({v.weights})" if hasattr(v, "weights") else v) for k, v in kw.items()}


def build_methods(a) -> list[Method]:
    methods = []
    for name in (m.strip() for m in a.methods.split(",") if m.strip()):
        name = "blend" if name == "linear" else name
        if name not in PEERS:
            raise SystemExit(f"compare: --methods must name some of {', '.join(PEERS)}; got {name!r}")
        methods.append(Method(name))
    vgan = []
    for item in a.vgan or ["vgan={}"]:
        name, sep, js = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"compare: --vgan needs NAME=JSON; got {item!r}")
        try:
            kw = json.loads(js)
        except json.JSONDecodeError as e:
            raise SystemExit(f"compare: --vgan {name}: the JSON does not parse ({e}); got {js!r}") from e
        if not isinstance(kw, dict):
            raise SystemExit(f"compare: --vgan {name}: the JSON must be an object of keyword arguments; got {js!r}")
        vgan.append(Method(name, kw))
    if a.weights:
        if not Path(a.weights).is_file():
            raise SystemExit(f"compare: --weights {a.weights!r} is not a file")
        from vs_vgan.models.loader import exported_spec

        spec = exported_spec(a.weights)
        vgan = [Method(m.name, {"model": spec, **m.kw}) if "model" not in m.kw else m for m in vgan]
    methods += vgan
    if a.rife:
        from vs_vgan.models import rife

        try:
            spec = rife(a.rife)
        except (OSError, ValueError, TypeError) as e:
            raise SystemExit(f"compare: --rife: {e}") from e
        methods.append(Method(spec.name, {"model": spec}, label=spec.name.replace("rife-", "RIFE ")))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise SystemExit(f"compare: method names must be distinct; got {', '.join(names)}")
    return methods


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", nargs="?", help="a video bestsource reads (e.g. bigbuckbunny.mp4)")
    ap.add_argument("--gap", type=int, default=2, help="keep every GAP-th frame and interpolate back by GAP "
                    "(2: 2x; 4: motion four times as large)")
    ap.add_argument("--middlebury", nargs="?", const=DEFAULT_MIDDLEBURY, metavar="DIR",
                    help=f"also (or only) the triplets of DIR (input/, gt/; default {DEFAULT_MIDDLEBURY})")
    ap.add_argument("--methods", default="blend,mvflow,minterp", help="bench peers, comma separated, of "
                    f"{', '.join(PEERS)}")
    ap.add_argument("--vgan", action="append", default=[], metavar="NAME=JSON",
                    help="a vs_vgan.interpolate setting to show (default: vgan={})")
    ap.add_argument("--weights", help="a candidate safetensors file (train_interp.py --export) as the model of "
                    "the --vgan settings that name none")
    ap.add_argument("--rife", metavar="PATH", help="also RIFE, from this flownet.pkl")
    ap.add_argument("--frames", type=int, default=2, help="how many frames (triplets) to show")
    ap.add_argument("--crop", default="256x160", help="crop WIDTHxHEIGHT, clipped to the frame")
    ap.add_argument("--zoom", type=int, default=1, help="enlarge the crops this many times (nearest neighbour)")
    ap.add_argument("--colors", type=int, default=256, help="palette colours of the PNGs (2-256; 0: full RGB)")
    ap.add_argument("--max-frames", type=int, help="only the clip's first M frames")
    ap.add_argument("--out", default=str(ROOT / "out" / "compare"), help="folder for the PNGs and JSON")
    ap.add_argument("--bench", default=str(ROOT.parent / "shared" / "bench"),
                    help="folder of heldout.py and triplets.py")
    a = ap.parse_args(argv)

    if a.clip is None and a.middlebury is None:
        ap.error("give a CLIP, --middlebury [DIR], or both")
    if a.gap < 2:
        raise SystemExit(f"compare: --gap must be 2 or more; got {a.gap}")
    if a.frames < 1:
        raise SystemExit(f"compare: --frames must be 1 or more; got {a.frames}")
    if a.zoom < 1:
        raise SystemExit(f"compare: --zoom must be 1 or more; got {a.zoom}")
    if a.colors and not 2 <= a.colors <= 256:
        raise SystemExit(f"compare: --colors must be 0 (full RGB) or 2-256; got {a.colors}")
    if a.max_frames is not None and a.max_frames < a.gap + 1:
        raise SystemExit(f"compare: --max-frames must be at least --gap + 1 ({a.gap + 1}); got {a.max_frames}")
    parse_crop(a.crop)
    if a.clip is not None and not Path(a.clip).is_file():
        raise SystemExit(f"compare: the clip {a.clip!r} is not a file")
    methods = build_methods(a)
    bench = Path(a.bench)
    hb = load_bench(bench / "heldout.py", "vgan_bench_heldout")
    written = []
    common = dict(methods=[dict(name=m.name, label=m.label, kwargs=show(m.kw)) for m in methods])
    if a.clip is not None:
        skipped: dict[str, str] = {}
        with scratch(hb):
            top, table = clip_candidates(hb, a.clip, methods, a.gap, a.max_frames, a.frames, skipped)
        name = f"{Path(a.clip).stem}-gap{a.gap}"
        meta = dict(set=f"{Path(a.clip).stem}-heldout" + ("" if a.gap == 2 else f"@gap{a.gap}"),
                    source=str(a.clip), gap=a.gap, max_frames=a.max_frames, **common, skipped=skipped)
        written += write_set(hb, name, top, table, methods, a, meta, True)
    if a.middlebury is not None:
        tb = load_bench(bench / "triplets.py", "vgan_bench_triplets")
        skipped = {}
        top, table = triplet_candidates(hb, tb, a.middlebury, methods, a.frames, skipped)
        meta = dict(set="middlebury-others", source=str(a.middlebury), **common, skipped=skipped)
        written += write_set(hb, "middlebury", top, table, methods, a, meta, False)
    total = sum(size for _, size in written)
    print(f"total {total / 1024:.1f} KB in {len(written)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
