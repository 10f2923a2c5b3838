"""The learning-rate schedule: linear ramp-up, sustain, exponential decay, applied per epoch.

    lr(epoch) = lr_start + (lr_max - lr_start) * epoch / rampup_epochs    epoch < rampup_epochs
              = lr_max                                                    during sustain_epochs
              = (lr_max - lr_min) * exp_decay ** (epoch - rampup - sustain) + lr_min   afterwards

With the defaults (the 2023 thesis' Table 1): epoch 0 -> 2e-6, 1 -> 1.425e-5, 8 -> 1e-4,
9 -> 8e-5. Training applies it with `keras.callbacks.LearningRateScheduler` (trainer/training/callbacks.py),
which sets the rate at the start of every epoch, including the first epoch after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def build_lr_fn(
    lr_start: float = 2e-6,
    lr_max: float = 1e-4,
    lr_min: float = 0.0,
    rampup_epochs: int = 8,
    sustain_epochs: int = 0,
    exp_decay: float = 0.8,
) -> Callable[[int], float]:
    """Returns `lr_fn(epoch) -> float`, the ramp/sustain/decay schedule of the module docstring.

    Args:
      lr_start: learning rate at epoch 0.
      lr_max: learning rate reached at the end of the ramp (already scaled by the replica count
        if the caller wants that).
      lr_min: asymptote of the decay.
      rampup_epochs: epochs of the linear ramp from lr_start to lr_max (0: start at lr_max).
      sustain_epochs: epochs held at lr_max after the ramp.
      exp_decay: per-epoch decay factor in (0, 1].

    Returns:
      A function of the (0-based) epoch index.

    Raises:
      ValueError: a negative or non-finite rate, lr_min > lr_max, negative epoch counts, or
        exp_decay outside (0, 1].
    """
    for name, value in (("lr_start", lr_start), ("lr_max", lr_max), ("lr_min", lr_min)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if lr_min > lr_max:
        raise ValueError(f"lr_min must be <= lr_max, got lr_min={lr_min!r} and lr_max={lr_max!r}.")
    for name, value in (("rampup_epochs", rampup_epochs), ("sustain_epochs", sustain_epochs)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
    if not 0 < exp_decay <= 1:
        raise ValueError(f"exp_decay must be in (0, 1], got {exp_decay!r}.")

    def lr_fn(epoch: int) -> float:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        # Python floats: Keras' LearningRateScheduler refuses anything else.
        if epoch < rampup_epochs:
            return float(lr_start + (lr_max - lr_start) * epoch / rampup_epochs)
        if epoch < rampup_epochs + sustain_epochs:
            return float(lr_max)
        return float((lr_max - lr_min) * exp_decay ** (epoch - rampup_epochs - sustain_epochs) + lr_min)

    return lr_fn
