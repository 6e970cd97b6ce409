"""FixMatch for 3D segmentation: the base that BaCon and CCL plug into (not registered itself).

BaCon and CCL are published as plug-ins of FixMatch (Sohn et al., NeurIPS 2020) for image classification:
the model's prediction on a weakly augmented view gives a hard pseudo-label where its confidence reaches
``p_cutoff`` = 0.95, and the prediction on a strongly augmented view is trained on it with CE; an EMA of the
weights (momentum 0.999) is the evaluated model. Their contrastive terms use the features of the labeled
view, the weak view (and, for CCL, the strong view).

3D segmentation lift [decided]:
* one student forward pass on ``[labeled; unlabeled weak; unlabeled strong]``; the weak view is the
  Trainer's patch (random crop + flips), the strong view adds voxel-aligned intensity augmentations - a random
  contrast factor in [1 - a, 1 + a] and brightness shift in [-b, b] per patch, Gaussian noise
  N(0, 0.1^2) clipped to +-0.2, and one cutout box of a quarter of each side filled with the patch mean -
  because geometric RandAugment operations would break the voxel correspondence of pseudo-labels;
* the unsupervised term is the voxel-wise FixMatch CE, averaged over all unlabeled voxels (masked ones count 0);
* the supervised term is the shared 0.5 CE + 0.5 Dice (FixMatch: CE, a classification loss);
* the EMA teacher (``teacher``) is used at validation and inference, as FixMatch/USB evaluate the EMA model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dvcl.losses.sampling import rand, randint
from dvcl.methods.base import Batch
from dvcl.methods.ema import TeacherStudentMethod
from dvcl.methods.params import SupervisedWeights, TeacherParams, param


@dataclass
class FixMatchParams(SupervisedWeights, TeacherParams):
    """FixMatch hyper-parameters (FixMatch / USB defaults) and the 3D strong augmentation."""

    ema_decay: float = 0.999
    """EMA momentum of the evaluated model (``ema_m``)."""
    inference_model: str = "teacher"
    """``teacher`` (the EMA model, FixMatch's evaluation) or ``student``."""
    p_cutoff: float = param(0.95, ge=0, le=1)
    """Confidence a weak-view prediction needs to become a pseudo-label."""
    unsup_weight: float = param(1.0, ge=0)
    """Weight of the unsupervised CE (``ulb_loss_ratio``)."""
    strong_contrast: float = param(0.25, ge=0)
    strong_brightness: float = param(0.1, ge=0)
    strong_noise_std: float = param(0.1, ge=0)
    strong_noise_clip: float = param(0.2, ge=0)
    strong_cutout: float = param(0.25, ge=0, lt=1)
    """Side of the cutout box as a fraction of each patch side (0 = no cutout)."""


class Views(NamedTuple):
    """Student outputs of one FixMatch iteration (logits and last decoder features of each view)."""

    logits_l: Tensor
    logits_w: Tensor
    logits_s: Tensor
    feats: Tensor
    """Features of the whole batch, in the order [labeled; weak; strong]."""
    n_l: int
    n_u: int


def strong_augment(x: Tensor, contrast: float, brightness: float, noise_std: float, noise_clip: float,
                   cutout: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Voxel-aligned strong view of ``x`` (B, C, Z, Y, X), see the module docstring."""
    b = x.shape[0]
    shape = (b,) + (1,) * (x.dim() - 1)
    scale = 1.0 + (2.0 * rand((b,), x.device, generator) - 1.0).view(shape) * contrast
    shift = (2.0 * rand((b,), x.device, generator) - 1.0).view(shape) * brightness
    out = x * scale + shift
    if noise_std > 0:
        out = out + torch.clamp(torch.randn_like(x) * noise_std, -noise_clip, noise_clip)
    if cutout > 0:
        out = out.clone()
        sizes = [max(1, int(round(cutout * s))) for s in x.shape[2:]]
        for i in range(b):
            starts = [int(randint(s - c + 1, (1,), x.device, generator)) for s, c in zip(x.shape[2:], sizes)]
            box = (i, slice(None)) + tuple(slice(st, st + c) for st, c in zip(starts, sizes))
            out[box] = out[i].mean()
    return out


class FixMatchSegMethod(TeacherStudentMethod):
    """FixMatch's student / EMA pair with the supervised and pseudo-label terms; subclasses add theirs."""

    params_class = FixMatchParams  # models: TeacherStudentMethod's student and EMA teacher

    def views(self, batch_l: Batch, batch_u: Optional[Batch]) -> Views:
        """One student pass over the labeled patches and both views of the unlabeled ones."""
        p = self.params
        x_l = batch_l["image"].to(self.device)
        n_l = x_l.shape[0]
        parts = [x_l]
        n_u = 0
        if batch_u is not None and batch_u["image"].shape[0] > 0:
            x_w = batch_u["image"].to(self.device)
            n_u = x_w.shape[0]
            parts += [x_w, strong_augment(x_w, p.strong_contrast, p.strong_brightness, p.strong_noise_std,
                                          p.strong_noise_clip, p.strong_cutout)]
        logits, feats = self.models["student"](torch.cat(parts))
        return Views(logits[:n_l], logits[n_l:n_l + n_u], logits[n_l + n_u:], feats, n_l, n_u)

    def fixmatch_terms(self, v: Views, y_l: Tensor) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """``(sup, unsup, weak-view probabilities)``; without unlabeled patches unsup is 0 and probs None."""
        sup = self.sup_loss(v.logits_l, y_l)
        if v.n_u == 0:
            return sup, sup * 0.0, None
        with torch.no_grad():
            probs_w = torch.softmax(v.logits_w.detach().float(), dim=1)
            conf, pseudo = probs_w.max(dim=1)
            mask = (conf >= self.params.p_cutoff).float()
        unsup = (F.cross_entropy(v.logits_s.float(), pseudo, reduction="none") * mask).mean()
        return sup, unsup, probs_w
