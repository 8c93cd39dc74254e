"""Training data: decoded video clips, triplet sampling, synthetic motion with exact ground truth.

Nothing here downloads anything, and nothing is written to stdout (progress goes to
``logging``).  VapourSynth is imported only inside the functions that decode videos, so the
module itself imports without it.

Arrays
------
Decoded clips are numpy ``uint8`` arrays of shape ``(T, H, W, 3)`` (RGB).  A sample is a
tuple ``(img0, gt, img1, t)``: three ``float32`` arrays of shape ``(3, crop, crop)`` in
``[0, 1]`` and a float ``t`` in ``(0, 1)``, the time of ``gt`` between ``img0`` (t = 0) and
``img1`` (t = 1).  :func:`make_batch` stacks samples into torch tensors.

Sources
-------
* :class:`VideoTriplets`: frames ``i, i + k, i + n`` of a real clip, ``t = k / n``.
* :class:`SyntheticMotion`: layers cut from still photographs moving under affine motions
  that are linear in time, so the frame at any ``t`` is known exactly.

Validation holds out whole clips (:func:`split_clips`): no frame of a held-out clip is
ever in a training batch.

Typical use::

    paths = find_videos("/path/to/data_train")
    clips = cache_videos(paths, "/path/to/data_train/.cache")
    sources = [VideoTriplets(clips), SyntheticMotion(still_images())]
    batch = make_batch(sources, [0.7, 0.3], 16, 160, np.random.default_rng(0))
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import type_error, value_error

if TYPE_CHECKING:  # pragma: no cover  (VapourSynth is imported where a video is decoded)
    import vapoursynth as vs

__all__ = [
    "VIDEO_SUFFIXES",
    "find_videos",
    "load_video",
    "resolve_source",
    "cache_videos",
    "file_key",
    "split_clips",
    "still_images",
    "VideoTriplets",
    "VideoSequences",
    "Layer",
    "Scene",
    "SyntheticMotion",
    "make_batch",
    "make_sequence_batch",
]

logger = logging.getLogger(__name__)

#: Suffixes read through VapourSynth's bestsource; ``.webp`` is read with Pillow when animated.
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".y4m", ".mpg", ".mpeg"})


Sample = tuple[np.ndarray, np.ndarray, np.ndarray, float]
#: A foreground layer's shape: ``("ellipse" | "rect", a, b, rotation)`` or ``("blob", radius,
#: amplitude, phase, amplitude, phase, amplitude, phase)`` (read by index, by kind: Any).
Shape = tuple[Any, ...]


# --------------------------------------------------------------------------- finding and decoding


def _is_animated_webp(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) > 1
    except OSError:  # unreadable or not a WebP after all
        logger.warning("skipping %s: Pillow cannot read it", path)
        return False


def find_videos(root: str | os.PathLike[str]) -> list[Path]:
    """Video files under ``root``, sorted.

    Files with a suffix in :data:`VIDEO_SUFFIXES` (any case) and animated ``.webp`` files
    (Pillow ``n_frames > 1``; still ones are skipped).  Hidden files and anything inside a
    hidden folder below ``root`` (``.cache``, ``.fetch.*`` leftovers of an interrupted
    fetch) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise value_error("train.data.find_videos", "root", "an existing folder", str(root))
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # never descend into hidden folders
        for name in files:
            path = Path(folder, name)
            suffix = path.suffix.lower()
            if name.startswith(".") or not path.is_file():
                continue
            if suffix in VIDEO_SUFFIXES or (suffix == ".webp" and _is_animated_webp(path)):
                found.append(path)
    return sorted(found)


def _open_webp(path: Path, max_frames: int | None) -> tuple[int, int, int, Iterator[np.ndarray]]:
    from PIL import Image

    with Image.open(path) as im:
        count = getattr(im, "n_frames", 1)
        width, height = im.size
    if max_frames is not None:
        count = min(count, max_frames)

    def frames() -> Iterator[np.ndarray]:
        with Image.open(path) as im:
            for n in range(count):
                im.seek(n)
                yield np.asarray(im.convert("RGB"))

    return count, height, width, frames()


def resolve_source(source: str | Callable[[str], vs.VideoNode] | None) -> Callable[[str], vs.VideoNode]:
    """A VapourSynth source filter: a callable ``source(path_str) -> VideoNode``, or a
    ``"namespace.Function"`` name of any loaded source plugin (``"ffms2.Source"``,
    ``"lsmas.LWLibavSource"``, ...); None is bestsource without index files."""
    import vapoursynth as vs

    if source is None:
        # cachemode=0: no index files written next to the video or in a user cache folder;
        # the clip is decoded once into cache_videos' own cache anyway.
        def bestsource(p: str) -> vs.VideoNode:
            core: Any = vs.core  # its plugin namespaces (bs) are untyped
            return core.bs.VideoSource(p, cachemode=0)

        return bestsource
    if callable(source):
        return source
    ns, _, func = str(source).partition(".")
    plugin = getattr(vs.core, ns, None) if func else None
    if plugin is None or not hasattr(plugin, func):
        raise value_error("train.data", "source", "a callable or the 'namespace.Function' name of a loaded "
                          "VapourSynth source plugin, such as 'bs.VideoSource' or 'ffms2.Source'", source)
    return getattr(plugin, func)


def _open_vs(path: Path, max_frames: int | None, source: str | Callable[[str], vs.VideoNode] | None = None
             ) -> tuple[int, int, int, Iterator[np.ndarray]]:
    import vapoursynth as vs

    core: Any = vs.core  # its plugin namespaces (std, resize) are untyped
    clip = resolve_source(source)(str(path))
    fmt = clip.format
    if fmt is None or clip.width == 0:
        raise value_error("train.data.load_video", "path", "a video with a constant format and size",
                          str(path))
    if fmt.color_family == vs.RGB:
        rgb = clip if fmt.id == vs.RGB24 else core.resize.Bicubic(clip, format=vs.RGB24)
    elif fmt.color_family == vs.GRAY:
        gray = clip if fmt.id == vs.GRAY8 else core.resize.Bicubic(clip, format=vs.GRAY8)
        rgb = core.std.ShufflePlanes([gray, gray, gray], [0, 0, 0], vs.RGB)
    else:
        from ..frames import MATRICES, default_matrix  # the bridge's table and default

        matrix = clip.get_frame(0).props.get("_Matrix")
        if matrix not in MATRICES:
            matrix = default_matrix(clip.width, clip.height)
        # VapourSynth's constant-format YUV clips always have sizes that are multiples of
        # their subsampling, so the resizer needs no crop here.
        rgb = core.resize.Bicubic(clip, format=vs.RGB24, matrix_in=matrix)
    count = rgb.num_frames if max_frames is None else min(rgb.num_frames, max_frames)

    def frames() -> Iterator[np.ndarray]:
        out = np.empty((rgb.height, rgb.width, 3), np.uint8)
        for n in range(count):
            f = rgb.get_frame(n)  # offline data preparation, not a graph callback
            for p in range(3):
                out[:, :, p] = np.asarray(f[p])
            yield out

    return count, rgb.height, rgb.width, frames()


def _open_video(path: Path, max_frames: int | None, source: str | Callable[[str], vs.VideoNode] | None = None
                ) -> tuple[int, int, int, Iterator[np.ndarray]]:
    """(frame count, height, width, iterator of HWC uint8 frames); a yielded array may be reused."""
    if not path.is_file():
        raise value_error("train.data.load_video", "path", "an existing file", str(path))
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise value_error("train.data.load_video", "max_frames", "None or an int >= 1", max_frames)
    if path.suffix.lower() == ".webp":
        return _open_webp(path, max_frames)
    return _open_vs(path, max_frames, source)


def load_video(path: str | os.PathLike[str], *, max_frames: int | None = None,
               source: str | Callable[[str], vs.VideoNode] | None = None) -> np.ndarray:
    """Decode a video into a ``(T, H, W, 3)`` uint8 RGB array (at most ``max_frames`` frames).

    ``.webp`` files are read with Pillow (each frame converted to RGB, alpha dropped);
    everything else through a VapourSynth source filter (``source``: see
    :func:`resolve_source`; bestsource by default) and ``resize.Bicubic`` to RGB24,
    with the matrix from the first frame's ``_Matrix`` prop when it is a known one, else 709
    for frames at least 1280 wide or taller than 576 and 170m (601) otherwise.  The range
    follows the frame's range props (limited when absent).
    """
    path = Path(path)
    count, height, width, frames = _open_video(path, max_frames, source)
    out = np.empty((count, height, width, 3), np.uint8)
    n = 0
    for n, frame in enumerate(frames, 1):
        out[n - 1] = frame
    return out[:n]


def _fit_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(height, width) <= max_side:
        return height, width
    f = max_side / max(height, width)
    return max(1, round(height * f)), max(1, round(width * f))


def _cache_name(path: Path, max_side: int | None) -> str:
    st = path.stat()
    key = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{max_side}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name)[:80]
    return f"{stem}-{digest}.npy"


def cache_videos(paths: Sequence[str | os.PathLike[str]], cache_dir: str | os.PathLike[str], *,
                 max_side: int | None = None,
                 source: str | Callable[[str], vs.VideoNode] | None = None) -> list[np.ndarray]:
    """Decode each video once into ``cache_dir`` and return read-only memory-mapped arrays.

    Each file becomes ``cache_dir/<sanitized file name>-<hash>.npy``, the hash covering the
    resolved path, size, modification time and ``max_side``: a changed file or another
    ``max_side`` decodes again, anything else is reused.  With ``max_side`` the frames are
    shrunk with a box (area) filter so that the longer side is at most ``max_side`` pixels.
    Frames are streamed to disk (a temporary file renamed into place), so a long clip never
    sits in memory.  Returns one ``(T, H, W, 3)`` uint8 array per path, in order.
    """
    if max_side is not None and (not isinstance(max_side, int) or max_side < 16):
        raise value_error("train.data.cache_videos", "max_side", "None or an int >= 16", max_side)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for path in map(Path, paths):
        target = cache_dir / _cache_name(path, max_side)
        if not target.exists():
            _decode_to(path, target, max_side, source)
        out.append(np.load(target, mmap_mode="r"))
    return out


def _decode_to(path: Path, target: Path, max_side: int | None,
               source: str | Callable[[str], vs.VideoNode] | None = None) -> None:
    from PIL import Image

    start = time.perf_counter()
    count, height, width, frames = _open_video(path, None, source)
    h, w = _fit_size(height, width, max_side)
    tmp = target.with_name(f"{target.stem}.tmp-{os.getpid()}.npy")
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, h, w, 3))
        n = 0
        for n, frame in enumerate(frames, 1):
            if (h, w) != (height, width):
                frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BOX))
            arr[n - 1] = frame
        if n != count:
            raise value_error("train.data.cache_videos", "paths", "decodable videos",
                              str(path), f"It announced {count} frames and gave {n}")
        arr.flush()
        del arr
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("cached %s: %d frames, %dx%d -> %dx%d, %.1f s", path, count, width, height, w, h,
                time.perf_counter() - start)


def file_key(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes: the name :func:`split_clips` knows a clip by, the same
    for copies of one file under other names or folders."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_clips(keys: Sequence[str], count: int, seed: int, *,
                eligible: Sequence[bool] | None = None) -> tuple[list[int], list[int]]:
    """Indices ``(train, held_out)`` of clips known by ``keys`` (e.g. :func:`file_key`).

    The ``count`` distinct keys among the eligible clips that come first in the order of
    ``sha256(f"{seed}:{key}")`` are held out, with every clip that shares one of them
    (copies of a file never straddle the split); everything else trains.  The choice
    depends only on the keys, ``seed`` and ``count``: not on the clips' order, names or
    folders, and adding clips keeps a held-out clip held out unless a new one ranks before
    it.  ValueError when fewer than ``count`` distinct eligible keys exist or nothing would
    be left to train on.
    """
    func = "train.data.split_clips"
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise value_error(func, "count", "an int >= 0", count)
    if eligible is None:
        eligible = [True] * len(keys)
    elif len(eligible) != len(keys):
        raise value_error(func, "eligible", f"one flag per key ({len(keys)})", f"{len(eligible)} flags")
    candidates = sorted({k for k, ok in zip(keys, eligible) if ok},
                        key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    if count > len(candidates) or (count and len(set(keys)) <= count):
        raise value_error(func, "count", f"at most {len(candidates)} clips to hold out (the distinct clips "
                          f"long and large enough to validate on) with at least one other left to train on",
                          count, f"{len(keys)} clips, {len(set(keys))} distinct")
    chosen = set(candidates[:count])
    held = [j for j, k in enumerate(keys) if k in chosen]
    return [j for j, k in enumerate(keys) if k not in chosen], held


# --------------------------------------------------------------------------- still images

# skimage.data loader -> the file it reads, shipped inside scikit-image (colour, then grey).
_SKIMAGE_STILLS = {
    "astronaut": "astronaut.png", "coffee": "coffee.png", "chelsea": "chelsea.png",
    "rocket": "rocket.jpg", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "retina": "retina.jpg",
    "stereo_motorcycle": "motorcycle_left.png",
    "camera": "camera.png", "moon": "moon.png", "brick": "brick.png", "grass": "grass.png",
    "gravel": "gravel.png", "coins": "coins.png", "cell": "cell.png",
}


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0 if img.dtype.kind == "f" else img), 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def still_images(min_side: int = 256) -> list[np.ndarray]:
    """Photographs bundled with scikit-image and scikit-learn, as HWC uint8 RGB arrays.

    scikit-image: astronaut, coffee, chelsea, rocket, hubble_deep_field,
    immunohistochemistry, retina, the left stereo_motorcycle view, and the grey camera,
    moon, brick, grass, gravel, coins and cell (repeated into three channels);
    scikit-learn: ``load_sample_images`` (china, flower).  Images whose shorter side is
    below ``min_side`` are left out.  Only files shipped inside the packages are read.
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = []
    for name, filename in _SKIMAGE_STILLS.items():
        # only files shipped in the package: with pooch installed, a missing one would be fetched
        if not os.path.isfile(os.path.join(skimage.data.data_dir, filename)):
            logger.warning("skimage.data.%s is not shipped with this scikit-image; left out", name)
            continue
        img = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            img = img[0]
        images.append(_as_rgb_uint8(img))
    images.extend(_as_rgb_uint8(img) for img in load_sample_images().images)
    return [img for img in images if min(img.shape[:2]) >= min_side]


# --------------------------------------------------------------------------- sources


class Source(Protocol):
    def sample(self, rng: np.random.Generator, crop: int) -> Sample: ...


def _check_crop(func: str, crop: object) -> int:
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 8:
        raise value_error(func, "crop", "an int >= 8", crop)
    return int(crop)


class VideoTriplets:
    """Frame triplets from decoded clips, with t = k / n.

    Each try picks a clip (probability proportional to its length, among clips at least
    ``crop`` pixels on their shorter side), a span ``n`` in ``[2, max_span]`` (at most
    ``T - 1``), a start ``i`` and ``k`` in ``[1, n - 1]``, and gives frames ``i``, ``i + k``,
    ``i + n``.  Augmentations, identical for the three frames: a zoom by a factor drawn from
    ``scale_range`` (raised where the frame would fall below ``crop``; the factor is
    realised as ``crop / S`` for an integer source window ``S``, resized with antialiased
    bilinear filtering), a random crop, horizontal flip (p = 0.5), vertical flip (p = 0.25),
    temporal reversal (p = 0.5: img0 and img1 swap, t becomes 1 - t) and a random channel
    permutation (p = 0.2).

    A window is rejected and drawn again (clip included) when it is static (mean absolute
    difference of img0 and img1, on the zoomed window, below ``min_motion``) or holds a
    scene cut (gt differs from
    an end by more than ``cut_diff``, or from both ends more than twice as much as the ends
    differ from each other plus 0.02).  After ``max_tries`` rejected windows the sample
    falls back to the best rejected one (the most moving window without a cut, else the
    first): a data set of static clips never hangs.  ``stats`` counts the rejections and
    fallbacks; the first fallback is logged as a warning.  Clips shorter than 3 frames are
    ignored.

    ``motion_picks`` > 1 favours large motion: that many accepted windows are drawn and the
    most moving one (mean absolute difference of img0 and img1) is kept.
    """

    def __init__(self, clips: Sequence[np.ndarray], *, max_span: int = 4, min_motion: float = 0.004,
                 scale_range: tuple[float, float] = (0.5, 1.0), cut_diff: float = 0.25,
                 max_tries: int = 10, motion_picks: int = 1) -> None:
        func = "train.data.VideoTriplets"
        for j, clip in enumerate(clips):
            if not isinstance(clip, np.ndarray):
                raise type_error(func, f"clips[{j}]", "a numpy array", clip)
            if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[3] != 3:
                raise value_error(func, f"clips[{j}]", "a (T, H, W, 3) uint8 array",
                                  f"{clip.dtype} array of shape {clip.shape}")
        if not isinstance(max_span, int) or max_span < 2:
            raise value_error(func, "max_span", "an int >= 2", max_span)
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise value_error(func, "scale_range", "(low, high) with 0 < low <= high", scale_range)
        if max_tries < 1:
            raise value_error(func, "max_tries", "an int >= 1", max_tries)
        if isinstance(motion_picks, bool) or not isinstance(motion_picks, int) or motion_picks < 1:
            raise value_error(func, "motion_picks", "an int >= 1", motion_picks)
        self.motion_picks = motion_picks
        self.clips = [clip for clip in clips if clip.shape[0] >= 3]
        if not self.clips:
            raise value_error(func, "clips", "at least one clip of 3 frames or more",
                              f"{len(clips)} clips, none long enough")
        self.max_span = max_span
        self.min_motion = float(min_motion)
        self.scale_range = (float(lo), float(hi))
        self.cut_diff = float(cut_diff)
        self.max_tries = int(max_tries)
        self.stats = {"samples": 0, "static": 0, "cut": 0, "fallback": 0}
        self._eligible: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _pick_clip(self, rng: np.random.Generator, crop: int) -> np.ndarray:
        if crop not in self._eligible:
            idx = np.array([j for j, c in enumerate(self.clips) if min(c.shape[1:3]) >= crop], np.int64)
            if idx.size == 0:
                largest = max(min(c.shape[1:3]) for c in self.clips)
                raise value_error("train.data.VideoTriplets.sample", "crop",
                                  f"at most the shorter side of the largest clip ({largest})", crop)
            cum = np.cumsum([self.clips[j].shape[0] for j in idx], dtype=np.float64)
            self._eligible[crop] = (idx, cum / cum[-1])
        idx, cum = self._eligible[crop]
        j = min(int(np.searchsorted(cum, rng.random(), side="right")), idx.size - 1)
        return self.clips[idx[j]]

    def _draw(self, rng: np.random.Generator, crop: int) -> tuple[np.ndarray, int, int]:
        """Frames i, i + k, i + n of a random window, zoomed to ``crop``: uint8 (3, crop, crop, 3)."""
        clip = self._pick_clip(rng, crop)
        length = clip.shape[0]
        n = int(rng.integers(2, min(self.max_span, length - 1) + 1))
        i = int(rng.integers(0, length - n))
        k = int(rng.integers(1, n))
        return self._zoomed(clip, (i, i + k, i + n), rng, crop), k, n

    def _zoomed(self, clip: np.ndarray, indices: Sequence[int], rng: np.random.Generator, crop: int) -> np.ndarray:
        """Frames ``indices`` of ``clip``, one random window of them zoomed to ``crop``:
        uint8 ``(len(indices), crop, crop, 3)``."""
        height, width = clip.shape[1:3]
        scale = max(rng.uniform(*self.scale_range), crop / min(height, width))
        size = min(max(round(crop / scale), crop), height, width)
        y = int(rng.integers(0, height - size + 1))
        x = int(rng.integers(0, width - size + 1))
        window = np.stack([clip[j, y:y + size, x:x + size] for j in indices])
        if size != crop:  # resize the window only, never the whole frame
            t = torch.from_numpy(window).permute(0, 3, 1, 2)  # channels-last NCHW: the fast uint8 path
            t = F.interpolate(t, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)
            window = t.permute(0, 2, 3, 1).numpy()
        return window

    def _judge(self, window: np.ndarray) -> tuple[str | None, float]:
        a, g, b = window[:, ::2, ::2].astype(np.int16)  # every other pixel is plenty
        d01, d0g, dg1 = (float(np.abs(u - v).mean()) / 255.0 for u, v in ((a, b), (a, g), (g, b)))
        if max(d0g, dg1) > self.cut_diff or min(d0g, dg1) > 2.0 * d01 + 0.02:
            return "cut", d01
        if d01 < self.min_motion:
            return "static", d01
        return None, d01

    def _choose(self, rng: np.random.Generator, crop: int) -> tuple[np.ndarray, int, int, float]:
        """A drawn window that :meth:`_judge` accepts, or the best of ``max_tries`` rejected
        ones, as :meth:`_draw` gives it, and its motion (:meth:`_judge`'s)."""
        best = None
        for _ in range(self.max_tries):
            drawn = self._draw(rng, crop)
            verdict, motion = self._judge(drawn[0])
            if verdict is None:
                chosen = (*drawn, motion)
                break
            self.stats[verdict] += 1
            if best is None or (verdict == "static" and (best[0] == "cut" or motion > best[1])):
                best = (verdict, motion, drawn)
        else:
            if self.stats["fallback"] == 0:
                logger.warning("%s: %d windows in a row rejected (static or scene cut); "
                               "using the best of them. Check the clips.", type(self).__name__, self.max_tries)
            self.stats["fallback"] += 1
            assert best is not None  # max_tries >= 1
            chosen = (*best[2], best[1])
        self.stats["samples"] += 1
        return chosen

    def _choose_moving(self, rng: np.random.Generator, crop: int) -> tuple[np.ndarray, int, int]:
        """:meth:`_choose`, or the most moving of ``motion_picks`` of its windows."""
        chosen = self._choose(rng, crop)
        for _ in range(self.motion_picks - 1):
            other = self._choose(rng, crop)
            if other[3] > chosen[3]:
                chosen = other
        return chosen[:3]

    def sample(self, rng: np.random.Generator, crop: int) -> Sample:
        """One augmented triplet ``(img0, gt, img1, t)``; images float32 ``(3, crop, crop)`` in [0, 1]."""
        crop = _check_crop("train.data.VideoTriplets.sample", crop)
        window, k, n = self._choose_moving(rng, crop)
        return self._augment(window, k, n, rng)

    @staticmethod
    def _augment_frames(window: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """Flips, temporal reversal and channel order of a ``(T, H, W, 3)`` uint8 window as
        views, then one conversion to float ``(T, 3, H, W)``; and whether time was reversed."""
        if rng.random() < 0.5:
            window = window[:, :, ::-1]
        if rng.random() < 0.25:
            window = window[:, ::-1]
        reversed_ = rng.random() < 0.5
        if reversed_:
            window = window[::-1]
        if rng.random() < 0.2:
            window = window[..., rng.permutation(3)]
        out = np.empty((window.shape[0], 3) + window.shape[1:3], np.float32)
        np.multiply(window.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=out)
        return out, reversed_

    @classmethod
    def _augment(cls, window: np.ndarray, k: int, n: int, rng: np.random.Generator) -> Sample:
        out, reversed_ = cls._augment_frames(window, rng)
        if reversed_:
            k = n - k
        return out[0], out[1], out[2], k / n


class VideoSequences(VideoTriplets):
    """Runs of ``length`` frames ``i, i + g, ..., i + (length - 1) g`` from decoded clips,
    with the gap ``g`` in ``[1, max_gap]``: context and targets for frame prediction.

    Sampling, zoom, crop, flips, temporal reversal and channel permutation are those of
    :class:`VideoTriplets` (identical for all frames of a run).  A run is rejected and drawn
    again when its first two frames barely differ (mean absolute difference below
    ``min_motion``) or when it holds a scene cut (a step differing from the run's first
    step by more than ``cut_diff``, or more than three times as much plus 0.02).
    """

    def __init__(self, clips: Sequence[np.ndarray], *, length: int = 4, max_gap: int = 2,
                 min_motion: float = 0.004, scale_range: tuple[float, float] = (0.5, 1.0),
                 cut_diff: float = 0.25, max_tries: int = 10) -> None:
        func = "train.data.VideoSequences"
        if not isinstance(length, int) or length < 3:
            raise value_error(func, "length", "an int >= 3", length)
        if not isinstance(max_gap, int) or max_gap < 1:
            raise value_error(func, "max_gap", "an int >= 1", max_gap)
        super().__init__(clips, max_span=2, min_motion=min_motion, scale_range=scale_range,
                         cut_diff=cut_diff, max_tries=max_tries)
        self.clips = [clip for clip in self.clips if clip.shape[0] >= length]
        if not self.clips:
            raise value_error(func, "clips", f"at least one clip of {length} frames or more",
                              f"{len(clips)} clips, none long enough")
        self.length = length
        self.max_gap = max_gap

    def _draw(self, rng: np.random.Generator, crop: int) -> tuple[np.ndarray, int, int]:
        clip = self._pick_clip(rng, crop)
        frames = clip.shape[0]
        gap = int(rng.integers(1, min(self.max_gap, (frames - 1) // (self.length - 1)) + 1))
        i = int(rng.integers(0, frames - gap * (self.length - 1)))
        return self._zoomed(clip, [i + gap * j for j in range(self.length)], rng, crop), 0, 0

    def _judge(self, window: np.ndarray) -> tuple[str | None, float]:
        w = window[:, ::2, ::2].astype(np.int16)
        steps = [float(np.abs(a - b).mean()) / 255.0 for a, b in zip(w[:-1], w[1:])]
        first = steps[0]
        if max(steps) > self.cut_diff or max(steps) > 3.0 * min(steps) + 0.02:
            return "cut", first
        if first < self.min_motion:
            return "static", first
        return None, first

    def sample(self, rng: np.random.Generator, crop: int) -> np.ndarray:  # type: ignore[override]
        """One augmented run: float32 ``(length, 3, crop, crop)`` in [0, 1]."""
        crop = _check_crop("train.data.VideoSequences.sample", crop)
        window = self._choose(rng, crop)[0]
        return self._augment_frames(window, rng)[0]  # a video played backwards is a video


def make_sequence_batch(source: VideoSequences, batch: int, crop: int,
                        rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A prediction batch from runs of 3 or more frames: ``img0``, ``img1`` (context), ``gt``
    (the frame after them) and, for runs of 4 or more, ``next`` (the one after that)."""
    func = "train.data.make_sequence_batch"
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise value_error(func, "batch", "an int >= 1", batch)
    crop = _check_crop(func, crop)
    runs = torch.from_numpy(np.stack([source.sample(rng, crop) for _ in range(int(batch))]))
    out = {"img0": runs[:, 0], "img1": runs[:, 1], "gt": runs[:, 2]}
    if runs.shape[1] > 3:
        out["next"] = runs[:, 3]
    return out


# --------------------------------------------------------------------------- synthetic motion


@dataclass(frozen=True)
class Layer:
    """One moving layer of a :class:`Scene`.

    The source pixel ``centre`` (x, y) of image ``image`` at pyramid ``level`` sits at screen
    position ``offset + t * shift`` (pixels from the crop centre), rotated by
    ``angle + t * turn`` radians and scaled by ``exp(log_scale + t * log_zoom)`` output pixels
    per source pixel.  ``shape`` is None for the background (covers everything), else
    ``("ellipse", a, b, rot)``, ``("rect", a, b, rot)`` or ``("blob", r, a2, p2, a3, p3, a4, p4)``
    in source pixels around ``centre``; ``edge`` is the width of the soft alpha edge in
    output pixels.
    """

    image: int
    level: int
    centre: tuple[float, float]
    offset: tuple[float, float]
    shift: tuple[float, float]
    angle: float = 0.0
    turn: float = 0.0
    log_scale: float = 0.0
    log_zoom: float = 0.0
    shape: Shape | None = None
    edge: float = 1.0

    def at(self, t: float) -> tuple[float, float, float, float, float]:
        """(dx, dy, angle, scale, extent) at time t; extent bounds the shape's radius on screen."""
        return (self.offset[0] + t * self.shift[0], self.offset[1] + t * self.shift[1],
                self.angle + t * self.turn, math.exp(self.log_scale + t * self.log_zoom),
                _shape_extent(self.shape))


def _shape_extent(shape: Shape | None) -> float:
    if shape is None:
        return math.inf
    kind = shape[0]
    if kind == "ellipse":
        return max(shape[1], shape[2])
    if kind == "rect":
        return math.hypot(shape[1], shape[2])
    return shape[1] * (1.0 + abs(shape[2]) + abs(shape[4]) + abs(shape[6]))


@dataclass(frozen=True)
class Scene:
    """Everything a synthetic triplet is rendered from (see :meth:`SyntheticMotion.render`).

    Colour change: ``v -> (v - 0.5) * (1 + t * contrast) + 0.5 + t * brightness``, clipped
    to [0, 1].  ``noise`` is the standard deviation of the Gaussian noise added to the inputs.
    """

    crop: int
    t: float
    layers: tuple[Layer, ...]
    contrast: float = 0.0
    brightness: float = 0.0
    noise: float = 0.0


class SyntheticMotion:
    """Layers of still photographs under affine motions that are linear in time.

    The background is a region of one image; ``layers`` (low, high) foreground layers (a
    count drawn uniformly, both ends included) are cut from other images with smooth-edged
    ellipses, rectangles or blobs (soft alpha edge of 0.7 to 2 output pixels) and composited
    in order over it, so they occlude each other and the background.  Every layer's
    translation, rotation angle and log-scale are linear in t: the background moves up to
    ``max_shift * crop`` pixels between t = 0 and t = 1 and turns and zooms by up to 5
    degrees and 5 %; foreground layers move up to 1.5 times as far, turn up to 10 degrees
    and zoom up to 8 %.  A global brightness/contrast change linear in t is applied to half
    the samples.

    img0, gt and img1 are rendered by one renderer (bilinear ``grid_sample``,
    ``align_corners=False``) at times 0, t and 1, so gt is exact.  t is 0.5 with probability
    0.5, else uniform in [0.1, 0.9].  Gaussian noise (std uniform in ``[0, noise]`` per
    sample, an independent field for each input) is added to img0 and img1 only; gt stays
    clean.  The fields are windows at random offsets (and signs) of a fixed 3 x 1024 x 1024
    bank of Gaussian values, because a fresh draw per sample would cost more than the rest
    of the sample.

    The images are kept as float32 CHW tensors plus a half-size (2 x 2 mean) copy of each
    (about 15 bytes per source pixel; some 80 MB for :func:`still_images`).  A background
    is zoomed in where its image is too small to cover the crop over the whole motion, and
    a foreground shape is shrunk to fit its image.
    """

    def __init__(self, images: Sequence[np.ndarray], *, max_shift: float = 0.2,
                 layers: tuple[int, int] = (1, 3), noise: float = 0.02) -> None:
        func = "train.data.SyntheticMotion"
        if not images:
            raise value_error(func, "images", "a non-empty list of images", images)
        levels = []
        for j, img in enumerate(images):
            if not isinstance(img, np.ndarray):
                raise type_error(func, f"images[{j}]", "a numpy array", img)
            if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)) \
                    or min(img.shape[:2]) < 16:
                raise value_error(func, f"images[{j}]", "an (H, W, 3) or (H, W) image of 16 px or more",
                                  f"an array of shape {img.shape}")
            full = torch.from_numpy(np.array(_as_rgb_uint8(img))).permute(2, 0, 1).float().div_(255.0)
            pyramid = [full.contiguous()]
            if min(full.shape[1:]) >= 128:
                pyramid.append(F.avg_pool2d(full.unsqueeze(0), 2)[0].contiguous())
            levels.append(pyramid)
        lo, hi = layers
        if not 0 <= lo <= hi:
            raise value_error(func, "layers", "(low, high) with 0 <= low <= high", layers)
        if not 0 <= max_shift <= 2:
            raise value_error(func, "max_shift", "a float in [0, 2]", max_shift)
        if noise < 0:
            raise value_error(func, "noise", "a float >= 0", noise)
        self.images = levels
        self.max_shift = float(max_shift)
        self.layers = (int(lo), int(hi))
        self.noise = float(noise)
        self._bank: torch.Tensor | None = None

    # ---- drawing a scene

    def draw(self, rng: np.random.Generator, crop: int) -> Scene:
        """A random scene for a ``crop`` x ``crop`` triplet."""
        crop = _check_crop("train.data.SyntheticMotion.sample", crop)
        t = 0.5 if rng.random() < 0.5 else float(rng.uniform(0.1, 0.9))
        bg_image = int(rng.integers(len(self.images)))
        layers = [self._draw_background(rng, crop, bg_image)]
        count = int(rng.integers(self.layers[0], self.layers[1] + 1))
        for _ in range(count):
            others = len(self.images) - 1
            j = bg_image if others == 0 else (bg_image + 1 + int(rng.integers(others))) % len(self.images)
            layers.append(self._draw_foreground(rng, crop, j))
        contrast = brightness = 0.0
        if rng.random() < 0.5:
            contrast, brightness = float(rng.uniform(-0.15, 0.15)), float(rng.uniform(-0.08, 0.08))
        noise = float(rng.random()) * self.noise  # drawn even when 0: same scenes for any noise
        return Scene(crop=crop, t=t, layers=tuple(layers), contrast=contrast,
                     brightness=brightness, noise=noise)

    def _motion(self, rng: np.random.Generator, distance: float, degrees: float,
                zoom: float) -> tuple[tuple[float, float], float, float]:
        r, phi = rng.uniform(0.0, distance), rng.uniform(0.0, 2 * math.pi)
        shift = (r * math.cos(phi), r * math.sin(phi))
        turn = math.radians(rng.uniform(-degrees, degrees))
        log_zoom = rng.uniform(-zoom, zoom)
        return shift, turn, log_zoom

    def _draw_background(self, rng: np.random.Generator, crop: int, j: int) -> Layer:
        shift, turn, log_zoom = self._motion(rng, self.max_shift * crop, 5.0, math.log(1.05))
        angle = math.radians(rng.uniform(-10.0, 10.0)) if rng.random() < 0.3 else 0.0
        scale = math.exp(rng.uniform(math.log(0.5), math.log(1.25)))  # screen px per image px
        level = 0
        if scale < 0.8 and len(self.images[j]) > 1:
            level, scale = 1, 2.0 * scale
        h, w = self.images[j][level].shape[1:]
        # Source extent needed around the centre over t in [0, 1] (corners of the crop; the
        # motion is so slight that the ends and the middle bound it), then zoom in if needed.
        half = crop / 2.0
        reach = 0.0
        for t in (0.0, 0.5, 1.0):
            a = abs(angle + t * turn)
            reach = max(reach, (half * (math.cos(a) + math.sin(a)) + math.hypot(*shift) / 2)
                        / math.exp(math.log(scale) + min(0.0, t * log_zoom)))
        need = reach + 2.0  # a 2-pixel margin
        if 2 * need > min(h, w) - 1:
            factor = 2 * reach / (min(h, w) - 5)
            scale *= factor
            need = reach / factor + 2.0
        cx = rng.uniform(need - 0.5, w - 0.5 - need)
        cy = rng.uniform(need - 0.5, h - 0.5 - need)
        # the screen moves by `shift`: the image content moves by it, centre starts at -shift/2
        return Layer(image=j, level=level, centre=(cx, cy), offset=(-shift[0] / 2, -shift[1] / 2),
                     shift=shift, angle=angle, turn=turn, log_scale=math.log(scale), log_zoom=log_zoom)

    def _draw_foreground(self, rng: np.random.Generator, crop: int, j: int) -> Layer:
        shift, turn, log_zoom = self._motion(rng, 1.5 * self.max_shift * crop, 10.0, math.log(1.08))
        level = 1 if len(self.images[j]) > 1 and rng.random() < 0.3 else 0
        h, w = self.images[j][level].shape[1:]
        scale = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
        radius = rng.uniform(0.1, 0.35) * crop / scale  # source px
        kind = ("ellipse", "rect", "blob")[int(rng.integers(3))]
        rot = rng.uniform(0.0, math.pi)
        if kind == "blob":
            amps = rng.uniform(-0.12, 0.12, 3) / np.array([1.0, 1.5, 2.0])
            phases = rng.uniform(0.0, 2 * math.pi, 3)
            shape: Shape = ("blob", radius, float(amps[0]), float(phases[0]), float(amps[1]),
                     float(phases[1]), float(amps[2]), float(phases[2]))
        else:
            aspect = rng.uniform(0.5, 1.0)
            shape = (kind, radius, radius * aspect, rot)
        extent = _shape_extent(shape) + 2.0
        if 2 * extent > min(h, w) - 2:  # too large for this image: shrink the shape to fit
            f = (min(h, w) - 6) / (2 * _shape_extent(shape))
            shape = (kind, shape[1] * f, shape[2] * f, rot) if kind != "blob" else (kind, shape[1] * f) + shape[2:]
            extent = _shape_extent(shape) + 2.0
        cx = rng.uniform(extent - 0.5, w - 0.5 - extent)
        cy = rng.uniform(extent - 0.5, h - 0.5 - extent)
        offset = tuple(rng.uniform(-0.4, 0.4, 2) * crop - np.array(shift) / 2)
        return Layer(image=j, level=level, centre=(cx, cy), offset=(float(offset[0]), float(offset[1])),
                     shift=shift, angle=rng.uniform(-math.pi, math.pi), turn=turn,
                     log_scale=math.log(scale), log_zoom=log_zoom, shape=shape,
                     edge=float(rng.uniform(0.7, 2.0)))

    # ---- rendering

    def render(self, scene: Scene, times: Sequence[float]) -> np.ndarray:
        """Noise-free frames of ``scene`` at ``times``: float32 ``(len(times), 3, crop, crop)``.

        Each layer is sampled for all times in one ``grid_sample`` call (bilinear,
        ``align_corners=False``, the grid ``affine_grid`` would build) from the same source
        pixels, so a frame depends only on the scene and its own time (to float rounding,
        about 1e-6).  Foreground alpha is rasterised once in source coordinates (a fourth
        channel, colour premultiplied by it) and sampled with the colour.
        """
        return self._render(scene, [float(t) for t in times]).clamp_(0.0, 1.0).numpy()

    def _render(self, scene: Scene, times: list[float]) -> torch.Tensor:
        crop = scene.crop
        out = None
        for layer in scene.layers:
            window = (0, crop, 0, crop) if layer.shape is None else _layer_window(layer, times, crop)
            if window is None:
                continue
            sampled = self._sample_layer(layer, times, window, crop)
            if layer.shape is None:  # covers the crop: whatever was below is hidden
                out = sampled
                continue
            if out is None:
                out = torch.zeros((len(times), 3, crop, crop))
            y0, y1, x0, x1 = window
            region = out[:, :, y0:y1, x0:x1]  # colour is premultiplied: region (1 - alpha) + colour
            region.mul_(1.0 - sampled[:, 3:]).add_(sampled[:, :3])
        if out is None:
            out = torch.zeros((len(times), 3, crop, crop))
        if scene.contrast or scene.brightness:
            tt = torch.tensor(times, dtype=torch.float32).view(-1, 1, 1, 1)
            out = (out - 0.5).mul_(1.0 + tt * scene.contrast).add_(0.5 + tt * scene.brightness)
        return out

    def _sample_layer(self, layer: Layer, times: list[float], window: tuple[int, int, int, int],
                      crop: int) -> torch.Tensor:
        """(len(times), 3 or 4, h, w): colour (and alpha for a shaped layer) on the window."""
        y0, y1, x0, x1 = window
        h, w = y1 - y0, x1 - x0
        img = self.images[layer.image][layer.level]
        ih, iw = img.shape[1:]
        # Screen pixel p (from the crop centre) -> source q = centre + M(t) (p - d(t)) with
        # M(t) = R(-angle(t)) / scale(t); the window's pixel centres are p0 + (j, i).
        p0 = np.array([x0 - (crop - 1) / 2.0, y0 - (crop - 1) / 2.0])
        centre = np.asarray(layer.centre)
        rows = []  # source q = mat @ (j, i, 1) for each time
        for t in times:
            dx, dy, angle, scale, extent = layer.at(t)
            c, s = math.cos(angle) / scale, math.sin(angle) / scale
            ex, ey = p0[0] - dx, p0[1] - dy
            rows.append(((c, s, centre[0] + c * ex + s * ey), (-s, c, centre[1] - s * ex + c * ey)))
        mats = np.array(rows)
        if layer.shape is None:  # the source pixels the window's corners reach
            corners = np.array([[0.0, w - 1, 0.0, w - 1], [0.0, 0.0, h - 1, h - 1], [1.0, 1.0, 1.0, 1.0]])
            q = mats @ corners  # (T, 2, 4)
            lo, hi = q.min(axis=(0, 2)), q.max(axis=(0, 2))
        else:  # only the shape's pixels matter: zeros (alpha 0) elsewhere
            zoom = min(math.exp(layer.log_scale), math.exp(layer.log_scale + layer.log_zoom))
            reach = extent + 2.0 * layer.edge / zoom + 2.0
            lo, hi = centre - reach, centre + reach
        rx0 = min(max(math.floor(lo[0]) - 1, 0), iw - 1)
        rx1 = max(min(math.ceil(hi[0]) + 2, iw), rx0 + 1)
        ry0 = min(max(math.floor(lo[1]) - 1, 0), ih - 1)
        ry1 = max(min(math.ceil(hi[1]) + 2, ih), ry0 + 1)
        rw, rh = rx1 - rx0, ry1 - ry0
        src = img[:, ry0:ry1, rx0:rx1]
        if layer.shape is None:
            src = src.contiguous()  # a compact copy samples faster than a view into a large image
        else:
            ux = (torch.arange(rw, dtype=torch.float32) + float(rx0 - centre[0])).view(1, rw)
            uy = (torch.arange(rh, dtype=torch.float32) + float(ry0 - centre[1])).view(rh, 1)
            sd = _signed_distance(layer.shape, ux, uy)  # source px, negative inside
            alpha = sd.mul_(-math.exp(layer.log_scale) / layer.edge).add_(0.5).clamp_(0.0, 1.0)
            src = torch.cat((src * alpha, alpha.unsqueeze(0)))  # premultiplied colour, alpha
        # grid_sample's normalised input coordinates g = G (q - r0) + (1/r - 1), affine in (j, i):
        # g = A @ (j, i, 1), built as a column term plus a row term (what affine_grid builds).
        g = np.array([2.0 / rw, 2.0 / rh])
        a = g[None, :, None] * mats
        a[:, :, 2] += (1.0 - 2.0 * np.array([rx0, ry0])) / (rw, rh) - 1.0
        cols = a[:, :, None, 0] * np.arange(w) + a[:, :, None, 2]  # (T, 2, w)
        rows = a[:, :, None, 1] * np.arange(h)  # (T, 2, h)
        grid = torch.empty((len(times), 2, h, w))  # a permuted view is as fast for grid_sample,
        torch.add(torch.from_numpy(rows.astype(np.float32)).unsqueeze(3),  # and much faster to
                  torch.from_numpy(cols.astype(np.float32)).unsqueeze(2), out=grid)  # fill
        grid = grid.permute(0, 2, 3, 1)
        # The background's grid stays inside its region (see _draw_background), "border" only
        # guards rounding; outside a shape's region alpha (and premultiplied colour) is 0.
        padding = "border" if layer.shape is None else "zeros"
        return F.grid_sample(src.unsqueeze(0).expand(len(times), -1, -1, -1), grid, mode="bilinear",
                             padding_mode=padding, align_corners=False)

    # ---- sampling

    def _noise(self, rng: np.random.Generator, crop: int) -> torch.Tensor:
        size = max(1024, 2 * crop)
        if self._bank is None or self._bank.shape[1] < size:
            bank = np.random.default_rng(0x5EED).standard_normal((3, size, size), dtype=np.float32)
            self._bank = torch.from_numpy(bank)
        y, x = rng.integers(0, self._bank.shape[1] - crop + 1, 2)
        return self._bank[:, y:y + crop, x:x + crop]

    def sample(self, rng: np.random.Generator, crop: int) -> Sample:
        """One triplet ``(img0, gt, img1, t)``; images float32 ``(3, crop, crop)`` in [0, 1]."""
        scene = self.draw(rng, crop)
        frames = self._render(scene, [0.0, scene.t, 1.0])
        if scene.noise > 0:
            for n in (0, 2):
                sigma = scene.noise if rng.random() < 0.5 else -scene.noise
                frames[n].add_(self._noise(rng, scene.crop), alpha=sigma)
        img0, gt, img1 = frames.clamp_(0.0, 1.0).numpy()
        return img0, gt, img1, scene.t


def _layer_window(layer: Layer, times: Sequence[float], crop: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the crop covering a shaped layer at all ``times``, or None if off-screen."""
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for t in times:
        dx, dy, _, scale, extent = layer.at(t)
        reach = extent * scale + layer.edge + 1.0
        cx, cy = dx + (crop - 1) / 2.0, dy + (crop - 1) / 2.0
        x0, x1 = min(x0, cx - reach), max(x1, cx + reach)
        y0, y1 = min(y0, cy - reach), max(y1, cy + reach)
    x0, x1 = max(0, math.floor(x0)), min(crop, math.ceil(x1) + 1)
    y0, y1 = max(0, math.floor(y0)), min(crop, math.ceil(y1) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def _signed_distance(shape: Shape, ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (source px, negative inside) to a shape centred at 0."""
    kind = shape[0]
    if kind == "blob":
        r, a2, p2, a3, p3, a4, p4 = shape[1:]
        phi = torch.atan2(uy, ux)
        edge = r * (1.0 + a2 * torch.cos(2 * phi + p2) + a3 * torch.cos(3 * phi + p3)
                    + a4 * torch.cos(4 * phi + p4))
        return torch.sqrt(ux * ux + uy * uy) - edge
    a, b, rot = shape[1:]
    c, s = math.cos(rot), math.sin(rot)
    u, v = c * ux + s * uy, c * uy - s * ux
    if kind == "rect":
        return torch.maximum(u.abs() - a, v.abs() - b)
    # ellipse: radial distance scaled to the smaller semi-axis (exact on circles)
    rho = torch.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (rho - 1.0) * min(a, b)


# --------------------------------------------------------------------------- batches


def make_batch(sources: Sequence[Source], probs: Sequence[float], batch: int, crop: int,
               rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A training batch: each sample drawn from ``sources[j]`` with probability ``probs[j]``.

    ``probs`` need not sum to 1 (they are normalised).  Returns ``img0``, ``gt``, ``img1``:
    float32 ``(batch, 3, crop, crop)`` in [0, 1], and ``t``: float32 ``(batch, 1, 1, 1)``.
    """
    func = "train.data.make_batch"
    if not sources:
        raise value_error(func, "sources", "a non-empty list of sources", sources)
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (len(sources),) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise value_error(func, "probs", f"{len(sources)} non-negative weights with a positive sum",
                          list(probs))
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise value_error(func, "batch", "an int >= 1", batch)
    crop = _check_crop(func, crop)
    picks = rng.choice(len(sources), size=int(batch), p=p / p.sum())
    images = np.empty((3, int(batch), 3, crop, crop), np.float32)
    ts = np.empty((int(batch), 1, 1, 1), np.float32)
    for b, j in enumerate(picks):
        img0, gt, img1, t = sources[j].sample(rng, crop)
        images[0, b], images[1, b], images[2, b] = img0, gt, img1
        ts[b] = t
    tensors = torch.from_numpy(images)
    return {"img0": tensors[0], "gt": tensors[1], "img1": tensors[2], "t": torch.from_numpy(ts)}
