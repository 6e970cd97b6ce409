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

from typing import Callable, List, Optional, Sequence, Tuple

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


def class_candidates(labels: Tensor, valid: Tensor, num_classes: int, first_class: int = 0) -> List[Tensor]:
    """Flat indices of the valid voxels of every class ``first_class .. num_classes - 1``, each in ascending order.

    One pass instead of one ``labels == c`` mask and one ``nonzero`` per class: the valid voxels' labels are
    stably sorted (as uint8 when the classes fit, which the CPU sorts several times faster than int64), so each
    class's block keeps ascending voxel order, exactly what ``nonzero(valid & (labels == c))`` returns. Labels
    outside ``[0, num_classes)`` are ignored. Callers that sample several times from the same voxels (anchors
    and prototypes) compute this once.
    """
    labels = labels.reshape(-1)
    idx = torch.nonzero(valid.reshape(-1), as_tuple=False).squeeze(1)
    lab = labels[idx]
    in_range = (lab >= first_class) & (lab < num_classes)
    if not bool(in_range.all()):
        idx, lab = idx[in_range], lab[in_range]
    narrow = lab.to(torch.uint8) if num_classes <= 256 else lab
    order = torch.sort(narrow, stable=True).indices
    counts = torch.bincount(lab, minlength=num_classes)[:num_classes].tolist()  # one device sync
    blocks = idx[order].split(counts)
    return list(blocks[first_class:])


def sample_candidates(candidates: Sequence[Tensor], max_per_class: int, first_class: int = 0,
                      generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """At most ``max_per_class`` of each class's candidates (uniform, without replacement) -> (indices, classes).

    ``candidates[i]`` holds class ``first_class + i`` (:func:`class_candidates`). Random numbers are drawn class
    by class, in class order, only for classes with more candidates than ``max_per_class`` (as
    :func:`sample_from_mask` does), so the result equals per-class :func:`sample_from_mask` calls.
    """
    chosen_idx = []
    chosen_cls = []
    for i, cand in enumerate(candidates):
        n = cand.numel()
        if n == 0:
            continue
        if n > max_per_class:
            cand = cand[randperm(n, cand.device, generator)[:max_per_class]]
        chosen_idx.append(cand)
        chosen_cls.append(torch.full_like(cand, first_class + i))
    if not chosen_idx:
        device = candidates[0].device if len(candidates) else None
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    return torch.cat(chosen_idx), torch.cat(chosen_cls)


def sample_per_class(labels: Tensor, valid: Tensor, num_classes: int, max_per_class: int,
                     generator: Optional[torch.Generator] = None, first_class: int = 0) -> Tuple[Tensor, Tensor]:
    """Sample at most ``max_per_class`` valid voxels of every class (uniform, without replacement).

    Balancing by class matters because background outnumbers a small organ (adrenal glands) by 10^4.
    ``labels`` and ``valid`` have the same shape; indices refer to the flattened tensors. Classes below
    ``first_class`` are skipped (``first_class=1`` leaves out background). Returns ``(indices, classes)``,
    both 1-D long tensors of equal length, possibly empty (absent classes simply contribute nothing).
    """
    candidates = class_candidates(labels, valid, num_classes, first_class)
    if not candidates:
        empty = torch.zeros(0, dtype=torch.long, device=labels.device)
        return empty, empty.clone()
    return sample_candidates(candidates, max_per_class, first_class, generator)


def gather_voxels(volume: Tensor, flat_index: Tensor) -> Tensor:
    """Rows of ``volume`` (B, F, *spatial) at flat voxel indices over ``B * prod(spatial)`` -> (N, F).

    Both paths index a free view of the volume, never a dense copy of the feature map, and their gradient comes
    back in the volume's own memory layout. That matters for channels-last training: the gradient of a
    (B, F, S) gather of a channels-last map is a contiguous (B, F, S) tensor, and adding it to the
    channels-last gradients of the other losses converts layouts element by element (about 0.3-0.4 s per
    DVCL step on one CPU core at the quick profile). A channels-last volume is therefore gathered as rows of its
    (B * S, F) view.
    """
    b, f = volume.shape[0], volume.shape[1]
    if volume.dim() > 2 and volume.stride(1) == 1 and f > 1 and not volume.is_contiguous():
        return volume.movedim(1, -1).reshape(-1, f).index_select(0, flat_index)  # channels-last: a view
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


def projected_class_prototypes(project: Callable[[Tensor], Tensor], features: Tensor, classes: Tensor,
                               num_classes: int, block: int = 1024) -> Tuple[Tensor, Tensor]:
    """``class_prototypes(project(features), classes, num_classes)`` without the (N, V) projected matrix.

    The prototypes average thousands of projected voxels per class (28672 x 256 floats per model at 14
    classes); projecting and summing ``block`` rows at a time keeps each block in cache, which more than
    halves the time on a CPU (on an accelerator: one block). Row sums accumulate in the same order, so the
    result is the same. Call under
    ``torch.no_grad()`` (prototypes are detached).
    """
    if features.shape[0] == 0:
        return class_prototypes(project(features), classes, num_classes)
    if features.device.type != "cpu":
        block = features.shape[0]  # an accelerator: one block, fewer kernel launches
    sums = None
    for s in range(0, features.shape[0], block):
        rows = project(features[s:s + block])
        if sums is None:
            sums = torch.zeros(num_classes, rows.shape[1], dtype=rows.dtype, device=rows.device)
        sums.index_add_(0, classes[s:s + block], rows)
    counts = torch.bincount(classes, minlength=num_classes)[:num_classes]
    present = counts > 0
    means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    return F.normalize(means, dim=1), present


def project_in_blocks(project: Callable[[Tensor], Tensor], features: Tensor, block: int = 1024) -> Tensor:
    """``project(features)`` computed ``block`` rows at a time (no gradient: call under ``torch.no_grad()``).

    The projection MLP's 256-wide hidden layer for thousands of rows does not fit in cache; in blocks it does,
    which makes the detached projections (negatives, the L_dvcl pool) markedly cheaper on a CPU. On an
    accelerator one block is used.
    """
    if features.shape[0] <= block or features.device.type != "cpu":
        return project(features)
    return torch.cat([project(features[s:s + block]) for s in range(0, features.shape[0], block)])
