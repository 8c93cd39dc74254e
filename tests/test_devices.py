"""vs_vgan.devices: the CPU policy (one documented, idempotent set of process-wide
settings with an opt-out), and what is left of device resolution."""
from __future__ import annotations

import logging

import pytest
import torch
import vapoursynth as vs

import vs_vgan
from conftest import frame_bytes, moving
from vs_vgan import devices


@pytest.fixture
def fresh_policy(monkeypatch):
    """The CPU policy as a fresh process has it (not applied), torch's threads put back."""
    before = torch.get_num_threads()
    monkeypatch.setattr(devices, "_policy_applied", False)
    monkeypatch.delenv(devices.CPU_POLICY_ENV, raising=False)
    yield
    torch.set_num_threads(before)


def test_policy_is_applied_once_and_logged_at_info(tiny_flow, fresh_policy, caplog):
    torch.set_num_threads(2)
    with caplog.at_level(logging.INFO, logger="vs_vgan"):
        vs_vgan.interpolate(moving(length=3), model=tiny_flow, device="cpu")
        vs_vgan.predict(moving(length=3), device="cpu")
        vs_vgan.interpolate(moving(length=3), model=tiny_flow, device="cpu", num_streams=1)
    lines = [r for r in caplog.records if "CPU policy" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "torch intra-op threads 2 -> 1" in lines[0].getMessage()
    assert f"{devices.CPU_POLICY_ENV}=0" in lines[0].getMessage()  # says how to opt out
    assert torch.get_num_threads() == devices.CPU_CALL_THREADS


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_opting_out_leaves_torch_threads_alone(tiny_flow, fresh_policy, monkeypatch, how, caplog):
    torch.set_num_threads(2)
    kw = {"cpu_policy": False} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv(devices.CPU_POLICY_ENV, "off")
    pinned = []
    monkeypatch.setattr(devices, "pin_cpu_threads", lambda: pinned.append(1))
    with caplog.at_level(logging.INFO, logger="vs_vgan"):
        out = vs_vgan.interpolate(moving(length=3), model=tiny_flow, device="cpu", **kw)
        ext = vs_vgan.extend(moving(length=3), frames=2, device="cpu", **kw)
        for clip in (out, ext):
            for f in clip.frames():
                pass
    assert torch.get_num_threads() == 2 and pinned == []
    assert not devices._policy_applied and not any("CPU policy" in r.getMessage() for r in caplog.records)


def test_nodes_do_not_undo_each_other(tiny_flow, fresh_policy):
    """A node under the policy and one opted out, in one script: the first keeps its bytes
    (the policy stays applied; the opted-out node changes nothing)."""
    src = moving(vs.RGBS, length=4, width=160, height=96)
    ref = [frame_bytes(f) for f in vs_vgan.interpolate(src, model=tiny_flow, device="cpu").frames()]
    on = vs_vgan.interpolate(src, model=tiny_flow, device="cpu")
    vs_vgan.interpolate(src, model=tiny_flow, device="cpu", cpu_policy=False)
    assert [frame_bytes(f) for f in on.frames()] == ref
    assert torch.get_num_threads() == devices.CPU_CALL_THREADS


def test_policy_argument_and_environment_values(monkeypatch):
    monkeypatch.delenv(devices.CPU_POLICY_ENV, raising=False)
    assert devices.cpu_policy_wanted(None, func="f") is True
    for off in ("0", "off", "No", " false "):
        monkeypatch.setenv(devices.CPU_POLICY_ENV, off)
        assert devices.cpu_policy_wanted(None, func="f") is False
        assert devices.cpu_policy_wanted(True, func="f") is True  # the argument wins
    monkeypatch.setenv(devices.CPU_POLICY_ENV, "1")
    assert devices.cpu_policy_wanted(None, func="f") is True
    with pytest.raises(TypeError, match=r"^vs_vgan.interpolate: cpu_policy must be True, False or None"):
        vs_vgan.interpolate(moving(length=3), model="blend", device="cpu", cpu_policy="yes")
