"""TrainConfig: every setting of an interpolation training run, frozen and saved in each checkpoint."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig"]


TASKS = ("interpolate", "predict")


@dataclass(frozen=True)
class TrainConfig:
    # "interpolate": FlowInterpolator on triplets; "predict": FlowPredictor on frame sequences
    task: str = "interpolate"
    # generator keyword arguments (vs_vgan.models.flownet.FlowInterpolator / prednet.FlowPredictor)
    model: dict = field(default_factory=lambda: {"channels": [16, 32, 48, 64], "radius": [0, 2, 3, 4], "stem": 4, "synth": 24})
    # discriminator (vs_vgan.train.discriminator.TemporalDiscriminator)
    disc: dict = field(default_factory=lambda: {"channels": 32, "layers": 3, "scales": 2})
    seed: int = 0
    steps: int = 20000            # total generator steps
    warmup_steps: int = 15500     # reconstruction only; the adversarial phase follows
    batch: int = 8
    crop: int = 192               # a multiple of the generator's modulo
    lr_g: float = 6e-4
    lr_d: float = 2e-4
    lr_min: float = 2e-5          # cosine decay of lr_g to this at `steps`
    lr_ramp: int = 300            # linear learning-rate ramp at the start
    betas: tuple = (0.9, 0.99)
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
    # adversarial phase
    adv_loss: str = "rahinge"     # "hinge" or "rahinge"
    w_adv: float = 0.005
    w_fm: float = 0.05
    adv_ramp: int = 500           # steps over which w_adv and w_fm ramp up from 0
    # data
    data_root: str = ""
    cache_dir: str = ""
    max_side: int = 0             # > 0: videos cached with their longer side at most this
    p_synthetic: float = 0.3      # share of synthetic-motion samples, the rest real video
    max_span: int = 4             # triplets (i, i+k, i+n) with n <= max_span: t = k/n
    # prediction: frames i, i+g, i+2g, i+3g with g <= max_gap; the generator predicts i+2g from
    # (i, i+g), then i+3g from (i+g, its own prediction), weighted w_rollout (0: one step only)
    max_gap: int = 2
    w_rollout: float = 0.5
    # bookkeeping
    checkpoint_seconds: float = 300.0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"TrainConfig: task must be one of {TASKS}; got {self.task!r}")
        if self.adv_loss not in ("hinge", "rahinge"):
            raise ValueError(f"TrainConfig: adv_loss must be 'hinge' or 'rahinge'; got {self.adv_loss!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"TrainConfig: warmup_steps must be in [0, steps]; got {self.warmup_steps} of {self.steps}")
        if self.batch < 1 or self.crop < 16:
            raise ValueError(f"TrainConfig: batch >= 1 and crop >= 16 needed; got {self.batch}, {self.crop}")
        if not 0.0 <= self.p_synthetic <= 1.0:
            raise ValueError(f"TrainConfig: p_synthetic must be in [0, 1]; got {self.p_synthetic}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
