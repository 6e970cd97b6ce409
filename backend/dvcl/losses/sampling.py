"""Voxel sampling helpers shared by the contrastive losses.

The contrastive terms work on a few thousand voxels, never on the dense volume: a 256-d projection at every
voxel of a 64x128x128 patch is ~0.5 GB, and all-pairs similarities over the unreliable voxels of a batch are
tens of GB. So the method first samples *flat voxel indices* (over ``B * Z * Y * X``), gathers the small
backbone features (or probabilities) at those indices only, and projects just those.

Randomness comes from a ``torch.Generator`` when one is given (tests), else from torch's global RNG, which
the trainer seeds and checkpoints. A generator may live on another device than the data (a CPU generator
with CUDA tensors): random numbers are drawn on the generator's device and moved.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def randperm(n: int, device: torch.device, generator: Optional[torch.Generator] = None) -> Tensor:
    """A random permutation of ``range(n)`` on ``device``."""
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def randint(high: int, size: Tuple[int, ...], device: torch.device,
            generator: Optional[torch.Generator] = None) -> Tensor:
    """Uniform integers in ``[0, high)`` of shape ``size`` on ``device``."""
    if generator is None:
        return torch.randint(high, size, device=device)
    return torch.randint(high, size, generator=generator, device=generator.device).to(device)


def rand(size: Tuple[int, ...], device: torch.device, generator: Optional[torch.Generator] = None) -> Tensor:
    """Uniform floats in ``[0, 1)`` of shape ``size`` on ``device``."""
    if generator is None:
        return torch.rand(size, device=device)
    return torch.rand(size, generator=generator, device=generator.device).to(device)


def sample_from_mask(mask: Tensor, max_count: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Flat indices of at most ``max_count`` voxels where ``mask`` is true, uniformly without replacement.

    ``mask`` may have any shape; indices refer to ``mask.reshape(-1)``. Returns all true voxels (in random
    order) when there are fewer than ``max_count``, and an empty long tensor when there are none.
    """
    candidates = torch.nonzero(mask.reshape(-1), as_tuple=False).squeeze(1)
    if candidates.numel() > max_count:
        candidates = candidates[randperm(candidates.numel(), candidates.device, generator)[:max_count]]
    return candidates


def sample_per_class(labels: Tensor, valid: Tensor, num_classes: int, max_per_class: int,
                     generator: Optional[torch.Generator] = None, first_class: int = 0) -> Tuple[Tensor, Tensor]:
    """Sample at most ``max_per_class`` valid voxels of every class (uniform, without replacement).

    Balancing by class matters because background outnumbers a small organ (adrenal glands) by 10^4.
    ``labels`` and ``valid`` have the same shape; indices refer to the flattened tensors. Classes below
    ``first_class`` are skipped (``first_class=1`` leaves out background). Returns ``(indices, classes)``,
    both 1-D long tensors of equal length, possibly empty (absent classes simply contribute nothing).
    """
    labels = labels.reshape(-1)
    valid = valid.reshape(-1)
    chosen_idx = []
    chosen_cls = []
    for c in range(first_class, num_classes):
        idx = sample_from_mask(valid & (labels == c), max_per_class, generator)
        if idx.numel():
            chosen_idx.append(idx)
            chosen_cls.append(torch.full_like(idx, c))
    if not chosen_idx:
        empty = torch.zeros(0, dtype=torch.long, device=labels.device)
        return empty, empty.clone()
    return torch.cat(chosen_idx), torch.cat(chosen_cls)


def gather_voxels(volume: Tensor, flat_index: Tensor) -> Tensor:
    """Rows of ``volume`` (B, F, *spatial) at flat voxel indices over ``B * prod(spatial)`` -> (N, F).

    Indexing a (B, F, S) view avoids the dense channels-last copy that ``permute(...).reshape(-1, F)`` would
    make of the whole feature map; gradients flow back to the gathered voxels only.
    """
    b, f = volume.shape[0], volume.shape[1]
    flat = volume.reshape(b, f, -1)
    spatial = flat.shape[2]
    return flat[flat_index // spatial, :, flat_index % spatial]


def class_prototypes(features: Tensor, classes: Tensor, num_classes: int) -> Tuple[Tensor, Tensor]:
    """L2-normalised mean feature per class -> ``(prototypes (C, D), present (C,) bool)``.

    Absent classes get a zero row and ``present=False``; callers must not use them as positives.
    """
    d = features.shape[1]
    sums = torch.zeros(num_classes, d, dtype=features.dtype, device=features.device)
    sums.index_add_(0, classes, features)
    counts = torch.bincount(classes, minlength=num_classes)[:num_classes]
    present = counts > 0
    means = sums / counts.clamp(min=1).unsqueeze(1).to(features.dtype)
    return F.normalize(means, dim=1), present
