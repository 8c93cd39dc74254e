"""A frozen RIFE network as a teacher: the frames and flows a student learns from.

    teacher = RifeTeacher("flownet.pkl", device="cuda")
    out = teacher(img0, img1, t)     # out.frame, out.flow_t0, out.flow_t1, out.mask

The weights are read by the one audited loader (:func:`vs_vgan.models.rife`: the version
detected, ``torch.load(weights_only=True)``, sha256 pinned), the network is vs_vgan's own
IFNet (:mod:`vs_vgan.models.ifnet`), frozen: no parameter takes gradients and the outputs
carry none, so a training step can call it freely.  Frames of any size are padded (edge
replication) to the network's multiple and the results cropped back.  Under
``../shared/DATA.md`` the teacher may supervise our networks; its weights never ship, and a
model card says how it was used.  Imports without VapourSynth.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
import torch.nn.functional as F

from ..models import ModelSpec, load_model, rife

if TYPE_CHECKING:  # pragma: no cover
    from ..models.ifnet import RifeNet

__all__ = ["RifeTeacher", "TeacherOutput"]


class TeacherOutput(NamedTuple):
    """RIFE's estimate at ``t`` for a batch ``(B, 3, H, W)``: ``frame`` (0..1), ``flow_t0``
    and ``flow_t1`` ``(B, 2, H, W)``, from the frame at ``t`` back to ``img0`` / ``img1``
    in pixels (x, y: ``frame(p) ~ img0(p + flow_t0(p))``), ``mask`` ``(B, 1, H, W)``: the
    weight of ``img0``'s warp in the blend."""

    frame: torch.Tensor
    flow_t0: torch.Tensor
    flow_t1: torch.Tensor
    mask: torch.Tensor


class RifeTeacher:
    """RIFE weights (a ``flownet.pkl`` path, or its :func:`vs_vgan.models.rife` spec) frozen
    on ``device`` in ``dtype``; ``scale`` is RIFE's (1.0, 0.5 or 0.25)."""

    def __init__(self, weights: str | os.PathLike[str] | ModelSpec, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, scale: float = 1.0) -> None:
        self.spec = weights if isinstance(weights, ModelSpec) else rife(weights, func="train")
        if self.spec.arch != "rife":
            raise ValueError(f"vs_vgan.train: the teacher must be RIFE weights; got model {self.spec.name!r} "
                             f"(arch {self.spec.arch!r})")
        self.net = cast("RifeNet", load_model(self.spec, torch.device(device), dtype, func="train"))  # arch "rife"
        self.scale = float(scale)
        self.modulo = int(self.net.modulo_for(self.scale))
        self.device, self.dtype = torch.device(device), dtype

    @torch.no_grad()
    def __call__(self, img0: torch.Tensor, img1: torch.Tensor, t: float | torch.Tensor) -> TeacherOutput:
        """The teacher's estimate at ``t`` (a float, or a tensor broadcastable to
        ``(B, 1, 1, 1)``) for RGB batches in 0..1 of any size, on the inputs' device and
        in float32."""
        h, w = img0.shape[-2:]
        ph, pw = (-h) % self.modulo, (-w) % self.modulo

        def prep(x: torch.Tensor) -> torch.Tensor:
            x = x.to(self.device, self.dtype)
            return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

        tt = t.to(self.device, self.dtype) if torch.is_tensor(t) else float(t)
        frame, flows, mask = self.net.estimate(prep(img0), prep(img1), tt, scale=self.scale)

        def back(x: torch.Tensor) -> torch.Tensor:
            return x[..., :h, :w].to(img0.device, torch.float32)

        return TeacherOutput(back(frame), back(flows[:, :2]), back(flows[:, 2:4]), back(mask))
