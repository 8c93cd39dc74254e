"""Flow-based frame interpolation generator.

Two stages, so that a pair is analysed once however many in-between frames it yields:

``encode(img0, img1)`` (once per source pair)
    A shared feature pyramid (``len(channels)`` levels, each halving the size) and a
    coarse-to-fine estimate of the bidirectional flows ``F01`` and ``F10`` at half
    resolution: at every level the other frame's features are warped by the current
    flows and a small network predicts a flow residual.

``synthesize(state, t)`` (once per output frame)
    Flows from the middle frame to both ends under a locally linear motion model
    (``Ft0 = -(1-t) t F01 + t^2 F10``, ``Ft1 = (1-t)^2 F01 - t (1-t) F10``), backward warps
    of both frames and of their finest features, and a small encoder-decoder at half
    resolution that predicts flow corrections, an occlusion/blend mask and a residual.
    The frame is ``visibility-weighted blend + residual``, computed at full resolution.

Inputs are RGB in ``[0, 1]``, ``(B, 3, H, W)`` with H and W multiples of :attr:`modulo`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlowInterpolator", "warp"]


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: output(p) = x(p + flow(p)), bilinear, edges replicated."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=flow.dtype)
    xs = torch.arange(w, device=x.device, dtype=flow.dtype)
    gx = (xs.view(1, 1, w) + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys.view(1, h, 1) + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


def _resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a stack of (x, y) flow fields, scaling the vectors with the image."""
    scale_h, scale_w = size[0] / flow.shape[-2], size[1] / flow.shape[-1]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([scale_w, scale_h], device=flow.device, dtype=flow.dtype).repeat(flow.shape[1] // 2)
    return out * scale.view(1, -1, 1, 1)


class _FlowLevel(nn.Module):
    """Predicts a residual for the pair of flows (F01, F10) at one pyramid level."""

    def __init__(self, channels: int, hidden: int, coarsest: bool) -> None:
        super().__init__()
        cin = 2 * channels if coarsest else 4 * channels + 4
        self.body = nn.Sequential(_conv(cin, hidden), _conv(hidden, hidden), _conv(hidden, hidden))
        self.head = nn.Conv2d(hidden, 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class FlowInterpolator(nn.Module):
    """``channels``: feature width per pyramid level (its length sets the depth);
    ``hidden``: width of the flow estimators; ``synth``: width of the synthesis net."""

    def __init__(self, channels: Sequence[int] = (24, 48, 72, 96), hidden: int = 64, synth: int = 48) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.channels = channels
        self.modulo = 2 ** (len(channels) + 1)
        enc, cin = [], 3
        for c in channels:
            enc.append(nn.Sequential(_conv(cin, c, 2), _conv(c, c)))
            cin = c
        self.encoder = nn.ModuleList(enc)
        self.flow = nn.ModuleList(
            _FlowLevel(c, max(hidden * c // channels[-1], 16), coarsest=(i == len(channels) - 1))
            for i, c in enumerate(channels)
        )
        c0 = channels[0]
        cin = 2 * c0 + 6 + 4 + 1  # warped features, warped images, flows, t
        self.synth_in = nn.Sequential(_conv(cin, synth), _conv(synth, synth))
        self.synth_down = nn.Sequential(_conv(synth, synth * 2, 2), _conv(synth * 2, synth * 2))
        self.synth_up = nn.Sequential(nn.ConvTranspose2d(synth * 2, synth, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.synth_out = nn.Sequential(_conv(2 * synth, synth), nn.Conv2d(synth, 4 + 1 + 3, 3, 1, 1))

    # ------------------------------------------------------------------ per pair
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], img
        for level in self.encoder:
            x = level(x)
            feats.append(x)
        return feats

    def encode(self, img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Pair state: ``(img0, img1, feat0, feat1, flows)``; feat at 1/2, flows (F01, F10) at 1/2."""
        both = self.features(torch.cat((img0, img1), 0))
        b = img0.shape[0]
        flows = None
        for level in reversed(range(len(both))):
            f0, f1 = both[level][:b], both[level][b:]
            if flows is None:
                flows = self.flow[level](torch.cat((f0, f1), 1))
            else:
                flows = _resize_flow(flows, f0.shape[-2:])
                w1 = warp(f1, flows[:, :2])
                w0 = warp(f0, flows[:, 2:])
                flows = flows + self.flow[level](torch.cat((f0, w1, f1, w0, flows), 1))
        return (img0, img1, both[0][:b], both[0][b:], flows)

    # ------------------------------------------------------------------ per t
    def synthesize(self, state: tuple[torch.Tensor, ...], t: torch.Tensor) -> torch.Tensor:
        """The frame at ``t`` (``(B, 1, 1, 1)`` in (0, 1)) between the encoded pair."""
        img0, img1, feat0, feat1, flows = state
        t = t.to(flows.dtype)
        f01, f10 = flows[:, :2], flows[:, 2:]
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
        half = feat0.shape[-2:]
        small0 = F.interpolate(img0, size=half, mode="bilinear", align_corners=False)
        small1 = F.interpolate(img1, size=half, mode="bilinear", align_corners=False)
        x = torch.cat((
            warp(feat0, ft0), warp(feat1, ft1), warp(small0, ft0), warp(small1, ft1),
            ft0, ft1, t.expand(-1, 1, *half),
        ), 1)
        skip = self.synth_in(x)
        y = self.synth_up(self.synth_down(skip))
        out = self.synth_out(torch.cat((skip, y), 1))
        dflow, mask, residual = out[:, :4], out[:, 4:5], out[:, 5:]
        full = img0.shape[-2:]
        flows_t = _resize_flow(torch.cat((ft0, ft1), 1) + dflow, full)
        mask = F.interpolate(mask, size=full, mode="bilinear", align_corners=False)
        residual = F.interpolate(residual, size=full, mode="bilinear", align_corners=False)
        w0 = warp(img0, flows_t[:, :2])
        w1 = warp(img1, flows_t[:, 2:])
        v0 = (1 - t) * torch.sigmoid(mask)
        v1 = t * torch.sigmoid(-mask)
        blend = (v0 * w0 + v1 * w1) / (v0 + v1 + 1e-6)
        return (blend + residual).clamp(0.0, 1.0)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.encode(img0, img1), t)
