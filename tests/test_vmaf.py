"""scripts/vmaf.py: VMAF through libvmaf in ffmpeg for the evaluation scripts (issue 17):
the conversion both sides go through, real scores on tiny synthetic frames, frames of
several sizes, and what happens without an ffmpeg that has libvmaf."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script, moving_frames
from vs_vgan import ffmpeg as F

vmaf = load_script("vmaf")
FOUND = vmaf.find_vmaf_ffmpeg()
needs_libvmaf = pytest.mark.skipif(FOUND is None, reason="no ffmpeg with the libvmaf filter (find_ffmpeg()'s "
                                   "or imageio-ffmpeg's)")
BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
needs_bench = pytest.mark.skipif(not (BENCH / "triplets.py").is_file(), reason=f"the shared bench is not at {BENCH}")


def _fake_ffmpeg(folder: Path, exit_code: int = 0) -> Path:
    """An 'ffmpeg' whose -filters lists vmafmotion but not libvmaf (as Debian's 5.1), and
    that fails with ``exit_code`` when asked to run a graph."""
    path = folder / "ffmpeg"
    path.write_text("#!/bin/sh\n"
                    "case \"$*\" in\n"
                    "  *-filters*) echo 'Filters:';"
                    " echo ' ... vmafmotion        V->V       Calculate the VMAF Motion score.';"
                    " echo ' ... scale             V->V       Scale the input video size.';;\n"
                    "  *-version*) echo 'ffmpeg version 0.fake Copyright (c) nobody';;\n"
                    f"  *) echo 'fake ffmpeg: no such filter' >&2; exit {exit_code};;\n"
                    "esac\n")
    path.chmod(0o755)
    return path


def _noisy(frame: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(frame.astype(np.float64) + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def test_both_sides_go_to_bt709_limited_range_yuv420():
    rgb = np.array([[[255, 0, 0], [255, 255, 255]], [[0, 0, 0], [0, 0, 255]]], np.uint8)
    y, u, v = vmaf.rgb_to_yuv420(rgb)
    # BT.709 limited: Y = 16 + 219 (0.2126 R + 0.7152 G + 0.0722 B) / 255
    assert y.tolist() == [[63, 235], [16, 32]]
    assert u.shape == v.shape == (1, 1) and (u.dtype, v.dtype) == (np.uint8, np.uint8)
    grey = np.full((4, 6, 3), 128, np.uint8)
    gy, gu, gv = vmaf.rgb_to_yuv420(grey)
    assert (gy == 126).all() and (gu == 128).all() and (gv == 128).all()  # 16 + 219 * 128 / 255 = 125.9
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    ry, ru, rv = vmaf.rgb_to_yuv420(red)
    assert (ry.tolist(), ru.tolist(), rv.tolist()) == ([[63, 63], [63, 63]], [[102]], [[240]])  # Cr: 128 + 112
    frame = moving_frames(1, 37, 23)[0]  # odd: padded by repeating the last column and row
    planes = vmaf.rgb_to_yuv420(frame)
    assert [p.shape for p in planes] == [(24, 38), (12, 19), (12, 19)]
    assert (planes[0][23] == planes[0][22]).all() and (planes[0][:, 37] == planes[0][:, 36]).all()
    chw = vmaf.rgb_to_yuv420(np.ascontiguousarray(frame.transpose(2, 0, 1)))
    assert all((a == b).all() for a, b in zip(planes, chw))
    with pytest.raises(TypeError, match=r"^vmaf.rgb_to_yuv420: rgb must be uint8; got float64"):
        vmaf.rgb_to_yuv420(frame.astype(np.float64))


@needs_libvmaf
def test_identical_frames_score_near_100_and_distortions_clearly_less():
    frames = moving_frames(6, 64, 64)
    rng = np.random.default_rng(0)
    scorer = vmaf.Vmaf(FOUND, threads=1)
    batch = scorer.batch()
    for f in frames:
        batch.add("same", f, f)
        batch.add("light noise", _noisy(f, 3, rng), f)
        batch.add("heavy noise", _noisy(f, 60, rng), f)
        batch.add("shifted", np.roll(f, 4, axis=1), f)
    scores = batch.run()
    assert list(scores) == ["same", "light noise", "heavy noise", "shifted"]
    assert all(len(v) == 6 for v in scores.values())
    mean = {k: vmaf.pooled({k: v}) for k, v in scores.items()}
    # the first frame of a sequence has no motion feature: identical frames score about 97.4 there
    assert min(scores["same"]) > 95 and mean["same"] > 99
    assert mean["light noise"] > 95
    assert mean["heavy noise"] < 70 and mean["shifted"] < 40
    assert scorer.libvmaf_version and scorer.describe()["model"] == "vmaf_v0.6.1"
    assert vmaf.pooled(scores) == pytest.approx(np.mean([s for v in scores.values() for s in v]))


@needs_libvmaf
def test_frames_of_different_sizes_score_as_their_own_sequences():
    """One label with frames of two sizes (and an odd one) in one batch gives, frame by
    frame in the order added, what separate batches of each size give."""
    big, small, odd = moving_frames(3, 64, 48), moving_frames(3, 48, 40), moving_frames(2, 41, 37)
    rng = np.random.default_rng(1)
    dist = {"big": [_noisy(f, 25, rng) for f in big], "small": [_noisy(f, 25, rng) for f in small],
            "odd": [_noisy(f, 25, rng) for f in odd]}
    scorer = vmaf.Vmaf(FOUND)
    mixed = scorer.batch()
    order = [("big", 0), ("small", 0), ("big", 1), ("odd", 0), ("small", 1), ("big", 2), ("small", 2), ("odd", 1)]
    refs = {"big": big, "small": small, "odd": odd}
    for name, k in order:
        mixed.add("all", dist[name][k], refs[name][k])
    got = mixed.run()["all"]
    alone = {}
    for name in refs:
        b = scorer.batch()
        for d, r in zip(dist[name], refs[name]):
            b.add(name, d, r)
        alone[name] = b.run()[name]
    assert got == pytest.approx([alone[name][k] for name, k in order], abs=1e-6)
    assert all(0 <= s <= 100 for s in got) and len(set(np.round(got, 3))) > 3


def test_frames_too_small_or_of_two_shapes_are_refused():
    scorer = vmaf.Vmaf("/nonexistent/ffmpeg")  # never run
    batch = scorer.batch()
    tiny = moving_frames(1, 16, 16)[0]
    with pytest.raises(ValueError, match=r"^vmaf.add: frames must be at least 17x17 for libvmaf; got 16x16$"):
        batch.add("x", tiny, tiny)
    a, b = moving_frames(1, 32, 32)[0], moving_frames(1, 34, 32)[0]
    with pytest.raises(ValueError, match=r"^vmaf.add: dist and ref must have one shape; "
                                         r"got \(32, 32, 3\) and \(32, 34, 3\)"):
        batch.add("x", a, b)
    assert len(batch) == 0 and vmaf.run_batch(batch, print, "x") == (None, None)


def test_without_libvmaf_the_scripts_are_told_once_and_get_none(tmp_path, monkeypatch):
    fake = _fake_ffmpeg(tmp_path)
    monkeypatch.setenv(F.FFMPEG_ENV, str(fake))
    monkeypatch.setattr(F, "bundled_ffmpeg", lambda: None)
    assert not vmaf.has_libvmaf(str(fake))
    assert vmaf.find_vmaf_ffmpeg() is None
    said = []
    assert vmaf.open_vmaf(said.append) is None
    assert said == [f"VMAF left out: no ffmpeg with the libvmaf filter (tried: {fake.resolve()} ({F.FFMPEG_ENV}))"]
    monkeypatch.setenv(F.FFMPEG_ENV, str(tmp_path / "missing"))  # names nothing: said, not raised
    said.clear()
    assert vmaf.open_vmaf(said.append) is None
    assert len(said) == 1 and said[0].startswith("VMAF left out: no ffmpeg with the libvmaf filter (tried: none found); "
                                                 "vs_vgan.ffmpeg: VS_VGAN_FFMPEG must name an executable ffmpeg")
    assert vmaf.run_batch(None, said.append, "x") == (None, None) and len(said) == 1


@needs_libvmaf
def test_an_ffmpeg_without_libvmaf_is_passed_over_for_imageio_ffmpegs(tmp_path, monkeypatch):
    bundled = F.bundled_ffmpeg()
    if bundled is None or not vmaf.has_libvmaf(bundled):
        pytest.skip("imageio-ffmpeg's ffmpeg is missing or has no libvmaf")
    fake = _fake_ffmpeg(tmp_path)
    monkeypatch.setenv(F.FFMPEG_ENV, str(fake))
    assert vmaf.find_vmaf_ffmpeg() == F.FFmpeg(bundled, "imageio-ffmpeg")
    said = []
    assert vmaf.open_vmaf(said.append, threads=1).ffmpeg.path == bundled
    assert said[0].startswith(f"VMAF: vmaf_v0.6.1 through {bundled} (imageio-ffmpeg; ")
    assert said[0].endswith(f"n_threads=1; {fake.resolve()} ({F.FFMPEG_ENV}) has no libvmaf")


def test_a_failing_ffmpeg_leaves_vmaf_out_and_says_why(tmp_path):
    scorer = vmaf.Vmaf(str(_fake_ffmpeg(tmp_path, exit_code=1)))
    batch = scorer.batch()
    f = moving_frames(1, 32, 32)[0]
    batch.add("x", f, f)
    said = []
    assert vmaf.run_batch(batch, said.append, "blend") == (None, None)
    assert said == [f"blend: VMAF left out: vmaf: {tmp_path / 'ffmpeg'} exited with 1: fake ffmpeg: no such filter"]
    again = scorer.batch()
    again.add("x", f, f)
    with pytest.raises(vmaf.VmafError, match="exited with 1"):
        again.run()


def _triplets(root: Path) -> list[str]:
    """Two Middlebury-layout triplets of different sizes (frame10i11 the true middle)."""
    from PIL import Image

    names = []
    for name, (w, h) in (("Big", (64, 48)), ("Small", (48, 40))):
        f0, f1, f2 = moving_frames(3, w, h)
        for sub, file, img in (("input", "frame10.png", f0), ("input", "frame11.png", f2),
                               ("gt", "frame10i11.png", f1)):
            (root / sub / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / sub / name / file)
        names.append(name)
    return names


@needs_libvmaf
@needs_bench
def test_eval_interp_scores_each_triplet_and_adds_a_vmaf_column(tmp_path):
    script = load_script("eval_interp")
    names = _triplets(tmp_path / "mb")
    tb = script.load_bench(BENCH / "triplets.py", "vgan_bench_triplets")
    scorer = vmaf.Vmaf(FOUND)
    (row,) = script.eval_triplets(tb, str(tmp_path / "mb"), [("blend", None)], scorer)
    assert list(row["per_item_vmaf"]) == names
    assert 0 < row["vmaf"] < 99
    assert row["vmaf"] == pytest.approx(np.mean(list(row["per_item_vmaf"].values())), abs=0.01)
    (plain,) = script.eval_triplets(tb, str(tmp_path / "mb"), [("blend", None)], None)
    assert plain["vmaf"] is None and "per_item_vmaf" not in plain and plain["psnr_rgb"] == row["psnr_rgb"]
    table = script.markdown([row])
    assert table.splitlines()[0] == ("| method | middlebury-others PSNR (dB) | middlebury-others SSIM "
                                     "| middlebury-others VMAF |")
    assert table.splitlines()[2] == f"| blend | {row['psnr_rgb']:.2f} | {row['ssim_rgb']:.4f} | {row['vmaf']:.2f} |"
    assert "VMAF" not in script.markdown([plain])


@needs_bench
def test_eval_interp_without_libvmaf_says_so_once_and_writes_null(tmp_path, monkeypatch, capsys):
    script = load_script("eval_interp")
    _triplets(tmp_path / "mb")
    monkeypatch.setenv(F.FFMPEG_ENV, str(_fake_ffmpeg(tmp_path)))
    monkeypatch.setattr(F, "bundled_ffmpeg", lambda: None)
    out = tmp_path / "rows.json"
    assert script.main(["--middlebury", str(tmp_path / "mb"), "--methods", "blend", "--vgan", 'v={"model": "blend"}',
                        "--json", str(out), "--bench", str(BENCH)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("VMAF left out") == 1 and "VMAF" not in captured.out
    data = json.loads(out.read_text())
    assert [r["vmaf"] for r in data["rows"]] == [None, None] and data["meta"]["vmaf"] is None
