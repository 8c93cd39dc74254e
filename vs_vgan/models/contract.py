"""What the engine (:mod:`vs_vgan.engine`) needs of a network, and how a network says what
it can do.

Every architecture declares a :class:`Capabilities` as its class attribute
``capabilities``; the engine reads it and never probes for methods.  The methods each
capability promises are the protocols below (structural: a network need not inherit
anything):

* every interpolation network is a :class:`PairwiseNetwork`: ``forward(img0, img1, t)``
  gives the frame at ``t`` of an RGB pair ``(B, 3, H, W)`` in 0..1, padded by the caller
  to ``modulo``.  With ``pair_state=False`` (RIFE: one run per pair and ``t``, nothing
  reusable) that is all the engine calls;
* ``pair_state``: a :class:`PairStateNetwork` also splits the work into ``encode(img0,
  img1)`` once per pair and ``synthesize(state, t)`` once per output frame;
* ``frame_analysis``: a :class:`FrameAnalysisNetwork` analyses each frame once
  (``prepare``) and pairs two analyses (``pair``), so a frame shared by two pairs is
  analysed once; it pads inside and takes frames of any size, and ``scale`` < 1 runs the
  analysis on downscaled frames;
* ``scales`` (a network without ``frame_analysis``): a :class:`ScaledNetwork` takes the
  node's ``scale`` (< 1: motion estimated on smaller frames) as ``forward(..., scale=s)``
  and says the padding it then needs, ``modulo_for(scale)`` (RIFE's own scale list);
* ``planar``: a :class:`PlanarNetwork` renders YUV and GRAY frames in their own planes
  (``fields`` then ``render`` per group of equally sized planes); with ``refine`` steps,
  the flows of ``fields`` go through ``refine_flows`` first, guided by each frame's luma
  (``refine_guides``, made once per frame);
* ``context`` > 0: a predictor.  Frame ``n`` is made from the ``context`` frames before
  it, as the pair state of the last two rendered at ``t`` (:attr:`Capabilities.t`: 2.0 is
  one step past the pair); predictors need not derive from any interpolator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["CONTEXT", "Capabilities", "PairwiseNetwork", "PairStateNetwork", "FrameAnalysisNetwork", "PlanarNetwork",
           "ScaledNetwork", "capabilities_of"]


#: Context frames the nodes give a predictor: frame n is predicted from frames n-2 and n-1.
CONTEXT = 2


@dataclass(frozen=True)
class Capabilities:
    """What a network can do (see the module's text for the methods each one promises)."""

    pair_state: bool = True
    frame_analysis: bool = False
    planar: bool = False
    scales: bool = False
    context: int = 0
    t: float | None = None

    def __post_init__(self) -> None:
        if self.frame_analysis and not self.pair_state:
            raise ValueError("Capabilities: frame_analysis needs pair_state (prepare/pair build the pair state)")
        if self.scales and self.frame_analysis:
            raise ValueError("Capabilities: scales is for networks without frame_analysis (whose prepare takes "
                             "the scale)")
        if self.planar and not self.frame_analysis:
            raise ValueError("Capabilities: planar needs frame_analysis")
        if self.context < 0 or (self.context > 0) != (self.t is not None):
            raise ValueError(f"Capabilities: a predictor has context > 0 and its t; got context={self.context}, "
                             f"t={self.t}")
        if self.context and self.context != CONTEXT:
            raise ValueError(f"Capabilities: the nodes feed predictors {CONTEXT} context frames; got {self.context}")


@runtime_checkable
class PairwiseNetwork(Protocol):
    modulo: int

    def __call__(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PairStateNetwork(Protocol):
    def encode(self, img0: torch.Tensor, img1: torch.Tensor) -> Any: ...

    def synthesize(self, state: Any, t: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class FrameAnalysisNetwork(Protocol):
    def prepare(self, img: torch.Tensor | None, scale: float = 1.0, *, analysed: torch.Tensor | None = None) -> Any: ...

    def pair(self, a: Any, b: Any) -> Any: ...

    def modulo_for(self, scale: float) -> int: ...


@runtime_checkable
class ScaledNetwork(Protocol):
    def __call__(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor, *, scale: float) -> torch.Tensor: ...

    def modulo_for(self, scale: float) -> int: ...


@runtime_checkable
class PlanarNetwork(Protocol):
    #: factors of the Lucas-Kanade steps :meth:`refine_flows` takes (empty: none, and the
    #: engine makes no guides)
    refine: tuple[int, ...]

    def fields(self, state: Any, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def refine_guides(self, luma: torch.Tensor) -> Any: ...

    def refine_flows(self, flows_t: torch.Tensor, t: torch.Tensor, scale: float, guides0: Any,
                     guides1: Any) -> torch.Tensor: ...

    def render(self, flows_t: torch.Tensor, fine: torch.Tensor, t: torch.Tensor, scale: float,
               img0: torch.Tensor, img1: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


_PROTOCOLS = (("pair_state", PairStateNetwork), ("frame_analysis", FrameAnalysisNetwork), ("planar", PlanarNetwork),
              ("scales", ScaledNetwork))


def capabilities_of(net: object) -> Capabilities:
    """``net``'s declared capabilities, checked against the methods they promise (once, when
    a node is made: a declaration without its methods is the architecture's bug)."""
    caps = getattr(net, "capabilities", None)
    if not isinstance(caps, Capabilities):
        raise TypeError(f"{type(net).__name__} declares no capabilities (a vs_vgan.models.contract.Capabilities "
                        f"as its class attribute 'capabilities')")
    for flag, proto in _PROTOCOLS:
        if getattr(caps, flag) and not isinstance(net, proto):
            raise TypeError(f"{type(net).__name__} declares {flag} but lacks the methods of {proto.__name__}")
    return caps
