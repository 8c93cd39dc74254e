#!/usr/bin/env python3
"""Golden hashes of the shipped models' output: the guard of refactors that must not
change a single bit.

    .venv/bin/python scripts/golden_hashes.py            # compare with tests/golden_hashes.json
    .venv/bin/python scripts/golden_hashes.py --record   # (re)record this machine kind's hashes

The first 40 output frames of ``interpolate`` (2x and to 60000/1001), ``predict``,
``extend`` (``side="both"`` of 17 frames around 6) and ``repair`` (``duplicates=True``,
every 5th frame a repeat of the one before it), with the default models on the CPU, of
the bundled sample (YUV420P8) and of the same converted to YUV420P10.  Each frame's
hash is the sha256 of its planes' bytes and its duration props.

Float results depend on the CPU's vector instructions and on torch's kernels, so the
hashes are kept per machine kind: torch's version and CPU capability and the CPU's
model name (:func:`machine_kind`).  ``tests/test_golden_hashes.py`` compares them where a
record for this kind exists, and skips, saying how to record one, where none does.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "tests" / "golden_hashes.json"
FRAMES = 40


def machine_kind() -> str:
    import torch

    from vs_vgan import devices

    cpu = devices.device_name(torch.device("cpu"))
    return f"torch {torch.__version__.split('+')[0]}, {torch.backends.cpu.get_cpu_capability()}, {cpu}"


def cases() -> dict[str, Callable[[], "object"]]:
    """name -> a function making the clip whose first frames are hashed."""
    import vapoursynth as vs

    import vs_vgan
    from vs_vgan.data import sample_path

    core = vs.core

    def sources() -> dict[str, vs.VideoNode]:
        clip = core.bs.VideoSource(str(sample_path()), cachemode=0)
        return {"yuv420p8": clip, "yuv420p10": core.resize.Point(clip, format=vs.YUV420P10)}

    def repeats(clip: vs.VideoNode) -> vs.VideoNode:
        prev = clip[0] + clip[:-1]
        return core.std.ModifyFrame(clip, [clip, prev], lambda n, f: f[1] if n % 5 == 4 else f[0])

    made = {}
    for fmt in ("yuv420p8", "yuv420p10"):
        def clip(fmt: str = fmt) -> vs.VideoNode:
            return sources()[fmt]

        made[f"interpolate-2x-{fmt}"] = lambda c=clip: vs_vgan.interpolate(c(), factor=2, device="cpu")
        made[f"interpolate-60000/1001-{fmt}"] = lambda c=clip: vs_vgan.interpolate(c(), fps="60000/1001", device="cpu")
        made[f"predict-{fmt}"] = lambda c=clip: vs_vgan.predict(c(), device="cpu")
        made[f"extend-both-{fmt}"] = lambda c=clip: vs_vgan.extend(c()[:6], frames=17, side="both", device="cpu")
        made[f"repair-{fmt}"] = lambda c=clip: vs_vgan.repair(repeats(c()), duplicates=True, device="cpu")
    return made


def frame_hash(frame) -> str:
    h = hashlib.sha256()
    for p in range(frame.format.num_planes):
        h.update(bytes(frame[p]))
    h.update(f"{frame.props.get('_DurationNum')}/{frame.props.get('_DurationDen')}".encode())
    return h.hexdigest()[:16]


def compute(names: list[str] | None = None) -> dict[str, list[str]]:
    out = {}
    for name, make in cases().items():
        if names and name not in names:
            continue
        clip = make()
        out[name] = [frame_hash(clip.get_frame(k)) for k in range(min(FRAMES, clip.num_frames))]
    return out


def load() -> dict:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="record this machine kind's hashes")
    a = ap.parse_args(argv)
    kind = machine_kind()
    hashes = compute()
    if a.record:
        record = load()
        record[kind] = hashes
        RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"golden: recorded {len(hashes)} cases for {kind!r} in {RECORD}")
        return 0
    golden = load().get(kind)
    if golden is None:
        print(f"golden: no hashes for {kind!r}; record them with --record")
        return 2
    bad = {name: [k for k, (a_, b) in enumerate(zip(hashes[name], golden[name])) if a_ != b]
           for name in golden if hashes.get(name) != golden[name]}
    for name, frames in bad.items():
        print(f"golden: {name} differs in frames {frames}")
    print("golden: all equal" if not bad else f"golden: {len(bad)} of {len(golden)} cases differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
