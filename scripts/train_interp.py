#!/usr/bin/env python3
"""Train vs_vgan's interpolation generator (reconstruction warm-up, then adversarial).

    scripts/fetch_training_data.sh /path/to/data          # once: the allowed training sources
    .venv/bin/python scripts/train_interp.py --data /path/to/data --out runs/interp
    .venv/bin/python scripts/train_interp.py --resume runs/interp/last.pt --out runs/interp
    .venv/bin/python scripts/train_interp.py --export runs/interp/last.pt models/vgan-flow-v1.safetensors

Settings are TrainConfig's (vs_vgan/train/config.py); any can be changed with
``--set name=value`` (JSON values: --set steps=30000 --set 'model={"channels":[8,16],...}').
A checkpoint (params, params_ema, config, step, optimiser states) is written to
OUT/last.pt every checkpoint_seconds and when the run stops (Ctrl-C, --minutes, the end);
progress goes to stderr and OUT/log.jsonl.  SIGINT or SIGTERM stop the run after the
current step with a checkpoint.  Validation PSNR is measured on fixed batches
drawn from the training sources (never from evaluation data; see ../shared/DATA.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_vgan.train.config import TrainConfig  # noqa: E402
from vs_vgan.models.loader import weights_path  # noqa: E402
from vs_vgan.train.loop import Trainer, export_weights, train  # noqa: E402

log = logging.getLogger("train_interp")


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"train_interp: --set needs name=value; got {pair!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def build_sources(cfg: TrainConfig, source: str | None = None):
    from vs_vgan.train import data as D

    name = "train_predict" if cfg.task == "predict" else "train_interp"
    if not cfg.data_root:
        raise SystemExit(f"{name}: --data DIR is needed (fetch it with scripts/fetch_training_data.sh DIR)")
    videos = D.find_videos(cfg.data_root)
    if not videos:
        raise SystemExit(f"{name}: no videos under {cfg.data_root}; run scripts/fetch_training_data.sh {cfg.data_root}")
    cache = cfg.cache_dir or str(Path(cfg.data_root) / ".cache")
    log.info("%d videos under %s (cache %s)", len(videos), cfg.data_root, cache)
    clips = D.cache_videos(videos, cache, max_side=cfg.max_side or None, source=source)
    log.info("%d frames of real video", sum(len(c) for c in clips))
    if cfg.task == "predict":
        runs = D.VideoSequences(clips, length=4 if cfg.w_rollout > 0 else 3, max_gap=cfg.max_gap)

        def make(rng: np.random.Generator):
            return D.make_sequence_batch(runs, cfg.batch, cfg.crop, rng)

        return make
    real = D.VideoTriplets(clips, max_span=cfg.max_span)
    synth = D.SyntheticMotion(D.still_images())
    sources, probs = [real, synth], [1.0 - cfg.p_synthetic, cfg.p_synthetic]

    def make(rng: np.random.Generator):
        return D.make_batch(sources, probs, cfg.batch, cfg.crop, rng)

    return make


#: Settings of a prediction run where TrainConfig's defaults are the interpolation run's:
#: a fine-tuning of the interpolation weights (scripts/train_predict.py).
PREDICT_DEFAULTS = {"task": "predict", "steps": 6000, "warmup_steps": 4500, "lr_g": 2e-4, "lr_min": 1e-5,
                    "lr_ramp": 100, "w_flow_aux": 0.02, "flow_aux_steps": 2000, "p_synthetic": 0.0}


def main(argv: list[str] | None = None, task: str = "interpolate", doc: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="training data folder (scripts/fetch_training_data.sh)")
    ap.add_argument("--cache", help="decoded-video cache folder (default DATA/.cache)")
    ap.add_argument("--source", help="VapourSynth source filter for non-WebP videos, as namespace.Function "
                    "(default bs.VideoSource; e.g. ffms2.Source, lsmas.LWLibavSource)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "interp"), help="checkpoint/log folder")
    ap.add_argument("--resume", help="checkpoint to continue from")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="change a TrainConfig setting")
    ap.add_argument("--until", type=int, help="stop at this step (default: the config's steps)")
    ap.add_argument("--minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--init", help="start a new run's generator from these safetensors weights "
                    + ("(default: the shipped interpolation model; 'none' for random)" if task == "predict" else ""))
    ap.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "DEST"),
                    help="write CHECKPOINT's EMA generator to DEST (safetensors) and print its sha256")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if a.export:
        path, digest, kwargs = export_weights(*a.export)
        print(json.dumps({"weights": str(path), "sha256": digest, "kwargs": kwargs, "bytes": path.stat().st_size}))
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    changes = parse_sets(a.set)
    if a.data:
        changes["data_root"] = str(Path(a.data).resolve())
    if a.cache:
        changes["cache_dir"] = str(Path(a.cache).resolve())
    if a.resume:
        tr = Trainer.load(a.resume, a.device, override=changes)
        log.info("resumed %s at step %d", a.resume, tr.step)
    else:
        defaults = {**TrainConfig().to_dict(), **(PREDICT_DEFAULTS if task == "predict" else {})}
        tr = Trainer(TrainConfig.from_dict({**defaults, **changes}), a.device)
        init = a.init or (str(weights_path("vgan-flow-v1.safetensors"))
                          if task == "predict" else None)
        if init and init != "none":
            tr.init_from(init)
            log.info("generator initialised from %s", init)
    cfg = tr.cfg
    log.info("config %s", json.dumps(cfg.to_dict()))
    log.info("generator %d parameters, discriminator %d", sum(p.numel() for p in tr.net.parameters()),
             sum(p.numel() for p in tr.disc.parameters()))
    make = build_sources(cfg, a.source)
    val = [make(np.random.default_rng([10_000_019, i])) for i in range(4)]
    deadline = time.time() + 60 * a.minutes if a.minutes else None

    stopping = []

    def stop(signum, frame):  # SIGTERM, and SIGINT even where a background shell ignores it
        log.info("signal %d: stopping after this step", signum)
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        train(tr, make, a.out, until=a.until, val_batches=val, deadline=deadline, stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        log.info("interrupted at step %d; checkpoint written to %s", tr.step, Path(a.out) / "last.pt")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
