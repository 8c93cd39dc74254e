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
current step with a checkpoint.  Validation PSNR is measured on fixed batches from whole
clips of the training videos that training never sees (val_clips of them, chosen by
val_seed; named in OUT/log.jsonl and in every checkpoint, and kept on resume), never on
evaluation data (see ../shared/DATA.md).  The command line is vs_vgan.train.command.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a checkout without `pip install -e .`

from vs_vgan.train.command import main as command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    # --export's record (weights, sha256) is the command's answer: on stdout
    return command(argv, task="interpolate", doc=__doc__, out=ROOT / "runs" / "interp", emit=print)


if __name__ == "__main__":
    sys.exit(main())
