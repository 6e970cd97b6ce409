"""Losses of DVCL and its baselines, one idea per module.

``supervised`` (CE + Dice), ``entropy`` (reliable/unreliable split), ``cps`` (cross pseudo supervision),
``sampling`` (sparse voxel sampling), ``hqcl`` (high-quality contrastive loss), ``dvcl`` (distance-aware
voxel-wise contrastive loss) and ``params`` (every DVCL hyper-parameter). All are plain functions on tensors
(or small modules where they keep state, like the memory bank) and work on any device.
"""

from __future__ import annotations

from dvcl.losses.cps import cps_loss, sigmoid_rampup
from dvcl.losses.dvcl import (
    DVCLSelection,
    dvcl_loss,
    dvcl_loss_from_sets,
    nps_affinity,
    query_denoising,
    select_dvcl_sets,
)
from dvcl.losses.entropy import entropy, entropy_threshold, reliable_split
from dvcl.losses.hqcl import ClassMemoryBank, hqcl_loss
from dvcl.losses.params import DVCLParams
from dvcl.losses.sampling import class_prototypes, gather_voxels, sample_from_mask, sample_per_class
from dvcl.losses.supervised import SupervisedLoss, supervised_loss

__all__ = [
    "ClassMemoryBank",
    "DVCLParams",
    "DVCLSelection",
    "SupervisedLoss",
    "class_prototypes",
    "cps_loss",
    "dvcl_loss",
    "dvcl_loss_from_sets",
    "entropy",
    "entropy_threshold",
    "gather_voxels",
    "hqcl_loss",
    "nps_affinity",
    "query_denoising",
    "reliable_split",
    "sample_from_mask",
    "sample_per_class",
    "select_dvcl_sets",
    "sigmoid_rampup",
    "supervised_loss",
]
