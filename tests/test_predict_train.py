"""Frame prediction: the predictor network, its training data and training on the CPU at a tiny size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_FLOW_KWARGS, TINY_TRAIN_SETS, load_script, moving_frames, seeded_state_dict, write_webp
from vs_vgan.models.flownet import FlowInterpolator
from vs_vgan.models.prednet import CONTEXT, FlowPredictor
from vs_vgan.train import data as D
from vs_vgan.train.config import TrainConfig
from vs_vgan.train.loop import Trainer, d_step, evaluate, g_step

TINY = dict(
    task="predict",
    model={"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4},
    disc={"channels": 4, "layers": 3, "scales": 1},
    batch=2, crop=32, steps=4, warmup_steps=2, lr_ramp=1, adv_ramp=1, log_every=1,
    checkpoint_seconds=1e9, flow_aux_steps=4,
)


def texture_run(rng: np.random.Generator, batch: int = 2, crop: int = 32, frames: int = 4) -> dict:
    """A texture moving by a constant whole-pixel step: each next frame is exact."""
    step = int(rng.integers(1, 3))
    base = rng.random((batch, 3, crop, crop + step * frames), dtype=np.float32)
    run = [torch.from_numpy(base[..., i * step:i * step + crop].copy()) for i in range(frames)]
    return {"img0": run[0], "img1": run[1], "gt": run[2], "next": run[3]}


def test_predictor_loads_interpolator_weights_and_extrapolates_linear_motion():
    assert CONTEXT == 2
    interp = FlowInterpolator(**TINY_FLOW_KWARGS)
    pred = FlowPredictor(**TINY_FLOW_KWARGS)
    state = seeded_state_dict(interp, 3)
    interp.load_state_dict(state)
    pred.load_state_dict(state)  # the same parameters, so a predictor starts from an interpolator
    a = torch.rand(1, 3, 16, 24)
    with torch.inference_mode():
        out = pred.predict(a, a)
    assert out.shape == a.shape and torch.isfinite(out).all()
    # zero-initialised heads: zero flow, an even blend and no residual, so a static scene
    # is predicted exactly as it is
    fresh = FlowPredictor(**TINY_FLOW_KWARGS).eval()
    with torch.inference_mode():
        torch.testing.assert_close(fresh.predict(a, a), a, atol=1e-5, rtol=0)


def test_video_sequences_give_runs_with_a_constant_gap(tmp_path):
    clip = np.stack(moving_frames(12, width=64, height=48))
    runs = D.VideoSequences([clip], length=4, max_gap=2, scale_range=(1.0, 1.0))
    rng = np.random.default_rng(0)
    run = runs.sample(rng, 32)
    assert run.shape == (4, 3, 32, 32) and run.dtype == np.float32 and 0 <= run.min() and run.max() <= 1
    batch = D.make_sequence_batch(runs, 3, 32, rng)
    assert set(batch) == {"img0", "img1", "gt", "next"} and batch["gt"].shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="at least one clip of 4 frames"):
        D.VideoSequences([clip[:3]], length=4)


def test_both_phases_with_rollout_change_the_networks():
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **TINY})
    tr = Trainer(cfg)
    assert isinstance(tr.net, FlowPredictor)
    rng = np.random.default_rng(0)
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    d_before = {k: v.clone() for k, v in tr.disc.state_dict().items()}
    parts = g_step(tr, texture_run(rng))
    assert "rollout" in parts and np.isfinite(parts["total"])
    tr.step = 3  # the adversarial phase
    batch = texture_run(rng)
    parts = g_step(tr, batch)
    assert "adv_g" in parts
    parts.update(d_step(tr, batch, tr.last_fake))
    assert np.isfinite(parts["adv_d"])
    assert any(not torch.equal(before[k], v) for k, v in tr.net.state_dict().items())
    assert any(not torch.equal(d_before[k], v) for k, v in tr.disc.state_dict().items())
    row = evaluate(tr.ema, [texture_run(rng)], tr.device)
    assert set(row) == {"val_psnr", "val_ssim", "val_repeat_psnr"}


def test_train_predict_script_end_to_end(tmp_path):
    """scripts/train_predict.py on a tiny data folder: init from a file, both phases, resume, export."""
    from safetensors.torch import save_file

    script = load_script("train_predict")
    data = tmp_path / "data"
    data.mkdir()
    write_webp(data / "clip.webp", moving_frames(10, width=64, height=56))
    write_webp(data / "held.webp", moving_frames(10, width=64, height=56)[::-1])  # validation's
    init = tmp_path / "init.safetensors"
    kwargs = {"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4}
    save_file(seeded_state_dict(FlowInterpolator(**kwargs), 1), str(init))
    sets = ["--set", f"model={json.dumps(kwargs)}", *TINY_TRAIN_SETS, "--set", "val_clips=1"]
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        argv = ["--data", str(data), "--out", str(out), "--until", "3", "--threads", "1", "--init", str(init), *sets]
        assert script.main(argv) == 0
        ckpt = torch.load(out / "last.pt", weights_only=True)
        assert ckpt["step"] == 3 and ckpt["config"]["task"] == "predict"
        assert script.main(["--resume", str(out / "last.pt"), "--out", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("rollout" in r for r in rows) and any("val_repeat_psnr" in r for r in rows)
    assert any("adv_d" in r for r in rows)
    assert script.main(["--export", str(out / "last.pt"), str(tmp_path / "p.safetensors")]) == 0
    from vs_vgan.models import ModelSpec, load_model
    from vs_vgan.models.loader import file_sha256

    w = tmp_path / "p.safetensors"
    net = load_model(ModelSpec(name="p", task="predict", arch="flow-predict", kwargs=kwargs, weights=str(w),
                               sha256=file_sha256(w), modulo=8), torch.device("cpu"), torch.float32)
    assert isinstance(net, FlowPredictor)
