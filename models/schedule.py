"""Training schedules: the learning rate and the crop size at a given step.

Both are pure functions of the step (and of the step the optimizer last started fresh at),
so a resumed run follows the same schedule as one that was never interrupted.
"""
from __future__ import annotations

import math

LR_SCHEDULES = ("step", "cosine")


def learning_rate(base: float, step: int, steps: int, *, schedule: str = "step",
                  drop_at: float = 0.8, floor: float = 0.01, warmup: int = 0,
                  warm_from: int = 0) -> float:
    """The main learning rate for ``step`` of a run of ``steps``.

    ``step``: 10x lower from ``drop_at * steps`` on. ``cosine``: from ``base`` at step 0 down
    to ``floor * base`` at ``steps``. Either is ramped linearly over the ``warmup`` steps
    after ``warm_from``, the step at which Adam started with empty moments (0, or the step
    a run resumed from weights alone): large first updates from empty moments are what
    knock a trained model off its optimum.
    """
    if schedule == "step":
        lr = base * (0.1 if step >= int(drop_at * steps) else 1.0)
    elif schedule == "cosine":
        t = min(max(step / max(steps, 1), 0.0), 1.0)
        lr = base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    since = step - warm_from
    if warmup > 0 and 0 <= since < warmup:
        lr *= (since + 1) / warmup
    return lr


def crop_and_batch(step: int, steps: int, crop: int, batch_size: int,
                   final_crop: int | None = None, final_at: float = 0.75) -> tuple[int, int]:
    """(crop, batch size) for ``step``: ``crop`` first, ``final_crop`` from ``final_at *
    steps`` on, with the batch shrunk so a step still sees about as many pixels (small crops
    are cheap steps while the model is far from converged; large ones teach the context
    model the long-range structure that 128-pixel crops cut off)."""
    if not final_crop or final_crop == crop or step < int(final_at * steps):
        return crop, batch_size
    return final_crop, max(1, round(batch_size * (crop / final_crop) ** 2))
