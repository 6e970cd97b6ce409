"""Loss-weight ramps (pure functions of the iteration, so resuming is exact): the schedule every semi-supervised
method and loss here uses. Below :mod:`dvcl.training`, :mod:`dvcl.methods` and :mod:`dvcl.losses` (torch-free)."""

from __future__ import annotations

import math


def sigmoid_rampup(iteration: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = iteration / length clipped to [0, 1] (Laine & Aila; used by CPS/MT codes)."""
    if length <= 0:
        return 1.0
    t = min(max(iteration / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def rampup_weight(weight: float, iteration: int, max_iterations: int, rampup_fraction: float,
                  warmup_fraction: float = 0.0) -> float:
    """``weight`` times the sigmoid ramp-up over ``rampup_fraction`` of ``max_iterations``.

    The loss-weight schedule of every semi-supervised method here. With ``warmup_fraction > 0`` the weight is 0
    for the first ``warmup_fraction * max_iterations`` iterations (supervised-only warm-up) and the ramp-up
    starts after them.
    """
    max_iterations = max(1, int(max_iterations))
    warmup = float(warmup_fraction) * max_iterations
    if iteration < warmup:
        return 0.0
    return float(weight) * sigmoid_rampup(iteration - warmup, rampup_fraction * max_iterations)
