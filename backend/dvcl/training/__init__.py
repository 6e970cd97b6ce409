"""The shared training loop: configuration, Trainer, checkpoints, schedules, data streams, DDP helpers.

``TrainConfig`` is torch-free; ``Trainer``/``train`` import torch and MONAI and are loaded lazily.
"""

from __future__ import annotations

from typing import Any

from dvcl.training.config import TrainConfig, apply_preset_schedule, apply_profile

__all__ = ["TrainConfig", "Trainer", "TrainResult", "apply_preset_schedule", "apply_profile", "train"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "TrainResult", "train", "read_run_status"):
        from dvcl.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'dvcl.training' has no attribute {name!r}")
