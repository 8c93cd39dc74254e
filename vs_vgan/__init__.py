"""vs_vgan: GAN-trained frame interpolation and prediction as VapourSynth nodes.

Importing has no side effects: no VapourSynth core is touched, nothing is downloaded,
nothing is printed.  The nodes are imported on first use, so that the training library
(``vs_vgan.train``) and the models import without VapourSynth.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["interpolate", "predict", "extend", "repair", "__version__"]
__version__ = "0.1.0"

_NODES = {"interpolate": "nodes", "predict": "prediction", "extend": "prediction", "repair": "prediction"}

# Type checkers see the nodes themselves and no __getattr__ (with it, any other name, a
# misspelt one too, would pass as its return type).
if TYPE_CHECKING:  # pragma: no cover
    from .nodes import interpolate
    from .prediction import extend, predict, repair
else:
    def __getattr__(name: str) -> Any:
        if name in _NODES:
            import importlib

            return getattr(importlib.import_module(f".{_NODES[name]}", __name__), name)
        raise AttributeError(f"module 'vs_vgan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NODES))
