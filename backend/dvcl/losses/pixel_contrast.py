"""UGPCL's uncertainty-guided pixel contrastive loss (Wang et al., MICCAI 2022; taovv/UGPCL), lifted to voxels.

UGPCL labels every pixel with the ground truth (labeled images) or with the mean prediction of its two
decoders where that prediction is certain (entropy below a ramped threshold; uncertain pixels are ignored,
label -1). Anchors: per image and per class present, ``n_view`` pixels, half "hard" (predicted as another
class) and half "easy". Contrast set: a per-class FIFO queue of *segment* embeddings (the mean embedding of
each class in each image). The loss is the supervised-contrastive form of ``PixelContrastLoss._contrastive``:

    l(a) = -(T / T_base) * mean_{q: y_q = y_a} [ s_aq - log(exp(s_aq) + sum_{n: y_n != y_a} exp(s_an)) ]

with ``s = a . q / T`` (embeddings are L2-normalised), T = T_base = 0.07 (UGPCL's ACDC config).

Released-code details kept on purpose: the queue of class 0 is never filled and enters the contrast set as
``memory_size`` zero vectors labelled 0 (``_sample_negative`` skips class 0 but keeps its rows), so background
anchors are pulled towards "similarity 0" and away from the organ segments. Not kept: the self-pair
mask ``logits_mask`` removes column *i* of the queue for anchor *i*, which only makes sense without a queue
(the anchors are not in the queue), so no column is removed here.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvcl.losses.sampling import randperm

IGNORE = -1


def certainty_labels(mean_probs: Tensor, threshold: float, labels_l: Optional[Tensor] = None) -> Tensor:
    """UGPCL's ``certainty_pseudo``: argmax of the mean prediction, -1 where its entropy exceeds ``threshold``;
    the first ``len(labels_l)`` samples take the ground truth. ``mean_probs`` (B, C, ...) -> (B, ...) long."""
    p = mean_probs.float()
    ent = -(p * torch.log(p + 1e-6)).sum(dim=1)
    pseudo = p.argmax(dim=1)
    pseudo[ent > threshold] = IGNORE
    if labels_l is not None and labels_l.shape[0]:
        lab = labels_l[:, 0] if labels_l.dim() == p.dim() else labels_l
        pseudo[: lab.shape[0]] = lab.long()
    return pseudo


def sample_anchors(labels: Tensor, preds: Tensor, max_samples: int = 1024, max_views: int = 1,
                   generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """UGPCL's ``_anchor_sampling`` on flat voxels: ``labels``/``preds`` (B, N) -> (flat indices, classes).

    Classes with more than ``max_views`` voxels in an image qualify; ``n_view = min(max_samples // total,
    max_views)`` voxels are drawn per (image, class), half hard (``pred != label``) and half easy when both
    exist, else from whichever exists. Indices refer to the flattened (B * N) layout.
    """
    b, n = labels.shape
    per_image: List[List[int]] = []
    total = 0
    for i in range(b):
        cls, counts = torch.unique(labels[i], return_counts=True)
        keep = [int(c) for c, k in zip(cls.tolist(), counts.tolist()) if c != IGNORE and k > max_views]
        per_image.append(keep)
        total += len(keep)
    empty = torch.zeros(0, dtype=torch.long, device=labels.device)
    if total == 0:
        return empty, empty.clone()
    n_view = min(max_samples // total, max_views)
    if n_view < 1:
        return empty, empty.clone()
    idx, cls_out = [], []
    for i in range(b):
        for c in per_image[i]:
            is_c = labels[i] == c
            hard = torch.nonzero(is_c & (preds[i] != c)).squeeze(1)
            easy = torch.nonzero(is_c & (preds[i] == c)).squeeze(1)
            nh, ne = hard.numel(), easy.numel()
            if nh >= n_view / 2 and ne >= n_view / 2:
                keep_h = n_view // 2
                keep_e = n_view - keep_h
            elif nh >= n_view / 2:
                keep_e = ne
                keep_h = n_view - keep_e
            else:
                keep_h = nh
                keep_e = n_view - keep_h
            chosen = torch.cat([hard[randperm(nh, hard.device, generator)[:keep_h]],
                                easy[randperm(ne, easy.device, generator)[:keep_e]]])
            idx.append(chosen + i * n)
            cls_out.append(torch.full_like(chosen, c))
    return torch.cat(idx), torch.cat(cls_out)


def pixel_contrast_loss(anchors: Tensor, anchor_classes: Tensor, contrast: Tensor, contrast_classes: Tensor,
                        temperature: float = 0.07, base_temperature: float = 0.07) -> Tensor:
    """The supervised-contrastive loss of the module docstring; anchors without a positive contribute 0."""
    if anchors.shape[0] == 0 or contrast.shape[0] == 0:
        return anchors.sum() * 0.0
    a = anchors.float()
    logits = a @ contrast.float().t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    pos = (anchor_classes.view(-1, 1) == contrast_classes.view(1, -1)).to(logits)
    neg = 1.0 - pos
    neg_sum = (torch.exp(logits) * neg).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(torch.exp(logits) + neg_sum)
    mean_log_prob_pos = (pos * log_prob).sum(dim=1) / (pos.sum(dim=1) + 1e-5)
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


class SegmentQueue(nn.Module):
    """Per-class FIFO of segment embeddings (UGPCL's ``segment_queue``), starting from random unit vectors."""

    def __init__(self, num_classes: int, size: int, dim: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.size = int(size)
        self.register_buffer("queue", F.normalize(torch.randn(num_classes, size, dim, device=device), dim=2),
                             persistent=False)
        self.register_buffer("pointer", torch.zeros(num_classes, dtype=torch.long, device=device), persistent=False)

    @torch.no_grad()
    def push(self, segment: Tensor, cls: int) -> None:
        """Enqueue one (normalised) segment embedding of class ``cls`` (class 0 is never enqueued, as released)."""
        if cls <= 0:
            return
        ptr = int(self.pointer[cls])
        self.queue[cls, ptr] = F.normalize(segment.detach().float().reshape(-1), dim=0)
        self.pointer[cls] = (ptr + 1) % self.size

    def contrast_set(self) -> Tuple[Tensor, Tensor]:
        """``(features, classes)``: zero rows labelled 0 for class 0, then the queues of classes 1..C-1."""
        d = self.queue.shape[2]
        zeros = self.queue.new_zeros(self.size, d)
        feats = torch.cat([zeros, self.queue[1:].reshape(-1, d)])
        classes = torch.arange(self.num_classes, device=self.queue.device).repeat_interleave(self.size)
        return feats, classes
