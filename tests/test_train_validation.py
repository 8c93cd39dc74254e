"""Honest validation: whole clips of the training videos held out, never in a training batch.

Each tiny generated clip lives in its own band of pixel values (clip j: 50 j + 5 to
50 j + 35), which zoom, crop, flips, reversal and channel order keep, so every sample
says which clip it came from.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN_SETS, load_script, moving_frames, write_webp
from vs_vgan.train import data as D
from vs_vgan.train import loop
from vs_vgan.train.command import DataError, prepare_data
from vs_vgan.train.config import TrainConfig

TINY_MODEL = {"channels": [4, 8], "radius": [0, 1], "stem": 2, "synth": 4}


def banded_frames(j: int, count: int = 8) -> list[np.ndarray]:
    """The moving pattern of conftest.moving_frames, squeezed into clip j's band."""
    return [(50 * j + 5 + f.astype(np.float64) * 30 / 255).round().astype(np.uint8)
            for f in moving_frames(count, width=64, height=56)]


def write_clips(folder, count: int = 5, frames: int = 8) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(count):
        write_webp(folder / f"clip{j}.webp", banded_frames(j, frames))
    return [f"clip{j}.webp" for j in range(count)]


def band(sample: torch.Tensor) -> int:
    """The one clip a sample (any frames of one batch item) came from."""
    bands = torch.unique(torch.div((sample * 255).round(), 50, rounding_mode="floor")).tolist()
    assert len(bands) == 1, f"a sample mixing clips {bands}"
    return int(bands[0])


def batch_bands(batch: dict[str, torch.Tensor]) -> list[int]:
    frames = torch.stack([batch[k] for k in ("img0", "img1", "gt")], dim=1)  # (B, 3, C, H, W)
    return [band(item) for item in frames]


def config(root, task: str = "interpolate", **changes) -> TrainConfig:
    return TrainConfig.for_task(task, {"data_root": str(root), "crop": 32, "batch": 4, "val_clips": 2,
                                       "p_synthetic": 0.0, "model": TINY_MODEL, **changes})


def held_bands(validation: dict) -> set[int]:
    return {int(c["name"].removeprefix("clip").removesuffix(".webp")) for c in validation["clips"]}


# --------------------------------------------------------------------------- the split


def test_split_clips_is_seeded_and_ignores_order_and_names():
    keys = [f"k{j}" for j in range(10)]
    train, held = D.split_clips(keys, 3, seed=0)
    assert len(held) == 3 and sorted(train + held) == list(range(10))
    assert D.split_clips(keys, 3, seed=0) == (train, held)  # deterministic
    order = list(reversed(keys))
    assert {order[j] for j in D.split_clips(order, 3, seed=0)[1]} == {keys[j] for j in held}
    assert any({keys[j] for j in D.split_clips(keys, 3, seed=s)[1]} != {keys[j] for j in held} for s in range(1, 5))
    more = keys + ["new0", "new1"]  # added clips keep a held-out clip held out unless they rank before it
    kept = {more[j] for j in D.split_clips(more, 3, seed=0)[1]}
    assert len(kept & {keys[j] for j in held}) >= 1
    assert D.split_clips(keys, 0, seed=0) == (list(range(10)), [])


def test_copies_of_a_file_stay_on_one_side_and_only_eligible_clips_are_held_out():
    keys = ["a", "b", "a", "c", "d", "b"]
    for seed in range(8):
        train, held = D.split_clips(keys, 2, seed=seed, eligible=[True, True, True, True, False, True])
        assert not {keys[j] for j in train} & {keys[j] for j in held}
        assert 4 not in held
    with pytest.raises(ValueError, match="count must be at most 1"):
        D.split_clips(keys, 2, seed=0, eligible=[True, False, True, False, False, False])
    with pytest.raises(ValueError, match="one other left to train on"):
        D.split_clips(["a", "a", "b"], 2, seed=0)


def test_file_key_is_the_content(tmp_path):
    write_clips(tmp_path, 2)
    shutil.copy(tmp_path / "clip0.webp", tmp_path / "copy.webp")
    keys = [D.file_key(tmp_path / n) for n in ("clip0.webp", "copy.webp", "clip1.webp")]
    assert keys[0] == keys[1] != keys[2] and len(keys[0]) == 64


# --------------------------------------------------------------------------- the data of a run


@pytest.mark.parametrize("task", ["interpolate", "predict"])
def test_no_held_out_clip_is_ever_in_a_training_batch(tmp_path, task):
    write_clips(tmp_path / "data")
    cfg = config(tmp_path / "data", task)
    data = prepare_data(cfg)
    held = held_bands(data.validation)
    assert len(held) == 2 and data.validation["seed"] == 0 and data.validation["count"] == 2
    assert {int(n[4]) for n in data.train_clips} == set(range(5)) - held
    seen = set()
    for step in range(60):  # the batches of steps 0..59, as train() draws them
        seen.update(batch_bands(data.make_batch(np.random.default_rng([cfg.seed, step]))))
    assert seen == set(range(5)) - held  # every training clip, and nothing else
    assert len(data.val_batches) == cfg.val_batches
    val_seen = {b for batch in data.val_batches for b in batch_bands(batch)}
    assert val_seen <= held and val_seen  # validation only on the held-out clips
    again = prepare_data(cfg)  # deterministic: the same clips, the same validation batches
    assert again.validation == data.validation
    for a, b in zip(again.val_batches, data.val_batches):
        for k in a:
            assert torch.equal(a[k], b[k])


def test_synthetic_motion_does_not_bring_held_out_clips_back(tmp_path):
    write_clips(tmp_path / "data")
    cfg = config(tmp_path / "data", p_synthetic=0.5)
    data = prepare_data(cfg)
    held = held_bands(data.validation)
    real = 0
    for step in range(20):
        batch = data.make_batch(np.random.default_rng([cfg.seed, step]))
        for item in torch.stack([batch[k] for k in ("img0", "img1", "gt")], dim=1):
            bands = set(torch.unique(torch.div((item * 255).round(), 50, rounding_mode="floor")).tolist())
            if len(bands) == 1 and max(item.flatten()) - min(item.flatten()) <= 31 / 255:  # a clip's sample
                real += 1
                assert not bands & held
    assert real > 0


def test_a_recorded_split_is_kept_when_files_move_and_clips_are_added(tmp_path):
    write_clips(tmp_path / "data")
    first = prepare_data(config(tmp_path / "data"))
    held = held_bands(first.validation)
    moved = tmp_path / "elsewhere" / "sub"
    moved.mkdir(parents=True)
    for j in range(5):
        shutil.copy(tmp_path / "data" / f"clip{j}.webp", moved / f"renamed{j}.webp")
    write_webp(moved / "extra.webp", banded_frames(4))  # a copy of clip 4's content under a third name
    cfg = config(tmp_path / "elsewhere", val_seed=7)  # another seed: the record wins
    again = prepare_data(cfg, validation=first.validation)
    assert again.validation == first.validation
    assert {int(n[-6]) for n in again.train_clips if n.startswith("sub/renamed")} == set(range(5)) - held
    seen = set()
    for step in range(40):
        seen.update(batch_bands(again.make_batch(np.random.default_rng([0, step]))))
    assert not seen & held


def test_too_few_clips_to_hold_out_is_a_clear_error(tmp_path):
    write_clips(tmp_path / "data", 2)
    with pytest.raises(DataError, match=r"val_clips must be at most 1 .*got 2\. .*--set val_clips=N"):
        prepare_data(config(tmp_path / "data"))
    data = prepare_data(config(tmp_path / "data", val_clips=0))  # no validation: everything trains
    assert data.val_batches == () and data.validation["clips"] == [] and len(data.train_clips) == 2
    write_clips(tmp_path / "small", 3, frames=2)  # too short to give a triplet
    with pytest.raises(DataError, match="val_clips must be at most 0"):
        prepare_data(config(tmp_path / "small", val_clips=1))


# --------------------------------------------------------------------------- the scripts


def run_script(name: str, argv: list[str]) -> int:
    threads = torch.get_num_threads()
    try:
        return load_script(name).main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("script", ["train_interp", "train_predict"])
def test_the_scripts_never_step_on_held_out_clips_and_record_them(tmp_path, monkeypatch, script):
    write_clips(tmp_path / "data", 4)
    seen: list[int] = []
    real_g_step = loop.g_step

    def spy(tr, batch):
        seen.extend(batch_bands(batch))
        return real_g_step(tr, batch)

    monkeypatch.setattr(loop, "g_step", spy)
    out = tmp_path / "run"
    sets = ["--set", f"model={json.dumps(TINY_MODEL)}", *TINY_TRAIN_SETS, "--set", "p_synthetic=0",
            "--set", "val_clips=2", "--set", "val_seed=3", "--threads", "1", "--init", "none"]
    assert run_script(script, ["--data", str(tmp_path / "data"), "--out", str(out), "--until", "3", *sets]) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    record = ckpt["validation"]
    held = held_bands(record)
    assert record["seed"] == 3 and len(held) == 2
    assert len(seen) == 3 * 2 and not set(seen) & held
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 0, "validation": record}
    assert any("val_psnr" in r for r in rows)
    # resume: the same clips stay held out; changing the choice is refused
    seen.clear()
    assert run_script(script, ["--resume", str(out / "last.pt"), "--out", str(out), "--threads", "1"]) == 0
    assert len(seen) == 2 and not set(seen) & held
    assert torch.load(out / "last.pt", weights_only=True)["validation"] == record
    with pytest.raises(ValueError, match="val_seed can't change on resume"):
        run_script(script, ["--resume", str(out / "last.pt"), "--out", str(out), "--set", "val_seed=4"])


def test_a_resumed_script_run_continues_exactly(tmp_path):
    """Holding clips out keeps batches a function of (seed, step): 4 steps in one go equal
    3 steps, then a resume for the 4th."""
    write_clips(tmp_path / "data", 4)
    sets = ["--set", f"model={json.dumps(TINY_MODEL)}", *TINY_TRAIN_SETS, "--set", "p_synthetic=0",
            "--set", "val_clips=1", "--threads", "1", "--data", str(tmp_path / "data")]
    assert run_script("train_interp", ["--out", str(tmp_path / "a"), *sets]) == 0
    assert run_script("train_interp", ["--out", str(tmp_path / "b"), "--until", "3", *sets]) == 0
    assert run_script("train_interp", ["--resume", str(tmp_path / "b" / "last.pt"), "--out", str(tmp_path / "b"),
                                       "--threads", "1"]) == 0
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4 and a["validation"] == b["validation"]
    for key in ("params", "params_ema"):
        for name, value in a[key].items():
            torch.testing.assert_close(value, b[key][name], rtol=0, atol=1e-6)
