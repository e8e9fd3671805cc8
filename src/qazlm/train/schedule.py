"""Learning-rate schedules as pure functions of the step, so resuming needs only the step number."""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup: int, total: int, schedule: str = "cosine",
          decay_fraction: float = 0.2) -> float:
    """LR for optimizer step `step` (0-based).

    cosine: linear warmup to `lr`, then cosine down to `min_lr` at `total`.
    wsd: linear warmup, constant `lr`, then linear decay to `min_lr` over the last `decay_fraction` of steps
    (warmup-stable-decay: a run can be extended from any stable-phase checkpoint).
    """
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    if schedule == "cosine":
        span = max(1, total - warmup)
        progress = (step - warmup) / span
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, int(round(total * decay_fraction)))
        decay_start = total - decay_steps
        if step < decay_start:
            return lr
        return lr + (min_lr - lr) * (step - decay_start) / decay_steps
    raise ValueError(f"unknown schedule {schedule!r}")
