"""vs_vgan: GAN-trained frame interpolation and prediction as VapourSynth nodes.

Importing has no side effects: no VapourSynth core is touched, nothing is downloaded,
nothing is printed.
"""
from .nodes import interpolate

__all__ = ["interpolate", "__version__"]
__version__ = "0.1.0"
