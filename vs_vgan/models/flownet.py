"""Flow-based frame interpolation generator (architecture ``"flow"``).

Two stages, so that a pair is analysed once however many in-between frames it yields:

``encode(img0, img1, scale=1.0)`` (once per source pair)
    A shared feature pyramid: level 0 at ``1 / stem`` of the analysed size (a patchify
    convolution, then a 3x3 one), every further level half the previous.  Bidirectional
    flows ``F01`` and ``F10`` are estimated coarse to fine, PWC-style: at each level with a
    radius, the other frame's features are warped by the current flow, a local cost volume
    (correlation over a ``(2r+1)^2`` window) is built, and a small network predicts the
    flow residual from the costs, the query features and the current flow.  Both
    directions share the estimator (they are run as one batch).  ``scale`` < 1 analyses a
    downscaled pair (fewer operations, same output size).

``synthesize(state, t)`` (once per output frame)
    Flows from the middle frame to both ends under a locally linear motion model
    (``Ft0 = -(1-t) t F01 + t^2 F10``, ``Ft1 = (1-t)^2 F01 - t (1-t) F10``), backward warps
    of both frames' level-0 features and thumbnails, and a small encoder-decoder at level 0
    that predicts flow corrections, an occlusion/blend mask and a residual (the last two
    per output pixel, through depth-to-space).  The frame is the visibility-weighted blend
    of both full-resolution frames warped to ``t``, plus the residual: detail comes from
    the real frames, the network decides where it goes.

Inputs are RGB in ``[0, 1]``, ``(B, 3, H, W)`` of any size: the analysed frames are
padded inside (edge replication) to a multiple of :attr:`modulo`, and the full-size work
(warps, blend) runs on the frames as given.  For one frame used in two pairs (a clip),
:meth:`FlowInterpolator.prepare` it once and :meth:`FlowInterpolator.pair` the results.
"""
from __future__ import annotations

import threading
from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .contract import Capabilities

__all__ = ["FlowInterpolator", "FrameAnalysis", "PairState", "warp", "correlation", "convex_upsample", "grow_state",
           "luma_guide", "guide_pyramid", "SCALES"]

# analysis scales the generator accepts (powers of two keep the pyramid exact)
SCALES = (1.0, 0.5, 0.25)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: output(p) = x(p + flow(p)), bilinear, edges replicated."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=flow.dtype)
    xs = torch.arange(w, device=x.device, dtype=flow.dtype)
    gx = (xs.view(1, 1, w) + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys.view(1, h, 1) + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    if x.device.type == "cpu" and x.dtype != torch.float32 and not torch.is_grad_enabled():
        # CPU grid_sample in half precision crashes (segfault) on VapourSynth's threads
        # for level-0 features of 720p frames (torch 2.15); fp32 there costs little
        return F.grid_sample(x.float(), grid.float(), mode="bilinear", padding_mode="border",
                             align_corners=True).to(x.dtype)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def correlation(f0: torch.Tensor, f1: torch.Tensor, radius: int) -> torch.Tensor:
    """Local cost volume: ``out[:, k](p) = mean_c f0(p) * f1(p + d_k)`` for the
    ``(2r+1)^2`` displacements ``d_k`` (row-major, dy outer), zero outside the frame."""
    h, w = f0.shape[-2:]
    k = 2 * radius + 1
    f1 = F.pad(f1, (radius,) * 4)
    scale = 1.0 / f0.shape[1]
    out = [(f0 * f1[:, :, dy:dy + h, dx:dx + w]).sum(1) for dy in range(k) for dx in range(k)]
    return torch.stack(out, 1) * scale


class FrameAnalysis(NamedTuple):
    """:meth:`FlowInterpolator.prepare` of one frame."""
    img: torch.Tensor | None  # the frame as given, (B, 3, H, W)
    feats: list[torch.Tensor]  # feature pyramid of the analysed (downscaled, padded) frame
    low: torch.Tensor  # level-0 features and the analysed frame at level-0 size, concatenated
    scale: float


class PairState(NamedTuple):
    """:meth:`FlowInterpolator.pair` / :meth:`~FlowInterpolator.encode`: what every ``t`` of a pair needs."""
    img0: torch.Tensor | None
    img1: torch.Tensor | None
    low0: torch.Tensor
    low1: torch.Tensor
    flows: torch.Tensor  # (F01, F10) at level 0, in its pixels
    scale: float


#: The range of the network's input (RGB, 0..1 nominal).  Wider than any signal a frame
#: carries (YUV's super-whites and -blacks convert to a little outside 0..1), so that
#: ordinary frames pass unchanged.
INPUT_RANGE = (-1.0, 2.0)


def sanitize(x: torch.Tensor) -> torch.Tensor:
    """The network's input with NaN as mid grey and everything else, infinities included,
    clamped to :data:`INPUT_RANGE`: one bad sample must not turn every activation of the
    network, and so the whole frame, into NaN (finite values such as 1e30 overflow in
    the convolutions and the cost volumes)."""
    return torch.nan_to_num(x, nan=0.5, posinf=INPUT_RANGE[1], neginf=INPUT_RANGE[0]).clamp_(*INPUT_RANGE)


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.LeakyReLU(0.1, inplace=True))


def _enlarge(x: torch.Tensor, factor: int, hdim: int, wdim: int,
             slope_h: torch.Tensor | None = None, slope_w: torch.Tensor | None = None,
             rows: int | None = None) -> torch.Tensor:
    """Whole-number bilinear enlargement (align_corners=False) of ``x`` along its
    ``hdim``/``wdim`` dimensions, as two separable passes (width, then height) of
    ``factor`` lerps: output phase ``p`` of each input sample is a fixed blend of it and
    one neighbour.  Edges are replicated, or extended linearly by ``slope_*`` (the change
    per input sample, broadcast over the other dimensions).  Equal to ``F.interpolate``
    within float rounding and several times faster on the CPU; no autograd (it writes
    into its output).

    ``rows``: only the output rows of the first ``rows`` input rows (``factor`` each),
    the same values as those rows of the whole enlargement (a frame whose padding rows
    are not needed skips them)."""
    s = int(factor)
    n = x.shape[hdim]
    m = n if rows is None else rows
    # the width pass over the rows kept and the one below them (their neighbour) ...
    part = _lerp_pass(_pad_edges(x.narrow(hdim, 0, min(m + 1, n)), wdim, slope_w), wdim, s)
    # ... and the height pass over them, padded as the whole enlargement pads them
    return _lerp_pass(_pad_edges(part, hdim, slope_h).narrow(hdim, 0, m + 2), hdim, s)


def _pad_edges(src: torch.Tensor, dim: int, slope: torch.Tensor | None) -> torch.Tensor:
    """``src`` with one more sample at each end of ``dim``: the edge, extended by ``slope``."""
    n = src.shape[dim]
    lo, hi = src.narrow(dim, 0, 1), src.narrow(dim, n - 1, 1)
    if slope is not None:
        lo, hi = lo - slope, hi + slope
    return torch.cat((lo, src, hi), dim)


def _lerp_pass(padded: torch.Tensor, dim: int, s: int) -> torch.Tensor:
    """One pass of :func:`_enlarge`: the ``n`` inner samples of ``padded`` (``n + 2``
    along ``dim``, a neighbour at each end) each to ``s`` output samples."""
    n = padded.shape[dim] - 2
    shape = list(padded.shape)
    shape[dim] = n
    out = torch.empty(shape[:dim + 1] + [s] + shape[dim + 1:], dtype=padded.dtype, device=padded.device)
    centre = padded.narrow(dim, 1, n)
    for p in range(s):
        d = (2 * p + 1 - s) / (2 * s)
        torch.lerp(centre, padded.narrow(dim, 2 if d >= 0 else 0, n), abs(d), out=out.select(dim + 1, p))
    shape[dim] *= s
    return out.view(shape)


def _upsample_lerp(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)`` of an
    ``(N, C, H, W)`` tensor for an integer ``factor`` (:func:`_enlarge`)."""
    return _enlarge(x, factor, 2, 3)


def _grid_upsample(g: torch.Tensor, factor: int, step: tuple[float, float],
                   rows: int | None = None) -> torch.Tensor:
    """Whole-number bilinear enlargement of a sampling grid ``(B, h, w, 2)`` = identity +
    flow, straight into ``grid_sample``'s layout.  The edges are extended linearly by
    ``step`` (the identity's change per input pixel in x and y), which is replication for
    the flow and exact for the identity: the result is the full-size identity grid plus
    the enlarged flow, with no full-size addition (:func:`_enlarge`, ``rows`` as there)."""
    slope_w = torch.tensor([step[0], 0.0], dtype=g.dtype, device=g.device)
    slope_h = torch.tensor([0.0, step[1]], dtype=g.dtype, device=g.device)
    return _enlarge(g, factor, 1, 2, slope_h, slope_w, rows)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False); the fast exact path for whole-number
    enlargements outside autograd."""
    h, w = x.shape[-2:]
    th, tw = size
    if (th, tw) == (h, w):
        return x
    if th % h == 0 and tw % w == 0 and th // h == tw // w > 1 and not torch.is_grad_enabled():
        return _upsample_lerp(x, th // h)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _resize_flow(flow: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize a stack of (x, y) flow fields, scaling the vectors with the image."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    scale_h, scale_w = size[0] / flow.shape[-2], size[1] / flow.shape[-1]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([scale_w, scale_h], device=flow.device, dtype=flow.dtype).repeat(flow.shape[1] // 2)
    return out * scale.view(1, -1, 1, 1)


#: BT.709 luma weights: the refinement's guide of RGB frames
_LUMA = (0.2126, 0.7152, 0.0722)


def luma_guide(img: torch.Tensor) -> torch.Tensor:
    """BT.709 luma ``(B, 1, h, w)`` of RGB frames ``(B, 3, h, w)`` in 0..1: the guide
    :meth:`FlowInterpolator.refine_flows` takes from RGB frames (the engine takes it from
    the luma plane of YUV and GRAY frames)."""
    r, g, b = _LUMA
    return img[:, :1] * r + img[:, 1:2] * g + img[:, 2:3] * b


def guide_pyramid(luma: torch.Tensor, downs: Sequence[int], have: int = 1) -> dict[int, torch.Tensor]:
    """``{d: luma block-averaged by d}`` for each ``d`` of ``downs`` (powers of two), from a
    luma already block-averaged by ``have``, by halvings.  Sizes that do not divide lose
    their last row or column, as ``avg_pool2d`` does."""
    out: dict[int, torch.Tensor] = {}
    x, at = luma, have
    for d in sorted(set(downs)):
        if d < at:
            raise ValueError(f"guide_pyramid: the luma is averaged by {have}, so it has no level {d}")
        while at < d:
            h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
            x = _block_mean(x[..., :h, :w], 2)
            at *= 2
        out[d] = x
    return out


def _block_mean(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Means of ``factor`` x ``factor`` blocks (a power of two dividing the size), by
    halvings of strided sums: several times faster than ``avg_pool2d`` on the CPU."""
    while factor > 1:
        x = (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]) * 0.25
        factor //= 2
    return x


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the ``size`` x ``size`` window (odd) around each sample, edges replicated
    (separable sums of shifted slices: faster than ``avg_pool2d`` on the CPU)."""
    if size <= 1:
        return x
    r = size // 2
    p = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2:]
    rows = p[..., :, 0:w].clone()
    for i in range(1, size):
        rows += p[..., :, i:i + w]
    out = rows[..., 0:h, :].clone()
    for i in range(1, size):
        out += rows[..., i:i + h, :]
    return out.mul_(1.0 / (size * size))


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``(B, 1, h, w)`` along x and y (one-sided at the edges)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) * 0.5, (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) * 0.5


def _bilinear_logits(s: int, floor: float = 1e-4) -> torch.Tensor:
    """Logits ``(9 * s * s,)`` (channel ``k * s * s + i * s + j``: neighbour ``k`` of the
    3x3, row-major, for output phase ``(i, j)``) whose softmax is the bilinear enlargement
    by ``s`` (align_corners=False), within ``floor`` for the neighbours it does not use."""
    one = torch.zeros(s, 3, dtype=torch.float64)
    for p in range(s):
        d = (2 * p + 1 - s) / (2 * s)
        one[p, 1] = 1 - abs(d)
        one[p, 0 if d < 0 else 2] = abs(d)
    w = one[:, None, :, None] * one[None, :, None, :]  # (i, j, ky, kx)
    return (w + floor).log().permute(2, 3, 0, 1).reshape(-1).float()


def convex_upsample(flow: torch.Tensor, logits: torch.Tensor, s: int) -> torch.Tensor:
    """``flow`` ``(B, C, h, w)`` enlarged ``s`` times, each output pixel the softmax-weighted
    sum of the 3x3 input pixels around its own (edges replicated); ``logits``
    ``(B, 9 * s * s, h, w)`` as :func:`_bilinear_logits` lays them out.  Vectors keep their
    units."""
    b, c, h, w = flow.shape
    weights = logits.view(b, 9, 1, s, s, h, w).softmax(1)
    padded = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    up = None
    for k in range(9):  # a sum of nine broadcast products: far faster on the CPU than einsum's layout
        nb = padded[:, :, k // 3:k // 3 + h, k % 3:k % 3 + w].reshape(b, c, 1, 1, h, w)
        term = weights[:, k] * nb
        up = term if up is None else up + term
    assert up is not None
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * s, w * s)


def grow_state(net: nn.Module, params: dict[str, torch.Tensor]) -> list[str]:
    """Load ``params`` of a smaller configuration of ``net``'s architecture (no level-0
    radius, no ``convex``) into ``net``: every tensor of ``params`` must fit one of
    ``net``'s, and what ``params`` lacks keeps ``net``'s initialisation, which leaves the
    output unchanged (the new flow head and the convex weights start neutral).  Returns the
    names of the parameters it did not have; ValueError for a tensor ``net`` has not, or
    of another shape."""
    own = net.state_dict()
    extra = sorted(k for k in params if k not in own)
    shapes = sorted(k for k in params if k in own and tuple(params[k].shape) != tuple(own[k].shape))
    if extra or shapes:
        raise ValueError(f"grow_state: the weights do not fit a smaller configuration of this network: "
                         f"unknown {extra[:5]}, other shapes {shapes[:5]}")
    missing = sorted(k for k in own if k not in params)
    net.load_state_dict({**own, **params})
    return missing


class _FlowLevel(nn.Module):
    """Flow residual from (cost volume, query features, current flow) at one level."""

    def __init__(self, channels: int, radius: int, coarsest: bool) -> None:
        super().__init__()
        cin = (2 * radius + 1) ** 2 + channels + (0 if coarsest else 2)
        hidden = channels
        self.body = nn.Sequential(_conv(cin, hidden), _conv(hidden, hidden), _conv(hidden, hidden // 2))
        self.head = nn.Conv2d(hidden // 2, 2, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None  # Conv2d's default bias=True
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class FlowInterpolator(nn.Module):
    """``channels``: feature width per pyramid level (its length sets the depth);
    ``radius``: cost-volume radius per level, 0 for none (only level 0 may have none: its
    flow is refined by the synthesis network); ``stem``: level 0's downsampling (1, 2 or
    4); ``synth``: width of the synthesis network; ``convex``: the flows from ``t`` leave
    the synthesis network at the analysed size, each pixel a learned convex combination
    of the 3x3 level-0 flows around it (RAFT's upsampling: motion edges follow the image
    within a level-0 pixel), instead of a bilinear enlargement in :meth:`render`.

    Both additions, a level-0 radius and ``convex``, start as the network without them
    (zero flow residual; convex weights equal to the bilinear ones), so a model of the
    smaller configuration grows into them (:func:`grow_state`).

    ``refine``: Lucas-Kanade steps on the flows from ``t`` after the synthesis network
    (:meth:`refine_flows`; no parameters), coarse to fine: for each step the factor (1, 2,
    4 or 8) by which the frames' luma is block-averaged for it, e.g. ``(4, 2)``; empty for
    none.  Each step is solved over windows of about ``refine_window`` such pixels with
    Tikhonov weight ``refine_lambda``.  A model that analyses motion at a reduced scale
    gains the finer frames' sub-pixel precision there.  Training renders through the steps
    too (``scripts/train_interp.py``), so a model can be fine-tuned with them."""

    #: True for subclasses that synthesize outside the pair (t > 1): the blend weight is
    #: then the network's own, without the visibility prior of t.
    extrapolates = False
    capabilities = Capabilities(pair_state=True, frame_analysis=True, planar=True)

    def __init__(self, channels: Sequence[int] = (16, 32, 48, 64), radius: Sequence[int] = (0, 2, 3, 4),
                 stem: int = 4, synth: int = 24, convex: bool = False, refine: Sequence[int] = (),
                 refine_window: int = 8, refine_lambda: float = 1e-5) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        radius = tuple(int(r) for r in radius)
        if stem not in (1, 2, 4):
            raise ValueError(f"FlowInterpolator: stem must be 1, 2 or 4; got {stem}")
        if len(channels) < 2 or len(radius) != len(channels):
            raise ValueError("FlowInterpolator: channels needs two levels or more and one radius per level; "
                             f"got channels={channels}, radius={radius}")
        if any(r < 0 for r in radius) or any(r == 0 for r in radius[1:]):
            raise ValueError(f"FlowInterpolator: radius must be >= 0, and > 0 above level 0; got {radius}")
        if isinstance(refine, (str, bytes)) or not isinstance(refine, Sequence) \
                or any(isinstance(d, bool) or d not in (1, 2, 4, 8) for d in refine):
            raise ValueError(f"FlowInterpolator: refine must be a list of steps, each 1, 2, 4 or 8; got {refine!r}")
        if int(refine_window) != refine_window or refine_window < 1:
            raise ValueError(f"FlowInterpolator: refine_window must be an int >= 1; got {refine_window!r}")
        if not float(refine_lambda) > 0.0:
            raise ValueError(f"FlowInterpolator: refine_lambda must be > 0; got {refine_lambda!r}")
        self.channels, self.radius, self.stem, self.synth = channels, radius, stem, synth
        self.convex = bool(convex)
        self.refine = tuple(int(d) for d in refine)
        self.refine_window, self.refine_lambda = int(refine_window), float(refine_lambda)
        self.modulo = stem * 2 ** len(channels)
        c0 = channels[0]
        stem_conv = _conv(3, c0, kernel=3) if stem == 1 else nn.Sequential(nn.Conv2d(3, c0, stem, stem), nn.LeakyReLU(0.1, inplace=True))
        enc = [nn.Sequential(stem_conv, _conv(c0, c0))]
        for cin, c in zip(channels, channels[1:]):
            enc.append(nn.Sequential(_conv(cin, c, 2), _conv(c, c)))
        self.encoder = nn.ModuleList(enc)
        top = len(channels) - 1
        self.flow = nn.ModuleList(
            _FlowLevel(c, r, coarsest=(i == top)) if r > 0 else nn.Identity()
            for i, (c, r) in enumerate(zip(channels, radius))
        )
        cin = 2 * c0 + 6 + 4 + 1  # warped features, warped thumbnails, flows, t
        self.synth_in = _conv(cin, synth)
        self.synth_down = nn.Sequential(_conv(synth, 2 * synth, 2), _conv(2 * synth, 2 * synth))
        self.synth_merge = _conv(3 * synth, synth)
        # flow corrections (4) at level 0, then mask (1) and residual (3) per analysed pixel
        self.synth_out = nn.Conv2d(synth, 4 + 4 * stem * stem, 1)
        nn.init.zeros_(self.synth_out.weight)
        assert self.synth_out.bias is not None  # Conv2d's default bias=True
        nn.init.zeros_(self.synth_out.bias)
        if self.convex:
            # 9 logits per analysed pixel (the 3x3 level-0 neighbours), starting at bilinear
            self.synth_up = nn.Conv2d(synth, 9 * stem * stem, 1)
            nn.init.zeros_(self.synth_up.weight)
            assert self.synth_up.bias is not None
            with torch.no_grad():
                self.synth_up.bias.copy_(_bilinear_logits(stem))
        self._grids: dict[tuple[object, ...], torch.Tensor] = {}  # identity sampling grids by size (not parameters)

    def modulo_for(self, scale: float) -> int:
        """Input size multiple needed at analysis ``scale``."""
        return int(round(self.modulo / float(scale)))

    def _scale(self, scale: float, func: str) -> float:
        if float(scale) not in SCALES:
            raise ValueError(f"FlowInterpolator.{func}: scale must be one of {SCALES}; got {scale}")
        return float(scale)

    # ------------------------------------------------------------------ per frame
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], img * 2.0 - 1.0
        for level in self.encoder:
            x = level(x)
            feats.append(x)
        return feats

    def prepare(self, img: torch.Tensor | None, scale: float = 1.0, *,
                analysed: torch.Tensor | None = None) -> FrameAnalysis:
        """One frame's analysis, shared by the two pairs the frame belongs to: the frame
        downscaled by ``scale``, padded (edge replication, right and bottom) to
        :attr:`modulo`, through the feature pyramid.

        ``analysed``: the frame already at the analysis size (``img`` downscaled by
        ``scale``) where the caller has it more cheaply; ``img`` is then only kept for
        :meth:`synthesize` (None when the caller renders its own planes)."""
        scale = self._scale(scale, "prepare")
        x = analysed if analysed is not None else img
        assert x is not None, "FlowInterpolator.prepare: give img or analysed"
        if analysed is None and scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        x = sanitize(x).to(self.synth_out.weight.dtype)  # the network's precision (the frames keep theirs)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.modulo, (-w) % self.modulo
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feats = self.features(x)
        small = F.avg_pool2d(x, self.stem) if self.stem > 1 else x
        return FrameAnalysis(img, feats, torch.cat((feats[0], small), 1), scale)

    # ------------------------------------------------------------------ per pair
    def pair(self, a: FrameAnalysis, b: FrameAnalysis) -> PairState:
        """The pair state of two prepared frames (the flows between them)."""
        if a.scale != b.scale or a.low.shape != b.low.shape:
            raise ValueError("FlowInterpolator.pair: both frames must be prepared at one size and scale")
        n = a.low.shape[0]
        flows = self._flows([torch.cat((fa, fb), 0) for fa, fb in zip(a.feats, b.feats)], n)
        return PairState(a.img, b.img, a.low, b.low, flows, a.scale)

    def encode(self, img0: torch.Tensor, img1: torch.Tensor, scale: float = 1.0) -> PairState:
        """``pair(prepare(img0), prepare(img1))``, both frames in one batch.  Any size:
        the analysis is padded inside, the output of :meth:`synthesize` has the input's."""
        if img0.shape != img1.shape:
            raise ValueError(f"FlowInterpolator.encode: the frames differ in shape: {tuple(img0.shape)} "
                             f"and {tuple(img1.shape)}")
        n = img0.shape[0]
        both = self.prepare(torch.cat((img0, img1), 0), self._scale(scale, "encode"))
        return PairState(img0, img1, both.low[:n], both.low[n:], self._flows(both.feats, n), both.scale)

    def _flows(self, feats: list[torch.Tensor], n: int) -> torch.Tensor:
        """``(F01, F10)`` at level 0 (its pixels) from the pyramids of frames 0 (the first
        ``n`` of the batch) and 1 (the rest)."""
        swap = lambda x: torch.cat((x[n:], x[:n]), 0)  # noqa: E731  (query frame <-> target frame)
        flow = None
        for level in reversed(range(len(feats))):
            f = feats[level]
            if flow is not None:
                flow = _resize_flow(flow, f.shape[-2:])
            if self.radius[level] == 0:
                continue
            target = swap(f) if flow is None else warp(swap(f), flow)
            cost = F.leaky_relu(correlation(f, target, self.radius[level]), 0.1)
            x = torch.cat((cost, f) if flow is None else (cost, f, flow), 1)
            delta = self.flow[level](x)
            flow = delta if flow is None else flow + delta
        assert flow is not None  # every level above 0 has a radius (checked in __init__)
        return torch.cat((flow[:n], flow[n:]), 1)

    def thumbnails(self, state: PairState) -> tuple[torch.Tensor, torch.Tensor]:
        """The analysed frames at level-0 size (for losses on the flows)."""
        c0 = self.channels[0]
        return state.low0[:, c0:], state.low1[:, c0:]

    # ------------------------------------------------------------------ per t
    def fields(self, state: PairState, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthesis network at ``t``: flows from the frame at ``t`` to both ends
        ``(B, 4, h0, w0)`` in level-0 pixels (with ``convex``, on the analysed grid
        ``(B, 4, hf, wf)``, still in level-0 pixels) and ``(B, 4, hf, wf)`` blend logit and RGB
        residual at the analysed (padded) size, for :meth:`render`."""
        flows = state.flows
        t = t.to(flows.dtype)
        f01, f10 = flows[:, :2], flows[:, 2:]
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
        c0 = self.channels[0]
        w0, w1 = warp(state.low0, ft0), warp(state.low1, ft1)  # level-0 features and thumbnails
        low = state.low0.shape[-2:]
        x = torch.cat((w0[:, :c0], w1[:, :c0], w0[:, c0:], w1[:, c0:], ft0, ft1, t.expand(-1, 1, *low)), 1)
        skip = self.synth_in(x)
        y = F.interpolate(self.synth_down(skip), size=low, mode="bilinear", align_corners=False)
        merged = self.synth_merge(torch.cat((skip, y), 1))
        out = self.synth_out(merged)
        fine = F.pixel_shuffle(out[:, 4:], self.stem) if self.stem > 1 else out[:, 4:]
        flows_t = torch.cat((ft0, ft1), 1) + out[:, :4]
        if self.convex:
            flows_t = convex_upsample(flows_t, self.synth_up(merged), self.stem)
        return flows_t, fine

    def synthesize(self, state: PairState, t: torch.Tensor) -> torch.Tensor:
        """The frame at ``t`` (``(B, 1, 1, 1)`` in (0, 1)) between the encoded pair, at
        the size of the frames given to :meth:`prepare` / :meth:`encode`."""
        assert state.img0 is not None and state.img1 is not None, "a pair state prepared with img=None has no frames"
        flows_t, fine = self.refined_fields(state, t)
        return self.render(flows_t, fine, t, state.scale, state.img0, state.img1)

    def refined_fields(self, state: PairState, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`fields`, the flows then through :meth:`refine_flows` guided by the BT.709
        luma of the pair state's RGB frames (what :meth:`synthesize` renders, and training
        too).  The planar path of the engine guides by the luma plane instead."""
        flows_t, fine = self.fields(state, t)
        if self.refine:
            assert state.img0 is not None and state.img1 is not None, "refinement needs the pair state's frames"
            flows_t = self.refine_flows(flows_t, t, state.scale, self.refine_guides(luma_guide(state.img0)),
                                        self.refine_guides(luma_guide(state.img1)))
        return flows_t, fine

    def refine_guides(self, luma: torch.Tensor) -> dict[int, torch.Tensor]:
        """A frame's guides for :meth:`refine_flows` from its luma ``(B, 1, h, w)`` in 0..1."""
        return guide_pyramid(luma, self.refine)

    def refine_flows(self, flows_t: torch.Tensor, t: torch.Tensor, scale: float,
                     guides0: Mapping[int, torch.Tensor], guides1: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """The flows from ``t`` of :meth:`fields` after the Lucas-Kanade steps of :attr:`refine`.

        ``guides0``, ``guides1``: per step's factor ``d``, the frame's luma ``(B, 1, h // d,
        w // d)`` in 0..1, block-averaged by ``d`` (:func:`guide_pyramid`).  Each step warps
        both guides to ``t`` and corrects the motion ``m`` (``F01``) by the Gauss-Newton
        step that makes them agree: with ``G`` the gradient of their blend at ``t`` and
        ``e`` their difference, ``m = -(sum G G^T + lambda I)^-1 sum G e`` over a window
        around each point of the flows' grid, clamped to one guide pixel; the flows to frame
        0 move by ``-t m``, those to frame 1 by ``(1 - t) m``.  The sums are taken at the
        coarser of the flows' grid and the guide's (block means, then a box with edges
        replicated), so a step costs a few operations at its guide's size."""
        flows = flows_t
        for d in self.refine:
            flows = self._lucas_kanade(flows, t, scale, d, guides0[d], guides1[d])
        return flows

    def _lucas_kanade(self, flows: torch.Tensor, t: torch.Tensor, scale: float, d: int,
                      guide0: torch.Tensor, guide1: torch.Tensor) -> torch.Tensor:
        """One step of :meth:`refine_flows` on guides block-averaged by ``d``."""
        dtype = flows.dtype
        t = t.to(dtype)
        hf, wf = flows.shape[-2:]
        # the analysed (padded) frame at the guide's resolution, and how it relates to the flows' grid
        gh, gw = round(hf / scale / d), round(wf / scale / d)
        g0, g1 = (F.pad(g.to(dtype), (0, max(gw - g.shape[-1], 0), 0, max(gh - g.shape[-2], 0)),
                        mode="replicate")[..., :gh, :gw] for g in (guide0, guide1))
        k = self.stem / scale / d  # guide pixels per level-0 pixel (the flows' unit)
        up = gh // hf if gh % hf == 0 and gw == wf * (gh // hf) else 0  # guide pixels per flow cell
        up = up if up & (up - 1) == 0 else 0  # (a power of two, as the scales and the steps are)
        if up == 0 and gh >= hf:
            raise ValueError(f"FlowInterpolator.refine_flows: the guides ({gh}x{gw} padded) are not a power-of-two "
                             f"enlargement of the flows' grid ({hf}x{wf})")
        cells = max(1, self.refine_window // up) if up >= 2 else self.refine_window
        cells += 1 - cells % 2  # odd: the window centred
        lam = self.refine_lambda
        dx, dy = 2.0 / max(gw - 1, 1), 2.0 / max(gh - 1, 1)
        norm = torch.tensor([k * dx, k * dy] * 2, dtype=dtype, device=flows.device).view(1, 4, 1, 1)
        if up >= 1 and not torch.is_grad_enabled():  # identity + flow on the flows' grid, enlarged into the grids
            base = self._base_grid(hf, wf, flows.device, dtype, stride=up, step=(dx, dy))
            low = (flows * norm).permute(0, 2, 3, 1)
            grids = [low[..., i:i + 2] + base for i in (0, 2)]
            if up > 1:
                grids = [_grid_upsample(g, up, (up * dx, up * dy)) for g in grids]
            w0, w1 = (F.grid_sample(g, grid, mode="bilinear", padding_mode="border", align_corners=True)
                      for g, grid in zip((g0, g1), grids))
        else:  # the guides coarser than the flows' grid, or training (the fast path writes in place)
            fu = F.interpolate(flows, size=(gh, gw), mode="bilinear", align_corners=False, antialias=gh < hf) * k
            w0, w1 = warp(g0, fu[:, :2]), warp(g1, fu[:, 2:])
        gx, gy = _gradients(torch.lerp(w1, w0, t))  # (1 - t) grad w1 + t grad w0
        e = w1 - w0
        if torch.is_grad_enabled():
            sums = torch.cat((gx * gx, gx * gy, gy * gy, gx * e, gy * e), 1)
        else:  # into one buffer, without the copies of a cat
            sums = torch.empty((flows.shape[0], 5, gh, gw), dtype=dtype, device=flows.device)
            for i, (p, q) in enumerate(((gx, gx), (gx, gy), (gy, gy), (gx, e), (gy, e))):
                torch.mul(p, q, out=sums[:, i:i + 1])
        m = _box_mean(_block_mean(sums, up) if up >= 2 else sums, cells)
        a, bb, c = m[:, 0:1] + lam, m[:, 1:2], m[:, 2:3] + lam
        ex, ey = m[:, 3:4], m[:, 4:5]
        det = a * c - bb * bb
        delta = torch.cat(((bb * ey - c * ex) / det, (bb * ex - a * ey) / det), 1).clamp_(-1.0, 1.0) / k
        if delta.shape[-2:] != (hf, wf):
            delta = F.interpolate(delta, size=(hf, wf), mode="bilinear", align_corners=False)
        return flows + torch.cat((-t * delta, (1 - t) * delta), 1)

    def render(self, flows_t: torch.Tensor, fine: torch.Tensor, t: torch.Tensor, scale: float,
               img0: torch.Tensor, img1: torch.Tensor, *, size: tuple[int, int] | None = None,
               mix: torch.Tensor | None = None,
               bounds: tuple[float, float] | tuple[torch.Tensor, torch.Tensor] = (0.0, 1.0)) -> torch.Tensor:
        """The output from :meth:`fields`: ``img0`` and ``img1`` (``(B, k, h, w)``) warped
        to ``t``, blended by visibility, plus the residual, clamped to ``bounds``.

        By default the images are the RGB frames (``size`` is theirs).  For frames kept in
        their own planes (YUV, GRAY), call it once per group of equally sized planes:
        ``size`` is the full frame's (the luma plane's), the planes' own size gives their
        subsampling, ``mix`` ``(k, 3)`` maps the RGB residual to the planes' values (it
        is linear), and ``bounds`` are per-plane ``(low, high)`` tensors ``(1, k, 1, 1)``
        or numbers.  The warp, blend and residual then run at each plane's resolution.
        """
        h, w = img0.shape[-2:]
        full_h, full_w = size if size is not None else (h, w)
        # the full-size work in the frames' precision, whatever the network's
        flows_t, fine, t = flows_t.to(img0.dtype), fine.to(img0.dtype), t.to(img0.dtype)
        # flows in level-0 pixels -> normalised coordinates of this plane (align_corners=True),
        # scaled at low resolution (the resize is linear)
        ratio = self.stem / scale
        norm = torch.tensor([ratio * (w / full_w) * 2.0 / max(w - 1, 1), ratio * (h / full_h) * 2.0 / max(h - 1, 1)],
                            device=flows_t.device, dtype=flows_t.dtype)
        flows_t = flows_t * norm.repeat(2).view(1, 4, 1, 1)
        if mix is not None:  # residual in the planes' terms
            fine = torch.cat((fine[:, :1], F.conv2d(fine[:, 1:], mix.to(fine.dtype)[:, :, None, None])), 1)
        # blend weight: v0 / (v0 + v1) with v0 = (1-t) sigmoid(m), v1 = t sigmoid(-m), which is
        # sigmoid(m + log((1-t)/t)): the shift is added before the (linear) resize
        if not self.extrapolates:
            tc = t.clamp(1e-6, 1 - 1e-6)
            logit = fine[:, :1] + torch.log((1 - tc) / tc)
            fine = torch.cat((logit, fine[:, 1:]), 1)
        fh, fw = fine.shape[-2:]
        target = (round(fh / scale * h / full_h), round(fw / scale * w / full_w))  # the plane, padded
        flows_t = _upsample(flows_t, (fh, fw))  # level 0 -> fine's grid (the stem)
        th, tw = target
        if th % fh == 0 and tw % fw == 0 and th // fh == tw // fw and not torch.is_grad_enabled():
            # identity + flow at fine's grid, enlarged into the sampling grids directly,
            # only the rows the plane needs (not the analysis' padding below it)
            k = th // fh
            dx, dy = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
            base = self._base_grid(fh, fw, flows_t.device, flows_t.dtype, stride=k, step=(dx, dy))
            low = flows_t.permute(0, 2, 3, 1)
            grids = [low[..., i:i + 2] + base for i in (0, 2)]
            if k > 1:
                rows = -(-h // k)
                grids = [_grid_upsample(g, k, (k * dx, k * dy), rows) for g in grids]
                fine = _enlarge(fine, k, 2, 3, rows=rows)
            grid0, grid1 = (g[:, :h, :w] for g in grids)
        else:
            if target != (fh, fw):
                flows_t = _upsample(flows_t, target)
                fine = _upsample(fine, target)
            base = self._base_grid(h, w, flows_t.device, flows_t.dtype)
            up = flows_t[:, :, :h, :w].permute(0, 2, 3, 1)
            grid0, grid1 = base + up[..., :2], base + up[..., 2:]
        fine = fine[:, :, :h, :w]
        warped0 = F.grid_sample(img0, grid0.to(img0.dtype), mode="bilinear", padding_mode="border", align_corners=True)
        warped1 = F.grid_sample(img1, grid1.to(img1.dtype), mode="bilinear", padding_mode="border", align_corners=True)
        a = torch.sigmoid(fine[:, :1])
        frame = torch.lerp(warped1, warped0, a.to(warped0.dtype)) + fine[:, 1:]
        if torch.is_grad_enabled():
            return frame.clamp(*bounds)
        return frame.clamp_(*bounds)

    def _base_grid(self, h: int, w: int, device: torch.device, dtype: torch.dtype, stride: int = 1,
                   step: tuple[float, float] | None = None) -> torch.Tensor:
        """Identity sampling grid ``(1, h, w, 2)`` in normalised coordinates (cached).
        With ``stride`` k > 1: the identity of a k-times larger frame (of normalised pixel
        ``step``) at the centres of its k x k blocks, which bilinear enlargement by k
        turns into that frame's identity.  On CUDA each thread has its own (threads run on
        their own streams, and a grid made on one stream may not be complete on another)."""
        key = (h, w, str(device), dtype, stride, step, threading.get_ident() if device.type == "cuda" else 0)
        grid = self._grids.get(key)
        if grid is None:
            dx, dy = step if step is not None else (2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1))
            offset = (stride - 1) / 2.0
            xs = -1.0 + (torch.arange(w, dtype=torch.float64) * stride + offset) * dx
            ys = -1.0 + (torch.arange(h, dtype=torch.float64) * stride + offset) * dy
            grid = torch.stack((xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)), -1)[None]
            grid = grid.to(device=device, dtype=dtype)
            if len(self._grids) > 64:
                self._grids.clear()
            self._grids[key] = grid
        return grid

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.synthesize(self.encode(img0, img1, scale), t)
