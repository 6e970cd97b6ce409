"""Learning-rate and loss-weight schedules (pure functions of the iteration, so resuming is exact)."""

from __future__ import annotations

# the loss-weight ramps live below both training and the methods (dvcl.utils.rampup), so that dvcl.methods and
# dvcl.losses do not import dvcl.training; re-exported here for the callers of the old location
from dvcl.utils.rampup import rampup_weight, sigmoid_rampup

__all__ = ["poly_lr", "rampup_weight", "set_lr", "sigmoid_rampup"]


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """lr0 * (1 - it / max_it) ** power [given], for the 0-based ``iteration`` about to be taken."""
    if max_iterations <= 0:
        return base_lr
    frac = min(max(iteration, 0), max_iterations) / max_iterations
    return base_lr * (1.0 - frac) ** power


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
