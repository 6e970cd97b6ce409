"""Teacher-student consistency losses of Mean Teacher and UA-MT, and UA-MT's uncertainty mask.

Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) penalises the distance between the student's and the
EMA teacher's softmax on (noisy) unlabeled input; the 3D code everyone compares against (SSL4MIS
``train_mean_teacher_3D.py``) uses the mean squared difference of the softmax vectors, with a KL
divergence as the usual alternative. UA-MT (Yu et al., MICCAI 2019) keeps only the voxels where the
teacher is certain: the predictive entropy of T Monte-Carlo dropout passes must be below a threshold that
ramps from 0.75 to 1.0 times the maximum entropy ln C.

The released UA-MT code (SSL4MIS, DHC) hard-codes the binary case: ``threshold = (0.75 + 0.25 r) * ln 2``
and ``sum(mask * mse) / (2 * sum(mask))``, where the 2 is the number of classes. Here both use C, so the
loss is the mean squared softmax difference over classes and masked voxels for any number of organs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dvcl.losses.entropy import entropy

_EPS = 1e-16


def softmax_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Element-wise ``(softmax(student) - softmax(teacher))^2``, shape (B, C, *spatial).

    The teacher side is detached: the teacher follows the student by EMA, never by gradient.
    """
    _check_shapes(student_logits, teacher_logits)
    p_s = torch.softmax(student_logits.float(), dim=1)
    p_t = torch.softmax(teacher_logits.detach().float(), dim=1)
    return (p_s - p_t) ** 2


def softmax_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Voxel-wise ``KL(p_teacher || p_student)`` summed over classes, shape (B, *spatial)."""
    _check_shapes(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits.float(), dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float(), dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def consistency_loss(student_logits: Tensor, teacher_logits: Tensor, kind: str = "mse") -> Tensor:
    """Mean consistency between student and teacher predictions: ``"mse"`` (SSL4MIS MT) or ``"kl"``.

    ``mse`` is the mean over voxels *and* classes, exactly ``torch.mean((p_s - p_t) ** 2)`` of SSL4MIS.
    An empty batch gives a graph-connected zero.
    """
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    if kind == "mse":
        return softmax_mse(student_logits, teacher_logits).mean()
    if kind == "kl":
        return softmax_kl(student_logits, teacher_logits).mean()
    raise ValueError(f"consistency kind must be 'mse' or 'kl', got {kind!r}")


def uncertainty_threshold(ramp: float, num_classes: int, start: float = 0.75, end: float = 1.0) -> float:
    """UA-MT's entropy threshold ``(start + (end - start) * ramp) * ln C``; ``ramp`` in [0, 1].

    A low threshold early on keeps only voxels the teacher is already sure of; as the teacher improves the
    threshold rises towards the maximum entropy ln C, where every voxel passes.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    r = min(max(float(ramp), 0.0), 1.0)
    return (start + (end - start) * r) * math.log(num_classes)


def mc_uncertainty(probs: Tensor) -> Tensor:
    """Predictive entropy of the mean of T Monte-Carlo softmax samples ``(T, B, C, *spatial)`` -> (B, *spatial).

    The entropy of the *mean* (not the mean of the entropies) is UA-MT's uncertainty: it is high both where
    each sample is unsure and where the samples disagree.
    """
    if probs.dim() < 3:
        raise ValueError(f"expected (T, B, C, ...) probabilities, got shape {tuple(probs.shape)}")
    return entropy(probs.float().mean(dim=0), dim=1)


def uncertainty_mask(uncertainty: Tensor, threshold: float) -> Tensor:
    """Float mask (1 = certain) of voxels whose uncertainty is strictly below ``threshold``."""
    return (uncertainty < threshold).float()


def masked_consistency(dist: Tensor, mask: Tensor) -> Tensor:
    """UA-MT's masked loss ``sum(mask * dist) / (C * sum(mask))`` for ``dist`` (B, C, *spatial).

    ``mask`` is (B, *spatial) or (B, 1, *spatial) and broadcasts over the classes, so the result is the mean
    squared difference over classes and certain voxels (0 when no voxel is certain, still graph-connected).
    """
    if mask.dim() == dist.dim() - 1:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != dist.shape[0] or mask.shape[2:] != dist.shape[2:] or mask.shape[1] != 1:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit distances {tuple(dist.shape)}")
    mask = mask.to(dist.dtype)
    num_classes = dist.shape[1]
    return (mask * dist).sum() / (num_classes * mask.sum() + _EPS)


def _check_shapes(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
