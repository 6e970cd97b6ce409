"""BaCon's balanced feature-level contrastive loss (Feng et al., AAAI 2024; fqhank/AAAI24-BaCon-CISSL), on voxels.

For every selected sample i (confidence >= 0.98) of class y_i (ground truth, or the top-1 prediction):

    pos_i = exp(cos(z_i, c_{y_i}) / tau_{y_i})
    neg_i = mean_{n in N(y_i)} exp(cos(z_i, z_n) / tau_neg)
    l_i   = -log( pos_i / (pos_i + S * neg_i + 1e-8) )

averaged over the selected samples. ``c_k`` is the class centre (mean of stored, detached features of
confidently labelled samples of class k); ``S`` = 64 scales the mean negative like a sum over a batch of 64
(the released code's constant); negatives are *reliable* ones (RNS): labeled samples of another class, and
unlabeled samples whose top-3 predictions do not contain y_i. The class-aware temperature (BTA) is

    tau_k(t) = tau - (1 - t)^2 * delta * sqrt(freq_k / max freq),   tau = 0.1, delta = 0.0005

with t the training progress and freq_k how often class k is confidently labelled, so frequent classes start
slightly sharper and all classes meet at tau at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def balanced_temperature(freq: Tensor, progress: float, tau: float = 0.1, delta: float = 0.0005) -> Tensor:
    """BTA: ``tau - (1 - progress)^2 * delta * sqrt(freq / max(freq))`` per class."""
    f = freq.to(torch.float64)
    rel = torch.sqrt(f / f.max().clamp(min=1e-12))
    return (tau - (1.0 - float(progress)) ** 2 * delta * rel).float()


def reliable_negative_mask(num_classes: int, labels: Tensor, topk: Tensor, is_labeled: Tensor) -> Tensor:
    """RNS: ``allowed[k, n]`` is True when candidate n is a reliable negative for class k.

    Labeled candidates (``is_labeled``) with label != k; unlabeled candidates whose top-k predicted classes
    (``topk`` (N, k)) do not include k.
    """
    classes = torch.arange(num_classes, device=labels.device).view(-1, 1)
    lab_ok = labels.view(1, -1) != classes
    in_topk = (topk.unsqueeze(0) == classes.view(-1, 1, 1)).any(dim=2)  # (C, N)
    return torch.where(is_labeled.view(1, -1), lab_ok, ~in_topk)


def bacon_loss(feats: Tensor, classes: Tensor, centers: Tensor, center_valid: Tensor, negatives: Tensor,
               negative_allowed: Tensor, tau_pos: Tensor, tau_neg: float = 0.1, negative_scale: float = 64.0) -> Tensor:
    """The loss of the module docstring over anchors ``feats`` (N, D) of ``classes`` (N,).

    ``centers`` (C, D) with ``center_valid`` (C,); ``negatives`` (M, D) with ``negative_allowed`` (C, M);
    ``tau_pos`` (C,). Anchors whose class has no centre or no reliable negative are skipped; with none left
    the result is a graph-connected zero.
    """
    zero = feats.sum() * 0.0
    if feats.shape[0] == 0 or negatives.shape[0] == 0:
        return zero
    keep = center_valid[classes] & negative_allowed[classes].any(dim=1)
    if not bool(keep.any()):
        return zero
    z = F.normalize(feats[keep].float(), dim=1)
    cls = classes[keep]
    cen = F.normalize(centers.float(), dim=1)[cls]
    pos = torch.exp((z * cen).sum(dim=1) / tau_pos.to(z)[cls])
    sims = torch.exp(z @ F.normalize(negatives.float(), dim=1).t() / tau_neg)  # (N, M)
    allowed = negative_allowed[cls].to(sims)
    neg = (sims * allowed).sum(dim=1) / allowed.sum(dim=1)
    return (-torch.log(pos / (pos + negative_scale * neg + 1e-8))).mean()
