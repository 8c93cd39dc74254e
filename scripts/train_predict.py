#!/usr/bin/env python3
"""Train vs_vgan's frame predictor (vs_vgan.models.prednet.FlowPredictor).

    scripts/fetch_training_data.sh /path/to/data          # once: the allowed training sources
    .venv/bin/python scripts/train_predict.py --data /path/to/data --out runs/predict
    .venv/bin/python scripts/train_predict.py --resume runs/predict/last.pt --out runs/predict
    .venv/bin/python scripts/train_predict.py --export runs/predict/last.pt models/vgan-predict-v1.safetensors

The predictor shares the interpolator's network, so a new run starts from the shipped
interpolation weights (``--init`` another file, or ``--init none``).  It reads runs of four
frames ``i, i+g, i+2g, i+3g`` (g <= max_gap) of the training videos: frame i+2g is
predicted from (i, i+g), then i+3g from (i+g, that prediction) (weight w_rollout), so that
``vs_vgan.extend`` can feed predictions back without drifting.  A reconstruction warm-up is
followed by the adversarial phase, with the temporal discriminator judging (context,
context, candidate).  Everything else (``--set``, checkpoints, signals, ``--minutes``,
``--export``, held-out validation clips) is scripts/train_interp.py's; settings are
TrainConfig's with the prediction defaults of ``vs_vgan.train.config.PREDICT_DEFAULTS``.
The command line is vs_vgan.train.command.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a checkout without `pip install -e .`

from vs_vgan.train.command import main as command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    # --export's record (weights, sha256) is the command's answer: on stdout
    return command(argv, task="predict", doc=__doc__, out=ROOT / "runs" / "predict", emit=print)


if __name__ == "__main__":
    sys.exit(main())
