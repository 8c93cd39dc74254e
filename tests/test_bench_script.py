"""scripts/bench.py end to end on a tiny generated clip: every figure it reports is there
and sane (the benchmark's own numbers are quoted in the README, not asserted here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import vapoursynth as vs

from conftest import ffmpeg_exe

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not hasattr(vs.core, "mv") or not hasattr(vs.core, "bs"),
                                reason="needs the MVTools and bestsource plugins")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "clip.mkv"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x90:rate=24:duration=1", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
                          capture_output=True, text=True, timeout=600)


def test_bench_reports_every_method_size_and_conversion(clip, tmp_path):
    out = tmp_path / "bench.json"
    r = bench("--clip", str(clip), "--sizes", "64", "--frames", "8", "--device", "cpu", "--repeat", "2",
              "--vgan", 'blend={"model": "blend"}', "--peers", "mvflow,minterp,source", "--model-iters", "1",
              "--work", str(tmp_path / "work"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    meta = report["meta"]
    for key in ("cpu", "cores", "python", "torch", "vapoursynth", "vs_vgan", "device", "dtype", "core_threads",
                "streams", "ffmpeg"):
        assert meta[key] not in (None, ""), key
    rows = {(r["conversion"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(c, m) for c in ("2x", "24-60") for m in ("mvflow", "minterp", "source", "blend")}
    for (conv, method), row in rows.items():
        assert row["size"] == "114x64" and row["fps"] > 0 and row["peak_rss_mb"] > 1, (conv, method)
        assert len(row["all_fps"]) == 2
    assert rows[("2x", "blend")]["frames"] == 16 and rows[("24-60", "blend")]["frames"] == 20
    assert 12 <= rows[("2x", "minterp")]["frames"] <= 16  # minterpolate stops short of the last frames
    bridge = report["bridge"][0]
    assert 0 < bridge["bridge_share"] < 1 and bridge["bridge_calls"] > 0
    model = report["model"][0]
    assert model["prepare_ms"] > 0 and model["synthesized_fps"] > 0
    assert "| 114x64 | 2x | blend |" in r.stdout  # the markdown table


def test_bench_soak_reports_memory_at_start_and_end_of_every_node(clip, tmp_path):
    out = tmp_path / "soak.json"
    r = bench("--clip", str(clip), "--soak", "600", "--soak-size", "64x36", "--device", "cpu",
              "--vgan", 'blend={"model": "blend"}', "--work", str(tmp_path / "work"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    soaks = json.loads(out.read_text())["soak"]
    assert [s["node"] for s in soaks] == ["interpolate", "predict", "extend", "repair"]
    for soak in soaks:
        assert soak["frames"] == 600 and soak["size"] == "64x36", soak["node"]
        assert soak["start"]["frame"] >= 60 and soak["end"]["frame"] >= 580
        assert soak["start"]["rss"] > 0 and soak["end"]["rss"] > 0
        lo, hi = soak["rss_range_mb"]
        assert 0 < lo <= hi <= soak["peak_rss_mb"] + 1
    assert soaks[0]["kwargs"]["model"] == "blend" and "model" not in soaks[1]["kwargs"]
    assert "| repair | 600 |" in r.stdout
    bad = bench("--clip", str(clip), "--soak", "10", "--soak-nodes", "interpolate,nope", "--device", "cpu")
    assert bad.returncode != 0 and "--soak-nodes must name" in bad.stderr


@pytest.mark.parametrize("run", [1, 2])
def test_bench_vpy_repair_runs(clip, run):
    """bench.vpy's repair-runs method (the README's repair speed figures) runs through vspipe
    and gives every frame."""
    import shutil as sh

    vspipe = sh.which("vspipe", path=str(Path(sys.executable).parent)) or sh.which("vspipe")
    cmd = [vspipe, "-c", "y4m", "-a", f"src={clip}", "-a", "method=repair-runs", "-a", f"run={run}",
           "-a", "num=1", "-a", "den=1", "-a", "frames=20", "-a", 'kw={"device": "cpu", "model": "blend"}',
           str(ROOT / "scripts" / "bench.vpy"), "-"]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert b"Output 20 frames" in r.stderr


def test_bench_cluster_times_one_machine_against_a_local_cluster(clip, tmp_path):
    """--cluster local: the same conversion on one machine and on a local Ray cluster of two
    workers (here tiny: 86x48, 16 output frames in 4 chunks), the frames identical, each
    chunk's overhead and the job's fixed costs reported."""
    pytest.importorskip("ray", reason="needs Ray (pip install 'vs_vgan[cluster]')")
    out = tmp_path / "cluster.json"
    r = bench("--clip", str(clip), "--sizes", "48", "--frames", "8", "--device", "cpu",
              "--vgan", 'blend={"model": "blend"}', "--cluster", "local", "--workers", "2", "--chunk-frames", "4",
              "--work", str(tmp_path / "work"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())["cluster"][0]
    assert row["size"] == "86x48" and row["output_frames"] == 16 and row["chunks"] == 4 and row["workers"] == 2
    assert row["identical"] is True and row["one_machine_s"] > 0 and row["cluster_s"] > 0
    assert row["chunk_overhead_s"]["mean"] > 0 and row["worker_s_per_frame"] > 0
    assert row["job_s"]["connect_s"] > 0 and row["job_s"]["join_s"] > 0
    assert "| 86x48 | 16 |" in r.stdout


def test_bench_times_a_candidate_of_weights(clip, tmp_path):
    """--weights: an exported generator (here a tiny grown one) is the model of the vs_vgan
    settings that name none and of the model-only figures, at its scale=None, with the
    architecture settings of --model-kwargs over the file's (recorded in the report)."""
    from conftest import TINY_FLOW_KWARGS, write_exported_flow

    kwargs = {**TINY_FLOW_KWARGS, "radius": [1, 1], "convex": True}
    weights = write_exported_flow(tmp_path / "cand.safetensors", kwargs)
    out = tmp_path / "bench.json"
    r = bench("--clip", str(clip), "--sizes", "64", "--frames", "8", "--device", "cpu", "--conversions", "2x",
              "--vgan", "cand={}", "--vgan", 'blend={"model": "blend"}', "--peers", "", "--no-bridge",
              "--model-iters", "1", "--weights", str(weights), "--analysis-pixels", "1000",
              "--model-kwargs", '{"refine": [2, 1]}', "--work", str(tmp_path / "work"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["meta"]["weights"] == str(weights.resolve()) and report["meta"]["analysis_pixels"] == 1000
    assert report["meta"]["model_kwargs"] == json.loads(json.dumps({**kwargs, "refine": [2, 1]}))
    assert {row["method"] for row in report["rows"]} == {"cand", "blend"}
    assert all(row["fps"] > 0 for row in report["rows"])
    model = report["model"][0]
    assert model["model"] == "cand" and model["scale"] == 0.25  # 114x64 at 0.25 is 456 pixels <= 1000
    refused = bench("--clip", str(clip), "--analysis-pixels", "5")
    assert refused.returncode != 0 and "--analysis-pixels and --model-kwargs are for the candidate" in refused.stderr
    bad = bench("--clip", str(clip), "--weights", str(weights), "--model-kwargs", '{"refine": [3]}')
    assert bad.returncode != 0 and "refine must be a list of steps" in bad.stderr
