"""Training: losses, discriminator, d_step/g_step, datasets and TrainConfig; imports without VapourSynth."""
