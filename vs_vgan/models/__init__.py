"""Model registry and loader.

Models are data: a frozen :class:`ModelSpec` per entry in :data:`REGISTRY`, one module per
architecture (listed in :data:`ARCHITECTURES`, imported only when used), and one audited
loader, :func:`load_model`; :func:`rife` makes the spec of a user's RIFE ``flownet.pkl``.
"""
from .registry import (ARCHITECTURES, DEFAULT_INTERPOLATION_MODEL, DEFAULT_PREDICTION_MODEL, REGISTRY, ModelSpec,
                       get_spec, list_models)
from .loader import load_model, rife, weights_path

__all__ = [
    "ARCHITECTURES", "DEFAULT_INTERPOLATION_MODEL", "DEFAULT_PREDICTION_MODEL", "REGISTRY", "ModelSpec",
    "get_spec", "list_models", "load_model", "rife", "weights_path",
]
