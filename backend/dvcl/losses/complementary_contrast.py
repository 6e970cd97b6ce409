"""CCL's contrastive complementary labeling loss (Deng et al., 2022, arXiv:2212.06643; qinyideng/ccl), on voxels.

Samples are split by the confidence of the weak-view prediction (threshold 0.95, FixMatch's):

* high set H: labeled samples (ground truth) and confident unlabeled samples (pseudo-label), the latter with
  both views (weak and strong);
* low set L: the remaining unlabeled samples, both views, with *complementary labels* - the k classes of
  lowest predicted probability (k = 7 of 10 for CIFAR-10), i.e. classes they almost surely are not.

Pairs (``ccl_fixmatch.py``):

* positives: H x H with the same label (not self); L x L the other view of the same sample;
* contrasted pairs (the softmax denominator): H x H all but self; H x L and L x H when the H sample's label is
  one of the L sample's complementary labels (a *reliable negative*); L x L only the other view.

Loss per anchor i with positives P(i) and contrast set A(i), features L2-normalised, temperature 0.07:

    l_i = -1/|P(i)| sum_{p in P(i)} [ s_ip - log sum_{a in A(i)} exp(s_ia) ],  s = z_i . z_a / T

averaged over anchors with at least one positive. The released code averages ``pos_mask * log_prob`` over
*all* columns (``.mean(1)``) instead of over the positives, which scales each anchor's loss by
``|P(i)| / (number of samples)``; the SupCon normalisation above is the loss as defined [decided].
"""

from __future__ import annotations

import torch
from torch import Tensor


def complementary_labels(probs: Tensor, k: int) -> Tensor:
    """The ``k`` classes of lowest probability of every row of ``probs`` (N, C) -> (N, k) long."""
    k = max(0, min(int(k), probs.shape[1] - 1))
    return probs.topk(k, dim=1, largest=False).indices


def ccl_loss(high: Tensor, high_labels: Tensor, low_weak: Tensor, low_strong: Tensor, low_complementary: Tensor,
             temperature: float = 0.07) -> Tensor:
    """The loss of the module docstring.

    Args:
        high: (H, D) features of the high-confidence set (each unlabeled voxel with both views already in it).
        high_labels: (H,) their (pseudo-)labels.
        low_weak, low_strong: (L, D) weak- and strong-view features of the same low-confidence voxels.
        low_complementary: (L, k) complementary labels of those voxels.
    """
    device = high.device
    nh, nl = high.shape[0], low_weak.shape[0]
    feats = torch.cat([high, low_weak, low_strong]).float()
    n = feats.shape[0]
    if n < 2:
        return feats.sum() * 0.0
    eye = torch.eye(n, dtype=torch.bool, device=device)
    pos = torch.zeros(n, n, dtype=torch.bool, device=device)
    contrast = torch.zeros(n, n, dtype=torch.bool, device=device)
    if nh:
        same = high_labels.view(-1, 1) == high_labels.view(1, -1)
        pos[:nh, :nh] = same
        contrast[:nh, :nh] = True
    if nl:
        li = torch.arange(nl, device=device)
        pos[nh + li, nh + nl + li] = True
        pos[nh + nl + li, nh + li] = True
        contrast[nh + li, nh + nl + li] = True
        contrast[nh + nl + li, nh + li] = True
        if nh:
            # reliable negatives: the high sample's label is a complementary label of the low sample
            neg = (low_complementary.unsqueeze(0) == high_labels.view(-1, 1, 1)).any(dim=2)  # (H, L)
            neg2 = torch.cat([neg, neg], dim=1)  # both views of every low sample
            contrast[:nh, nh:] = neg2
            contrast[nh:, :nh] = neg2.t()
    pos &= ~eye
    contrast &= ~eye
    logits = feats @ feats.t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    # a large finite fill instead of -inf: rows with an empty contrast set must not produce NaN gradients
    log_den = torch.logsumexp(logits.masked_fill(~contrast, -1e9), dim=1, keepdim=True)
    has_pos = pos.any(dim=1)
    if not bool(has_pos.any()):
        return feats.sum() * 0.0
    log_prob = logits - log_den
    per_anchor = -(log_prob * pos).sum(dim=1) / pos.sum(dim=1).clamp(min=1)
    return per_anchor[has_pos].mean()
