"""Labeled-only baselines: the paper's "3D U-Net" row and the fully supervised upper bound.

``supervised`` trains one network on the labeled subset only (the unlabeled pool is never loaded).
``fully`` is the same method with the labeled fraction forced to 1.0 (every training label is used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from dvcl.methods.base import Batch, Method
from dvcl.methods.params import SupervisedWeights
from dvcl.methods.registry import register_method


@dataclass
class SupervisedParams(SupervisedWeights):
    """L_sup = ce_weight * CE + dice_weight * soft Dice (METHOD.md section 3.1 [given; form inferred])."""


@register_method("supervised")
class SupervisedMethod(Method):
    """One 3D U-Net trained with CE + Dice on labeled patches."""

    params_class = SupervisedParams
    uses_unlabeled = False

    def build_models(self) -> Dict[str, nn.Module]:
        # the same L_sup as DVCL/CPS, so the comparison differs only in what the SSL methods add
        self.loss_fn = self.supervised_loss()
        return {"A": self.new_network()}

    def compute_loss(
        self, batch_l: Batch, batch_u: Optional[Batch], iteration: int
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        logits, _ = self.models["A"](batch_l["image"])
        loss = self.loss_fn(logits.float(), batch_l["label"])
        return loss, {"sup": float(loss.detach())}

    def inference_models(self) -> List[str]:
        return ["A"]


@register_method("fully")
class FullySupervisedMethod(SupervisedMethod):
    """Supervised on every training label: the upper bound of the paper's tables."""

    labeled_fraction = 1.0
