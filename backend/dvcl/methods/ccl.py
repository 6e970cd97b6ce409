"""CCL: contrastive complementary labeling (a baseline of the paper's tables).

Deng, Guo, Yang, Pan, Chen. "Boosting Semi-Supervised Learning with Contrastive Complementary Labeling."
arXiv:2212.06643 (2022). Authors' code (image classification): qinyideng/ccl
``models/ccl_fixmatch/ccl_fixmatch.py`` with ``config/ccl_fixmatch/*``.

A plug-in of FixMatch (:mod:`dvcl.methods.fixmatch_base`). Samples whose weak-view confidence is below the
FixMatch threshold are usually dropped; CCL uses them through their *complementary labels*, the k classes of
lowest predicted probability, as reliable negatives of the confident samples of those classes, in a
supervised contrastive loss over labeled, confident and unconfident samples and both views
(:mod:`dvcl.losses.complementary_contrast`). Published settings are the defaults: threshold 0.95,
temperature 0.07, contrastive weight 1, k = 7 of 10 classes (``complementary_fraction`` = 0.7).

Choices made lifting image-level samples to voxels and to this code base [decided]:
* a "sample" is a voxel; the features are the SegNet's 256-d projection head at sampled voxels, of the
  labeled view, the weak view and the strong view at the *same* voxel positions (the strong view is
  voxel-aligned);
* high-confidence set: at most ``high_per_class`` voxels per class from the labeled voxels (ground truth)
  and as many from the confident unlabeled voxels (pseudo-label, both views), so background does not swamp
  the organs; low-confidence set: ``low_samples`` random unconfident unlabeled voxels (both views);
* k = round(complementary_fraction * C), at least 1 and at most C - 1 (CIFAR-10: 7 of 10);
* the per-anchor loss is normalised by the number of its positives (SupCon), see the loss module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from dvcl.losses.complementary_contrast import ccl_loss, complementary_labels
from dvcl.losses.sampling import gather_voxels, sample_from_mask, sample_per_class
from dvcl.methods.base import Batch
from dvcl.methods.fixmatch_base import FixMatchParams, FixMatchSegMethod, Views
from dvcl.methods.params import ContrastParams, param
from dvcl.methods.registry import register_method


@dataclass
class CCLParams(FixMatchParams, ContrastParams):
    """CCL hyper-parameters (released code) on top of FixMatch's."""

    contrast_weight: float = 1.0
    temperature: float = 0.07
    complementary_fraction: float = param(0.7, gt=0, lt=1)
    """k / C, the share of classes taken as complementary labels (released: k = 7 for 10 classes)."""
    high_per_class: int = param(64, ge=1)
    """[decided] high-confidence voxels per class, from labeled and from confident unlabeled voxels each."""
    low_samples: int = param(256, ge=0)
    """[decided] low-confidence unlabeled voxels per iteration."""


@register_method("ccl")
class CCLMethod(FixMatchSegMethod):
    """FixMatch + CCL's contrastive term with complementary labels of the unconfident voxels."""

    params_class = CCLParams

    def num_complementary(self) -> int:
        c = self.num_classes
        return int(min(c - 1, max(1, round(self.params.complementary_fraction * c))))

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        y_l = batch_l["label"].to(self.device).long()
        v = self.views(batch_l, batch_u)
        sup, unsup, probs_w = self.fixmatch_terms(v, y_l)
        if p.contrast_started(iteration, self.cfg.iterations):
            contrast, low_fraction = self._contrast(v, y_l, probs_w)
        else:
            contrast, low_fraction = sup * 0.0, 0.0
        loss = sup + p.unsup_weight * unsup + p.contrast_weight * contrast
        return loss, {"sup": float(sup.detach()), "unsup": float(unsup.detach()), "contrast": float(contrast.detach()),
                      "low_fraction": low_fraction}

    def _contrast(self, v: Views, y_l: Tensor, probs_w: Optional[Tensor]) -> Tuple[Tensor, float]:
        p = self.params
        net = self.models["student"]
        c = self.num_classes
        n_l, n_u = v.n_l, v.n_u
        feats_l = v.feats[:n_l]
        with torch.no_grad():
            lab = y_l[:, 0]
            idx_hl, cls_hl = sample_per_class(lab, torch.ones_like(lab, dtype=torch.bool), c, p.high_per_class)
        parts = [net.project(gather_voxels(feats_l, idx_hl))]
        labels = [cls_hl]
        if probs_w is None:
            empty = parts[0].new_zeros(0, parts[0].shape[1])
            return ccl_loss(parts[0], cls_hl, empty, empty, cls_hl.new_zeros(0, 1), p.temperature), 0.0
        feats_w = v.feats[n_l:n_l + n_u]
        feats_s = v.feats[n_l + n_u:]
        with torch.no_grad():
            conf, pred = probs_w.max(dim=1)
            high = conf >= p.p_cutoff
            idx_hu, cls_hu = sample_per_class(pred, high, c, p.high_per_class)
            idx_low = sample_from_mask(~high, p.low_samples)
            comp = complementary_labels(gather_voxels(probs_w, idx_low), self.num_complementary())
            low_fraction = float((~high).float().mean())
        if idx_hu.numel():
            parts += [net.project(gather_voxels(feats_w, idx_hu)), net.project(gather_voxels(feats_s, idx_hu))]
            labels += [cls_hu, cls_hu]
        low_w = net.project(gather_voxels(feats_w, idx_low))
        low_s = net.project(gather_voxels(feats_s, idx_low))
        loss = ccl_loss(torch.cat(parts), torch.cat(labels), low_w, low_s, comp, p.temperature)
        return loss, low_fraction
