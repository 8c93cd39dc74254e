"""Training: losses, discriminator, d_step/g_step, datasets, TrainConfig and the training command
line (``command``, behind scripts/train_interp.py and scripts/train_predict.py); imports without
VapourSynth."""
