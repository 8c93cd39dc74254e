"""VapourSynth frames <-> torch tensors.

The networks see RGB float in ``[0, 1]`` as ``(B, 3, H, W)`` tensors.  Every constant
GRAY, RGB and YUV (4:4:4, 4:2:2, 4:2:0, 4:1:1, 4:4:0) format with 8 to 16-bit integer or
16/32-bit float samples is accepted; the output frame has the input's format and size.

Conversions
-----------
* RGB: integer samples are divided by the peak ``2**bits - 1`` (full range, whatever the
  range props say); float samples are used as they are.
* GRAY: the plane is repeated into three channels; on the way back the three channels
  are averaged.
* YUV: converted with the frame's ``_Matrix`` (709, 470bg/170m (601), 240m, FCC,
  2020ncl) and range (``_Range``, or the older ``_ColorRange``) props.  Absent or
  unspecified, the matrix defaults to
  709 for frames at least 1280 wide or taller than 576 and to 601 (170m) otherwise, and
  the range to limited for integer samples.  Float YUV is always full range, chroma
  centred on 0.  Chroma planes are brought to full size by pixel repetition and back by
  averaging each subsampling block, which makes the pair an exact inverse.
* Values are not clipped on the way in (out-of-gamut YUV stays out of ``[0, 1]``), only
  when integer samples are written back.

Exactness without a network (frame -> tensor -> frame)
------------------------------------------------------
* integer RGB and GRAY: bit-exact; float RGB and GRAY: exact.
* integer YUV: within 1 code value per sample (in practice exact; the float32 matrix
  round trip stays far below half a code value).  Float YUV: within 1e-5 (fp32) or one
  half-float ulp (fp16).

Performance
-----------
Planes are read straight from the frame's memory (strided views, no intermediate copy):
on the CPU they are converted to float32 in one pass; on CUDA the raw integer samples go
through per-thread pinned staging buffers with non-blocking copies, and all arithmetic
runs on the GPU.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import vapoursynth as vs

from .devices import finish_stream
from .errors import value_error

__all__ = ["FrameBridge", "pad_to_modulo", "check_format", "MATRICES", "default_matrix", "PlaneMix"]

# _Matrix prop value -> (Kr, Kb)
MATRICES: Mapping[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470bg (601)
    6: (0.299, 0.114),  # SMPTE 170m (601)
    7: (0.212, 0.087),  # SMPTE 240m
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
_MATRIX_UNSPECIFIED = 2

#: One group of planes' :meth:`FrameBridge.plane_mixes`: the ``(k, 3)`` matrix from an RGB
#: difference to the planes' values, and the ``(low, high)`` bounds of those values.
PlaneMix = tuple[torch.Tensor, tuple[float, float] | tuple[torch.Tensor, torch.Tensor]]


def default_matrix(width: int, height: int) -> int:
    """The matrix assumed for a YUV frame without a usable ``_Matrix`` prop."""
    return 1 if (width >= 1280 or height > 576) else 6


def check_format(clip: vs.VideoNode, *, func: str) -> vs.VideoFormat:
    """Refuse what the bridge can't take: variable format or size, and odd sample types."""
    if clip.format is None or clip.format.id == vs.PresetVideoFormat.NONE:
        raise value_error(func, "clip", "a clip of constant format", clip,
                          "Convert it to one format first, e.g. with resize.Bicubic(format=vs.YUV420P8)")
    if clip.width == 0 or clip.height == 0:
        raise value_error(func, "clip", "a clip of constant size", clip,
                          "Resize it to one size first, e.g. with resize.Bicubic(width=..., height=...)")
    fmt = clip.format
    if fmt.color_family not in (vs.GRAY, vs.RGB, vs.YUV):
        raise value_error(func, "clip", "a GRAY, RGB or YUV clip", clip)
    if fmt.sample_type == vs.INTEGER and not 8 <= fmt.bits_per_sample <= 16:
        raise value_error(func, "clip", "8 to 16-bit integer or 16/32-bit float samples", clip)
    if fmt.sample_type == vs.FLOAT and fmt.bits_per_sample not in (16, 32):
        raise value_error(func, "clip", "8 to 16-bit integer or 16/32-bit float samples", clip)
    return fmt


@dataclass(frozen=True)
class _Yuv:
    kr: float
    kb: float
    y_off: float
    y_scale: float
    c_off: float
    c_scale: float

    def chroma_terms(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What normalised U and V add to Y for R, G and B."""
        kg = 1.0 - self.kr - self.kb
        r_v = 2.0 * (1.0 - self.kr)
        b_u = 2.0 * (1.0 - self.kb)
        return v * r_v, u * (-self.kb * b_u / kg) + v * (-self.kr * r_v / kg), u * b_u


def _full_range(props: Mapping[str, Any]) -> bool:
    """Full-range YUV?  ``_Range`` (R81+: 1 full, 0 limited), else the older
    ``_ColorRange`` (0 full, 1 limited), else limited."""
    if "_Range" in props:
        return int(props["_Range"]) == 1
    if "_ColorRange" in props:
        return int(props["_ColorRange"]) == 0
    return False


class FrameBridge:
    """Converts frames of one format and size to tensors on ``device`` and back.

    Thread-safe: callbacks of several VapourSynth threads may use one bridge at once.
    """

    def __init__(self, fmt: vs.VideoFormat, width: int, height: int, *,
                 device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.format = fmt
        self.width = width
        self.height = height
        self.device = torch.device(device)
        self.dtype = dtype
        self.family = fmt.color_family
        self.is_float = fmt.sample_type == vs.FLOAT
        self.bits = fmt.bits_per_sample
        self.peak = 1.0 if self.is_float else float((1 << self.bits) - 1)
        self.ss_w = fmt.subsampling_w
        self.ss_h = fmt.subsampling_h
        self.np_dtype: type[np.generic]
        if self.is_float:
            self.np_dtype = np.float16 if self.bits == 16 else np.float32
        else:
            self.np_dtype = np.uint8 if fmt.bytes_per_sample == 1 else np.uint16
        self.plane_shapes = [
            (height >> (self.ss_h if p else 0), width >> (self.ss_w if p else 0))
            for p in range(fmt.num_planes)
        ]
        self._cuda = self.device.type == "cuda"
        self._local = threading.local()
        self._yuv_cache: dict[tuple[int, int], _Yuv] = {}
        self._mix_cache: dict[tuple[float, ...], list[PlaneMix]] = {}
        self._yuv_lock = threading.Lock()

    # ------------------------------------------------------------------ frame -> tensor
    def to_tensor(self, frames: Sequence[vs.VideoFrame]) -> torch.Tensor:
        """``(len(frames), 3, H, W)`` RGB tensor of the bridge's dtype on its device."""
        out = torch.empty((len(frames), 3, self.height, self.width), dtype=torch.float32, device=self.device)
        for i, frame in enumerate(frames):
            self._frame_to_rgb(frame, out[i])
        return out.to(self.dtype)

    def _frame_to_rgb(self, frame: vs.VideoFrame, out: torch.Tensor) -> None:
        """Fill ``out`` (3, H, W) float32 with the frame as RGB."""
        if self.family == vs.RGB:
            for p in range(3):
                self._upload(np.asarray(frame[p]), p, out[p])
            if not self.is_float:
                out.div_(self.peak)
            return
        if self.family == vs.GRAY:
            self._upload(np.asarray(frame[0]), 0, out[0])
            if not self.is_float:
                out[0].div_(self.peak)
            out[1:].copy_(out[0].expand(2, -1, -1))
            return
        c = self._yuv(frame.props)
        y = self._upload(np.asarray(frame[0]), 0).sub_(c.y_off).div_(c.y_scale)
        u = self._upload(np.asarray(frame[1]), 1).sub_(c.c_off).div_(c.c_scale)
        v = self._upload(np.asarray(frame[2]), 2).sub_(c.c_off).div_(c.c_scale)
        # Chroma terms at chroma resolution, broadcast over each subsampling block
        # (the same as repeating chroma pixels to full size, without the copies).
        terms = c.chroma_terms(u, v)
        sh, sw = 1 << self.ss_h, 1 << self.ss_w
        hc, wc = u.shape
        yb = y.view(hc, sh, wc, sw)
        for ch, term in enumerate(terms):
            torch.add(yb, term.view(hc, 1, wc, 1), out=out[ch].view(hc, sh, wc, sw))

    def _upload(self, arr: np.ndarray, plane: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """One plane as float32 raw sample values on the device (into ``out`` if given)."""
        if not self._cuda:
            if out is None:
                out = torch.empty(arr.shape, dtype=torch.float32)
            np.copyto(out.numpy(), arr)
            return out
        staging, event = self._staging("up", plane, arr.shape)
        event.synchronize()  # the previous copy out of this buffer has finished
        np.copyto(staging.numpy().view(self.np_dtype), arr)
        raw = staging.to(self.device, non_blocking=True)
        event.record()
        if self.np_dtype == np.uint16:  # staged as int16: undo the sign
            raw = raw.to(torch.int32) & 0xFFFF
        if out is None:
            return raw.to(torch.float32)
        return out.copy_(raw)

    # ------------------------------------------------------------------ tensor -> frame
    def write(self, rgb: torch.Tensor, frame: vs.VideoFrame) -> None:
        """Write a ``(3, H, W)`` (or ``(1, 3, H, W)``) RGB tensor into a writable frame.

        ``frame`` must have the bridge's format and size; its props choose the YUV matrix.
        """
        if rgb.dim() == 4:
            rgb = rgb[0]
        x = rgb.to(torch.float32)
        if self.family == vs.GRAY:
            r, g, b = x.unbind(0)
            gray = g + ((r - g) + (b - g)) / 3.0  # exactly g when the channels agree
            planes = [gray if self.is_float else gray * self.peak]
        elif self.family == vs.RGB:
            planes = list(x.unbind(0)) if self.is_float else list((x * self.peak).unbind(0))
        else:
            c = self._yuv(frame.props)
            kg = 1.0 - c.kr - c.kb

            def luma(t: torch.Tensor) -> torch.Tensor:
                return torch.mul(t[0], c.kr).add_(t[1], alpha=kg).add_(t[2], alpha=c.kb)

            # Block averages commute with the (linear) matrix: pool RGB, then convert.
            small = self._downsample(x)
            y = luma(x)
            y_small = luma(small) if small is not x else y
            u = torch.sub(small[2], y_small).div_(2.0 * (1.0 - c.kb)).mul_(c.c_scale).add_(c.c_off)
            v = torch.sub(small[0], y_small).div_(2.0 * (1.0 - c.kr)).mul_(c.c_scale).add_(c.c_off)
            planes = [y.mul_(c.y_scale).add_(c.y_off), u, v]
        for p, plane in enumerate(planes):
            self._download(plane, np.asarray(frame[p]), p)

    def _download(self, plane: torch.Tensor, dest: np.ndarray, index: int) -> None:
        """Quantize (integer formats) and convert ``plane`` into the frame's memory."""
        if not self.is_float:
            plane = plane.round().clamp_(0.0, self.peak)  # not in place: callers may keep their tensor
        if not self._cuda:
            torch.from_numpy(dest).copy_(plane)  # converts straight into the frame
            return
        staging, _ = self._staging("down", index, dest.shape)
        if self.np_dtype == np.uint16:  # 16-bit samples travel as int16 (same bits)
            plane = torch.where(plane > 32767.0, plane - 65536.0, plane)
        staging.copy_(plane, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        np.copyto(dest, staging.numpy().view(self.np_dtype))

    # ------------------------------------------------------------------ planes
    @property
    def planar(self) -> bool:
        """YUV and GRAY frames can be synthesized in their own planes (see
        :meth:`to_planes`); RGB goes through :meth:`to_tensor` / :meth:`write`."""
        return self.family in (vs.YUV, vs.GRAY)

    def to_planes(self, frame: vs.VideoFrame) -> list[torch.Tensor]:
        """The frame's planes as float sample values (integer codes as they are), grouped
        by size, the full-size group first: ``[(1, k, h, w), ...]`` (4:2:0 YUV:
        ``[Y, UV]``; 4:4:4: ``[YUV]``; GRAY: ``[Y]``).  No arithmetic at full size: the
        range and matrix are applied by :meth:`planes_to_rgb` (after its downscale) and
        :meth:`plane_mixes`."""
        if not self.planar:
            raise ValueError("FrameBridge.to_planes: RGB frames go through to_tensor")
        planes = [self._upload(np.asarray(frame[p]), p) for p in range(self.format.num_planes)]
        if self.family == vs.GRAY or not (self.ss_w or self.ss_h):
            return [torch.stack(planes)[None].to(self.dtype)]
        return [planes[0][None, None].to(self.dtype), torch.stack(planes[1:])[None].to(self.dtype)]

    def _normalisation(self, props: Mapping[str, Any]) -> tuple[float, float, float, float]:
        """(luma offset, luma scale, chroma offset, chroma scale): value = code * scale + offset
        maps codes to luma 0..1 and chroma -0.5..0.5 (GRAY: 0..1)."""
        if self.family == vs.GRAY:
            return 0.0, 1.0 / self.peak, 0.0, 1.0
        c = self._yuv(props)
        return -c.y_off / c.y_scale, 1.0 / c.y_scale, -c.c_off / c.c_scale, 1.0 / c.c_scale

    def planes_to_rgb(self, planes: Sequence[torch.Tensor], props: Mapping[str, Any],
                      scale: float = 1.0) -> torch.Tensor:
        """RGB ``(1, 3, h, w)`` of :meth:`to_planes`' output, downscaled by ``scale``
        (bilinear with antialiasing, each plane from its own size).  At scale 1 it equals
        :meth:`to_tensor` of the frame (chroma repeated over its subsampling blocks)."""
        y = planes[0][:, :1]
        if scale != 1.0:
            y = F.interpolate(y, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        y_add, y_mul, c_add, c_mul = self._normalisation(props)
        y = y * y_mul + y_add
        if self.family == vs.GRAY:
            return y.expand(-1, 3, -1, -1).contiguous()
        uv = planes[0][:, 1:] if len(planes) == 1 else planes[1]
        size = tuple(y.shape[-2:])
        if tuple(uv.shape[-2:]) != size:
            if uv.shape[-2] <= size[0] and uv.shape[-1] <= size[1]:  # repeat over the blocks
                uv = F.interpolate(uv, size=size, mode="nearest")
            else:
                uv = F.interpolate(uv, size=size, mode="bilinear", align_corners=False, antialias=True)
        uv = uv * c_mul + c_add
        return torch.cat([y + term for term in self._yuv(props).chroma_terms(uv[:, :1], uv[:, 1:])], 1)

    def planes_to_luma(self, planes: Sequence[torch.Tensor], props: Mapping[str, Any]) -> torch.Tensor:
        """The luma ``(1, 1, h, w)`` of :meth:`to_planes`' output in 0..1 (black to white)."""
        y_add, y_mul, _, _ = self._normalisation(props)
        return planes[0][:, :1] * y_mul + y_add

    def plane_mixes(self, props: Mapping[str, Any]) -> list[PlaneMix]:
        """Per group of :meth:`to_planes`: the ``(k, 3)`` matrix taking an RGB difference
        (0..1 units) to the planes' sample values, and the ``(low, high)`` bounds of the
        values RGB in 0..1 can give (luma: black to white; chroma: its range; GRAY: 0 to
        peak): numbers, or ``(1, k, 1, 1)`` tensors where the group's planes differ."""
        key = self._normalisation(props)
        cached = self._mix_cache.get(key)
        if cached is not None:
            return cached

        def tensor(values: list[list[float]] | list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=self.device)

        def group(rows: list[list[float]], lo: list[float], hi: list[float]) -> PlaneMix:
            if len(set(lo)) == 1 and len(set(hi)) == 1:  # numbers clamp faster than tensors
                return tensor(rows), (lo[0], hi[0])
            return tensor(rows), (tensor(lo).view(1, -1, 1, 1), tensor(hi).view(1, -1, 1, 1))

        if self.family == vs.GRAY:
            third = self.peak / 3.0 if not self.is_float else 1.0 / 3.0
            mixes = [group([[third] * 3], [0.0], [self.peak])]
        else:
            c = self._yuv(props)
            kg = 1.0 - c.kr - c.kb
            ys, cs = c.y_scale, c.c_scale
            y = [c.kr * ys, kg * ys, c.kb * ys]
            u = [-c.kr / (2 * (1 - c.kb)) * cs, -kg / (2 * (1 - c.kb)) * cs, 0.5 * cs]
            v = [0.5 * cs, -kg / (2 * (1 - c.kr)) * cs, -c.kb / (2 * (1 - c.kr)) * cs]
            y_lo, y_hi, c_lo, c_hi = c.y_off, c.y_off + ys, c.c_off - 0.5 * cs, c.c_off + 0.5 * cs
            if not (self.ss_w or self.ss_h):
                mixes = [group([y, u, v], [y_lo, c_lo, c_lo], [y_hi, c_hi, c_hi])]
            else:
                mixes = [group([y], [y_lo], [y_hi]), group([u, v], [c_lo, c_lo], [c_hi, c_hi])]
        finish_stream(self.device)  # complete before threads on other streams read the cached tensors
        with self._yuv_lock:
            self._mix_cache[key] = mixes
        return mixes

    def write_planes(self, planes: Sequence[torch.Tensor], frame: vs.VideoFrame) -> None:
        """Write :meth:`to_planes`-style groups (sample values) into a writable frame,
        rounded and clamped for integer formats."""
        flat = [g[0, i] for g in planes for i in range(g.shape[1])]
        for p, x in enumerate(flat):
            self._download(x.to(torch.float32), np.asarray(frame[p]), p)

    # ------------------------------------------------------------------ helpers
    def _staging(self, direction: str, plane: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.cuda.Event]:
        """Per-thread pinned buffer (and the event guarding its last copy)."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        key = (direction, plane)
        entry = pool.get(key)
        if entry is None:
            tdtype = {np.uint8: torch.uint8, np.uint16: torch.int16,
                      np.float16: torch.float16, np.float32: torch.float32}[self.np_dtype]
            buf = torch.empty(shape, dtype=tdtype, pin_memory=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            entry = pool[key] = (buf, event)
        return entry

    def _yuv(self, props: Mapping[str, Any]) -> _Yuv:
        matrix = int(props.get("_Matrix", _MATRIX_UNSPECIFIED))
        if matrix == _MATRIX_UNSPECIFIED:
            matrix = default_matrix(self.width, self.height)
        full = self.is_float or _full_range(props)
        key = (matrix, int(full))
        cached = self._yuv_cache.get(key)
        if cached is not None:
            return cached
        if matrix not in MATRICES:
            raise ValueError(
                f"vs_vgan: _Matrix must be one of {sorted(MATRICES)} (or 2, unspecified) for YUV "
                f"input; got {matrix}. Convert the clip to RGB first with resize.Bicubic(format=vs.RGBS)"
            )
        kr, kb = MATRICES[matrix]
        if self.is_float:
            c = _Yuv(kr, kb, 0.0, 1.0, 0.0, 1.0)
        elif full:
            c = _Yuv(kr, kb, 0.0, self.peak, float(1 << (self.bits - 1)), self.peak)
        else:
            s = float(1 << (self.bits - 8))
            c = _Yuv(kr, kb, 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s)
        with self._yuv_lock:
            self._yuv_cache[key] = c
        return c

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        """Average each chroma subsampling block of a ``(C, H, W)`` tensor.

        Pairwise sums (exact for equal values), then one scaling: repeated pixels
        average back to themselves exactly."""
        if not (self.ss_h or self.ss_w):
            return x
        for _ in range(self.ss_h):
            x = x[:, 0::2] + x[:, 1::2]
        for _ in range(self.ss_w):
            x = x[:, :, 0::2] + x[:, :, 1::2]
        return x.mul_(1.0 / (1 << (self.ss_h + self.ss_w)))


def pad_to_modulo(x: torch.Tensor, modulo: int) -> torch.Tensor:
    """Pad ``(..., H, W)`` on the right and bottom to multiples of ``modulo`` (edge
    replication); ``[..., :H, :W]`` of it is ``x`` again."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % modulo, (-w) % modulo
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
