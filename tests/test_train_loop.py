"""The training library end to end on the CPU at a tiny size: both phases, checkpoints, resume, export."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN_SETS, load_script, moving_frames, write_webp
from vs_vgan.models import ModelSpec, load_model
from vs_vgan.train import loop
from vs_vgan.train.config import TrainConfig
from vs_vgan.train.loop import Trainer, d_step, export_weights, g_step, lr_at, train

TINY = dict(
    model={"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4},
    disc={"channels": 4, "layers": 3, "scales": 1},
    batch=2, crop=32, steps=4, warmup_steps=2, lr_ramp=1, adv_ramp=1, log_every=1,
    checkpoint_seconds=1e9, flow_aux_steps=4,
)


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **TINY, **changes})


def make_batch(rng: np.random.Generator, batch: int = 2, crop: int = 32) -> dict[str, torch.Tensor]:
    """A texture moving by whole pixels: the middle frame is exact."""
    base = rng.random((batch, 3, crop, crop + 8), dtype=np.float32)
    shift = int(rng.integers(1, 3))
    img0 = base[..., 0:crop]
    gt = base[..., shift:shift + crop]
    img1 = base[..., 2 * shift:2 * shift + crop]
    return {"img0": torch.from_numpy(img0.copy()), "gt": torch.from_numpy(gt.copy()),
            "img1": torch.from_numpy(img1.copy()), "t": torch.full((batch, 1, 1, 1), 0.5)}


def test_config_round_trip_and_checks():
    cfg = tiny_config()
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown settings"):
        TrainConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="warmup_steps"):
        tiny_config(warmup_steps=10)
    with pytest.raises(ValueError, match="adv_loss"):
        tiny_config(adv_loss="wgan")


def test_crop_must_fit_the_modulo():
    with pytest.raises(ValueError, match="multiple of the generator's modulo 8"):
        Trainer(tiny_config(crop=36))


def test_learning_rate_ramps_then_decays():
    cfg = tiny_config(steps=100, warmup_steps=50, lr_ramp=10)
    lrs = [lr_at(cfg, s) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(cfg.lr_g)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(cfg.lr_min, rel=0.05)


def test_generator_and_discriminator_steps_change_their_networks():
    tr = Trainer(tiny_config())
    batch = make_batch(np.random.default_rng(0))
    g0 = [p.detach().clone() for p in tr.net.parameters()]
    d0 = [p.detach().clone() for p in tr.disc.parameters()]
    parts = g_step(tr, batch)
    assert {"charbonnier", "total", "psnr", "flow_aux"} <= set(parts) and "adv_g" not in parts
    assert any(not torch.equal(a, b) for a, b in zip(g0, tr.net.parameters()))
    tr.step = tr.cfg.warmup_steps  # adversarial phase
    parts = g_step(tr, batch)
    assert {"adv_g", "fm"} <= set(parts) and all(np.isfinite(v) for v in parts.values())
    dparts = d_step(tr, batch, tr.last_fake)
    assert set(dparts) == {"adv_d", "d_real", "d_fake"}
    assert any(not torch.equal(a, b) for a, b in zip(d0, tr.disc.parameters()))


def test_the_discriminator_judges_one_window_per_step():
    """disc_crop: the three frames cut to one window, the same for the real and the
    generated frame of a step (from (seed, step)), another at another step, and the whole
    crop without it; both adversarial steps run on it."""
    tr = Trainer(tiny_config(disc_crop=16))
    batch = make_batch(np.random.default_rng(1))
    fake = torch.rand_like(batch["gt"])
    real_frames = loop._disc_frames(tr, batch, batch["gt"])
    fake_frames = loop._disc_frames(tr, batch, fake)
    assert [tuple(f.shape[-2:]) for f in real_frames + fake_frames] == [(16, 16)] * 6
    windows = set()
    for step in range(8):
        tr.step = step
        cut = loop._disc_frames(tr, batch, fake)
        assert torch.equal(cut[0], loop._disc_frames(tr, batch, fake)[0])  # fixed by the step
        hits = [(y, x) for y in range(17) for x in range(17)
                if torch.equal(batch["img0"][..., y:y + 16, x:x + 16], cut[0])]
        assert len(hits) == 1 and torch.equal(fake[..., hits[0][0]:hits[0][0] + 16, hits[0][1]:hits[0][1] + 16],
                                              cut[1])
        windows.add(hits[0])
    assert len(windows) > 1
    tr.step = tr.cfg.warmup_steps
    parts = g_step(tr, batch)
    assert {"adv_g", "fm"} <= set(parts)
    assert np.isfinite(d_step(tr, batch, tr.last_fake)["adv_d"])
    whole = Trainer(tiny_config())
    assert [tuple(f.shape[-2:]) for f in loop._disc_frames(whole, batch, fake)] == [(32, 32)] * 3
    with pytest.raises(ValueError, match="disc_crop"):
        tiny_config(disc_crop=64)


def test_two_phases_run_and_checkpoint(tmp_path):
    tr = Trainer(tiny_config())
    train(tr, make_batch, tmp_path, val_batches=[make_batch(np.random.default_rng(9))])
    assert tr.step == 4
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "psnr" in r}
    assert sorted(steps) == [1, 2, 3, 4]
    assert "adv_g" not in steps[2] and "adv_g" in steps[3] and "adv_d" in steps[4]
    assert any("val_psnr" in r for r in rows)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"params", "params_ema", "config", "step"} <= set(ckpt) and ckpt["step"] == 4
    assert ckpt["config"] == tr.cfg.to_dict()
    assert any(not torch.equal(ckpt["params"][k], ckpt["params_ema"][k]) for k in ckpt["params"])


def test_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)  # bitwise-stable reductions for the comparison
    try:
        straight = Trainer(tiny_config())
        train(straight, make_batch, tmp_path / "a")
        half = Trainer(tiny_config())
        train(half, make_batch, tmp_path / "b", until=3)  # stops inside the adversarial phase
        resumed = Trainer.load(tmp_path / "b" / "last.pt")
        assert resumed.step == 3
        train(resumed, make_batch, tmp_path / "b")
    finally:
        torch.set_num_threads(2)
    for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("failing", ["evaluate", "save"])
def test_a_failed_step_propagates_as_itself_when_the_last_checkpoint_fails_too(tmp_path, monkeypatch, caplog, failing):
    """The checkpoint written on the way out (its save, or the evaluation after it) fails
    as well: logged and noted on the step's exception, which is the one raised."""
    tr = Trainer(tiny_config())

    def batches(rng):
        if tr.step == 2:
            raise RuntimeError("step 2 broke")
        return make_batch(rng)

    def broken(*args, **kwargs):
        raise ValueError(f"{failing} broke")

    if failing == "evaluate":
        monkeypatch.setattr(loop, "evaluate", broken)
    else:
        monkeypatch.setattr(Trainer, "save", broken)
    with caplog.at_level(logging.ERROR, logger="vs_vgan.train"):
        with pytest.raises(RuntimeError, match="step 2 broke") as info:
            train(tr, batches, tmp_path, val_batches=[make_batch(np.random.default_rng(9))])
    assert any(f"ValueError: {failing} broke" in note for note in info.value.__notes__)
    assert f"{failing} broke" in caplog.text and "RuntimeError at step 2" in caplog.text
    if failing == "evaluate":  # the checkpoint itself was saved before the evaluation failed
        assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2


def test_an_interrupt_is_checkpointed_and_stays_an_interrupt(tmp_path):
    tr = Trainer(tiny_config())

    def batches(rng):
        if tr.step == 1:
            raise KeyboardInterrupt
        return make_batch(rng)

    with pytest.raises(KeyboardInterrupt):
        train(tr, batches, tmp_path, val_batches=[make_batch(np.random.default_rng(9))])
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and "val_psnr" in rows[-1]


def test_a_failed_evaluation_after_a_good_run_is_raised(tmp_path, monkeypatch):
    """Without an earlier failure, the last checkpoint's own failure is the error."""
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: (_ for _ in ()).throw(ValueError("evaluation broke")))
    with pytest.raises(ValueError, match="evaluation broke"):
        train(Trainer(tiny_config()), make_batch, tmp_path, until=1, val_batches=[make_batch(np.random.default_rng(9))])


def test_resume_refuses_another_architecture(tmp_path):
    tr = Trainer(tiny_config())
    tr.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="model can't change on resume"):
        Trainer.load(tmp_path / "c.pt", override={"model": {"channels": [4, 16], "radius": [0, 1], "stem": 2, "synth": 4}})
    again = Trainer.load(tmp_path / "c.pt", override={"steps": 8})
    assert again.cfg.steps == 8


def test_exported_weights_load_through_the_registry_loader(tmp_path):
    tr = Trainer(tiny_config())
    train(tr, make_batch, tmp_path, until=2)
    path, digest, kwargs = export_weights(tmp_path / "last.pt", tmp_path / "w.safetensors")
    spec = ModelSpec(name="exported", task="interpolate", arch="flow", kwargs=kwargs, weights=str(path),
                     sha256=digest, modulo=8)
    net = load_model(spec, torch.device("cpu"), torch.float32)
    batch = make_batch(np.random.default_rng(3))
    with torch.inference_mode():
        a = net(batch["img0"], batch["img1"], batch["t"])
        b = tr.ema.eval()(batch["img0"], batch["img1"], batch["t"])
    torch.testing.assert_close(a, b)


def test_train_script_runs_end_to_end_on_real_files(tmp_path, capsys):
    """scripts/train_interp.py on a tiny data folder: both phases, a checkpoint, resume, export."""
    script = load_script("train_interp")
    data = tmp_path / "data"
    data.mkdir()
    write_webp(data / "clip.webp", moving_frames(8, width=64, height=56))
    write_webp(data / "held.webp", moving_frames(8, width=64, height=56)[::-1])  # validation's
    sets = ["--set", 'model={"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4}', *TINY_TRAIN_SETS,
            "--set", "val_clips=1"]
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert script.main(["--data", str(data), "--out", str(out), "--until", "3", "--threads", "1", *sets]) == 0
        assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
        assert script.main(["--resume", str(out / "last.pt"), "--out", str(out), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["config"]["crop"] == 32
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("adv_d" in r for r in rows) and any("val_psnr" in r for r in rows)
    capsys.readouterr()
    assert script.main(["--export", str(out / "last.pt"), str(tmp_path / "w.safetensors")]) == 0
    assert (tmp_path / "w.safetensors").stat().st_size > 0
    record = json.loads(capsys.readouterr().out)  # the script prints the export's record on stdout
    assert record["weights"] == str(tmp_path / "w.safetensors") and len(record["sha256"]) == 64


# --------------------------------------------------------------------------- issue 16's levers
def test_generate_at_scale_one_is_synthesize_and_scale_changes_the_analysis():
    tr = Trainer(tiny_config())
    batch = make_batch(np.random.default_rng(0))
    with torch.no_grad():
        pred, state = loop.generate(tr.net, batch)
        assert torch.equal(pred, tr.net.synthesize(tr.net.encode(batch["img0"], batch["img1"]), batch["t"]))
        half, state_half = loop.generate(tr.net, batch, 0.5)
    assert half.shape == pred.shape and state_half.scale == 0.5 and not torch.equal(half, pred)


def test_teacher_flow_loss_compares_in_frame_pixels_over_the_frame():
    g = torch.Generator().manual_seed(1)
    t0, t1 = torch.randn(2, 2, 40, 48, generator=g) * 5, torch.randn(2, 2, 40, 48, generator=g) * 5
    ratio = 8.0  # stem 2 at analysis scale 0.25
    target = torch.nn.functional.interpolate(torch.cat((t0, t1), 1), size=(5, 6), mode="area")
    student = torch.zeros(2, 4, 8, 8)  # the analysis padded to 8x8 level-0 pixels
    student[..., :5, :6] = target / ratio
    student[..., 5:, :] = 1e3  # the padding is left out
    assert float(loop.teacher_flow_loss(student, t0, t1, ratio)) < 1.1e-3  # Charbonnier: eps at 0
    student[:, 0, 0, 0] += 1.0
    assert float(loop.teacher_flow_loss(student, t0, t1, ratio)) > 0.02  # 8 pixels off in 1 of 240


def test_g_step_learns_from_a_rife_teacher_at_an_analysis_scale(rife_pkl):
    cfg = tiny_config(teacher=str(rife_pkl), w_teacher_flow=0.01, w_teacher_frame=0.5, teacher_steps=2,
                      analysis_scale=0.5, crop=64)
    tr = Trainer(cfg)
    assert tr.teacher is not None and not any(p.requires_grad for p in tr.teacher.net.parameters())
    before = [p.detach().clone() for p in tr.net.parameters()]
    parts = g_step(tr, make_batch(np.random.default_rng(0), crop=64))
    assert {"teacher_flow", "teacher_frame"} <= set(parts) and np.isfinite(parts["total"])
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.net.parameters()))
    tr.step = 2  # the flow term has faded out; the frame term stays
    parts = g_step(tr, make_batch(np.random.default_rng(1), crop=64))
    assert "teacher_flow" not in parts and "teacher_frame" in parts


def test_teacher_settings_are_checked():
    with pytest.raises(ValueError, match="need a teacher"):
        tiny_config(w_teacher_flow=0.1)
    with pytest.raises(ValueError, match="analysis_scale must be 1.0, 0.5 or 0.25, or a list of them; got 0.3"):
        tiny_config(analysis_scale=0.3)
    with pytest.raises(ValueError, match=r"got \[0.25, 0.3\]"):
        tiny_config(analysis_scale=[0.25, 0.3])
    with pytest.raises(ValueError, match="lists a scale twice"):
        tiny_config(analysis_scale=[0.5, 0.5])
    with pytest.raises(ValueError, match="or a list of them; got \\[\\]"):
        tiny_config(analysis_scale=[])
    with pytest.raises(ValueError, match="for the interpolate task"):
        TrainConfig.for_task("predict", {"analysis_scale": 0.5})


def test_a_list_of_analysis_scales_is_taken_in_turn(monkeypatch):
    cfg = tiny_config(analysis_scale=[0.25, 0.5], crop=64)
    assert cfg.analysis_scales == (0.25, 0.5) and cfg.to_dict()["analysis_scale"] == [0.25, 0.5]
    assert [cfg.scale_at(k) for k in range(5)] == [0.25, 0.5, 0.25, 0.5, 0.25]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # checkpoints keep the list
    assert tiny_config(analysis_scale=0.5).analysis_scales == (0.5,)
    seen = []
    real = loop._generate

    def spy(net, batch, scale=1.0):
        seen.append(scale)
        return real(net, batch, scale)

    monkeypatch.setattr(loop, "_generate", spy)
    tr = Trainer(cfg)
    for k in range(3):
        g_step(tr, make_batch(np.random.default_rng(k), crop=64))
        tr.step += 1
    assert seen == [0.25, 0.5, 0.25]


def test_validation_reports_each_analysis_scale():
    cfg = tiny_config(analysis_scale=[0.5, 1.0], crop=64)
    tr = Trainer(cfg)
    batches = [make_batch(np.random.default_rng(k), crop=64) for k in range(2)]
    row = loop.validate(tr.ema, batches, tr.device, cfg.analysis_scales)
    at_half = loop.evaluate(tr.ema, batches, tr.device, 0.5)
    at_full = loop.evaluate(tr.ema, batches, tr.device, 1.0)
    assert row["val_psnr"] == at_half["val_psnr"] == row["val_psnr@0.5"]  # the first scale: the plain keys
    assert row["val_psnr@1"] == at_full["val_psnr"] and row["val_ssim@1"] == at_full["val_ssim"]
    one = loop.validate(tr.ema, batches, tr.device, (0.5,))
    assert one == at_half  # one scale: the keys of older runs, nothing added
