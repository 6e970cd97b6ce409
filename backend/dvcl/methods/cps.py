"""CPS: cross pseudo supervision (a baseline of the paper's tables).

Chen, Yuan, Zeng, Wang. "Semi-supervised Semantic Segmentation with Cross Pseudo Supervision." CVPR 2021.

It is DVCL's co-training without the contrastive terms (``lambda_c = 0``): two differently initialised
networks, each trained with CE + Dice on labeled patches and with CE against the other's argmax on unlabeled
patches, the cross term ramped up. Sharing the code with DVCL makes the comparison differ only in the
contrastive terms. Its parameters are the CPS subset, so a CPS run's config lists nothing it does not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvcl.losses.params import DVCLParams
from dvcl.methods.dvcl import DVCLMethod
from dvcl.methods.registry import register_method


@dataclass
class CPSParams:
    """Hyper-parameters of CPS (same meaning and defaults as in :class:`DVCLParams`)."""

    lambda_cps: float = 1.0
    """weight of L_cps after the ramp-up."""
    cps_rampup_fraction: float = 0.1
    """sigmoid ramp-up over this fraction of the iterations."""
    warmup_fraction: float = 0.0
    """supervised-only warm-up: CPS weight 0 for this fraction of the iterations, then the ramp-up."""
    cps_entropy_weighting: bool = False
    """weight each voxel's CE by exp(-H / log C) of the pseudo-label's source model."""

    def __post_init__(self) -> None:
        self.to_dvcl_params()  # validates the values with DVCLParams' rules

    def to_dvcl_params(self) -> DVCLParams:
        return DVCLParams(lambda_cps=self.lambda_cps, cps_rampup_fraction=self.cps_rampup_fraction,
                          warmup_fraction=self.warmup_fraction, cps_entropy_weighting=self.cps_entropy_weighting,
                          lambda_c=0.0)


@register_method("cps")
class CPSMethod(DVCLMethod):
    """Cross pseudo supervision between models A and B (DVCL with the contrastive terms off)."""

    params_class = CPSParams

    @property
    def loss_params(self) -> DVCLParams:
        return self.params.to_dvcl_params()
