"""TrainConfig: frozen all the way down, its network size from the registry, --set and resume."""
from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch

from vs_vgan.models.registry import REGISTRY
from vs_vgan.train.command import parse_sets
from vs_vgan.train.config import INIT_MODEL, PREDICT_DEFAULTS, SHIPPED_MODEL, TrainConfig
from vs_vgan.train.loop import Trainer

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "train_state" / "vgan-flow-v1-last.pt"
TINY = {"model": {"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4},
        "disc": {"channels": 4, "layers": 3, "scales": 1}, "crop": 32, "batch": 2, "steps": 4, "warmup_steps": 2}


def test_nothing_inside_can_be_changed():
    cfg = TrainConfig.from_dict(TINY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 1
    with pytest.raises(TypeError):
        cfg.model["stem"] = 4
    with pytest.raises(TypeError):
        cfg.disc["channels"] = 64
    with pytest.raises(TypeError):
        del cfg.model["synth"]
    with pytest.raises(AttributeError):
        cfg.model["channels"].append(16)  # a tuple
    assert cfg.model["channels"] == (4, 8) and isinstance(cfg.betas, tuple)
    source = {"model": {"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4}}
    held = TrainConfig.from_dict(source)
    source["model"]["channels"].append(16)  # the caller's dict is copied, not kept
    assert held.model["channels"] == (4, 8)


def test_frozen_configs_compare_hash_pickle_and_round_trip():
    cfg = TrainConfig.from_dict(TINY)
    assert cfg == TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert hash(cfg) == hash(TrainConfig.from_dict(cfg.to_dict())) and len({cfg, cfg.replace()}) == 1
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    data = cfg.to_dict()
    assert data["model"] == TINY["model"] and data["betas"] == [0.9, 0.99]  # JSON types, as checkpoints hold them
    assert cfg.replace(steps=50000).model == cfg.model


def test_the_network_size_comes_from_the_registry():
    interp, predict = TrainConfig(), TrainConfig.for_task("predict")
    assert interp.model == REGISTRY[SHIPPED_MODEL["interpolate"]].kwargs
    assert predict.model == REGISTRY[SHIPPED_MODEL["predict"]].kwargs
    # the numbers the shipped models were trained with
    assert interp.to_dict()["model"] == {"channels": [16, 32, 48, 64], "radius": [0, 2, 3, 4], "stem": 4, "synth": 24}
    assert REGISTRY[INIT_MODEL["predict"]].kwargs == predict.model  # fine-tuned from these weights
    assert {k: getattr(predict, k) for k in PREDICT_DEFAULTS} == dict(PREDICT_DEFAULTS)
    assert predict.task == "predict" and interp.steps == 20000


def test_set_overrides_a_new_run():
    changes = parse_sets(['model={"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4}', "steps=30",
                          "warmup_steps=10", "betas=[0.5, 0.9]", "adv_loss=hinge"])
    cfg = TrainConfig.for_task("predict", changes)
    assert cfg.model["channels"] == (4, 8) and cfg.betas == (0.5, 0.9) and cfg.adv_loss == "hinge"
    assert cfg.steps == 30 and cfg.lr_g == PREDICT_DEFAULTS["lr_g"]
    with pytest.raises(TypeError):
        cfg.model["stem"] = 4
    with pytest.raises(ValueError, match="name=value"):
        parse_sets(["steps"])


def test_resume_with_set_overrides_keeps_the_config_frozen(tmp_path):
    cfg = TrainConfig.from_dict(TINY)
    Trainer(cfg).save(tmp_path / "c.pt")
    again = Trainer.load(tmp_path / "c.pt", override=parse_sets(["steps=8", f"model={json.dumps(TINY['model'])}"]))
    assert again.cfg == cfg.replace(steps=8)
    with pytest.raises(TypeError):
        again.cfg.model["stem"] = 4
    with pytest.raises(ValueError, match="disc can't change on resume"):
        Trainer.load(tmp_path / "c.pt", override=parse_sets(['disc={"channels": 8, "layers": 3, "scales": 1}']))


@pytest.mark.skipif(not SHIPPED_CHECKPOINT.exists(), reason="train_state/ is not in this checkout")
def test_the_shipped_run_checkpoint_still_resumes():
    """train_state/'s checkpoint predates held-out validation and stores lists: it loads,
    with the registry's network size, and the settings it lacks take their defaults."""
    ckpt = torch.load(SHIPPED_CHECKPOINT, map_location="cpu", weights_only=True)
    assert "val_clips" not in ckpt["config"] and "validation" not in ckpt
    tr = Trainer.load(SHIPPED_CHECKPOINT, override=parse_sets(["steps=30000", "data_root=/nowhere"]))
    assert tr.step == ckpt["step"] and tr.cfg.steps == 30000 and tr.cfg.task == "interpolate"
    assert tr.cfg.model == REGISTRY["vgan-flow-v1"].kwargs and tr.validation is None
    saved = tr.cfg.to_dict()
    assert {k: saved[k] for k in ckpt["config"]} == {**ckpt["config"], "steps": 30000, "data_root": "/nowhere"}
    for name, value in ckpt["params_ema"].items():
        assert torch.equal(tr.ema.state_dict()[name], value)
