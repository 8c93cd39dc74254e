"""Linear blend: the no-motion baseline, ``(1 - t) * I0 + t * I1``."""
from __future__ import annotations

import torch
from torch import nn

from .contract import Capabilities


class LinearBlend(nn.Module):
    """Interpolator interface: ``encode(img0, img1)`` once per pair, ``synthesize(state, t)`` per t."""

    modulo = 1
    capabilities = Capabilities(pair_state=True)

    def encode(self, img0: torch.Tensor, img1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (img0, img1)

    def synthesize(self, state: tuple[torch.Tensor, ...], t: torch.Tensor) -> torch.Tensor:
        img0, img1 = state
        return torch.lerp(img0, img1, t.to(img0.dtype))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.synthesize(self.encode(img0, img1), t)
