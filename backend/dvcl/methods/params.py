"""Hyper-parameter groups several methods share, each declared once with its range.

A method's parameter dataclass combines the groups it uses (``class DTCParams(SupervisedWeights,
ConsistencyParams, SDFParams)``) and adds its own fields; a method whose published default differs
redeclares only the default (``consistency: float = 1.0``) and keeps the group's range. Ranges are checked in
one place, :func:`dvcl.utils.fields.validate_params` (via :class:`dvcl.utils.fields.Params`).

Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvcl.utils.fields import Params, param

__all__ = ["ConsistencyParams", "ContrastParams", "ContrastSampling", "CrossSupervisionParams",
           "NoisyTeacherConsistency", "Params", "SDFParams", "SupervisedWeights", "TeacherParams",
           "UncertaintyThreshold", "param"]


@dataclass
class SupervisedWeights(Params):
    """L_sup = ce_weight * CE + dice_weight * soft Dice (METHOD.md 3.1, as for every method)."""

    ce_weight: float = param(0.5, ge=0)
    dice_weight: float = param(0.5, ge=0)


@dataclass
class TeacherParams(Params):
    """An EMA teacher next to the trained student."""

    ema_decay: float = param(0.99, ge=0, lt=1)
    """EMA decay of the teacher (SSL4MIS, DHC and U2PL: 0.99)."""
    inference_model: str = param("student", choices=("student", "teacher"))
    """Model used at validation and inference: ``student`` (SSL4MIS saves the student) or ``teacher``."""


@dataclass
class ConsistencyParams(Params):
    """A consistency loss whose weight ramps up (sigmoid exp(-5 (1 - t)^2)) over part of the run."""

    consistency: float = param(0.1, ge=0)
    """Weight of the consistency loss after the ramp-up."""
    consistency_rampup_fraction: float = param(1.0, ge=0, le=1)
    """The ramp-up spans this fraction of the run (the released codes: the whole run)."""


@dataclass
class NoisyTeacherConsistency(TeacherParams, ConsistencyParams):
    """Mean Teacher's consistency (also MagicNet's): the EMA teacher sees the input with clipped Gaussian noise."""

    noise_std: float = param(0.1, ge=0)
    """Std of the Gaussian noise on the teacher's input."""
    noise_clip: float = param(0.2, ge=0)
    """The noise is clipped to [-noise_clip, noise_clip]."""


@dataclass
class SDFParams(Params):
    """A signed-distance (level-set) regression head (DTC, SASSnet)."""

    sdf_weight: float = param(0.3, ge=0)
    """beta, weight of the SDM regression on labeled patches."""
    sdf_absent_value: float = param(1.0, ge=-1, le=1)
    """SDM target of an organ absent from the patch (+1 = outside everywhere) [decided]."""


@dataclass
class CrossSupervisionParams(Params):
    """Cross pseudo supervision between two networks (CLD, DHC: DHC repository and README command)."""

    cps_weight: float = param(0.1, ge=0)
    """lambda after the ramp-up (README ``-w 0.1``; argparse default 1.0)."""
    cps_rampup_fraction: float = param(1.0, ge=0, le=1)
    """Sigmoid ramp-up of lambda over this fraction of the run (DHC: over ``max_epoch``, the whole run)."""
    cps_on_labeled: bool = True
    """Cross supervision on the labeled patches too (DHC computes it on the whole batch)."""


@dataclass
class ContrastParams(Params):
    """A contrastive term on projected voxel features next to the segmentation losses (U2PL, UGPCL, CCL, BaCon).

    UGPCL and BaCon start theirs late in the run, while the features are still random; U2PL and CCL from the
    first iteration (``contrast_start_fraction`` 0), which the same switch can change for an ablation.
    """

    contrast_weight: float = param(1.0, ge=0)
    """Weight of the contrastive term in the total loss (the released configs' contrastive loss weight)."""
    temperature: float = param(0.07, gt=0)
    """tau of the InfoNCE-style contrastive loss."""
    contrast_start_fraction: float = param(0.0, ge=0, le=1)
    """The contrastive term is off before this fraction of the run (0: on from the first iteration)."""

    def contrast_started(self, iteration: int, iterations: int) -> bool:
        """Whether the contrastive term is on at ``iteration`` of a run of ``iterations``."""
        return iteration >= self.contrast_start_fraction * int(iterations)


@dataclass
class ContrastSampling(Params):
    """How many voxels a memory-bank contrastive term draws and keeps (U2PL, BaCon).

    [decided] budgets: 3D patches hold far more voxels than the 2D images these methods were published on, so
    anchors, negative candidates and bank entries are drawn at random up to these counts.
    """

    anchors_per_class: int = param(256, ge=1)
    """Anchors drawn per class and step."""
    negative_pool: int = param(2048, ge=1)
    """Voxels drawn per step as negative candidates."""
    bank_size: int = param(4096, ge=1)
    """Features kept per class in the memory bank."""


@dataclass
class UncertaintyThreshold(Params):
    """An entropy threshold that ramps from ``threshold_start`` to ``threshold_end`` (fractions of ln C)."""

    threshold_start: float = param(0.75, ge=0)
    threshold_end: float = param(1.0, ge=0)
