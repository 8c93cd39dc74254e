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

Inputs are RGB in ``[0, 1]``, ``(B, 3, H, W)`` with H and W multiples of
:meth:`FlowInterpolator.modulo_for` the analysis scale (:attr:`modulo` at scale 1).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlowInterpolator", "warp", "correlation", "SCALES"]

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


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.LeakyReLU(0.1, inplace=True))


def _resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a stack of (x, y) flow fields, scaling the vectors with the image."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    scale_h, scale_w = size[0] / flow.shape[-2], size[1] / flow.shape[-1]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([scale_w, scale_h], device=flow.device, dtype=flow.dtype).repeat(flow.shape[1] // 2)
    return out * scale.view(1, -1, 1, 1)


class _FlowLevel(nn.Module):
    """Flow residual from (cost volume, query features, current flow) at one level."""

    def __init__(self, channels: int, radius: int, coarsest: bool) -> None:
        super().__init__()
        cin = (2 * radius + 1) ** 2 + channels + (0 if coarsest else 2)
        hidden = channels
        self.body = nn.Sequential(_conv(cin, hidden), _conv(hidden, hidden), _conv(hidden, hidden // 2))
        self.head = nn.Conv2d(hidden // 2, 2, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class FlowInterpolator(nn.Module):
    """``channels``: feature width per pyramid level (its length sets the depth);
    ``radius``: cost-volume radius per level, 0 for none (only level 0 may have none: its
    flow is refined by the synthesis network); ``stem``: level 0's downsampling (1, 2 or
    4); ``synth``: width of the synthesis network."""

    def __init__(self, channels: Sequence[int] = (16, 32, 48, 64), radius: Sequence[int] = (0, 2, 3, 4),
                 stem: int = 4, synth: int = 24) -> None:
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
        self.channels, self.radius, self.stem, self.synth = channels, radius, stem, synth
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
        nn.init.zeros_(self.synth_out.bias)

    def modulo_for(self, scale: float) -> int:
        """Input size multiple needed at analysis ``scale``."""
        return int(round(self.modulo / float(scale)))

    # ------------------------------------------------------------------ per pair
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], img * 2.0 - 1.0
        for level in self.encoder:
            x = level(x)
            feats.append(x)
        return feats

    def encode(self, img0: torch.Tensor, img1: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
        """Pair state: full-size frames, analysed-size thumbnails, level-0 features and the
        flows ``(F01, F10)`` at level 0 (pixels of level 0)."""
        if float(scale) not in SCALES:
            raise ValueError(f"FlowInterpolator.encode: scale must be one of {SCALES}; got {scale}")
        b = img0.shape[0]
        pair = torch.cat((img0, img1), 0)
        if scale != 1.0:
            pair = F.interpolate(pair, scale_factor=float(scale), mode="bilinear", align_corners=False, antialias=True)
        feats = self.features(pair)
        swap = lambda x: torch.cat((x[b:], x[:b]), 0)  # noqa: E731  (query frame <-> target frame)
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
        flows = torch.cat((flow[:b], flow[b:]), 1)  # (F01, F10)
        small = F.avg_pool2d(pair, self.stem) if self.stem > 1 else pair
        return (img0, img1, small[:b], small[b:], feats[0][:b], feats[0][b:], flows)

    # ------------------------------------------------------------------ per t
    def synthesize(self, state: tuple[torch.Tensor, ...], t: torch.Tensor) -> torch.Tensor:
        """The frame at ``t`` (``(B, 1, 1, 1)`` in (0, 1)) between the encoded pair."""
        img0, img1, small0, small1, feat0, feat1, flows = state
        t = t.to(flows.dtype)
        f01, f10 = flows[:, :2], flows[:, 2:]
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
        low = feat0.shape[-2:]
        x = torch.cat((
            warp(feat0, ft0), warp(feat1, ft1), warp(small0, ft0), warp(small1, ft1),
            ft0, ft1, t.expand(-1, 1, *low),
        ), 1)
        skip = self.synth_in(x)
        y = F.interpolate(self.synth_down(skip), size=low, mode="bilinear", align_corners=False)
        out = self.synth_out(self.synth_merge(torch.cat((skip, y), 1)))
        dflow = out[:, :4]
        fine = F.pixel_shuffle(out[:, 4:], self.stem) if self.stem > 1 else out[:, 4:]
        size = img0.shape[-2:]
        if tuple(fine.shape[-2:]) != tuple(size):  # analysed at scale < 1
            fine = F.interpolate(fine, size=size, mode="bilinear", align_corners=False)
        mask, residual = fine[:, :1], fine[:, 1:]
        flows_t = _resize_flow(torch.cat((ft0, ft1), 1) + dflow, size)
        w0 = warp(img0, flows_t[:, :2])
        w1 = warp(img1, flows_t[:, 2:])
        v0 = (1 - t) * torch.sigmoid(mask)
        v1 = t * torch.sigmoid(-mask)
        blend = (v0 * w0 + v1 * w1) / (v0 + v1 + 1e-6)
        return (blend + residual).clamp(0.0, 1.0)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.synthesize(self.encode(img0, img1, scale), t)
