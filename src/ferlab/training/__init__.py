"""Training: architectures, augmentation, the training loop, precision, evaluation and calibration."""
