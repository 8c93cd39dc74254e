"""Training data: finding and decoding videos, the cache, triplet sampling, synthetic motion, batches.

Everything runs on tiny generated files (an animated WebP written with Pillow, and an MP4
made with ffmpeg's testsrc: find_ffmpeg()'s ffmpeg, imageio-ffmpeg's where the system has
none); nothing reads the fetched data set.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ffmpeg_exe, moving_frames, write_webp
from vs_vgan.train import data
from vs_vgan.train.data import Layer, Scene, SyntheticMotion, VideoTriplets

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    write_webp(tmp_path / "anim.webp", moving_frames())
    write_webp(tmp_path / "still.webp", moving_frames(1))
    (tmp_path / "notes.txt").write_text("not a video")
    hidden = tmp_path / ".cache"
    hidden.mkdir()
    write_webp(hidden / "hidden.webp", moving_frames(3))
    sub = tmp_path / "sub"
    sub.mkdir()
    write_webp(sub / "b.webp", moving_frames(4, 32, 24))
    return tmp_path


def make_mp4(path: Path, frames: int = 6) -> Path:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                    "-frames:v", str(frames), "-c:v", "mpeg4", "-q:v", "2", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


def ramp_clip(length: int = 10, height: int = 40, width: int = 48) -> np.ndarray:
    """Frame n is uniform, channel c holding 10 n + 40 c."""
    values = 10 * np.arange(length)[:, None] + 40 * np.arange(3)[None, :]
    return np.broadcast_to(values[:, None, None, :], (length, height, width, 3)).astype(np.uint8)


def frame_index(img: np.ndarray) -> float:
    """The n of a ramp_clip frame (any channel order): the mean over channels is 10 n + 40."""
    return (float(img.mean()) * 255.0 - 40.0) / 10.0


# --------------------------------------------------------------------------- import


def test_training_library_imports_without_vapoursynth():
    code = textwrap.dedent("""
        import sys
        sys.modules["vapoursynth"] = None  # any import of it raises ImportError
        import vs_vgan.train.data as d, vs_vgan.train.loop, vs_vgan.train.losses, vs_vgan.models.flownet
        import vs_vgan.train.teacher, vs_vgan.models.ifnet
        assert "vapoursynth" not in [m for m, v in sys.modules.items() if v is not None]
        print(len(d.__all__))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 5


# --------------------------------------------------------------------------- finding and decoding


def test_find_videos_lists_animated_webp_and_videos_only(video_dir: Path):
    make_mp4(video_dir / "sub" / "clip.mp4")
    found = data.find_videos(video_dir)
    names = [p.relative_to(video_dir).as_posix() for p in found]
    assert names == ["anim.webp", "sub/b.webp", "sub/clip.mp4"]
    assert found == sorted(found)


def test_find_videos_rejects_missing_root(tmp_path: Path):
    with pytest.raises(ValueError, match=r"vs_vgan.train.data.find_videos: root must be an existing folder"):
        data.find_videos(tmp_path / "nope")


def test_load_video_webp(video_dir: Path):
    clip = data.load_video(video_dir / "anim.webp")
    assert clip.shape == (8, 40, 48, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, np.stack(moving_frames()))  # written lossless
    assert data.load_video(video_dir / "anim.webp", max_frames=3).shape == (3, 40, 48, 3)


def test_load_video_bad_arguments(video_dir: Path):
    with pytest.raises(ValueError, match="max_frames must be None or an int >= 1"):
        data.load_video(video_dir / "anim.webp", max_frames=0)
    with pytest.raises(ValueError, match="path must be an existing file"):
        data.load_video(video_dir / "missing.mp4")


def test_load_video_mp4_through_vapoursynth(tmp_path: Path):
    path = make_mp4(tmp_path / "clip.mp4", frames=6)
    clip = data.load_video(path)
    assert clip.shape == (6, 48, 64, 3) and clip.dtype == np.uint8
    assert data.load_video(path, max_frames=2).shape == (2, 48, 64, 3)
    # ffmpeg's own RGB decode (601 for an unspecified matrix, limited range) agrees away from
    # testsrc's sharp colour edges, where the chroma upsamplers differ; 709 would be far off
    # on the colour bars (75th percentile 21 instead of 5)
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    diff = np.abs(clip.astype(int) - np.frombuffer(raw, np.uint8).reshape(6, 48, 64, 3))
    assert np.median(diff) <= 2 and np.percentile(diff, 75) <= 10


def test_cache_videos_decodes_once(video_dir: Path, tmp_path: Path, monkeypatch):
    paths = [video_dir / "anim.webp", video_dir / "sub" / "b.webp"]
    cache = tmp_path / "cache"
    first = data.cache_videos(paths, cache)
    assert [c.shape for c in first] == [(8, 40, 48, 3), (4, 24, 32, 3)]
    assert all(isinstance(c, np.memmap) and not c.flags.writeable for c in first)
    np.testing.assert_array_equal(first[0], np.stack(moving_frames()))
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("anim.webp-") and files[0].endswith(".npy")

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_open_video", no_decode)
    again = data.cache_videos(paths, cache)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in cache.iterdir()) == files


def test_cache_videos_max_side_and_invalidation(video_dir: Path, tmp_path: Path):
    path = video_dir / "anim.webp"
    cache = tmp_path / "cache"
    (small,) = data.cache_videos([path], cache, max_side=24)
    assert small.shape == (8, 20, 24, 3)
    # a box filter keeps the mean
    assert abs(float(small.mean()) - float(np.stack(moving_frames()).mean())) < 1.0
    (full,) = data.cache_videos([path], cache)
    assert full.shape == (8, 40, 48, 3)
    write_webp(path, moving_frames(5))  # a changed file decodes again
    (changed,) = data.cache_videos([path], cache)
    assert changed.shape == (5, 40, 48, 3)
    assert len(list(cache.iterdir())) == 3
    with pytest.raises(ValueError, match="max_side must be None or an int >= 16"):
        data.cache_videos([path], cache, max_side=4)


def test_still_images_are_rgb_photographs():
    images = data.still_images()
    assert len(images) >= 10
    for img in images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 256


# --------------------------------------------------------------------------- VideoTriplets


def test_video_triplets_shapes_ranges_and_t():
    source = VideoTriplets([ramp_clip()], max_span=4)
    rng = np.random.default_rng(0)
    spans = set()
    for _ in range(60):
        img0, gt, img1, t = source.sample(rng, 16)
        for img in (img0, gt, img1):
            assert img.shape == (3, 16, 16) and img.dtype == np.float32
            assert 0.0 <= img.min() and img.max() <= 1.0
        i0, ig, i1 = (round(frame_index(img)) for img in (img0, gt, img1))
        n = i1 - i0  # negative when reversed
        assert 2 <= abs(n) <= 4
        # t = k / n, and the ends swap with t -> 1 - t: gt sits at t between img0 and img1
        assert Fraction(t).limit_denominator(100) == Fraction(ig - i0, n)
        np.testing.assert_allclose(gt, img0 + t * (img1 - img0), atol=1e-6)
        spans.add(n)
    assert any(n > 0 for n in spans) and any(n < 0 for n in spans)  # reversal happens
    assert source.stats["fallback"] == 0 and source.stats["samples"] == 60


def test_video_triplets_augmentations_are_shared_by_the_three_frames():
    # frame n = a fixed texture + 10 n: whatever crop, zoom, flips and channel order a sample
    # gets, the same for all three frames leaves img1 - img0 uniform and gt on the line
    base = np.random.default_rng(0).integers(0, 128, (1, 64, 64, 3))
    clip = (base + 10 * np.arange(8)[:, None, None, None]).astype(np.uint8)
    source = VideoTriplets([clip])
    rng = np.random.default_rng(3)
    for _ in range(30):
        img0, gt, img1, t = source.sample(rng, 24)
        n = round(float(np.median(img1 - img0)) * 25.5)  # 10 n / 255
        assert abs(n) in (2, 3, 4)
        # exact but for the uint8 resizer's fixed-point rounding (one level, rarely)
        for frame, want in ((img1, img0 + 10 * n / 255), (gt, img0 + round(t * n) * 10 / 255)):
            err = np.abs(frame - want)
            assert err.max() <= 1 / 255 + 1e-6 and (err < 1e-6).mean() > 0.98
    assert source.stats["fallback"] == 0


def test_video_triplets_static_clip_falls_back_without_hanging(caplog):
    still = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3), dtype=np.uint8), 6, axis=0)
    source = VideoTriplets([still], max_tries=10)
    start = time.perf_counter()
    with caplog.at_level("WARNING"):
        img0, gt, img1, t = source.sample(np.random.default_rng(0), 16)
        source.sample(np.random.default_rng(1), 16)
    assert time.perf_counter() - start < 2.0
    np.testing.assert_array_equal(img0, img1)
    assert source.stats == {"samples": 2, "static": 20, "cut": 0, "fallback": 2}
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_video_triplets_rejects_scene_cuts():
    low = ramp_clip(6, 24, 24)[..., 0]
    high = 200 + 5 * np.arange(6)[:, None, None]
    clip = np.concatenate([low, np.broadcast_to(high, (6, 24, 24))]).astype(np.uint8)
    clip = np.repeat(clip[..., None], 3, axis=3)
    source = VideoTriplets([clip])
    rng = np.random.default_rng(0)
    for _ in range(40):
        img0, gt, img1, _ = source.sample(rng, 16)
        assert np.abs(img0 - gt).mean() < 0.25 and np.abs(gt - img1).mean() < 0.25
    assert source.stats["cut"] > 0


def test_video_triplets_weights_clips_by_length_and_skips_short_ones():
    short = ramp_clip(3, 16, 16)  # frame means 40..60
    long = np.broadcast_to(150 + 3 * np.arange(30)[:, None, None, None], (30, 16, 16, 3)).astype(np.uint8)
    source = VideoTriplets([short, ramp_clip(2, 16, 16), long])
    assert len(source.clips) == 2
    rng = np.random.default_rng(0)
    picks = [float(source.sample(rng, 8)[0].mean()) * 255 > 110 for _ in range(200)]
    assert 0.8 < np.mean(picks) < 0.99  # 30 / 33 of the samples


def test_video_triplets_errors():
    with pytest.raises(ValueError, match="clips must be at least one clip of 3 frames or more"):
        VideoTriplets([ramp_clip(2)])
    with pytest.raises(ValueError, match=r"clips\[0\] must be a \(T, H, W, 3\) uint8 array"):
        VideoTriplets([np.zeros((4, 8, 8), np.uint8)])
    with pytest.raises(ValueError, match="max_span must be an int >= 2"):
        VideoTriplets([ramp_clip()], max_span=1)
    source = VideoTriplets([ramp_clip(5, 20, 30)])
    with pytest.raises(ValueError, match=r"crop must be at most the shorter side of the largest clip \(20\)"):
        source.sample(np.random.default_rng(0), 24)


# --------------------------------------------------------------------------- SyntheticMotion


def texture(height: int = 96, width: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (uint8)."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 8 + 2, width // 8 + 2, 3))
    t = torch.from_numpy(small).permute(2, 0, 1)[None].float()
    big = torch.nn.functional.interpolate(t, size=(height, width), mode="bicubic", align_corners=False)
    return np.round(big[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [texture(96, 96, 0), texture(80, 120, 1), texture(100, 90, 2)]


def test_synthetic_shapes_ranges_and_t(images):
    source = SyntheticMotion(images)
    rng = np.random.default_rng(0)
    ts = []
    for _ in range(30):
        img0, gt, img1, t = source.sample(rng, 32)
        for img in (img0, gt, img1):
            assert img.shape == (3, 32, 32) and img.dtype == np.float32
            assert 0.0 <= img.min() and img.max() <= 1.0
        assert 0.1 <= t <= 0.9
        ts.append(t)
    assert 5 <= sum(t == 0.5 for t in ts) <= 25 and len(set(ts)) > 5


def test_synthetic_is_deterministic(images):
    a = SyntheticMotion(images).sample(np.random.default_rng(7), 32)
    b = SyntheticMotion(images).sample(np.random.default_rng(7), 32)
    c = SyntheticMotion(images).sample(np.random.default_rng(8), 32)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]
    assert not np.array_equal(a[1], c[1])


def test_synthetic_frames_are_renders_at_0_t_1(images):
    source = SyntheticMotion(images, noise=0.0)
    img0, gt, img1, t = source.sample(np.random.default_rng(3), 32)
    scene = source.draw(np.random.default_rng(3), 32)
    assert scene.t == t and len(scene.layers) >= 2
    np.testing.assert_array_equal(source.render(scene, [0.0, t, 1.0]), np.stack([img0, gt, img1]))
    # each frame depends on its own time only
    np.testing.assert_allclose(source.render(scene, [t])[0], gt, atol=1e-5)
    np.testing.assert_allclose(source.render(scene, [0.0])[0], img0, atol=1e-5)


def test_synthetic_noise_only_on_inputs(images):
    clean = SyntheticMotion(images, noise=0.0).sample(np.random.default_rng(4), 32)
    noisy = SyntheticMotion(images, noise=0.1).sample(np.random.default_rng(4), 32)
    np.testing.assert_array_equal(clean[1], noisy[1])
    assert clean[3] == noisy[3]
    for n in (0, 2):
        diff = noisy[n] - clean[n]
        assert 0.0 < np.abs(diff).mean() < 0.1


def test_synthetic_translation_is_exact(images):
    """Integer shifts, no turn or zoom: every frame is the source image shifted exactly."""
    source = SyntheticMotion(images, layers=(0, 0))
    crop = 32
    bg = Layer(image=0, level=0, centre=(47.5, 47.5), offset=(-4.0, 0.0), shift=(8.0, 0.0))
    frames = source.render(Scene(crop=crop, t=0.5, layers=(bg,)), [0.0, 0.5, 1.0])
    src = images[0].astype(np.float32).transpose(2, 0, 1) / 255.0
    # source column = centre + (j - (crop - 1) / 2) - dx(t), dx(t) = -4 + 8 t
    np.testing.assert_allclose(frames[0], src[:, 32:64, 36:68], atol=1e-4)
    np.testing.assert_allclose(frames[1], src[:, 32:64, 32:64], atol=1e-4)
    np.testing.assert_allclose(frames[2], src[:, 32:64, 28:60], atol=1e-4)


def test_synthetic_foreground_occludes_and_moves_exactly(images):
    source = SyntheticMotion(images)
    crop = 32
    bg = Layer(image=0, level=0, centre=(47.5, 47.5), offset=(0.0, 0.0), shift=(0.0, 0.0))
    fg = Layer(image=1, level=0, centre=(60.5, 40.5), offset=(-3.0, 0.0), shift=(6.0, 0.0),
               shape=("rect", 6.0, 6.0, 0.0), edge=1.0)
    frames = source.render(Scene(crop=crop, t=0.5, layers=(bg, fg)), [0.0, 0.5, 1.0])
    fg_src = images[1].astype(np.float32).transpose(2, 0, 1) / 255.0
    bg_src = images[0].astype(np.float32).transpose(2, 0, 1) / 255.0
    for n, dx in enumerate((-3, 0, 3)):
        # rect interior (|u| <= 4 px from the layer centre, alpha = 1) shows the foreground:
        # screen column j <-> source column 60.5 + (j - 15.5) - dx
        cols = np.arange(16 - 4 + dx, 16 + 4 + dx)
        rows = np.arange(12, 20)
        got = frames[n][:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        want = fg_src[:, rows[0] + 25:rows[-1] + 26, cols[0] + 45 - dx:cols[-1] + 46 - dx]
        np.testing.assert_allclose(got, want, atol=1e-4)
        # far from the rect the background is untouched
        np.testing.assert_allclose(frames[n][:, :, :4], bg_src[:, 32:64, 32:36], atol=1e-4)


def test_synthetic_brightness_change_is_linear_in_time(images):
    source = SyntheticMotion(images, layers=(0, 0))
    bg = Layer(image=2, level=0, centre=(45.0, 50.0), offset=(-2.0, 1.0), shift=(4.3, -2.1), turn=0.05)
    plain = source.render(Scene(crop=24, t=0.3, layers=(bg,)), [0.0, 0.3, 1.0])
    lit = source.render(Scene(crop=24, t=0.3, layers=(bg,), contrast=0.2, brightness=0.05), [0.0, 0.3, 1.0])
    for frame, base, t in zip(lit, plain, (0.0, 0.3, 1.0)):
        want = np.clip((base - 0.5) * (1 + 0.2 * t) + 0.5 + 0.05 * t, 0, 1)
        np.testing.assert_allclose(frame, want, atol=1e-5)


def test_synthetic_handles_small_images_and_grey(images):
    source = SyntheticMotion([texture(40, 40, 3), np.full((30, 50), 128, np.uint8)])
    rng = np.random.default_rng(0)
    for _ in range(10):
        img0, gt, img1, t = source.sample(rng, 64)  # larger than the images: zoomed in
        assert img0.shape == (3, 64, 64) and np.isfinite(gt).all()


def test_synthetic_errors(images):
    with pytest.raises(ValueError, match="images must be a non-empty list of images"):
        SyntheticMotion([])
    with pytest.raises(ValueError, match=r"images\[0\] must be an \(H, W, 3\) or \(H, W\) image"):
        SyntheticMotion([np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="crop must be an int >= 8"):
        SyntheticMotion(images).sample(np.random.default_rng(0), 4)


# --------------------------------------------------------------------------- make_batch


class Constant:
    def __init__(self, value: float, t: float) -> None:
        self.value, self.t = value, t

    def sample(self, rng, crop):
        img = np.full((3, crop, crop), self.value, np.float32)
        return img, img, img, self.t


def test_make_batch_shapes(images):
    sources = [VideoTriplets([ramp_clip()]), SyntheticMotion(images)]
    batch = data.make_batch(sources, [0.5, 0.5], 6, 16, np.random.default_rng(0))
    assert sorted(batch) == ["gt", "img0", "img1", "t"]
    for key in ("img0", "gt", "img1"):
        assert batch[key].shape == (6, 3, 16, 16) and batch[key].dtype == torch.float32
    assert batch["t"].shape == (6, 1, 1, 1) and batch["t"].dtype == torch.float32
    again = data.make_batch(sources, [0.5, 0.5], 6, 16, np.random.default_rng(0))
    for key in batch:
        torch.testing.assert_close(batch[key], again[key], rtol=0, atol=0)


def test_make_batch_mixes_sources_by_probability():
    sources = [Constant(0.0, 0.25), Constant(1.0, 0.75)]
    batch = data.make_batch(sources, [1, 3], 400, 8, np.random.default_rng(0))
    from_second = batch["gt"].mean(dim=(1, 2, 3)) == 1.0
    assert 0.68 < from_second.float().mean() < 0.82
    torch.testing.assert_close(batch["t"].flatten(), torch.where(from_second, 0.75, 0.25))
    only_first = data.make_batch(sources, [1, 0], 20, 8, np.random.default_rng(0))
    assert float(only_first["gt"].max()) == 0.0


def test_make_batch_errors():
    sources = [Constant(0.0, 0.5)]
    with pytest.raises(ValueError, match=r"vs_vgan.train.data.make_batch: probs must be 1 non-negative weights"):
        data.make_batch(sources, [0.5, 0.5], 2, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="probs must be"):
        data.make_batch(sources, [-1.0], 2, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        data.make_batch(sources, [1.0], 0, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sources must be a non-empty list"):
        data.make_batch([], [], 2, 8, np.random.default_rng(0))


def test_any_vapoursynth_source_plugin_can_read_the_videos(tmp_path: Path):
    import vapoursynth as vs

    path = make_mp4(tmp_path / "clip.mp4")
    calls = []

    def source(p: str) -> vs.VideoNode:
        calls.append(p)
        return vs.core.bs.VideoSource(p, cachemode=0)

    by_callable = data.load_video(path, source=source)
    by_name = data.load_video(path, source="bs.VideoSource")
    assert calls == [str(path)] and np.array_equal(by_callable, by_name) and by_name.shape[0] == 6
    with pytest.raises(ValueError, match="source must be a callable or the 'namespace.Function' name"):
        data.load_video(path, source="nosuch.Source")


def _panning(speed: int, frames: int = 12, size: int = 48, seed: int = 0) -> np.ndarray:
    """A noise texture panning right by ``speed`` pixels a frame: uint8 (T, size, size, 3)."""
    rng = np.random.default_rng(seed)
    width = size + speed * frames
    coarse = rng.random((size // 12 + 2, width // 12 + 2, 3))  # smooth: the difference grows with the shift
    wide = (np.kron(coarse, np.ones((12, 12, 1)))[:size, :width] * 255).astype(np.uint8)
    return np.stack([wide[:, speed * i:speed * i + size] for i in range(frames)])


def test_video_triplets_motion_picks_favour_large_motion():
    clips = [_panning(1, seed=1), _panning(6, seed=2)]
    motion = {}
    for picks in (1, 4):
        source = VideoTriplets(clips, max_span=2, motion_picks=picks, scale_range=(1.0, 1.0))
        rng = np.random.default_rng(0)
        diffs = [float(np.abs(s[2] - s[0]).mean()) for s in (source.sample(rng, 32) for _ in range(60))]
        motion[picks] = float(np.mean(diffs))
        assert source.stats["samples"] == 60 * picks
    assert motion[4] > 1.15 * motion[1], motion
    with pytest.raises(ValueError, match="motion_picks must be an int >= 1; got 0"):
        VideoTriplets(clips, motion_picks=0)
