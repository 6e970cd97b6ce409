"""UA-MT: uncertainty-aware mean teacher (Yu, Wang, Li, Fu & Heng, "Uncertainty-aware Self-ensembling
Model for Semi-supervised 3D Left Atrium Segmentation", MICCAI 2019), as in the 3D reference code
(SSL4MIS ``train_uncertainty_aware_mean_teacher_3D.py``; DHC ``train_uamt.py``).

Mean Teacher, but the consistency only counts voxels where the teacher is certain. Certainty is estimated
with T = 8 Monte-Carlo passes of the teacher (input noise N(0, 0.1) clipped to +-0.2, and dropout before
the segmentation head, like the dropout in front of UA-MT's V-Net output convolution); the uncertainty is
the entropy of the mean softmax, and a voxel counts when it is below
``(0.75 + 0.25 * ramp(t)) * ln C`` (ramp = sigmoid ramp-up over the whole run).

Multi-class fix (see dvcl.losses.consistency): the released code writes ``ln 2`` and divides by
``2 * sum(mask)`` for its binary task; both use C here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from dvcl.errors import ConfigError
from dvcl.losses.consistency import (
    masked_consistency,
    softmax_mse,
    uncertainty_mask,
    uncertainty_threshold,
)
from dvcl.losses.entropy import entropy
from dvcl.methods.base import Batch
from dvcl.methods.ema import TeacherStudentMethod
from dvcl.methods.mean_teacher import MeanTeacherParams
from dvcl.methods.params import UncertaintyThreshold, param
from dvcl.methods.registry import register_method


@dataclass
class UAMTParams(MeanTeacherParams, UncertaintyThreshold):
    """UA-MT hyper-parameters (SSL4MIS / DHC 3D defaults; consistency settings as Mean Teacher)."""

    mc_samples: int = param(8, ge=1)
    """T, the number of stochastic teacher passes for the uncertainty."""
    mc_chunk: int = param(2, ge=1)
    """Copies of the unlabeled batch per teacher pass (SSL4MIS runs T/2 passes of 2 copies); memory knob."""
    mc_dropout: float = param(0.5, ge=0, lt=1)
    """Channel dropout on the teacher's last decoder features in the MC passes (UA-MT V-Net: Dropout3d 0.5)."""
    threshold_rampup_fraction: float = param(1.0, ge=0, le=1)
    """The threshold's sigmoid ramp-up spans this fraction of the run (SSL4MIS: ``max_iterations``)."""

    def check(self) -> None:
        if self.consistency_type != "mse":
            raise ConfigError("UA-MT's masked consistency is defined for consistency_type 'mse' only")


@register_method("uamt")
class UAMTMethod(TeacherStudentMethod):
    """Mean Teacher whose consistency is masked by the teacher's Monte-Carlo uncertainty."""

    params_class = UAMTParams

    def _ramp(self, iteration: int, fraction: float) -> float:
        return self.rampup_weight(1.0, fraction, iteration)

    @torch.no_grad()
    def mc_mean_probability(self, x_u: torch.Tensor) -> torch.Tensor:
        """Mean softmax ``(B, C, *spatial)`` of T noisy, dropped-out teacher passes over ``x_u``.

        Accumulated pass by pass: keeping all T samples would cost T x the softmax volume (GBs in 3D).
        """
        p = self.params
        teacher = self.models["teacher"]
        total = None
        remaining = p.mc_samples
        while remaining > 0:
            k = min(p.mc_chunk, remaining)
            x = x_u.repeat(k, *([1] * (x_u.dim() - 1)))
            logits, feats = teacher(self.input_noise(x, p.noise_std, p.noise_clip))
            head = getattr(teacher, "seg_head", None)
            if head is not None and p.mc_dropout > 0:
                logits = head(F.dropout3d(feats, p=p.mc_dropout, training=True))
            probs = torch.softmax(logits.float(), dim=1)
            chunk_sum = probs.reshape(k, x_u.shape[0], *probs.shape[1:]).sum(dim=0)
            total = chunk_sum if total is None else total + chunk_sum
            remaining -= k
        return total / p.mc_samples

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch],
                     iteration: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        p = self.params
        student, teacher = self.models["student"], self.models["teacher"]
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        logits, _ = student(x)
        sup = self.sup_loss(logits[:n_l], y_l)
        weight = float(p.consistency) * self._ramp(iteration, p.consistency_rampup_fraction)
        threshold = uncertainty_threshold(self._ramp(iteration, p.threshold_rampup_fraction), self.num_classes,
                                          p.threshold_start, p.threshold_end)
        if not has_u:
            cons = logits.sum() * 0.0
            certain = 0.0
        else:
            x_u = x[n_l:]
            with torch.no_grad():
                t_logits, _ = teacher(self.input_noise(x_u, p.noise_std, p.noise_clip))
                mask = uncertainty_mask(entropy(self.mc_mean_probability(x_u), dim=1), threshold)
            cons = masked_consistency(softmax_mse(logits[n_l:], t_logits), mask)
            certain = float(mask.mean())
        loss = sup + weight * cons
        return loss, {"sup": float(sup.detach()), "consistency": float(cons.detach()), "consistency_w": weight,
                      "certain_fraction": certain, "uncertainty_threshold": threshold}
