"""DTC: dual-task consistency (a baseline of the paper's tables).

Luo, Chen, Song, Wang. "Semi-supervised Medical Image Segmentation through Dual-task Consistency."
AAAI 2021. Authors' code: HiLab-git/DTC ``code/train_la_dtc.py`` (V-Net with a tanh level-set head,
``networks/vnet_sdf.py``).

One network predicts a segmentation (softmax) and a level set, the normalised signed distance map (SDM) of
every structure (:class:`dvcl.networks.heads.SDFHead`, model ``sdf``). The level set is turned into a soft
mask with the differentiable transform ``sigmoid(-k * sdf)`` (k = 1500, :func:`dvcl.losses.sdf.sdf_to_probability`),
and the two tasks must agree on *all* patches, labeled and unlabeled:

    L = Dice(seg_l, y) + beta * MSE(sdf_l, SDM(y)) + w(t) * mean((sigmoid(-k sdf) - p_fg)^2)

Published settings (``train_la_dtc.py``) are the defaults: beta = 0.3, k = 1500, consistency weight
1.0 * sigmoid ramp-up over 40 x 150 = its 6,000 iterations (the whole run). The released supervised term is
Dice + 0.3 SDM-MSE; the CE it computes is only logged (``ce_weight = 0``).

Choices made lifting the binary (left atrium) code to many organs [decided]:
* one level set per foreground class (C - 1 channels); the consistency compares ``sigmoid(-k sdf_c)`` with the
  softmax probability of class c, for c = 1..C-1, averaged over classes and voxels (the released code compares
  the single sigmoid output);
* soft Dice over all classes (MONAI) instead of the sigmoid foreground Dice;
* absent organs have SDM +1 ("outside everywhere") rather than 0, see :mod:`dvcl.losses.sdf`;
* LR: the Trainer's poly schedule instead of the released step decay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from dvcl.losses.sdf import dual_task_consistency, sdf_regression_loss
from dvcl.methods.base import Batch, Method
from dvcl.methods.params import ConsistencyParams, SDFParams, SupervisedWeights, param
from dvcl.methods.registry import register_method
from dvcl.networks.heads import SDFHead


@dataclass
class DTCParams(SupervisedWeights, ConsistencyParams, SDFParams):
    """DTC hyper-parameters (``train_la_dtc.py`` defaults: beta 0.3, ``--consistency 1.0`` ramped up over all
    40 x 150 = 6,000 iterations)."""

    ce_weight: float = 0.0
    """Weight of CE in the segmentation loss (released: computed but not used)."""
    dice_weight: float = 1.0
    consistency: float = 1.0
    transform_k: float = param(1500.0, gt=0)
    """k of the level-set-to-mask transform sigmoid(-k * sdf)."""


@register_method("dtc")
class DTCMethod(Method):
    """Segmentation + level-set head (``A`` + ``sdf``) made consistent on labeled and unlabeled patches."""

    params_class = DTCParams

    def build_models(self) -> Dict[str, nn.Module]:
        self.sup_loss = self.supervised_loss()
        net = self.new_network()
        return {"A": net, "sdf": SDFHead(net.feature_channels, self.num_classes).to(self.device)}

    def inference_models(self) -> List[str]:
        return ["A"]

    def consistency_weight(self, iteration: int) -> float:
        return self.rampup_weight(self.params.consistency, self.params.consistency_rampup_fraction, iteration)

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        logits, feats = self.models["A"](x)
        sdf = self.models["sdf"](feats)
        seg = self.sup_loss(logits[:n_l], y_l)
        shape = sdf_regression_loss(sdf[:n_l], y_l, p.sdf_absent_value)
        probs = torch.softmax(logits.float(), dim=1)
        cons = dual_task_consistency(sdf, probs[:, 1:], p.transform_k)
        w = self.consistency_weight(iteration)
        loss = seg + p.sdf_weight * shape + w * cons
        return loss, {"seg": float(seg.detach()), "sdf": float(shape.detach()), "consistency": float(cons.detach()),
                      "consistency_weight": w}
