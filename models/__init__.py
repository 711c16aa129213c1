"""Training-time PyTorch: the STCM codec's networks, configuration, checkpoints and training."""
