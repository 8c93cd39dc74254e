"""TrainConfig: every setting of a training run, frozen all the way down and saved in each checkpoint.

The defaults are those of the run that made the shipped interpolation model; a prediction
run changes the settings in :data:`PREDICT_DEFAULTS` (:meth:`TrainConfig.for_task`).  The
generator's size is not repeated here: ``model`` defaults to the kwargs of the shipped
model of the run's task in :data:`vs_vgan.models.registry.REGISTRY`.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

from ..models.registry import REGISTRY, TASKS

__all__ = ["TrainConfig", "SHIPPED_MODEL", "INIT_MODEL", "PREDICT_DEFAULTS"]

#: The registered model each task's run trains: ``model`` defaults to its spec's kwargs
#: (the predictor is fine-tuned from the interpolator's weights, so the two share them).
SHIPPED_MODEL: Mapping[str, str] = MappingProxyType({"interpolate": "vgan-flow-v1", "predict": "vgan-predict-v1"})

#: The registered model whose weights a new run of each task starts from (absent: random).
INIT_MODEL: Mapping[str, str] = MappingProxyType({"predict": "vgan-flow-v1"})

#: Settings of a prediction run where TrainConfig's defaults are the interpolation run's:
#: a fine-tuning of the interpolation weights.
PREDICT_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "steps": 6000, "warmup_steps": 4500, "lr_g": 2e-4, "lr_min": 1e-5, "lr_ramp": 100,
    "w_flow_aux": 0.02, "flow_aux_steps": 2000, "p_synthetic": 0.0,
})


def _freeze(value: Any) -> Any:
    """Mappings become read-only MappingProxyType and lists tuples, recursively."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The JSON form of a frozen value: dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class TrainConfig:
    # "interpolate": FlowInterpolator on triplets; "predict": FlowPredictor on frame sequences
    task: str = "interpolate"
    # generator keyword arguments (vs_vgan.models.flownet.FlowInterpolator / prednet.FlowPredictor);
    # None: the kwargs of SHIPPED_MODEL[task] in the registry
    model: Mapping[str, Any] | None = None
    # discriminator (vs_vgan.train.discriminator.TemporalDiscriminator)
    disc: Mapping[str, Any] = MappingProxyType({"channels": 32, "layers": 3, "scales": 2})
    seed: int = 0
    steps: int = 20000            # total generator steps
    warmup_steps: int = 15500     # reconstruction only; the adversarial phase follows
    batch: int = 8
    crop: int = 192               # a multiple of the generator's modulo
    lr_g: float = 6e-4
    lr_d: float = 2e-4
    lr_min: float = 2e-5          # cosine decay of lr_g to this at `steps`
    lr_ramp: int = 300            # linear learning-rate ramp at the start
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # reconstruction terms (vs_vgan.train.losses.reconstruction)
    w_charb: float = 1.0
    w_census: float = 0.0       # full-resolution census costs ~3x a whole step on a CPU
    w_grad: float = 0.0
    w_msssim: float = 0.0
    w_freq: float = 0.0
    # photometric census term on the bidirectional flows, faded out linearly by flow_aux_steps
    w_flow_aux: float = 0.05
    flow_aux_steps: int = 5000
    # analysis scale of the generator's flows in training (1.0, 0.5 or 0.25): the scale at
    # which the model is meant to run (vs_vgan.interpolate(scale=...)); a list of them (e.g.
    # [0.25, 0.5]) takes them in turn, step k the (k mod len)-th, for a model that runs at
    # each (validation then reports each); interpolation only
    analysis_scale: float | tuple[float, ...] = 1.0
    # distillation from a frozen RIFE teacher (vs_vgan.train.teacher; "": none): the path of
    # its flownet.pkl; its flows from t to both ends as targets for the generator's
    # (w_teacher_flow, robust L1 in full-resolution pixels, faded out linearly by
    # teacher_steps; 0: never faded) and its frame as a soft target (w_teacher_frame,
    # Charbonnier); interpolation only
    teacher: str = ""
    w_teacher_flow: float = 0.0
    w_teacher_frame: float = 0.0
    teacher_steps: int = 0
    # adversarial phase
    adv_loss: str = "rahinge"     # "hinge" or "rahinge"
    w_adv: float = 0.005
    w_fm: float = 0.05
    adv_ramp: int = 500           # steps over which w_adv and w_fm ramp up from 0
    # > 0: the discriminator judges one random disc_crop x disc_crop window of the crop per
    # step (the same window of the real and the generated frame, in the generator's and the
    # discriminator's step), not the whole crop: a quarter of its cost at half the side
    disc_crop: int = 0
    # data
    data_root: str = ""
    cache_dir: str = ""
    max_side: int = 0             # > 0: videos cached with their longer side at most this
    p_synthetic: float = 0.3      # share of synthetic-motion samples, the rest real video
    max_span: int = 4             # triplets (i, i+k, i+n) with n <= max_span: t = k/n
    motion_picks: int = 1         # > 1: the most moving of that many real triplets (large motion more often)
    # prediction: frames i, i+g, i+2g, i+3g with g <= max_gap; the generator predicts i+2g from
    # (i, i+g), then i+3g from (i+g, its own prediction), weighted w_rollout (0: one step only)
    max_gap: int = 2
    w_rollout: float = 0.5
    # validation: val_clips whole clips of the training videos (chosen by val_seed, see
    # vs_vgan.train.data.split_clips) are held out of training and give val_batches fixed
    # batches; 0: no validation
    val_clips: int = 8
    val_seed: int = 0
    val_batches: int = 4
    # bookkeeping
    checkpoint_seconds: float = 300.0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"TrainConfig: task must be one of {TASKS}; got {self.task!r}")
        if self.model is None:
            object.__setattr__(self, "model", REGISTRY[SHIPPED_MODEL[self.task]].kwargs)
        for f in dataclasses.fields(self):  # nothing mutable inside: mappings and lists frozen
            object.__setattr__(self, f.name, _freeze(getattr(self, f.name)))
        if self.adv_loss not in ("hinge", "rahinge"):
            raise ValueError(f"TrainConfig: adv_loss must be 'hinge' or 'rahinge'; got {self.adv_loss!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"TrainConfig: warmup_steps must be in [0, steps]; got {self.warmup_steps} of {self.steps}")
        if self.batch < 1 or self.crop < 16:
            raise ValueError(f"TrainConfig: batch >= 1 and crop >= 16 needed; got {self.batch}, {self.crop}")
        if self.disc_crop and not 16 <= self.disc_crop <= self.crop:
            raise ValueError(f"TrainConfig: disc_crop must be 0 (the whole crop) or in [16, crop={self.crop}]; "
                             f"got {self.disc_crop}")
        if not 0.0 <= self.p_synthetic <= 1.0:
            raise ValueError(f"TrainConfig: p_synthetic must be in [0, 1]; got {self.p_synthetic}")
        scales = self.analysis_scales
        if not scales or any(isinstance(s, bool) or s not in (1.0, 0.5, 0.25) for s in scales):
            raise ValueError(f"TrainConfig: analysis_scale must be 1.0, 0.5 or 0.25, or a list of them; "
                             f"got {_thaw(self.analysis_scale)}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"TrainConfig: analysis_scale lists a scale twice: {_thaw(self.analysis_scale)}")
        if (self.w_teacher_flow or self.w_teacher_frame) and not self.teacher:
            raise ValueError("TrainConfig: w_teacher_flow and w_teacher_frame need a teacher (the path of a RIFE "
                             "flownet.pkl)")
        if self.task != "interpolate" and (self.teacher or scales != (1.0,)):
            raise ValueError(f"TrainConfig: teacher and analysis_scale are for the interpolate task; got task "
                             f"{self.task!r}")
        if self.val_clips < 0 or self.val_batches < 1:
            raise ValueError(f"TrainConfig: val_clips >= 0 and val_batches >= 1 needed; "
                             f"got {self.val_clips}, {self.val_batches}")

    @property
    def analysis_scales(self) -> tuple[float, ...]:
        """``analysis_scale`` as a tuple (one scale: a tuple of one)."""
        a = self.analysis_scale
        return tuple(a) if isinstance(a, tuple) else (a,)

    def scale_at(self, step: int) -> float:
        """The analysis scale of generator step ``step``: the scales in turn."""
        scales = self.analysis_scales
        return float(scales[step % len(scales)])

    def __hash__(self) -> int:  # mappings inside: hash the JSON form
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # pickle and deepcopy through the JSON form (a mappingproxy can't be pickled)
    def __reduce__(self) -> tuple[Callable[[Mapping[str, Any]], TrainConfig], tuple[dict[str, Any]]]:
        return type(self).from_dict, (self.to_dict(),)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON types (dicts, lists), as checkpoints store them."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """The config of ``data`` (e.g. a checkpoint's ``config``); missing settings take
        their defaults, so checkpoints of older versions load."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        return cls(**data)

    @classmethod
    def for_task(cls, task: str, changes: Mapping[str, Any] | None = None) -> "TrainConfig":
        """A new run's config: the defaults of ``task`` (for "predict", PREDICT_DEFAULTS
        over TrainConfig's), then ``changes``."""
        base = dict(PREDICT_DEFAULTS) if task == "predict" else {}
        return cls.from_dict({**base, "task": task, **(changes or {})})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
