"""The optimiser and its learning-rate schedule, from params.yaml's `train` section (any Keras backend)."""

import numpy as np


def learning_rate(cfg, steps_per_epoch: int):
    """train.learning_rate as the schedule trains it: a linear warm-up from a tenth of the rate over
    train.warmup_epochs, then cosine decay to 1% (cosine) or the peak held (constant)."""
    import keras

    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"train.schedule must be constant or cosine, not {cfg.schedule!r}")
    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    if cfg.schedule == "constant" and not warmup:
        return cfg.learning_rate
    # constant: a cosine that "decays" to 100%, after the same linear warm-up. Without it,
    # SGD at 0.05 stalled the long recipe's network at the start (README, Averaging).
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * 0.1 if warmup else cfg.learning_rate,
        decay_steps=total - warmup,
        alpha=0.01 if cfg.schedule == "cosine" else 1.0,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(cfg, steps_per_epoch: int):
    import keras

    lr = learning_rate(cfg, steps_per_epoch)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # Nesterov momentum; weight_decay is decoupled, as in AdamW
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay or None)
    raise ValueError(f"train.optimizer must be adam, adamw or sgd, not {cfg.optimizer!r}")


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))
