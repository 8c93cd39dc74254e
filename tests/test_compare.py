"""scripts/compare.py on tiny synthetic inputs whose answer is known: the frame and the crop
where the methods differ, the picture's layout, and PSNRs that match the panels."""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from PIL import Image

from conftest import TINY_FLOW_KWARGS, load_script, painted, seeded_state_dict

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
pytestmark = [
    pytest.mark.skipif(not (BENCH / "heldout.py").is_file(), reason="needs the shared bench (../shared/bench)"),
    pytest.mark.skipif(not hasattr(vs.core, "bs"), reason="needs the bestsource plugin"),
]
compare = load_script("compare")

W, H = 96, 64
SQUARE = (60, 24, 16, 16)  # x, y, w, h: appears from frame 5 on


def square_clip() -> vs.VideoNode:
    """Flat grey frames; from frame 5 on a bright square.  Kept at gap 2: 0, 2, 4, 6; of the
    scored frames 1, 3, 5 only frame 5 tells ``dup`` (frame 4) from ``blend`` (4 and 6)."""
    x, y, w, h = SQUARE

    def paint(n: int, planes: list[np.ndarray]) -> None:
        planes[0][...] = 100
        planes[1][...] = planes[2][...] = 128
        if n >= 5:
            planes[0][y:y + h, x:x + w] = 200

    return painted(vs.YUV420P8, 8, W, H, Fraction(24), paint)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def rgb(clip: vs.VideoNode, n: int) -> np.ndarray:
    clip = vs.core.resize.Bicubic(clip, format=vs.RGB24, matrix_in_s="709")
    f = clip.get_frame(n)
    return np.stack([np.asarray(f[p]) for p in range(3)], axis=-1)


def panels(png: Path, count: int, w: int, h: int, zoom: int, label_height: int) -> list[np.ndarray]:
    """The crops of a full-RGB picture, back at their own size."""
    img = np.asarray(Image.open(png).convert("RGB"))
    step = w * zoom + compare.GAP
    return [img[label_height:, k * step:k * step + w * zoom][::zoom, ::zoom] for k in range(count)]


def test_the_frame_and_crop_where_methods_differ_are_shown_with_their_psnrs(tmp_path, capsys):
    clip = tmp_path / "square.y4m"
    with open(clip, "wb") as fh:
        square_clip().output(fh, y4m=True)
    out = tmp_path / "cmp"
    assert compare.main([str(clip), "--methods", "dup,blend", "--vgan", 'v={"model": "blend"}', "--frames", "2",
                         "--crop", "32x24", "--zoom", "2", "--colors", "0", "--out", str(out),
                         "--bench", str(BENCH)]) == 0
    doc = json.loads((out / "square-gap2.json").read_text())
    assert [c["frame"] for c in doc["candidates"]] == [1, 3, 5]
    assert [c["frame"] for c in doc["chosen"]] == [5, 1]  # frame 1: all alike, the earlier of the ties
    assert doc["candidates"][0]["spread"] == 0 and doc["chosen"][0]["spread"] > 5
    first = doc["chosen"][0]
    c, (sx, sy, sw, sh) = first["crop"], SQUARE
    assert (c["w"], c["h"]) == (32, 24)
    assert c["x"] <= sx and c["x"] + c["w"] >= sx + sw and c["y"] <= sy and c["y"] + c["h"] >= sy + sh
    assert first["panels"] == ["gt", "dup", "blend", "v"]

    # the whole frame's PSNR, computed here from the clip: dup shows frame 4 for frame 5
    src = square_clip().std.SetFrameProps(_Matrix=1)
    assert first["psnr_frame"]["dup"] == pytest.approx(psnr(rgb(src, 4), rgb(src, 5)), abs=1e-3)

    layout = doc["layout"]
    assert 20 <= layout["label_height"] <= 60 and layout["zoom"] == 2
    for chosen in doc["chosen"]:
        png = out / chosen["png"]
        assert png.stat().st_size == chosen["bytes"]
        img = Image.open(png)
        assert img.size == (4 * 32 * 2 + 3 * compare.GAP, layout["label_height"] + 24 * 2)
        x, y = chosen["crop"]["x"], chosen["crop"]["y"]
        gt, *crops = panels(png, 4, 32, 24, 2, layout["label_height"])
        assert np.array_equal(gt, rgb(src, chosen["frame"])[y:y + 24, x:x + 32])
        for name, crop in zip(chosen["panels"][1:], crops):
            assert chosen["psnr_crop"][name] == pytest.approx(psnr(crop, gt), abs=1e-3)
    assert first["psnr_crop"]["dup"] < first["psnr_frame"]["dup"]  # the crop holds the whole error
    printed = capsys.readouterr().out
    assert "frame 5 (t 1/2)" in printed and str(out / first["png"]) in printed and "total" in printed


def _triplets(root: Path) -> None:
    yy, xx = np.mgrid[0:48, 0:80].astype(np.float64)
    for k, name in enumerate(["Alpha", "Beta"]):
        frames = [np.round(127 + 100 * np.sin((xx - 3 * s * (k + 1)) / 6.0)[..., None] * np.cos(yy / 9.0)[..., None]
                           * np.array([1.0, 0.7, 0.4])).astype(np.uint8) for s in range(3)]
        for sub, file, img in (("input", "frame10.png", frames[0]), ("input", "frame11.png", frames[2]),
                               ("gt", "frame10i11.png", frames[1])):
            (root / sub / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / sub / name / file)


def test_middlebury_with_a_candidate_and_rife_leaves_out_what_the_triplets_lack(tmp_path, rife_pkl, capsys):
    from safetensors.torch import save_file

    from vs_vgan.models.flownet import FlowInterpolator

    weights = tmp_path / "cand.safetensors"
    save_file(seeded_state_dict(FlowInterpolator(**TINY_FLOW_KWARGS), seed=1), str(weights),
              metadata={"config": json.dumps({"model": TINY_FLOW_KWARGS})})
    _triplets(tmp_path / "mb")
    out = tmp_path / "cmp"
    assert compare.main(["--middlebury", str(tmp_path / "mb"), "--methods", "blend,minterp", "--weights", str(weights),
                         "--rife", str(rife_pkl), "--frames", "1", "--crop", "300x40", "--out", str(out),
                         "--bench", str(BENCH)]) == 0
    doc = json.loads((out / "middlebury.json").read_text())
    assert [c["item"] for c in doc["candidates"]] == ["Alpha", "Beta"]
    assert "triplet bench" in doc["skipped"]["minterp"]
    assert [m["name"] for m in doc["methods"]] == ["blend", "minterp", "vgan", "rife-4.25"]
    assert "cand" in doc["methods"][2]["kwargs"]["model"]
    (chosen,) = doc["chosen"]
    assert chosen["spread"] == max(c["spread"] for c in doc["candidates"])
    assert chosen["panels"] == ["gt", "blend", "vgan", "rife-4.25"]
    assert chosen["crop"] == dict(x=0, y=0, w=80, h=40)  # clipped to the 80 pixels' width
    img = Image.open(out / chosen["png"])
    assert img.mode == "P" and img.size == (4 * 80 + 3 * compare.GAP, doc["layout"]["label_height"] + 40)
    assert "RIFE 4.25" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["missing.mp4"], "is not a file"),
    (["{clip}", "--gap", "1"], "--gap must be 2 or more; got 1"),
    (["{clip}", "--crop", "wide"], "--crop must be WIDTHxHEIGHT"),
    (["{clip}", "--methods", "rife"], "--methods must name some of"),
    (["{clip}", "--vgan", "novalue"], "--vgan needs NAME=JSON"),
    (["{clip}", "--max-frames", "2"], "--max-frames must be at least --gap + 1 (3); got 2"),
    (["{clip}", "--rife", "nowhere/flownet.pkl"], "--rife"),
])
def test_bad_arguments_are_refused_with_what_was_given(tmp_path, args, message):
    clip = tmp_path / "c.y4m"
    clip.write_bytes(b"")
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        compare.main([a.format(clip=clip) for a in args] + ["--out", str(tmp_path / "o"), "--bench", str(BENCH)])


def test_a_missing_plugin_leaves_its_method_out_with_a_message(tmp_path, monkeypatch, capsys):
    clip = tmp_path / "square.y4m"
    with open(clip, "wb") as fh:
        square_clip().output(fh, y4m=True)
    monkeypatch.setattr(compare, "available",
                        lambda m, on_triplets: "needs the MVTools plugin" if m.name == "mvflow" else None)
    assert compare.main([str(clip), "--methods", "blend,mvflow", "--vgan", 'v={"model": "blend"}', "--frames", "1",
                         "--out", str(tmp_path / "o"), "--bench", str(BENCH)]) == 0
    assert "mvflow left out: needs the MVTools plugin" in capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "square-gap2.json").read_text())
    assert doc["skipped"] == {"mvflow": "needs the MVTools plugin"}
    assert doc["chosen"][0]["panels"] == ["gt", "blend", "v"]


@pytest.mark.skipif(not hasattr(vs.core, "mv"), reason="needs the MVTools plugin")
def test_the_default_peers_run_and_minterpolate_leaves_no_temporary_files(tmp_path, monkeypatch):
    """minterpolate through find_ffmpeg()'s ffmpeg (imageio-ffmpeg's where PATH has none)."""
    import tempfile

    clip = tmp_path / "square.y4m"
    with open(clip, "wb") as fh:
        square_clip().output(fh, y4m=True)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert compare.main([str(clip), "--vgan", 'v={"model": "blend"}', "--frames", "1", "--out", str(tmp_path / "o"),
                         "--bench", str(BENCH)]) == 0
    doc = json.loads((tmp_path / "o" / "square-gap2.json").read_text())
    assert doc["skipped"] == {} and doc["chosen"][0]["panels"] == ["gt", "blend", "mvflow", "minterp", "v"]
    assert list(scratch.iterdir()) == []


def test_a_bad_vgan_setting_stops_with_vs_vgans_message(tmp_path):
    clip = tmp_path / "square.y4m"
    with open(clip, "wb") as fh:
        square_clip().output(fh, y4m=True)
    with pytest.raises(SystemExit, match=r"compare: v: ValueError: vs_vgan.interpolate: scale must be"):
        compare.main([str(clip), "--methods", "blend", "--vgan", 'v={"scale": 3}', "--out", str(tmp_path / "o"),
                      "--bench", str(BENCH)])
