"""VMAF of frames against their ground truth, through libvmaf in ffmpeg: the one helper of
the evaluation scripts (eval_interp.py, eval_predict.py).

What is measured (:data:`VMAF_METHOD`, quoted by the README and the model cards):

* both sides, the method's frames and the ground truth, go through the same conversion:
  the 8-bit RGB frames the scripts score PSNR and SSIM on, to 8-bit YUV 4:2:0, BT.709
  matrix, limited range (Y 16-235, Cb/Cr 16-240), chroma the mean of each 2x2 block, an
  odd width or height padded by repeating the last column or row (:func:`rgb_to_yuv420`);
  no rescaling: VMAF runs at the frames' own size;
* the ffmpeg filter ``libvmaf=model=version=vmaf_v0.6.1:n_threads=N``
  (:data:`VMAF_FILTER`): the default model built into libvmaf (``vmaf_v0.6.1``, luma only,
  scores clipped to 0-100), N the CPUs this process may use, every frame scored
  (``n_subsample=1``);
* the figure is the mean of the per-frame scores over all the scored frames (libvmaf's
  pooled mean where they are one sequence).

VMAF has a temporal feature (the reference's motion from the previous frame of the same
sequence; 0 on a sequence's first frame), so frames are scored as sequences: each label
given to :meth:`VmafBatch.add` is one sequence, in the order added (frames of another size
under the same label form their own sequence).  Give unrelated frames (the Middlebury
triplets) a label each.  Identical frames score about 97.4 without motion (a single frame)
and near 100 with it.

The ffmpeg is the first of ``vs_vgan.ffmpeg.find_ffmpeg()`` and imageio-ffmpeg's static one
(:func:`vs_vgan.ffmpeg.bundled_ffmpeg`) whose ``ffmpeg -filters`` lists ``libvmaf``
(:func:`find_vmaf_ffmpeg`): imageio-ffmpeg's static ffmpeg has libvmaf, many distributions' do not.
Without one, :func:`open_vmaf` says so once and returns None: the scripts then leave VMAF
out.  Frames go to temporary .y4m files (both sides), and one ffmpeg call scores a whole
batch (one libvmaf instance per sequence).  Needs numpy, not VapourSynth or torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Hashable

import numpy as np

from vs_vgan import ffmpeg as vs_ffmpeg
from vs_vgan.ffmpeg import FFmpeg

__all__ = ["VMAF_MODEL", "VMAF_FILTER", "VMAF_METHOD", "MIN_SIDE", "VmafError", "Vmaf", "VmafBatch",
           "rgb_to_yuv420", "has_libvmaf", "find_vmaf_ffmpeg", "open_vmaf", "pooled", "run_batch"]

#: The VMAF model: the default one built into libvmaf.
VMAF_MODEL = "vmaf_v0.6.1"
#: The libvmaf filter as run (``{threads}``: the CPUs this process may use).
VMAF_FILTER = f"libvmaf=model=version={VMAF_MODEL}:n_threads={{threads}}"
#: One sentence for the README and model cards.
VMAF_METHOD = (f"VMAF {VMAF_MODEL} (the default model built into libvmaf, through ffmpeg's "
               f"`{VMAF_FILTER.format(threads='N')}`, every frame scored) on 8-bit YUV 4:2:0 BT.709 "
               "limited range converted identically from both sides' 8-bit RGB, at the frames' own "
               "size; the mean of the per-frame scores")
#: The smallest width and height libvmaf scores (ffmpeg 9's libvmaf crashes below 18x18).
MIN_SIDE = 18

# BT.709 luma coefficients.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB


class VmafError(RuntimeError):
    """ffmpeg failed to score a batch (its message in the text)."""


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit YUV 4:2:0 planes (Y, Cb, Cr; uint8) of an 8-bit RGB image, ``(H, W, 3)`` or
    ``(3, H, W)``: BT.709 matrix, limited range (Y = 16 + 219 E'Y, chroma 128 +- 112),
    chroma the mean of each 2x2 block, rounded once.  An odd width or height is padded by
    repeating the last column or row, so the planes are ``(H', W')`` and ``(H'/2, W'/2)``
    with ``H' = H + H % 2``, ``W' = W + W % 2``."""
    a = np.asarray(rgb)
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[-1]):
        raise ValueError(f"vmaf.rgb_to_yuv420: rgb must be (H, W, 3) or (3, H, W); got shape {a.shape}")
    if a.dtype != np.uint8:
        raise TypeError(f"vmaf.rgb_to_yuv420: rgb must be uint8; got {a.dtype}")
    if a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    h, w = a.shape[:2]
    if h % 2 or w % 2:
        a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    x = a.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    ey = _KR * r + _KG * g + _KB * b
    cb = (b - ey) / (2.0 * (1.0 - _KB))
    cr = (r - ey) / (2.0 * (1.0 - _KR))

    def quarter(c: np.ndarray) -> np.ndarray:
        return 0.25 * (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2])

    def u8(v: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(v), 0, 255).astype(np.uint8)

    return u8(16.0 + 219.0 * ey), u8(128.0 + 224.0 * quarter(cb)), u8(128.0 + 224.0 * quarter(cr))


def has_libvmaf(path: str) -> bool:
    """Whether ``path -filters`` lists the libvmaf filter (False where it does not run)."""
    try:
        out = subprocess.run([path, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(line.split()[1:2] == ["libvmaf"] for line in out.stdout.splitlines())


def _candidates() -> tuple[list[FFmpeg], list[str]]:
    """The ffmpegs to try, in order, and the ones that could not even be named (why)."""
    found, notes = [], []
    try:
        first = vs_ffmpeg.find_ffmpeg()
    except ValueError as exc:  # VS_VGAN_FFMPEG names no executable
        first = None
        notes.append(str(exc))
    if first is not None:
        found.append(first)
    bundled = vs_ffmpeg.bundled_ffmpeg()
    if bundled and all(os.path.realpath(bundled) != os.path.realpath(f.path) for f in found):
        found.append(FFmpeg(bundled, "imageio-ffmpeg"))
    return found, notes


def find_vmaf_ffmpeg() -> FFmpeg | None:
    """The first of ``find_ffmpeg()`` and imageio-ffmpeg's ffmpeg that has libvmaf, or None."""
    return next((f for f in _candidates()[0] if has_libvmaf(f.path)), None)


def open_vmaf(log: Callable[[str], None], threads: int = 0) -> Vmaf | None:
    """A :class:`Vmaf` on :func:`find_vmaf_ffmpeg`'s ffmpeg, saying which on ``log``; where
    none has libvmaf, None, after one ``log`` line saying so and what was tried."""
    candidates, notes = _candidates()
    for k, f in enumerate(candidates):
        if has_libvmaf(f.path):
            vmaf = Vmaf(f, threads)
            skipped = "".join(f"; {g.path} ({g.origin}) has no libvmaf" for g in candidates[:k])
            log(f"VMAF: {VMAF_MODEL} through {f.path} ({f.origin}; {f.version}), n_threads={vmaf.threads}{skipped}")
            return vmaf
    tried = ", ".join(f"{f.path} ({f.origin})" for f in candidates) or "none found"
    log("VMAF left out: no ffmpeg with the libvmaf filter (tried: " + tried + ")"
        + "".join(f"; {n}" for n in notes))
    return None


def pooled(scores: dict[Hashable, list[float]]) -> float:
    """The mean of the per-frame scores of every label (each frame counts once)."""
    values = [s for v in scores.values() for s in v]
    if not values:
        raise ValueError("vmaf.pooled: no frames were scored")
    return float(np.mean(values))


def run_batch(batch: VmafBatch | None, log: Callable[[str], None], what: str,
              ndigits: int = 3) -> tuple[dict[Hashable, list[float]] | None, float | None]:
    """Score ``batch`` (None or empty: VMAF off): its per-frame scores by label and their
    :func:`pooled` mean, rounded; ``(None, None)`` where ffmpeg failed, said on ``log``
    (``what`` names the method), so that a long evaluation keeps its other figures."""
    if batch is None or not len(batch):
        return None, None
    try:
        scores = batch.run()
    except VmafError as exc:
        log(f"{what}: VMAF left out: {exc}")
        return None, None
    return scores, round(pooled(scores), ndigits)


class Vmaf:
    """Scores batches of frames with libvmaf in ``ffmpeg`` (an :class:`FFmpeg` or a path);
    ``threads`` libvmaf's n_threads (0: the CPUs this process may use)."""

    def __init__(self, ffmpeg: FFmpeg | str, threads: int = 0):
        self.ffmpeg = ffmpeg if isinstance(ffmpeg, FFmpeg) else FFmpeg(str(ffmpeg), "given")
        self.threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                   else os.cpu_count() or 1)
        #: libvmaf's version, from the log of the last batch scored (None before).
        self.libvmaf_version: str | None = None

    @property
    def filter(self) -> str:
        """The libvmaf filter string as run (without its log options)."""
        return VMAF_FILTER.format(threads=self.threads)

    def describe(self) -> dict:
        """The model, filter and ffmpeg, for a JSON file's metadata."""
        return dict(model=VMAF_MODEL, filter=self.filter, method=VMAF_METHOD, ffmpeg=self.ffmpeg.path,
                    ffmpeg_origin=self.ffmpeg.origin, ffmpeg_version=self.ffmpeg.version,
                    libvmaf=self.libvmaf_version)

    def batch(self) -> VmafBatch:
        """A new, empty batch of sequences to score in one ffmpeg call."""
        return VmafBatch(self)


class VmafBatch:
    """Frame pairs to score, written to temporary .y4m files as they are added; :meth:`run`
    scores them all in one ffmpeg call (at most :attr:`per_call` sequences a call) and
    deletes the files."""

    per_call = 32

    def __init__(self, vmaf: Vmaf):
        self.vmaf = vmaf
        self._dir = tempfile.TemporaryDirectory(prefix="vs_vgan-vmaf-")
        self._seqs: dict[tuple[Hashable, tuple[int, int]], dict] = {}
        self._order: list[tuple[Hashable, tuple[int, int]]] = []  # the sequence of each frame added

    def add(self, label: Hashable, dist: np.ndarray, ref: np.ndarray) -> None:
        """One frame: ``dist`` the method's, ``ref`` the ground truth, both 8-bit RGB of one
        size, ``(H, W, 3)`` or ``(3, H, W)``, at least :data:`MIN_SIDE` a side.  Frames of one
        label and size form one sequence, in the order added."""
        if np.shape(dist) != np.shape(ref):
            raise ValueError(f"vmaf.add: dist and ref must have one shape; got {np.shape(dist)} and {np.shape(ref)}")
        d, r = rgb_to_yuv420(dist), rgb_to_yuv420(ref)
        size = d[0].shape
        if min(size) < MIN_SIDE:  # the size after padding to even: 17 becomes 18
            shape = np.shape(dist)
            h, w = shape[:2] if shape[-1] == 3 else shape[1:]
            raise ValueError(f"vmaf.add: frames must be at least {MIN_SIDE - 1}x{MIN_SIDE - 1} for libvmaf; "
                             f"got {w}x{h}")
        key = (label, size)
        seq = self._seqs.get(key)
        if seq is None:
            i = len(self._seqs)
            header = f"YUV4MPEG2 W{size[1]} H{size[0]} F24:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n".encode()
            seq = self._seqs[key] = dict(index=i, frames=0, files=[])
            for side in ("d", "r"):
                fh = open(os.path.join(self._dir.name, f"{side}{i}.y4m"), "wb")
                fh.write(header)
                seq["files"].append(fh)
        for fh, planes in zip(seq["files"], (d, r)):
            fh.write(b"FRAME\n")
            for p in planes:
                fh.write(p.tobytes())
        seq["frames"] += 1
        self._order.append(key)

    def __len__(self) -> int:
        return len(self._order)

    def run(self) -> dict[Hashable, list[float]]:
        """Per-frame VMAF of every label, in the order its frames were added.  VmafError when
        ffmpeg fails; the temporary files are gone afterwards either way."""
        try:
            for seq in self._seqs.values():
                for fh in seq["files"]:
                    fh.close()
            keys = list(self._seqs)
            per_seq: dict = {}
            for start in range(0, len(keys), self.per_call):
                per_seq.update(self._score(keys[start:start + self.per_call]))
        finally:
            self._dir.cleanup()
        out: dict[Hashable, list[float]] = {}
        taken = {key: 0 for key in per_seq}
        for key in self._order:
            out.setdefault(key[0], []).append(per_seq[key][taken[key]])
            taken[key] += 1
        return out

    def _score(self, keys: list) -> dict:
        work = Path(self._dir.name)
        cmd = [self.vmaf.ffmpeg.path, "-nostdin", "-hide_banner", "-loglevel", "error"]
        graph, maps = [], []
        for j, key in enumerate(keys):
            i = self._seqs[key]["index"]
            cmd += ["-i", f"d{i}.y4m", "-i", f"r{i}.y4m"]
            # relative log paths (ffmpeg runs in the batch's folder): no filter-string escaping
            graph.append(f"[{2 * j}:v][{2 * j + 1}:v]{self.vmaf.filter}:log_fmt=json:log_path=v{i}.json[o{j}]")
            maps += ["-map", f"[o{j}]", "-f", "null", "-"]
        cmd += ["-filter_complex", ";".join(graph)] + maps
        try:
            run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        except OSError as exc:
            raise VmafError(f"vmaf: could not run {self.vmaf.ffmpeg.path}: {exc}") from exc
        if run.returncode != 0:
            raise VmafError(f"vmaf: {self.vmaf.ffmpeg.path} exited with {run.returncode}: "
                            f"{run.stderr.strip()[-2000:]}")
        scores = {}
        for key in keys:
            seq = self._seqs[key]
            log = json.loads((work / f"v{seq['index']}.json").read_text())
            self.vmaf.libvmaf_version = log.get("version", self.vmaf.libvmaf_version)
            frames = sorted(log["frames"], key=lambda f: f["frameNum"])
            if len(frames) != seq["frames"]:
                raise VmafError(f"vmaf: libvmaf scored {len(frames)} frames of a sequence of {seq['frames']}")
            scores[key] = [float(f["metrics"]["vmaf"]) for f in frames]
        return scores
