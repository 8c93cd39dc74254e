"""vs_vgan.train.teacher: RIFE weights as a frozen teacher (issue 15)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vs_vgan.models import rife
from vs_vgan.train.teacher import RifeTeacher


def test_teacher_gives_frames_and_flows_of_any_size_without_gradients(rife_pkl):
    teacher = RifeTeacher(rife_pkl)
    g = torch.Generator().manual_seed(0)
    img0, img1 = torch.rand(2, 3, 50, 70, generator=g), torch.rand(2, 3, 50, 70, generator=g)
    img0.requires_grad_(True)
    out = teacher(img0, img1, 0.25)
    assert out.frame.shape == (2, 3, 50, 70) and out.flow_t0.shape == out.flow_t1.shape == (2, 2, 50, 70)
    assert out.mask.shape == (2, 1, 50, 70) and 0 <= float(out.mask.min()) and float(out.mask.max()) <= 1
    assert not any(x.requires_grad for x in out)
    assert not any(p.requires_grad for p in teacher.net.parameters())
    # the network's own estimate on the frames padded to 64 (edge replication), cropped back
    pad = lambda x: F.pad(x.detach(), (0, 58, 0, 14), mode="replicate")  # noqa: E731
    with torch.no_grad():
        frame, flows, mask = teacher.net.estimate(pad(img0), pad(img1), 0.25)
    assert torch.equal(out.frame, frame[..., :50, :70]) and torch.equal(out.flow_t1, flows[:, 2:4, :50, :70])
    # t per item gives what a scalar t gives, at the same batch size (the CPU's convolution
    # kernels may differ with the batch size: 9e-5 apart on an AMD EPYC)
    per_item = teacher(img0[1:], img1[1:], torch.tensor([0.25]))
    assert torch.allclose(per_item.frame, teacher(img0[1:], img1[1:], 0.25).frame, atol=1e-6)


def test_teacher_takes_a_spec_and_refuses_other_models(rife_pkl):
    assert RifeTeacher(rife(rife_pkl), scale=0.5).modulo == 128
    with pytest.raises(ValueError, match=r"^vs_vgan.train: the teacher must be RIFE weights; got model "
                                         r"'vgan-flow-v1' \(arch 'flow'\)$"):
        from vs_vgan.models import REGISTRY

        RifeTeacher(REGISTRY["vgan-flow-v1"])
