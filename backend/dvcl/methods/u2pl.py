"""U2PL (Wang, Wang, Shen, Fei, Li, Jin, Wu, Zhao & Le, "Semi-Supervised Semantic Segmentation Using
Unreliable Pseudo-Labels", CVPR 2022), transposed to 3D voxels.

A student and an EMA teacher (decay 0.99). Per iteration:

* supervised loss on labeled patches;
* pseudo-label CE on unlabeled patches against the teacher's argmax, dropping the voxels of highest
  teacher entropy: 20 % at the start (``drop_percent`` = 80), linearly down to 0 % at the end;
* contrastive loss (weight 1, temperature 0.5, 256 anchors x 50 negatives, delta_p = 0.3, ranks 3..20):
  reliable voxels (lowest alpha_t % entropy, alpha_t = 20 % -> 0) give anchors and class prototypes;
  unreliable voxels (highest alpha_t %) are pushed as negatives into per-class memory banks for the classes
  they are unlikely to be (dvcl.losses.u2pl_contrast, with the paper's *intended* negative rule);
* the first ``sup_only_fraction`` of the run is supervised only (U2PL: 1 of 80 epochs); the teacher is then
  reset to the student and follows it by EMA with the warm-up ``min(1 - 1/(step + 1), 0.99)``.

Not carried over from the 2D code: CutMix on unlabeled images and the OHEM supervised loss (the 3D
methods here share the supervised CE + Dice loss). The teacher is evaluated, as in U2PL's ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch

from dvcl.errors import ConfigError
from dvcl.losses.entropy import entropy
from dvcl.losses.u2pl_contrast import (
    ContrastInputs,
    U2PLContrast,
    contrast_alpha,
    entropy_percentile_split,
    keep_low_entropy,
    unreliable_percent,
    unsupervised_ce,
)
from dvcl.methods.base import Batch
from dvcl.methods.ema import EMAParams, TeacherStudentMethod, copy_weights, ema_update
from dvcl.methods.params import ContrastParams, ContrastSampling, param
from dvcl.methods.registry import register_method


@dataclass
class U2PLParams(EMAParams, ContrastParams, ContrastSampling):
    """U2PL hyper-parameters (``experiments/pascal/1464/ours/config.yaml`` unless marked [decided])."""

    inference_model: str = "teacher"
    """U2PL validates and tests the teacher."""
    sup_only_fraction: float = param(0.0125, ge=0, lt=1)
    """Supervised-only warm-up: ``sup_only_epoch`` 1 of 80 epochs."""
    unsup_weight: float = param(1.0, ge=0)
    """Weight of the pseudo-label CE (``unsupervised.loss_weight``, default 1)."""
    drop_percent: float = param(80.0, ge=0, le=100)
    """``unsupervised.drop_percent``: (100 - drop_percent) % of the most uncertain voxels are dropped at t=0."""
    contrast_weight: float = 1.0
    """``contrastive.loss_weight`` (default 1)."""
    low_entropy_threshold: float = param(20.0, ge=0, le=50)
    """alpha_0 (%): reliable = lowest alpha_t % entropy, unreliable = highest alpha_t %."""
    low_rank: int = param(3, ge=1)
    """r_l: a labeled voxel is a negative for class c if c is among its top r_l classes (and not its label)."""
    high_rank: int = param(20, ge=1)
    """r_h: an unreliable voxel is a negative for class c at rank r_l <= rank < r_h."""
    anchor_threshold: float = param(0.3, ge=0, lt=1)
    """delta_p: anchors of class c need teacher p_c above it."""
    num_negatives: int = param(50, ge=1)
    """Negatives per anchor."""
    temperature: float = 0.5
    """tau of the InfoNCE loss (``contrastive.temperature``)."""
    bank_size: int = 30000
    """Memory-bank entries per organ class (``queue_len``)."""
    background_bank_size: int = param(50000, ge=1)
    """Memory-bank entries for the background class."""
    prototype_samples: int = param(2048, ge=1)
    """[decided] prototypes are means over at most this many voxels (keeps the projection sparse in 3D)."""
    negative_pool: int = 4096
    """[decided] labeled and unreliable unlabeled voxels drawn per step as negative candidates (each)."""
    checkpoint_memory_bank: bool = False
    """[decided] save the memory banks with the checkpoint (up to ~0.4 GB for 14 classes); a resumed run
    without them refills the banks from its next iterations."""

    def check(self) -> None:
        if not self.low_rank < self.high_rank:
            raise ConfigError("method parameters need 1 <= low_rank < high_rank")


@register_method("u2pl")
class U2PLMethod(TeacherStudentMethod):
    """Student + EMA teacher with entropy-filtered pseudo-labels and a memory-bank contrastive loss."""

    params_class = U2PLParams

    def build_models(self):
        models = super().build_models()
        p = self.params
        self.contrast = U2PLContrast(
            self.num_classes, self.cfg.network.feature_dim, self.device, num_queries=p.anchors_per_class,
            num_negatives=p.num_negatives, temperature=p.temperature, anchor_threshold=p.anchor_threshold,
            low_rank=p.low_rank, high_rank=p.high_rank, queue_size=p.bank_size,
            background_queue_size=p.background_bank_size, prototype_samples=p.prototype_samples,
            negative_pool=p.negative_pool)
        return models

    @property
    def sup_only_iterations(self) -> int:
        return int(round(self.params.sup_only_fraction * max(1, int(self.cfg.iterations))))

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch],
                     iteration: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        p = self.params
        student, teacher = self.models["student"], self.models["teacher"]
        warming_up = iteration < self.sup_only_iterations
        x, y_l, n_l, semi = self.joint_batch(batch_l, None if warming_up else batch_u)
        logits, feats = student(x)
        sup = self.sup_loss(logits[:n_l], y_l)
        terms = {"sup": float(sup.detach()), "unsup": 0.0, "contrast": 0.0, "dropped_percent": 0.0,
                 "contrast_classes": 0.0}
        if not semi:
            return sup, terms

        progress = self.progress(iteration)
        with torch.no_grad():
            t_logits, t_feats = teacher(x)
            prob = torch.softmax(t_logits.float(), dim=1)
            prob_u = prob[n_l:]
            pseudo_u = prob_u.argmax(dim=1)
            ent_u = entropy(prob_u, dim=1)
            dropped = unreliable_percent(progress, p.drop_percent)
            keep = keep_low_entropy(ent_u, dropped)
            alpha_t = contrast_alpha(progress, p.low_entropy_threshold)
            reliable_u, unreliable_u = entropy_percentile_split(ent_u, alpha_t)
            labeled_true = torch.ones_like(y_l[:, 0], dtype=torch.bool)
            inputs = ContrastInputs(
                student_feats=feats, teacher_feats=t_feats, prob=prob,
                labels=torch.cat([y_l[:, 0].long(), pseudo_u], dim=0),
                reliable=torch.cat([labeled_true, reliable_u], dim=0),
                unreliable=torch.cat([labeled_true, unreliable_u], dim=0), num_labeled=n_l)
        unsup = unsupervised_ce(logits[n_l:], pseudo_u, keep)
        if p.contrast_started(iteration, self.cfg.iterations):
            contrast, counts = self.contrast(inputs, student.project, teacher.project)
        else:
            contrast, counts = logits.sum() * 0.0, {"contrast_classes": 0.0}
        loss = sup + p.unsup_weight * unsup + p.contrast_weight * contrast
        terms.update(unsup=float(unsup.detach()), contrast=float(contrast.detach()),
                     dropped_percent=100.0 * (1.0 - float(keep.float().mean())),
                     contrast_classes=counts["contrast_classes"])
        return loss, terms

    def after_step(self, iteration: int) -> None:
        start = self.sup_only_iterations
        student, teacher = self.models["student"], self.models["teacher"]
        if iteration + 1 == start:
            copy_weights(teacher, student)  # U2PL: the teacher starts as the warmed-up student
        elif iteration >= start:
            ema_update(teacher, student, self.params.ema_decay, iteration - start)

    def extra_state(self) -> Dict[str, torch.Tensor]:
        if not self.params.checkpoint_memory_bank:
            return {}
        return {f"u2pl_{k}": v for k, v in self.contrast.bank.state_dict().items()}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        bank = {k[len("u2pl_"):]: v for k, v in state.items() if k.startswith("u2pl_")}
        unknown = sorted(k for k in state if not k.startswith("u2pl_"))
        if unknown:
            raise ConfigError(f"method 'u2pl' got extra state {unknown} it does not know")
        try:
            self.contrast.bank.load_state_dict(bank)
        except ValueError as exc:
            raise ConfigError(f"method 'u2pl': checkpointed memory bank does not fit this run ({exc})") from exc

