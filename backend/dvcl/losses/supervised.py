"""Supervised segmentation loss: 0.5 * cross-entropy + 0.5 * soft Dice (METHOD.md 3.1).

The weights are [inferred] (the paper only names L_sup); CE + Dice is what every 3D multi-organ SSL code base
(DHC, SSL4MIS) uses, because Dice keeps small organs from being swamped by background while CE gives smooth
per-voxel gradients early on. MONAI's :class:`~monai.losses.DiceCELoss` computes both, so we only wrap it.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn


class SupervisedLoss(nn.Module):
    """``lambda_ce * CE + lambda_dice * soft Dice`` on logits (B, C, *spatial) and labels (B, 1, *spatial).

    Dice is MONAI's soft Dice after a softmax, per sample and class (background included), averaged; CE is the
    mean over voxels. An empty batch gives a zero that is still connected to the graph, so the caller can
    always add it to the total loss.
    """

    def __init__(self, lambda_ce: float = 0.5, lambda_dice: float = 0.5) -> None:
        super().__init__()
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=lambda_ce, lambda_dice=lambda_dice)

    def forward(self, logits: Tensor, label: Tensor) -> Tensor:
        if logits.shape[0] == 0 or logits[0, 0].numel() == 0:
            return logits.sum() * 0.0
        if label.dim() == logits.dim() - 1:
            label = label.unsqueeze(1)
        # DiceCELoss wants float targets for the one-hot conversion and computes in the logits' dtype; doing
        # the loss in float32 keeps the soft Dice sums of a mixed-precision step from overflowing.
        return self.loss(logits.float(), label.to(torch.float32))


def supervised_loss(logits: Tensor, label: Tensor, lambda_ce: float = 0.5, lambda_dice: float = 0.5) -> Tensor:
    """Functional form of :class:`SupervisedLoss` (builds the MONAI loss on every call; fine for tests)."""
    return SupervisedLoss(lambda_ce, lambda_dice)(logits, label)
