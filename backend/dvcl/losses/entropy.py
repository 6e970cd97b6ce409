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


def entropy_from_logits(logits: Tensor, block_voxels: int = 1 << 15) -> Tensor:
    """``entropy(softmax(logits.float(), dim=1), dim=1)`` for (B, C, *spatial) logits, without the full softmax.

    The softmax and the entropy are computed per block of about ``block_voxels`` voxels (one batch item and a
    range of the first spatial axis at a time), so the temporaries (probabilities, their log, the product) stay
    in cache instead of making four passes over a (B, C, Z, Y, X) volume; the per-voxel arithmetic is the same.
    No gradient.
    """
    with torch.no_grad():
        z = logits.detach()
        if z.dim() < 3 or z.shape[2] == 0:
            return entropy(torch.softmax(z.float(), dim=1), dim=1)
        per_slice = max(1, z[0, 0, 0].numel())
        step = max(1, block_voxels // per_slice)
        out = torch.empty((z.shape[0],) + tuple(z.shape[2:]), dtype=torch.float32, device=z.device)
        for b in range(z.shape[0]):
            for s in range(0, z.shape[2], step):
                out[b, s:s + step] = entropy(torch.softmax(z[b:b + 1, :, s:s + step].float(), dim=1), dim=1)[0]
        return out


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


def reliable_split(ent: Tensor, alpha: float, mask: Optional[Tensor] = None,
                   per_item: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """Split voxels into reliable (H <= t) and unreliable (H > t) with t from :func:`entropy_threshold`.

    ``per_item``: one threshold per item of the first axis (per unlabeled image) instead of one over all
    voxels (METHOD.md: over the batch); ``t`` then has one value per item. Not combined with ``mask``.
    Returns ``(reliable, unreliable, t)``; both masks have ``ent``'s shape and are false outside ``mask``.
    """
    if per_item:
        if mask is not None:
            raise ValueError("reliable_split: per_item does not take a mask")
        t = torch.stack([entropy_threshold(ent[i], alpha) for i in range(ent.shape[0])]) if ent.shape[0] else \
            ent.new_zeros(0)
        unreliable = ent.detach() > t.view(-1, *([1] * (ent.dim() - 1))) + _TIE_TOLERANCE
        return ~unreliable, unreliable, t
    t = entropy_threshold(ent, alpha, mask)
    unreliable = ent.detach() > t + _TIE_TOLERANCE
    reliable = ~unreliable
    if mask is not None:
        unreliable = unreliable & mask
        reliable = reliable & mask
    return reliable, unreliable, t
