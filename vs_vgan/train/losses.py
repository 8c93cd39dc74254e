"""Losses and metrics for training frame interpolators with a discriminator.

Pure torch. Images are ``(B, 3, H, W)`` float tensors in ``[0, 1]`` (data range 1.0). Every
loss returns a differentiable scalar tensor, the mean over the batch; the metrics
(:func:`ssim`, :func:`ms_ssim`, :func:`psnr`) return their value, larger is better.

Reconstruction
    :func:`charbonnier`, :func:`census` (ternary census, UnFlow/IFRNet), :func:`gradient`,
    :func:`frequency` (focal-frequency-like), and their weighted sum :func:`reconstruction`.
Metrics
    :func:`ssim`, :func:`ms_ssim`, :func:`psnr`.
Adversarial
    :func:`hinge_d`, :func:`hinge_g`, :func:`rahinge_d`, :func:`rahinge_g` (each takes a
    tensor of logits or a list of them, one per discriminator scale, and averages over the
    list) and :func:`feature_matching`.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import type_error, value_error

__all__ = [
    "charbonnier", "census", "gradient", "frequency", "reconstruction",
    "ssim", "ms_ssim", "psnr",
    "hinge_d", "hinge_g", "rahinge_d", "rahinge_g", "feature_matching",
    "MS_SSIM_WEIGHTS",
]

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]

#: Per-scale exponents of MS-SSIM (Wang, Simoncelli and Bovik 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_C1 = 0.01 ** 2  # SSIM stabilisers for data range 1.0
_C2 = 0.03 ** 2
_PSNR_CAP = 99.0
_GRAY = (0.2989, 0.5870, 0.1140)


def _check_pair(func: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(pred, torch.Tensor):
        raise type_error(func, "pred", "a torch.Tensor", pred)
    if not isinstance(target, torch.Tensor):
        raise type_error(func, "target", "a torch.Tensor", target)
    if pred.dim() != 4:
        raise value_error(func, "pred", "a (B, C, H, W) tensor", f"shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise value_error(func, "target", f"the shape of pred {tuple(pred.shape)}", f"shape {tuple(target.shape)}")


# --------------------------------------------------------------------------- reconstruction
def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``mean(sqrt((pred - target)^2 + eps^2))``: a smooth L1; ``eps`` for identical inputs."""
    _check_pair("losses.charbonnier", pred, target)
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def _census_transform(gray: torch.Tensor, patch: int) -> torch.Tensor:
    """Soft ternary signature ``d / sqrt(0.81 + d^2)`` of the differences ``d`` between each
    pixel's ``patch x patch`` neighbours (centre left out) and the pixel itself.

    Computed with a fixed one-hot convolution without padding, so only pixels whose whole
    patch lies inside the image are kept: the border of ``patch // 2`` pixels is masked by
    construction. Output: ``(B, patch^2 - 1, H - 2r, W - 2r)``.
    """
    n = patch * patch
    eye = torch.eye(n, dtype=gray.dtype, device=gray.device)
    centre = n // 2
    weight = torch.cat((eye[:centre], eye[centre + 1:])).view(n - 1, 1, patch, patch)
    r = patch // 2
    neighbours = F.conv2d(gray, weight)
    d = neighbours - gray[..., r:gray.shape[-2] - r, r:gray.shape[-1] - r]
    return d / torch.sqrt(0.81 + d * d)


def census(pred: torch.Tensor, target: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """Ternary census loss (UnFlow, Meister et al. 2018; as in IFRNet and RIFE).

    Both images are converted to grayscale (BT.601 weights, kept in ``[0, 1]`` as IFRNet and
    RIFE do), soft-ternary transformed over ``patch x patch`` neighbourhoods, compared with
    the soft Hamming distance ``(t1 - t2)^2 / (0.1 + (t1 - t2)^2)`` averaged over the
    ``patch^2 - 1`` neighbours, and averaged over the pixels at least ``patch // 2`` from the
    border (the border is masked). The images must be larger than ``patch - 1`` both ways.
    """
    func = "losses.census"
    _check_pair(func, pred, target)
    if not isinstance(patch, int) or patch < 3 or patch % 2 == 0:
        raise value_error(func, "patch", "an odd int >= 3", patch)
    if pred.shape[1] != 3:
        raise value_error(func, "pred", "an RGB (B, 3, H, W) tensor", f"shape {tuple(pred.shape)}")
    if min(pred.shape[-2:]) < patch:
        raise value_error(func, "pred", f"at least {patch}x{patch} pixels (the patch size)",
                          f"shape {tuple(pred.shape)}")
    w = pred.new_tensor(_GRAY).view(1, 3, 1, 1)
    t_pred = _census_transform((pred * w).sum(1, keepdim=True), patch)
    t_target = _census_transform((target * w).sum(1, keepdim=True), patch)
    dist = (t_pred - t_target) ** 2
    return (dist / (0.1 + dist)).mean()


def gradient(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and the vertical forward differences (mean of both)."""
    _check_pair("losses.gradient", pred, target)
    dx_p, dx_t = pred[..., :, 1:] - pred[..., :, :-1], target[..., :, 1:] - target[..., :, :-1]
    dy_p, dy_t = pred[..., 1:, :] - pred[..., :-1, :], target[..., 1:, :] - target[..., :-1, :]
    return 0.5 * ((dx_p - dx_t).abs().mean() + (dy_p - dy_t).abs().mean())


def frequency(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the real and imaginary parts of the orthonormal 2-D FFTs
    (``torch.fft.rfft2``, per channel): a focal-frequency-like term that weighs the fine
    detail an L1 in pixel space under-weighs. Computed in float32 at least."""
    _check_pair("losses.frequency", pred, target)
    dtype = torch.promote_types(pred.dtype, torch.float32)
    fp = torch.view_as_real(torch.fft.rfft2(pred.to(dtype), norm="ortho"))
    ft = torch.view_as_real(torch.fft.rfft2(target.to(dtype), norm="ortho"))
    return (fp - ft).abs().mean()


# --------------------------------------------------------------------------- metrics
def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _shifted_sum(x: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` filtered by the 1-D kernel ``g`` along ``dim``, without padding ('valid')."""
    n = x.shape[dim] - g.numel() + 1
    out = g[0] * x.narrow(dim, 0, n)
    for i in range(1, g.numel()):
        out = out + g[i] * x.narrow(dim, i, n)
    return out


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable depthwise Gaussian filter without padding ('valid').  In float64 (the
    evaluation scripts' SSIM) as sums of shifted slices: torch's CPU float64 depthwise
    convolution takes a slow path, four times as slow at 720p."""
    if x.dtype == torch.float64:
        return _shifted_sum(_shifted_sum(x, g, -1), g, -2)
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _fit_window(window: int, height: int, width: int) -> int:
    """The largest odd window <= ``window`` that fits the image."""
    size = min(window, height, width)
    return size if size % 2 else size - 1


def _ssim_cs(pred: torch.Tensor, target: torch.Tensor, window: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM and contrast-structure term, each ``(B,)``."""
    g = _gaussian_window(_fit_window(window, *pred.shape[-2:]), sigma, pred)
    mu_p, mu_t = _filter(pred, g), _filter(target, g)
    var_p = _filter(pred * pred, g) - mu_p * mu_p
    var_t = _filter(target * target, g) - mu_t * mu_t
    cov = _filter(pred * target, g) - mu_p * mu_t
    cs = (2.0 * cov + _C2) / (var_p + var_t + _C2)
    lum = (2.0 * mu_p * mu_t + _C1) / (mu_p * mu_p + mu_t * mu_t + _C1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Gaussian ``window`` x ``window``, std ``sigma``, no padding, data range 1):
    1 for identical images. The window shrinks (kept odd) to fit images smaller than it.
    Computed in float32 at least."""
    func = "losses.ssim"
    _check_pair(func, pred, target)
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise value_error(func, "window", "an odd int >= 1", window)
    dtype = torch.promote_types(pred.dtype, torch.float32)
    return _ssim_cs(pred.to(dtype), target.to(dtype), window, sigma)[0].mean()


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, scales: int | None = None,
            window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM with the standard weights :data:`MS_SSIM_WEIGHTS`: 1 for identical images.

    ``scales=None`` uses up to 5 scales, as many as keep the coarsest one at least ``window``
    pixels on its short side (at least 1, so 32x32 gives 2 scales and 256x256 gives 5); an
    explicit ``scales`` (1 to 5) is taken as given, the window shrinking to fit. With fewer
    than 5 scales the first weights are used, renormalised to sum to 1. Between scales the
    images are 2x2 average-pooled (odd sizes rounded up). Negative per-scale terms are
    clamped to a tiny positive value so the fractional powers stay finite.
    """
    func = "losses.ms_ssim"
    _check_pair(func, pred, target)
    short = min(pred.shape[-2:])
    if scales is None:
        scales = 1
        while scales < len(MS_SSIM_WEIGHTS) and short / 2 ** scales >= window:
            scales += 1
    elif not isinstance(scales, int) or not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise value_error(func, "scales", f"None or an int from 1 to {len(MS_SSIM_WEIGHTS)}", scales)
    elif short < 2 ** (scales - 1):
        raise value_error(func, "pred", f"at least {2 ** (scales - 1)} pixels on its short side for {scales} scales",
                          f"shape {tuple(pred.shape)}", hint="Pass scales=None to choose them from the size.")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    x, y = pred.to(dtype), target.to(dtype)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=dtype, device=x.device)
    weights = weights / weights.sum()
    value = None
    for i in range(scales):
        s, cs = _ssim_cs(x, y, window, sigma)
        term = (s if i == scales - 1 else cs).clamp_min(1e-6) ** weights[i]
        value = term if value is None else value * term
        if i < scales - 1:
            x = F.avg_pool2d(x, 2, ceil_mode=True)
            y = F.avg_pool2d(y, 2, ceil_mode=True)
    assert value is not None  # scales >= 1
    return value.mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for data range 1.0: the mean over the batch of each image's
    ``10 log10(1 / MSE)``, capped at 99 dB (identical images give exactly 99)."""
    _check_pair("losses.psnr", pred, target)
    dtype = torch.promote_types(pred.dtype, torch.float32)
    mse = ((pred.to(dtype) - target.to(dtype)) ** 2).flatten(1).mean(1)
    floor = 10.0 ** (-_PSNR_CAP / 10.0)
    return (-10.0 * torch.log10(mse.clamp_min(floor))).clamp_max(_PSNR_CAP).mean()


# --------------------------------------------------------------------------- adversarial
def _as_list(func: str, arg: str, logits: Logits) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        return [logits]
    if isinstance(logits, (list, tuple)) and logits and all(isinstance(t, torch.Tensor) for t in logits):
        return list(logits)
    raise type_error(func, arg, "a tensor of logits or a non-empty list of them (one per scale)", logits)


def _pairs(func: str, real: Logits, fake: Logits) -> list[tuple[torch.Tensor, torch.Tensor]]:
    real_l, fake_l = _as_list(func, "real_logits", real), _as_list(func, "fake_logits", fake)
    if len(real_l) != len(fake_l):
        raise value_error(func, "fake_logits", f"as many scales as real_logits ({len(real_l)})",
                          f"{len(fake_l)} scales")
    return list(zip(real_l, fake_l))


def _average(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values).mean()


def hinge_d(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Discriminator hinge loss ``mean(relu(1 - real)) + mean(relu(1 + fake))``, averaged over scales."""
    return _average([F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
                     for r, f in _pairs("losses.hinge_d", real_logits, fake_logits)])


def hinge_g(fake_logits: Logits) -> torch.Tensor:
    """Generator hinge loss ``-mean(fake)``, averaged over scales."""
    return _average([-f.mean() for f in _as_list("losses.hinge_g", "fake_logits", fake_logits)])


def rahinge_d(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Relativistic-average hinge loss for the discriminator (Jolicoeur-Martineau 2018):
    ``mean(relu(1 - (real - mean(fake)))) + mean(relu(1 + (fake - mean(real))))``, the means
    taken over each scale's whole logit map, averaged over scales."""
    return _average([F.relu(1.0 - (r - f.mean())).mean() + F.relu(1.0 + (f - r.mean())).mean()
                     for r, f in _pairs("losses.rahinge_d", real_logits, fake_logits)])


def rahinge_g(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Relativistic-average hinge loss for the generator, :func:`rahinge_d` with the roles of
    real and fake swapped: ``mean(relu(1 + (real - mean(fake)))) + mean(relu(1 - (fake - mean(real))))``.
    The real logits carry no generator gradient; pass them detached to keep the
    discriminator's graph out of the generator step."""
    return _average([F.relu(1.0 + (r - f.mean())).mean() + F.relu(1.0 - (f - r.mean())).mean()
                     for r, f in _pairs("losses.rahinge_g", real_logits, fake_logits)])


def _flatten(func: str, arg: str, feats: object) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    if isinstance(feats, torch.Tensor) or not isinstance(feats, (list, tuple)):
        raise type_error(func, arg, "a list of tensors or a list of lists of tensors", feats)
    for item in feats:
        if isinstance(item, torch.Tensor):
            out.append(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in item):
            out.extend(item)
        else:
            raise type_error(func, arg, "a list of tensors or a list of lists of tensors", feats)
    return out


def feature_matching(real_feats: Sequence[torch.Tensor | Sequence[torch.Tensor]],
                     fake_feats: Sequence[torch.Tensor | Sequence[torch.Tensor]]) -> torch.Tensor:
    """Mean over all (scale, layer) pairs of the L1 distance between the discriminator's
    features of the fake and of the real sample; the real features are detached. Accepts a
    list per scale of lists per layer (as :class:`TemporalDiscriminator` returns) or a flat
    list; both arguments must have the same structure."""
    func = "losses.feature_matching"
    real_l, fake_l = _flatten(func, "real_feats", real_feats), _flatten(func, "fake_feats", fake_feats)
    if not real_l or len(real_l) != len(fake_l):
        raise value_error(func, "fake_feats", f"as many feature maps as real_feats ({len(real_l)}), at least one",
                          f"{len(fake_l)} feature maps")
    return _average([F.l1_loss(f, r.detach()) for r, f in zip(real_l, fake_l)])


# --------------------------------------------------------------------------- weighted sum
def reconstruction(pred: torch.Tensor, target: torch.Tensor, *, w_charb: float = 1.0, w_census: float = 0.1,
                   w_grad: float = 0.0, w_msssim: float = 0.0,
                   w_freq: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the reconstruction terms, skipping those of weight 0.

    Returns ``(total, parts)``: ``total`` the differentiable scalar; ``parts`` maps each
    computed term (``"charbonnier"``, ``"census"``, ``"gradient"``, ``"ms_ssim"`` as
    ``1 - ms_ssim``, ``"frequency"``) to its unweighted value as a float, for logging.
    With every weight 0 the total is a zero that still depends on ``pred``.
    """
    func = "losses.reconstruction"
    _check_pair(func, pred, target)
    terms = (
        ("charbonnier", "w_charb", w_charb, charbonnier),
        ("census", "w_census", w_census, census),
        ("gradient", "w_grad", w_grad, gradient),
        ("ms_ssim", "w_msssim", w_msssim, lambda p, t: 1.0 - ms_ssim(p, t)),
        ("frequency", "w_freq", w_freq, frequency),
    )
    total = pred.sum() * 0.0
    parts: dict[str, float] = {}
    for name, arg, weight, fn in terms:
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise type_error(func, arg, "a number >= 0", weight)
        if not math.isfinite(weight) or weight < 0:
            raise value_error(func, arg, "a finite number >= 0", weight)
        if weight == 0:
            continue
        value = fn(pred, target)
        total = total + weight * value
        parts[name] = float(value.detach())
    return total, parts
