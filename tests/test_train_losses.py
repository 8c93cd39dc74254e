"""Training losses and the temporal discriminator: fixed points, monotonicity, hand-computed
values, gradients, list handling, shapes and spectral norm. Small seeded CPU tensors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from vs_vgan.train import losses as L
from vs_vgan.train.discriminator import TemporalDiscriminator


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and does not fight other work for the cores."""
    original = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(original)


IMAGE_LOSSES = {
    "charbonnier": L.charbonnier,
    "census": L.census,
    "gradient": L.gradient,
    "frequency": L.frequency,
    "1-ssim": lambda p, t: 1.0 - L.ssim(p, t),
    "1-ms_ssim": lambda p, t: 1.0 - L.ms_ssim(p, t),
    "-psnr": lambda p, t: -L.psnr(p, t),
}


def smooth_image(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth random image in [0.1, 0.9]: noise upsampled from a coarse grid."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return img.clamp(0, 1) * 0.8 + 0.1


def noisy(img: torch.Tensor, level: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (img + level * torch.randn(img.shape, generator=g)).clamp(0, 1)


# --------------------------------------------------------------------------- reconstruction and metrics
def test_identical_inputs_give_fixed_points():
    x = smooth_image()
    assert L.charbonnier(x, x).item() == pytest.approx(1e-3, rel=1e-4)
    assert L.charbonnier(x, x, eps=1e-2).item() == pytest.approx(1e-2, rel=1e-4)
    assert L.census(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert L.gradient(x, x).item() == 0.0
    assert L.frequency(x, x).item() == 0.0
    assert L.ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert L.ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert L.psnr(x, x).item() == 99.0


@pytest.mark.parametrize("name", sorted(IMAGE_LOSSES))
def test_losses_grow_with_noise(name):
    fn, x = IMAGE_LOSSES[name], smooth_image()
    values = [fn(noisy(x, level), x).item() for level in (0.0, 0.02, 0.08, 0.3)]
    assert all(math.isfinite(v) for v in values)
    assert values == sorted(values) and len(set(values)) == len(values), values


@pytest.mark.parametrize("name", sorted(IMAGE_LOSSES))
def test_gradients_flow(name):
    x = smooth_image()
    pred = noisy(x, 0.05).requires_grad_(True)
    loss = IMAGE_LOSSES[name](pred, x)
    assert loss.dim() == 0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


def test_losses_are_positive_for_different_inputs():
    x = smooth_image()
    y = noisy(x, 0.1)
    for fn in (L.charbonnier, L.census, L.gradient, L.frequency):
        assert fn(y, x).item() > 0
    assert 0 < L.ssim(y, x).item() < 1
    assert 0 < L.ms_ssim(y, x).item() < 1


def test_psnr_matches_hand_computed_values():
    target = torch.zeros(2, 3, 8, 8)
    pred = torch.empty(2, 3, 8, 8)
    pred[0] = 0.1   # MSE 1e-2 -> 20 dB
    pred[1] = 0.01  # MSE 1e-4 -> 40 dB
    assert L.psnr(pred, target).item() == pytest.approx(30.0, abs=1e-4)
    assert L.psnr(pred[:1], target[:1]).item() == pytest.approx(20.0, abs=1e-4)
    # one identical image is capped at 99, the batch mean includes it
    pred[1] = 0.0
    assert L.psnr(pred, target).item() == pytest.approx((20.0 + 99.0) / 2, abs=1e-4)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.3, 0.6
    pred, target = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = 0.01 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the contrast-structure term is 1
    assert L.ssim(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_float64_filter_equals_the_depthwise_convolution():
    # float64 (the evaluation scripts' SSIM) filters by shifted sums; float32 (training)
    # by torch's depthwise convolution: both the same separable 'valid' Gaussian filter
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 37, 29, generator=g, dtype=torch.float64)
    window = L._gaussian_window(11, 1.5, x)
    c = x.shape[1]
    ref = F.conv2d(x, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    ref = F.conv2d(ref, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    out = L._filter(x, window)
    assert out.shape == ref.shape == (2, 3, 27, 19)
    assert torch.allclose(out, ref, rtol=0, atol=1e-14)
    y = torch.rand(2, 3, 37, 29, generator=g, dtype=torch.float64)
    assert L.ssim(x, y).item() == pytest.approx(L.ssim(x.float(), y.float()).item(), abs=1e-6)


@pytest.mark.parametrize("size", [32, 256])
def test_ms_ssim_works_on_small_and_large_crops(size):
    x = smooth_image(batch=1, size=size)
    y = noisy(x, 0.05)
    assert L.ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    value = L.ms_ssim(y, x).item()
    assert 0 < value < 1
    if size == 32:  # explicit scale counts run too, the window shrinking to fit
        for scales in range(1, 6):
            assert 0 < L.ms_ssim(y, x, scales=scales).item() < 1


def test_ms_ssim_with_one_scale_is_ssim():
    x = smooth_image()
    y = noisy(x, 0.05)
    assert L.ms_ssim(y, x, scales=1).item() == pytest.approx(L.ssim(y, x).item(), rel=1e-5)


def test_ms_ssim_tiny_and_odd_sizes():
    x = smooth_image(batch=1, size=32)[..., :9, :13]
    y = noisy(x, 0.05)
    assert 0 < L.ms_ssim(y, x).item() < 1
    assert 0 < L.ssim(y, x).item() < 1


def test_gradient_loss_hand_computed():
    ramp = torch.arange(8, dtype=torch.float32).mul(0.1).view(1, 1, 1, 8).expand(1, 3, 8, 8)
    flat = torch.zeros(1, 3, 8, 8)
    # horizontal differences 0.1 against 0, vertical ones 0 against 0: mean of 0.1 and 0
    assert L.gradient(ramp, flat).item() == pytest.approx(0.05, rel=1e-5)


def test_charbonnier_hand_computed():
    pred, target = torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.2)
    assert L.charbonnier(pred, target, eps=0.4).item() == pytest.approx(0.5, rel=1e-6)  # sqrt(0.3^2 + 0.4^2)


def census_reference(pred: torch.Tensor, target: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """Straightforward version: a loop over the neighbour offsets, on the unmasked interior."""
    r = patch // 2
    w = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)
    gp, gt = (pred * w).sum(1), (target * w).sum(1)
    h, wd = gp.shape[-2:]
    dists = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == dx == 0:
                continue
            ts = []
            for g in (gp, gt):
                d = g[:, r + dy:h - r + dy, r + dx:wd - r + dx] - g[:, r:h - r, r:wd - r]
                ts.append(d / torch.sqrt(0.81 + d * d))
            dist = (ts[0] - ts[1]) ** 2
            dists.append(dist / (0.1 + dist))
    return torch.stack(dists).mean()


@pytest.mark.parametrize("patch", [3, 7])
def test_census_matches_reference(patch):
    x = smooth_image(size=24)
    y = noisy(x, 0.1)
    assert L.census(y, x, patch=patch).item() == pytest.approx(census_reference(y, x, patch).item(), rel=1e-5)
    # only the differences to the neighbours count: a constant offset changes nothing
    assert L.census(x + 0.05, x, patch=patch).item() == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_weighted_sum_and_parts():
    x = smooth_image()
    pred = noisy(x, 0.05).requires_grad_(True)
    total, parts = L.reconstruction(pred, x)
    assert set(parts) == {"charbonnier", "census"}
    assert all(isinstance(v, float) for v in parts.values())
    assert total.item() == pytest.approx(parts["charbonnier"] + 0.1 * parts["census"], rel=1e-5)
    total, parts = L.reconstruction(pred, x, w_charb=2.0, w_census=0.5, w_grad=0.3, w_msssim=0.2, w_freq=0.1)
    assert set(parts) == {"charbonnier", "census", "gradient", "ms_ssim", "frequency"}
    assert parts["ms_ssim"] == pytest.approx(1.0 - L.ms_ssim(pred, x).item(), rel=1e-5)
    expected = (2.0 * parts["charbonnier"] + 0.5 * parts["census"] + 0.3 * parts["gradient"]
                + 0.2 * parts["ms_ssim"] + 0.1 * parts["frequency"])
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    total, parts = L.reconstruction(pred, x, w_charb=0.0, w_census=0.0)
    assert parts == {} and total.item() == 0.0


def test_loss_errors_name_function_and_argument():
    x = smooth_image()
    with pytest.raises(ValueError, match=r"vs_vgan\.losses\.charbonnier: target must be the shape of pred"):
        L.charbonnier(x, x[..., :16])
    with pytest.raises(ValueError, match=r"vs_vgan\.losses\.reconstruction: w_census must be a finite number >= 0"):
        L.reconstruction(x, x, w_census=-1.0)
    with pytest.raises(ValueError, match=r"vs_vgan\.losses\.census: patch must be an odd int >= 3; got 4"):
        L.census(x, x, patch=4)
    with pytest.raises(ValueError, match=r"vs_vgan\.losses\.rahinge_d: fake_logits must be as many scales"):
        L.rahinge_d([torch.zeros(1), torch.zeros(1)], [torch.zeros(1)])
    with pytest.raises(TypeError, match=r"vs_vgan\.losses\.hinge_g: fake_logits must be a tensor of logits"):
        L.hinge_g([])


# --------------------------------------------------------------------------- adversarial
def test_hinge_hand_computed():
    real, fake = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)
    assert L.hinge_d(real, fake).item() == 0.0
    assert L.hinge_d(torch.zeros(4), torch.zeros(4)).item() == 2.0
    assert L.hinge_d(torch.tensor([0.5, 1.5]), torch.tensor([-0.5, 0.0])).item() == pytest.approx(0.25 + 0.75)
    assert L.hinge_g(fake).item() == 2.0
    assert L.hinge_g(torch.tensor([1.0, 3.0])).item() == -2.0


def test_rahinge_hand_computed():
    real, fake = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    # mean(fake) = 0.5, mean(real) = 1.5
    # D: relu(1 - [0.5, 1.5]) -> 0.25; relu(1 + [-1.5, -0.5]) -> 0.25
    assert L.rahinge_d(real, fake).item() == pytest.approx(0.5)
    # G: relu(1 + [0.5, 1.5]) -> 2.0; relu(1 - [-1.5, -0.5]) -> 2.0
    assert L.rahinge_g(real, fake).item() == pytest.approx(4.0)
    assert L.rahinge_d(torch.tensor([0.5]), torch.tensor([0.5])).item() == pytest.approx(2.0)
    far_real, far_fake = torch.full((3,), 5.0), torch.full((3,), -5.0)
    assert L.rahinge_d(far_real, far_fake).item() == 0.0
    assert L.rahinge_g(far_real, far_fake).item() == pytest.approx(22.0)


def test_adversarial_lists_are_averaged():
    a_real, a_fake = torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 4, 4), -2.0)   # hinge_d 0
    b_real, b_fake = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)                # hinge_d 2
    assert L.hinge_d([a_real, b_real], [a_fake, b_fake]).item() == pytest.approx(1.0)
    assert L.hinge_g([torch.tensor([-2.0]), torch.tensor([4.0])]).item() == pytest.approx(-1.0)
    assert L.hinge_g((torch.tensor([-2.0]),)).item() == pytest.approx(2.0)
    lists = L.rahinge_d([a_real, b_real], [a_fake, b_fake]).item()
    singles = (L.rahinge_d(a_real, a_fake).item() + L.rahinge_d(b_real, b_fake).item()) / 2
    assert lists == pytest.approx(singles)
    lists = L.rahinge_g([a_real, b_real], [a_fake, b_fake]).item()
    singles = (L.rahinge_g(a_real, a_fake).item() + L.rahinge_g(b_real, b_fake).item()) / 2
    assert lists == pytest.approx(singles)


def test_adversarial_gradients_flow():
    fake = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    real = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(4))
    for loss in (L.hinge_d(real, fake), L.hinge_g(fake), L.rahinge_d(real, fake), L.rahinge_g(real, fake)):
        fake.grad = None
        loss.backward()
        assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0


def test_feature_matching_nested_flat_and_detached():
    g = torch.Generator().manual_seed(5)
    real = [[torch.rand(1, 4, 8, 8, generator=g, requires_grad=True) for _ in range(3)] for _ in range(2)]
    fake = [[torch.rand(1, 4, 8, 8, generator=g, requires_grad=True) for _ in range(3)] for _ in range(2)]
    nested = L.feature_matching(real, fake)
    flat_real, flat_fake = [t for s in real for t in s], [t for s in fake for t in s]
    flat = L.feature_matching(flat_real, flat_fake)
    expected = sum((f - r).abs().mean() for r, f in zip(flat_real, flat_fake)) / len(flat_real)
    assert nested.item() == pytest.approx(flat.item()) == pytest.approx(expected.item())
    nested.backward()
    assert all(t.grad is None for t in flat_real)
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in flat_fake)
    assert L.feature_matching(flat_real, flat_real).item() == 0.0
    with pytest.raises(ValueError, match=r"vs_vgan\.losses\.feature_matching: fake_feats must be as many"):
        L.feature_matching(flat_real, flat_fake[:-1])


# --------------------------------------------------------------------------- discriminator
def frames(h: int, w: int, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 3, h, w, generator=g) for _ in range(3))


@pytest.mark.parametrize(("h", "w", "expected"), [
    (64, 64, [(10, 10), (6, 6)]),
    (96, 128, [(14, 18), (8, 10)]),
])
def test_discriminator_shapes(h, w, expected):
    torch.manual_seed(0)
    disc = TemporalDiscriminator(channels=8)
    logits, features = disc(*frames(h, w))
    assert len(logits) == len(features) == 2
    assert [tuple(t.shape) for t in logits] == [(2, 1, *s) for s in expected]
    for feats in features:
        assert len(feats) == 4
        assert [t.shape[1] for t in feats] == [8, 16, 32, 64]
        assert all(t.shape[0] == 2 and min(t.shape[-2:]) >= 1 for t in feats)


def test_discriminator_default_width_and_other_configs():
    torch.manual_seed(0)
    logits, features = TemporalDiscriminator()(*frames(64, 64, batch=1))
    assert [tuple(t.shape) for t in logits] == [(1, 1, 10, 10), (1, 1, 6, 6)]
    assert [t.shape[1] for t in features[0]] == [64, 128, 256, 512]
    disc = TemporalDiscriminator(channels=4, layers=6, scales=3)
    logits, features = disc(*frames(64, 64, batch=1))
    assert len(logits) == len(features) == 3 and all(len(f) == 6 for f in features)
    assert [t.shape[1] for t in features[0]] == [4, 8, 16, 32, 32, 32]  # capped at 8 * channels
    assert all(min(t.shape[-2:]) >= 1 for t in logits)


def test_discriminator_spectral_norm_on_every_conv():
    disc = TemporalDiscriminator(channels=8)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * (4 + 1)
    for conv in convs:
        assert parametrize.is_parametrized(conv, "weight")
        assert type(conv.parametrizations.weight[0]).__name__ == "_SpectralNorm"


def test_discriminator_gradient_reaches_middle_frame():
    torch.manual_seed(0)
    disc = TemporalDiscriminator(channels=8)
    img0, mid, img1 = frames(64, 64)
    mid.requires_grad_(True)
    logits, features = disc(img0, mid, img1)
    (L.hinge_g(logits) + L.feature_matching([[f.detach() for f in s] for s in features], features)).backward()
    assert torch.isfinite(mid.grad).all() and mid.grad.abs().sum() > 0


def test_discriminator_deterministic_under_seed():
    inputs = frames(64, 64)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        disc = TemporalDiscriminator(channels=8)
        logits, _ = disc(*inputs)
        outs.append(torch.cat([t.flatten() for t in logits]))
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(124)
    other, _ = TemporalDiscriminator(channels=8)(*inputs)
    assert not torch.equal(outs[0], torch.cat([t.flatten() for t in other]))


@pytest.mark.parametrize(("layers", "scale"), [(3, 0), (3, 1), (4, 0), (4, 1)])
def test_discriminator_receptive_field(layers, scale):
    """The docstring's numbers, and the support of one central logit's input gradient."""
    torch.manual_seed(0)
    disc = TemporalDiscriminator(channels=4, layers=layers, scales=2).double().eval()
    documented = {(3, 0): 30, (3, 1): 61, (4, 0): 62, (4, 1): 125}[layers, scale]
    assert disc.receptive_field(scale) == documented
    assert str(documented) in TemporalDiscriminator.__doc__
    size = 160
    img0, mid, img1 = (t.double() for t in frames(size, size, batch=1))
    mid.requires_grad_(True)
    logits, _ = disc(img0, mid, img1)
    out = logits[scale]
    out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2].backward()
    rows = mid.grad[0].abs().sum((0, 2)).nonzero().flatten()
    cols = mid.grad[0].abs().sum((0, 1)).nonzero().flatten()
    assert rows[0] > 0 and rows[-1] < size - 1  # not clipped by the border
    assert rows[-1] - rows[0] + 1 == documented
    assert cols[-1] - cols[0] + 1 == documented


def test_discriminator_rejects_mismatched_inputs():
    disc = TemporalDiscriminator(channels=4)
    a, b, _ = frames(64, 64)
    with pytest.raises(ValueError, match="TemporalDiscriminator: img0, mid and img1 must be"):
        disc(a, b[..., :32, :], a)
    with pytest.raises(ValueError, match="TemporalDiscriminator: layers must be >= 2"):
        TemporalDiscriminator(layers=1)
