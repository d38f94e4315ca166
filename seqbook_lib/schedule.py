"""The learning-rate schedule of the book's training loops: a linear
warm-up, then half a cosine down to a final rate."""

from __future__ import annotations

import math


def cosine_lr(
    step: int, steps: int, peak: float, warmup: int = 0, final: float = 0.0
) -> float:
    """The learning rate of step ``step`` (0-based) out of ``steps``: a
    linear warm-up to ``peak`` over ``warmup`` steps, then half a cosine
    down to ``final``,

        lr(s) = peak * (s + 1) / warmup                      for s < warmup
        lr(s) = final + (peak - final) * (1 + cos(pi u)) / 2  otherwise,

    with u = (s - warmup) / (steps - warmup) going from 0 to 1. With
    ``peak=1`` it is the factor a ``torch.optim.lr_scheduler.LambdaLR``
    multiplies the optimizer's rate by.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    u = (step - warmup) / max(1, steps - warmup)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * u))
