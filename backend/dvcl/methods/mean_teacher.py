"""Mean Teacher (Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
targets improve semi-supervised deep learning results", NeurIPS 2017), as in the 3D reference code
SSL4MIS ``train_mean_teacher_3D.py``.

One U-Net (the student) is trained with the supervised loss on labeled patches plus a consistency loss that
pulls its softmax on unlabeled patches towards that of an EMA copy of itself (the teacher), which sees the
same patch with a little Gaussian noise. The published 3D settings are the defaults: EMA 0.99, consistency
weight 0.1 with a sigmoid ramp-up, softmax MSE, noise N(0, 0.1) clipped to +-0.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from dvcl.losses.consistency import consistency_loss
from dvcl.methods.base import Batch
from dvcl.methods.ema import EMAParams, TeacherStudentMethod
from dvcl.methods.params import NoisyTeacherConsistency, param
from dvcl.methods.registry import register_method


@dataclass
class MeanTeacherParams(EMAParams, NoisyTeacherConsistency):
    """Mean Teacher hyper-parameters (SSL4MIS 3D defaults: ``--consistency 0.1``, ramp-up over 200 "epochs" of
    150 iterations = its 30,000 iterations, i.e. the whole run)."""

    consistency_type: str = param("mse", choices=("mse", "kl"))
    """``mse`` (softmax MSE, SSL4MIS) or ``kl``."""


@register_method("mean_teacher")
class MeanTeacherMethod(TeacherStudentMethod):
    """Student + EMA teacher with a softmax-MSE consistency on unlabeled patches."""

    params_class = MeanTeacherParams

    def consistency_weight(self, iteration: int) -> float:
        return self.rampup_weight(self.params.consistency, self.params.consistency_rampup_fraction, iteration)

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch],
                     iteration: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        p = self.params
        student, teacher = self.models["student"], self.models["teacher"]
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        logits, _ = student(x)
        sup = self.sup_loss(logits[:n_l], y_l)
        weight = self.consistency_weight(iteration)
        if not has_u:
            cons = logits.sum() * 0.0
        else:
            with torch.no_grad():
                t_logits, _ = teacher(self.input_noise(x[n_l:], p.noise_std, p.noise_clip))
            cons = consistency_loss(logits[n_l:], t_logits, p.consistency_type)
        loss = sup + weight * cons
        return loss, {"sup": float(sup.detach()), "consistency": float(cons.detach()), "consistency_w": weight}
