"""Cross pseudo supervision (Chen et al., CVPR 2021; METHOD.md 3.4).

Each model is trained with cross-entropy against the other model's hard pseudo-label (argmax), on unlabeled
voxels: ``CE(p^A, y^B) + CE(p^B, y^A)``. The pseudo-labels carry no gradient. The weight ramps up with a
sigmoid schedule so the two still-random models do not lock each other into early mistakes [decided].

Option [inferred]: weight each voxel by ``exp(-H(p_src) / log C)`` where ``p_src`` is the model that made
the pseudo-label, so confident pseudo-labels count fully (weight 1 at H = 0) and uniform ones count 1/e.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dvcl.losses.entropy import entropy
from dvcl.utils.rampup import sigmoid_rampup

__all__ = ["cps_loss", "hard_labels", "sigmoid_rampup"]


def hard_labels(logits: Tensor) -> Tensor:
    """Pseudo-labels ``argmax`` over the class axis 1 (no gradient).

    ``max(dim=1).indices`` rather than ``argmax``: the same first-maximum rule, but on a CPU several times
    faster for a (B, C, Z, Y, X) volume (40 ms against 177 ms for 2x14x32x64x64, one thread).
    """
    return logits.detach().float().max(dim=1).indices


def _cross_entropy_to(logits: Tensor, teacher_logits: Tensor, entropy_weighting: bool,
                      target: Optional[Tensor] = None) -> Tensor:
    teacher = teacher_logits.detach().float()
    if target is None:
        target = hard_labels(teacher)
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    if entropy_weighting:
        num_classes = teacher.shape[1]
        h = entropy(torch.softmax(teacher, dim=1), dim=1)
        ce = ce * torch.exp(-h / math.log(num_classes))
    return ce.mean()


def cps_loss(logits_a: Tensor, logits_b: Tensor, entropy_weighting: bool = False,
             pseudo_a: Optional[Tensor] = None, pseudo_b: Optional[Tensor] = None) -> Tensor:
    """``CE(logits_a, argmax logits_b) + CE(logits_b, argmax logits_a)``, mean over voxels.

    Logits are (B, C, *spatial). ``pseudo_a`` / ``pseudo_b`` may pass the argmax labels when the caller has
    them already (:func:`hard_labels`; DVCL reuses them for L_hqcl). An empty batch returns a graph-connected
    zero.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"CPS needs logits of equal shape, got {tuple(logits_a.shape)} and {tuple(logits_b.shape)}")
    if logits_a.numel() == 0:
        return (logits_a.sum() + logits_b.sum()) * 0.0
    return (_cross_entropy_to(logits_a, logits_b, entropy_weighting, pseudo_b)
            + _cross_entropy_to(logits_b, logits_a, entropy_weighting, pseudo_a))

