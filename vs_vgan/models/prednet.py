"""Flow-extrapolating frame predictor (architecture ``"flow-predict"``).

Frame ``n`` from frames ``n - 2`` and ``n - 1`` (``K = 2`` context frames).  The network is
the interpolator's (:class:`~vs_vgan.models.flownet.FlowInterpolator`: the same feature
pyramid, bidirectional cost-volume flow estimator and synthesis network, so that training
can start from the interpolation weights), run on the pair ``(n - 2, n - 1)`` at ``t = 2``:

* the locally linear motion model of the interpolator, evaluated at ``t = 2``, gives the
  flows from the new frame back to both context frames (``F20 = 2 F01 + 4 F10``,
  ``F21 = F01 + 2 F10``: twice and once the motion of the last step when the two flows
  agree);
* the synthesis network refines them and predicts the blend of the two warped context
  frames and a residual, which fills what neither frame shows (disocclusions).

The blend has no visibility prior here (``t`` is outside the pair): its weight is the
network's own, ``sigmoid(m)`` for the older frame.  ``predict`` of a clip runs the pair
once per output frame; extending a shot feeds predictions back in (the node does that).
"""
from __future__ import annotations

import torch

from .contract import CONTEXT, Capabilities
from .flownet import FlowInterpolator, PairState

__all__ = ["FlowPredictor", "CONTEXT"]

#: Where the new frame lies on the pair's time axis (frame n-2 at 0, n-1 at 1).
_T = 2.0


class FlowPredictor(FlowInterpolator):
    """Same arguments as :class:`FlowInterpolator`; its weights load unchanged."""

    extrapolates = True
    capabilities = Capabilities(pair_state=True, frame_analysis=True, planar=True, context=CONTEXT, t=_T)

    def predict_state(self, state: PairState) -> torch.Tensor:
        """The next frame after an encoded pair ``(n - 2, n - 1)``."""
        t_new = self.capabilities.t
        assert t_new is not None  # a predictor's capabilities carry its t
        t = torch.full((state.flows.shape[0], 1, 1, 1), t_new, device=state.flows.device, dtype=state.flows.dtype)
        return self.synthesize(state, t)

    def predict(self, prev2: torch.Tensor, prev1: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Frame ``n`` from frames ``n - 2`` and ``n - 1`` (RGB, ``(B, 3, H, W)`` in [0, 1])."""
        return self.predict_state(self.encode(prev2, prev1, scale))

    def forward(self, prev2: torch.Tensor, prev1: torch.Tensor, scale: float = 1.0) -> torch.Tensor:  # type: ignore[override]
        return self.predict(prev2, prev1, scale)
