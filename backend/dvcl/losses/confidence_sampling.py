"""CLD's probability-aware sampling of the cross-supervision voxels (Lin et al., MICCAI 2022; DHC ``train_cld.py``).

CLD calibrates the label distribution in two ways: class weights from the label frequencies
(:func:`dvcl.losses.class_weighting.frequency_weights`) and a per-class *sampling rate* of the CPS voxels.
A confidence bank keeps, per class, the mean probability the model gives to the true class on labeled
voxels (EMA, momentum 0.999, refreshed every 8 iterations). Classes the model is unsure of are "hard": their
rate ``((1 - conf_c) / max_k (1 - conf_k)) ** 0.5`` is high, and each voxel predicted as class c enters the
CPS loss with probability ``rate_c`` (easy, well-learned classes such as background are subsampled).

Released-code details kept: the bank of model A starts from ``torch.rand`` confidences and model B's from a
copy of A's; the first refresh replaces them. Fixed here: a class with no labeled voxel in a refresh window
keeps its confidence (the released code mixes in a 0, i.e. "never right", for classes it did not see).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from dvcl.losses.sampling import rand


class ConfidenceBank:
    """Per-class EMA of the mean true-class probability on labeled voxels (CLD's ``ConfidenceBank``)."""

    def __init__(self, num_classes: int, momentum: float = 0.999, update_every: int = 8,
                 confs: Optional[Tensor] = None, device: Optional[torch.device] = None) -> None:
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self.update_every = max(1, int(update_every))
        self.confs = (torch.rand(self.num_classes, device=device) if confs is None
                      else confs.detach().clone().to(device if device is not None else confs.device)).float()
        self.sums = torch.zeros(self.num_classes, device=self.confs.device, dtype=torch.float64)
        self.counts = torch.zeros(self.num_classes, device=self.confs.device, dtype=torch.float64)
        self.records = 0

    @torch.no_grad()
    def record(self, probs: Tensor, label: Tensor) -> None:
        """Add one batch: ``probs`` (B, C, ...) softmax, ``label`` (B, [1,] ...) integer classes."""
        if label.dim() == probs.dim():
            label = label[:, 0]
        label = label.long()
        true_prob = probs.float().gather(1, label.unsqueeze(1)).squeeze(1)
        self.sums += torch.bincount(label.reshape(-1), weights=true_prob.reshape(-1).double(),
                                    minlength=self.num_classes)[: self.num_classes].to(self.sums)
        self.counts += torch.bincount(label.reshape(-1), minlength=self.num_classes)[: self.num_classes].to(self.counts)
        self.records += 1
        if self.records % self.update_every == 0:
            seen = self.counts > 0
            new = (self.sums / self.counts.clamp(min=1)).float()
            if self.records == self.update_every:  # first refresh replaces the random start
                self.confs = torch.where(seen, new, self.confs)
            else:
                mixed = self.momentum * self.confs + (1.0 - self.momentum) * new
                self.confs = torch.where(seen, mixed, self.confs)
            self.sums.zero_()
            self.counts.zero_()

    def state(self) -> Tensor:
        """``[confs, sums, counts, records]`` as one float64 tensor (for checkpoints)."""
        rec = torch.full((1,), float(self.records), dtype=torch.float64, device=self.confs.device)
        return torch.cat([self.confs.double(), self.sums, self.counts, rec])

    def load_state(self, state: Tensor) -> None:
        c = self.num_classes
        s = state.to(self.confs.device, torch.float64)
        self.confs = s[:c].float().clone()
        self.sums = s[c:2 * c].clone()
        self.counts = s[2 * c:3 * c].clone()
        self.records = int(s[3 * c].item())


def sampling_rate(confs: Tensor, gamma: float = 0.5) -> Tensor:
    """``((1 - conf) / max(1 - conf)) ** gamma`` per class (1 for the hardest class)."""
    r = 1.0 - confs.float()
    return (r / (r.max() + 1e-12)).clamp(min=0.0) ** gamma


def sampling_mask(pred: Tensor, rates: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Keep each voxel of predicted class c with probability ``rates[c]`` -> float mask of ``pred``'s shape."""
    u = rand(tuple(pred.shape), pred.device, generator)
    return (u < rates.to(pred.device)[pred.long()]).float()
