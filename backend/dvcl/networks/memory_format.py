"""Channels-last 3D memory format for training on the CPU: the one switch and the one place that applies it.

On a CPU the 3x3x3 convolutions of the full-resolution levels dominate a training step, and oneDNN runs them
several times faster in ``torch.channels_last_3d`` (channels innermost, NDHWC) than in the default NCDHW layout:
one Conv3d(8, 8, 3) on (4, 8, 32, 64, 64), 1 thread, forward 0.14 s -> 0.09 s, backward 0.65-1.7 s -> 0.15 s.
The layout follows the weights and the input through the network; instance norm keeps it through
:class:`dvcl.networks.blocks.InstanceNorm3d` (computed on the channels-last data instead of as a batch norm
over a reshaped contiguous copy). Only strides change: module types, state-dict keys and
shapes, and the arithmetic (up to the summation order) stay the same, so checkpoints and model packages are
unaffected (weights files are written contiguous).

Setting (``TrainConfig.channels_last``): ``auto`` (default) = on for the CPU, off elsewhere (a GPU keeps
today's layout: not measured there); ``on``; ``off``. For ``auto`` the environment variable
``DVCL_CHANNELS_LAST=on|off`` decides instead, so a run or a benchmark can be switched without a config change.
Measurements: docs/results/train_speed.md, "Channels-last on the CPU".
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional, Union

import torch
from torch import nn

from dvcl.errors import ConfigError
from dvcl.networks.config import CHANNELS_LAST_CHOICES

CHOICES = CHANNELS_LAST_CHOICES
ENV = "DVCL_CHANNELS_LAST"
FORMAT = torch.channels_last_3d

__all__ = ["CHOICES", "ENV", "channels_last_enabled", "to_channels_last", "batch_to_channels_last",
           "match_optimizer_state", "is_channels_last"]


def channels_last_enabled(setting: str, device: Union[str, torch.device]) -> bool:
    """Whether training on ``device`` uses channels-last, for ``setting`` ``auto``/``on``/``off``."""
    setting = str(setting or "auto").strip().lower()
    if setting not in CHOICES:
        raise ConfigError(f"channels_last must be one of {', '.join(CHOICES)}, got '{setting}'")
    if setting == "auto":
        env = os.environ.get(ENV, "").strip().lower()
        if env in ("on", "1", "true", "yes"):
            return True
        if env in ("off", "0", "false", "no"):
            return False
        if env not in ("", "auto"):
            raise ConfigError(f"{ENV} must be on, off or auto, got '{env}'")
        return torch.device(device).type == "cpu"
    return setting == "on"


def _to_cl(t: torch.Tensor) -> torch.Tensor:
    # ``to``, not ``contiguous``: a one-channel tensor (the image, the first convolution's weight) is contiguous in
    # both formats, and ``contiguous`` would keep its NCDHW strides, from which oneDNN infers NCDHW for the layer
    return t.to(memory_format=FORMAT) if t.dim() == 5 else t


def to_channels_last(models: Union[nn.Module, Mapping[str, nn.Module], Iterable[nn.Module]]) -> None:
    """Re-lay every 5-D parameter and buffer of ``models`` in channels-last, in place.

    The Parameter objects stay the same (an optimiser built before keeps working); gradients are created in the
    parameters' layout. Call before the first optimiser step, so that its state (momenta) takes the same layout.
    """
    if isinstance(models, nn.Module):
        models = [models]
    elif isinstance(models, Mapping):
        models = list(models.values())
    for m in models:
        m._apply(_to_cl)


def batch_to_channels_last(batch: Optional[dict]) -> Optional[dict]:
    """The batch with its ``image`` in channels-last (labels stay as they are: they are class ids, not features)."""
    if batch is None or not torch.is_tensor(batch.get("image")) or batch["image"].dim() != 5:
        return batch
    return {**batch, "image": _to_cl(batch["image"])}


def match_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give the optimiser's per-parameter tensors (momenta) their parameter's layout (after loading a state that
    was saved with the other setting; values unchanged)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            for key, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.dim() == 5 and v.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def is_channels_last(t: torch.Tensor) -> bool:
    """True for a 5-D tensor with channels-last strides (channel stride 1: for one channel both formats are
    "contiguous", and the strides decide which one torch and oneDNN take it for)."""
    return t.dim() == 5 and t.is_contiguous(memory_format=FORMAT) and t.stride(1) == 1
