"""The registry of models: plain data, no imports of architectures."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Mapping

from ..errors import type_error, value_error

if TYPE_CHECKING:  # pragma: no cover  (contract imports torch; the registry is plain data)
    from .contract import Capabilities

__all__ = ["ModelSpec", "REGISTRY", "ARCHITECTURES", "TORCH_STATE_READERS", "DEFAULT_INTERPOLATION_MODEL",
           "DEFAULT_PREDICTION_MODEL", "SCALES", "TASKS", "Task", "get_spec", "list_models", "looks_like_path"]

# architecture name -> "module:Class", imported lazily by the loader
ARCHITECTURES: Mapping[str, str] = MappingProxyType({
    "blend": "vs_vgan.models.blend:LinearBlend",
    "flow": "vs_vgan.models.flownet:FlowInterpolator",
    "flow-predict": "vs_vgan.models.prednet:FlowPredictor",
    "rife": "vs_vgan.models.ifnet:RifeNet",
})

# architectures whose weights are users' torch.save'd state dicts (RIFE's flownet.pkl), not
# safetensors: the function that reads one (torch.load(weights_only=True) only) and gives
# (tensors ready for the architecture, the sha256 of the bytes read)
TORCH_STATE_READERS: Mapping[str, str] = MappingProxyType({
    "rife": "vs_vgan.models.ifnet:read_rife_state",
})

#: What a model does: a ModelSpec's ``task``.
Task = Literal["interpolate", "predict"]
TASKS: tuple[Task, ...] = ("interpolate", "predict")
# the analysis scales the nodes accept, largest first
SCALES = (1.0, 0.5, 0.25)


def _freeze(value: object) -> object:
    """Lists (as JSON gives them) become tuples, so that a spec is hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, verify and run one model.

    ``weights`` is a file name inside the package's weights folder, an absolute path, or
    None for a model without parameters; ``sha256`` is required whenever ``weights`` is set.
    ``modulo``: frames are padded to a multiple of it for networks that don't pad
    themselves (the loader checks that it is a multiple of the network's own).  What the
    network can do (pair states, planar rendering, prediction context and ``t``):
    :attr:`capabilities`.

    ``analysis_pixels``: for a model trained to estimate motion on downscaled frames, the
    frame area (in pixels) it is meant to analyse; the nodes' ``scale=None`` then takes
    :meth:`default_scale` of the clip's size.  0 (the default): ``scale=None`` is 1.0.
    """

    name: str
    task: Task
    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: str | None = None
    sha256: str | None = None
    modulo: int = 1
    description: str = ""
    analysis_pixels: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ModelSpec {self.name!r}: task must be one of {TASKS}; got {self.task!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"ModelSpec {self.name!r}: arch must be one of {sorted(ARCHITECTURES)}; got {self.arch!r}")
        if self.weights is not None and not self.sha256:
            raise ValueError(f"ModelSpec {self.name!r}: a weights file needs its sha256")
        if self.modulo < 1:
            raise ValueError(f"ModelSpec {self.name!r}: modulo must be >= 1; got {self.modulo}")
        if isinstance(self.analysis_pixels, bool) or not isinstance(self.analysis_pixels, int) \
                or self.analysis_pixels < 0:
            raise ValueError(f"ModelSpec {self.name!r}: analysis_pixels must be an int >= 0; got "
                             f"{self.analysis_pixels!r}")
        object.__setattr__(self, "kwargs", MappingProxyType({k: _freeze(v) for k, v in dict(self.kwargs).items()}))

    @property
    def capabilities(self) -> Capabilities:
        """What the model can do (a :class:`vs_vgan.models.contract.Capabilities`: pair
        states, planar rendering, for predictors the context frames and ``t``): its
        architecture's declaration, the one place these facts live (imports the
        architecture's module)."""
        module, _, cls = ARCHITECTURES[self.arch].partition(":")
        return getattr(importlib.import_module(module), cls).capabilities

    def default_scale(self, width: int, height: int) -> float:
        """The analysis scale ``scale=None`` takes for ``width`` x ``height`` frames: with
        ``analysis_pixels`` set, the largest of 1.0, 0.5 and 0.25 at which the analysed
        frame has at most that many pixels (0.25 for frames too large even for that), so
        that small frames keep their detail and large ones cost about the same analysis;
        without it, 1.0."""
        if not self.analysis_pixels:
            return 1.0
        for s in SCALES:
            if width * height * s * s <= self.analysis_pixels:
                return s
        return SCALES[-1]

    def __hash__(self) -> int:  # kwargs is a mapping: hash its items
        return hash((self.name, self.task, self.arch, tuple(sorted(self.kwargs.items())),
                     self.weights, self.sha256, self.modulo, self.analysis_pixels))


# The shipped flow network's size: the predictor is fine-tuned from vgan-flow-v1's
# weights, so the two share it.
_FLOW_NET = {"channels": (16, 32, 48, 64), "radius": (0, 2, 3, 4), "stem": 4, "synth": 24}

REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({
    spec.name: spec
    for spec in (
        ModelSpec(
            name="vgan-flow-v1",
            task="interpolate",
            arch="flow",
            kwargs=_FLOW_NET,
            weights="vgan-flow-v1.safetensors",
            sha256="3cbc1298b856c9c150bb2d6721238a919000cf4e4e129e1f5a4899db9330cd8c",
            modulo=64,
            description="Flow generator (PWC-style cost volumes, occlusion-aware synthesis), trained with a "
                        "reconstruction warm-up then a temporal-discriminator GAN phase; 0.42M parameters. "
                        "Card: models/vgan-flow-v1.md",
        ),
        ModelSpec(
            name="vgan-predict-v1",
            task="predict",
            arch="flow-predict",
            kwargs=_FLOW_NET,
            weights="vgan-predict-v1.safetensors",
            sha256="6f8378c4ca2277d6f0f6758d9c2c27a036fce03396e87aa4671dcc6382922962",
            modulo=64,
            description="Frame predictor (frame n from n-2 and n-1): the flow generator's network run at t=2, "
                        "fine-tuned from vgan-flow-v1 with a two-step roll-out loss, then against the temporal "
                        "discriminator; 0.42M parameters. Card: models/vgan-predict-v1.md",
        ),
        ModelSpec(
            name="blend",
            task="interpolate",
            arch="blend",
            description="Linear cross-fade of the two neighbours (baseline; no motion compensation).",
        ),
    )
})

# The trained GAN interpolator; "blend" stays registered as the no-motion baseline.
DEFAULT_INTERPOLATION_MODEL = "vgan-flow-v1"
# The trained GAN predictor (vs_vgan.predict, extend, repair).
DEFAULT_PREDICTION_MODEL = "vgan-predict-v1"


def list_models(task: Task | None = None) -> list[ModelSpec]:
    """Registered models, optionally only those of one task."""
    return [s for s in REGISTRY.values() if task is None or s.task == task]


def looks_like_path(model: str | os.PathLike[str]) -> bool:
    """A ``model=`` that names a file rather than a registered model: a path object, or a
    string with a directory separator or a weights suffix (``.pkl``, ``.pth``, ``.pt``)."""
    if not isinstance(model, str):
        return True
    return os.sep in model or "/" in model or model.lower().endswith((".pkl", ".pth", ".pt"))


def get_spec(model: object, *, task: Task, func: str) -> ModelSpec:
    """A registered name, a :class:`ModelSpec` (for your own weights) or the path of a RIFE
    ``flownet.pkl`` (:func:`vs_vgan.models.rife`), checked for ``task``."""
    names = [s.name for s in list_models(task)]
    accepted = "one of " + ", ".join(repr(n) for n in names) + " or a ModelSpec"
    if task == "interpolate":
        accepted = accepted.removesuffix(" or a ModelSpec") + ", a ModelSpec or the path of a RIFE flownet.pkl"
    if isinstance(model, ModelSpec):
        spec = model
    elif isinstance(model, str) and model in REGISTRY:
        spec = REGISTRY[model]
    elif isinstance(model, (str, os.PathLike)) and looks_like_path(model):
        if task != "interpolate":
            raise value_error(func, "model", f"a model for the {task!r} task ({accepted})", model,
                              "A weights file is taken as RIFE's, and RIFE interpolates; it doesn't predict")
        from .loader import rife  # reads the file: only for a path

        spec = rife(model, func=func)
    elif isinstance(model, str):
        raise value_error(func, "model", accepted, model, "vs_vgan.models.list_models() lists them")
    else:
        raise type_error(func, "model", accepted, model)
    if spec.task != task:
        raise value_error(func, "model", f"a model for the {task!r} task ({accepted})", model)
    return spec
