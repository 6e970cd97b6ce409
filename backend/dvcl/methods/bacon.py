"""BaCon: balanced feature-level contrastive learning (a baseline of the paper's tables).

Feng, Xie, Fang, Lin. "BaCon: Boosting Imbalanced Semi-supervised Learning via Balanced Feature-Level
Contrastive Learning." AAAI 2024. Authors' code (image classification): fqhank/AAAI24-BaCon-CISSL
``semilearn/imb_algorithms/bacon/bacon.py`` with ``config/classic_cv_imb/fixmatch_bacon/*.yaml``.

A plug-in of FixMatch (:mod:`dvcl.methods.fixmatch_base`): on top of FixMatch's supervised and pseudo-label
terms, samples whose prediction is confident (>= 0.98) are pulled towards their class centre and pushed from
*reliable negatives*, with a class-aware temperature (:mod:`dvcl.losses.balanced_contrast`):

* class centres: mean of stored (detached) features of confidently labelled samples of the class;
* reliable negatives of class k: labeled samples of another class, unlabeled samples whose top-3 predicted
  classes exclude k;
* temperature ``tau_k = 0.1 - (1 - t)^2 * 0.0005 * sqrt(freq_k / max freq)``, negatives at 0.1, the mean
  negative scaled by 64;
* the contrastive term (weight 1) starts after 1/3 of the run (iteration 100,000 of 300,000); the centres and
  frequencies are updated from the start.

Choices made lifting image-level samples to voxels and to this code base [decided]:
* a "sample" is a voxel; the features are the SegNet's 256-d projection head at sampled voxels (BaCon: a
  32-d linear projection of the pooled backbone feature);
* anchors: at most ``anchors_per_class`` confident voxels per class among the labeled voxels (ground truth)
  and the unlabeled weak-view voxels (top-1 prediction), so background does not swamp the organs; negatives:
  ``negative_pool`` voxels drawn uniformly from the same two sets;
* class centres: BaCon keeps the latest feature of every training image; a per-class FIFO of the latest
  ``bank_size`` confident voxel features (:class:`dvcl.losses.hqcl.ClassMemoryBank`) plays that role;
  class frequencies are the cumulative counts of confident voxels per class;
* selection and pseudo-labels come from the segmentation head itself: BaCon builds on ABC, whose auxiliary
  balanced classifier has no counterpart in voxel-wise segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.losses.balanced_contrast import bacon_loss, balanced_temperature, reliable_negative_mask
from dvcl.losses.hqcl import ClassMemoryBank
from dvcl.losses.sampling import gather_voxels, sample_from_mask, sample_per_class
from dvcl.methods.base import Batch
from dvcl.methods.fixmatch_base import FixMatchParams, FixMatchSegMethod
from dvcl.methods.params import ContrastParams, ContrastSampling, param
from dvcl.methods.registry import register_method


@dataclass
class BaConParams(FixMatchParams, ContrastParams, ContrastSampling):
    """BaCon hyper-parameters (released code) on top of FixMatch's."""

    contrast_weight: float = 1.0
    contrast_start_fraction: float = 1.0 / 3.0
    """The contrastive term starts after this fraction of the run (released: 100,000 of 300,000)."""
    select_threshold: float = param(0.98, ge=0, le=1)
    """Confidence a voxel needs to be an anchor and to update its class centre."""
    temperature: float = 0.1
    """tau, the base temperature of the balanced temperature adjustment (BTA)."""
    tau_delta: float = param(0.0005, ge=0)
    """BTA: tau_k = temperature - (1 - t)^2 * tau_delta * sqrt(freq_k / max freq)."""
    tau_negative: float = param(0.1, gt=0)
    negative_scale: float = param(64.0, ge=0)
    """The mean negative similarity is scaled by this (the released batch size)."""
    negative_topk: int = param(3, ge=1)
    """Unlabeled negatives of class k must not have k among their top-k predicted classes."""

    def check(self) -> None:
        if self.tau_delta >= self.temperature:
            raise ConfigError("method parameters need 0 <= 'tau_delta' < 'temperature'")


@register_method("bacon")
class BaConMethod(FixMatchSegMethod):
    """FixMatch + BaCon's balanced feature-level contrastive term."""

    params_class = BaConParams

    def build_models(self) -> Dict[str, nn.Module]:
        models = super().build_models()
        dim = models["student"].cfg.feature_dim
        self.bank = ClassMemoryBank(self.num_classes, self.params.bank_size, dim, device=self.device)
        self.freq = torch.zeros(self.num_classes, dtype=torch.float64)
        return models

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        y_l = batch_l["label"].to(self.device).long()
        v = self.views(batch_l, batch_u)
        sup, unsup, probs_w = self.fixmatch_terms(v, y_l)
        contrast, selected = self._contrast(v, y_l, probs_w, iteration)
        loss = sup + p.unsup_weight * unsup + p.contrast_weight * contrast
        return loss, {"sup": float(sup.detach()), "unsup": float(unsup.detach()), "contrast": float(contrast.detach()),
                      "selected": selected}

    def _contrast(self, v, y_l: Tensor, probs_w: Optional[Tensor], iteration: int) -> Tuple[Tensor, float]:
        p = self.params
        net = self.models["student"]
        c = self.num_classes
        feats = v.feats[: v.n_l + v.n_u]  # labeled + weak view
        spatial = feats[0, 0].numel()
        with torch.no_grad():
            probs_l = torch.softmax(v.logits_l.detach().float(), dim=1)
            conf_l = probs_l.max(dim=1).values
            labels = [y_l[:, 0].reshape(-1)]
            selected = [(conf_l >= p.select_threshold).reshape(-1)]
            if probs_w is not None:
                conf_w, pred_w = probs_w.max(dim=1)
                labels.append(pred_w.reshape(-1))
                selected.append((conf_w >= p.select_threshold).reshape(-1))
            labels_all = torch.cat(labels)
            sel_all = torch.cat(selected)
            anchor_idx, anchor_cls = sample_per_class(labels_all, sel_all, c, p.anchors_per_class)
            neg_idx = sample_from_mask(torch.ones_like(labels_all, dtype=torch.bool), p.negative_pool)
            n_lab_vox = v.n_l * spatial
            is_lab = neg_idx < n_lab_vox
            neg_labels = labels_all[neg_idx]
            if probs_w is not None:
                neg_probs = gather_voxels(probs_w, (neg_idx - n_lab_vox).clamp(min=0))
                neg_topk = neg_probs.topk(min(p.negative_topk, c), dim=1).indices
            else:
                neg_topk = neg_labels.view(-1, 1)
            allowed = reliable_negative_mask(c, neg_labels, neg_topk, is_lab)
            bank_feats, bank_cls = self.bank.contents()
            centers = torch.zeros(c, bank_feats.shape[1], device=self.device)
            centers.index_add_(0, bank_cls, bank_feats.float())
            counts = torch.bincount(bank_cls, minlength=c)[:c]
            center_valid = counts > 0
            centers = centers / counts.clamp(min=1).unsqueeze(1)
            tau = balanced_temperature(self.freq, self.progress(iteration), p.temperature, p.tau_delta).to(self.device)
        anchors = net.project(gather_voxels(feats, anchor_idx)) if anchor_idx.numel() else None
        active = p.contrast_started(iteration, self.cfg.iterations) and anchors is not None
        if active:
            negatives = net.project(gather_voxels(feats, neg_idx))
            loss = bacon_loss(anchors, anchor_cls, centers, center_valid, negatives, allowed, tau, p.tau_negative,
                              p.negative_scale)
        else:
            loss = v.logits_l.sum() * 0.0
        # class centres and frequencies follow the confident voxels from the start (as released)
        if anchors is not None:
            self.bank.enqueue(anchors.detach(), anchor_cls)
        self.freq += torch.bincount(labels_all[sel_all], minlength=c)[:c].to(torch.float64).cpu()
        return loss, float(sel_all.float().mean())

    # ------------------------------------------------------------------------------------------ state
    def state_modules(self) -> Dict[str, Union[nn.Module, Tensor]]:
        return {"bank": self.bank, "class_freq": self.freq}
