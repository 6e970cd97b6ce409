"""Voxel entropy and the reliable / unreliable split of pseudo-labels (METHOD.md 3.3).

A voxel is *unreliable* when the model is unsure of it: its prediction entropy H(p) is above
``t = mean(H) + alpha * std(H)`` taken over the unlabeled batch ([given] alpha = 0.5; the rule is
[inferred]). Reliable voxels feed L_hqcl as pseudo-labeled anchors; unreliable ones feed L_dvcl. The
threshold adapts to the batch, so the split stays meaningful as the models grow confident.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

_EPS = 1e-8
_TIE_TOLERANCE = 1e-6
"""Voxels must exceed the threshold by this much (nats): when all entropies are equal the float mean can land
an ulp below them, which would otherwise mark every voxel unreliable."""


def entropy(probs: Tensor, dim: int = 1) -> Tensor:
    """Shannon entropy (nats) of probability vectors along ``dim``, computed in float32 or wider."""
    p = probs.float() if probs.dtype in (torch.float16, torch.bfloat16) else probs
    return -(p * torch.log(p.clamp(min=_EPS))).sum(dim=dim)


def entropy_threshold(ent: Tensor, alpha: float, mask: Optional[Tensor] = None) -> Tensor:
    """``mean(H) + alpha * std(H)`` over the voxels (where ``mask`` is true); a 0-d tensor.

    The population std is used so that a single voxel gives std 0 rather than NaN. With no voxel at all the
    threshold is +inf (nothing is unreliable).
    """
    values = ent.reshape(-1) if mask is None else ent.reshape(-1)[mask.reshape(-1)]
    if values.numel() == 0:
        return torch.tensor(float("inf"), device=ent.device, dtype=ent.dtype)
    values = values.detach()
    std, mean = torch.std_mean(values, correction=0)
    return mean + alpha * std


def reliable_split(ent: Tensor, alpha: float, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Split voxels into reliable (H <= t) and unreliable (H > t) with t from :func:`entropy_threshold`.

    Returns ``(reliable, unreliable, t)``; both masks have ``ent``'s shape and are false outside ``mask``.
    """
    t = entropy_threshold(ent, alpha, mask)
    unreliable = ent.detach() > t + _TIE_TOLERANCE
    reliable = ~unreliable
    if mask is not None:
        unreliable = unreliable & mask
        reliable = reliable & mask
    return reliable, unreliable, t
