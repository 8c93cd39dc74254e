"""Multi-scale temporal patch discriminator (pix2pixHD-style) for frame interpolation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["TemporalDiscriminator"]

_KERNEL = 4
_PAD = 2  # pix2pixHD's ceil((4 - 1) / 2): every 4x4 conv maps a size s >= 1 to s // stride + 1 >= 1
_HEAD_KERNEL = 3


def _sn_conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, padding))


class _PatchNet(nn.Module):
    """One scale: ``layers`` 4x4 spectral-normalised convs with LeakyReLU(0.2), then a 3x3 head."""

    def __init__(self, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for i in range(layers):
            cout = channels * min(2 ** i, 8)
            stride = 2 if i < layers - 1 else 1
            blocks.append(nn.Sequential(_sn_conv(cin, cout, _KERNEL, stride, _PAD), nn.LeakyReLU(0.2)))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = _sn_conv(cin, 1, _HEAD_KERNEL, 1, _HEAD_KERNEL // 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.head(x), feats


class TemporalDiscriminator(nn.Module):
    """Multi-scale patch discriminator that judges a middle frame in its temporal context.

    ``forward(img0, mid, img1)`` takes three ``(B, 3, H, W)`` frames in ``[0, 1]`` (``mid``
    real or synthesized), concatenates them to 9 channels mapped to ``[-1, 1]`` and runs one
    patch network per scale, the input being average-pooled (3x3, stride 2, padding 1,
    ``count_include_pad=False``, as pix2pixHD) between scales. It returns ``(logits,
    features)``: ``logits`` a list, finest scale first, of ``(B, 1, h_s, w_s)`` maps, and
    ``features`` a list per scale of the ``layers`` intermediate activations (for
    :func:`~vs_vgan.train.losses.feature_matching`).

    Each patch network has ``layers`` 4x4 convs (padding 2, stride 2 for all but the last,
    which has stride 1; widths ``channels * 2**i`` capped at ``8 * channels``; LeakyReLU 0.2)
    and a 3x3 conv to one channel. Every conv is wrapped in spectral normalisation; there is
    no other normalisation. The padding keeps every spatial size >= 1, so any input size
    works (64x64 crops with ``scales=2`` give 10x10 and 6x6 logit maps).

    Receptive field of one logit, in input pixels, from :meth:`receptive_field`: with the
    defaults (``layers=4``) 62x62 at scale 0 and 125x125 at scale 1 (251 at scale 2);
    ``layers=3`` gives 30 and 61.
    """

    def __init__(self, channels: int = 64, layers: int = 4, scales: int = 2) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("layers", layers), ("scales", scales)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TemporalDiscriminator: {name} must be an int >= 1; got {value!r}")
        if layers < 2:
            raise ValueError(f"TemporalDiscriminator: layers must be >= 2; got {layers}")
        self.channels, self.layers, self.scales = channels, layers, scales
        self.nets = nn.ModuleList(_PatchNet(9, channels, layers) for _ in range(scales))

    def receptive_field(self, scale: int = 0) -> int:
        """Side, in input pixels, of the square that one logit of ``scale`` sees."""
        rf = _HEAD_KERNEL
        for i in reversed(range(self.layers)):
            stride = 2 if i < self.layers - 1 else 1
            rf = (rf - 1) * stride + _KERNEL
        for _ in range(scale):
            rf = (rf - 1) * 2 + 3  # the 3x3 stride-2 average pool
        return rf

    @staticmethod
    def _downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

    def forward(self, img0: torch.Tensor, mid: torch.Tensor,
                img1: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        shapes = [tuple(t.shape) for t in (img0, mid, img1)]
        if len(shapes[0]) != 4 or shapes[0][1] != 3 or len(set(shapes)) != 1:
            raise ValueError("TemporalDiscriminator: img0, mid and img1 must be (B, 3, H, W) tensors of one shape; "
                             f"got {shapes[0]}, {shapes[1]}, {shapes[2]}")
        x = torch.cat((img0, mid, img1), 1) * 2.0 - 1.0
        logits, features = [], []
        for i, net in enumerate(self.nets):
            if i:
                x = self._downsample(x)
            out, feats = net(x)
            logits.append(out)
            features.append(feats)
        return logits, features
