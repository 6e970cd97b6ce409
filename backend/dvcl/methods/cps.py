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
from dvcl.utils.fields import Params, param


@dataclass
class CPSParams(Params):
    """Hyper-parameters of CPS (same meaning, defaults and ranges as in :class:`DVCLParams`).

    CPS and DVCL share one co-training schedule with CLD and DHC (lambda_cps 0.1, sigmoid ramp-up over the
    whole run, the schedule of DHC's released code, chosen on validation in issue 12): DVCL is CPS plus the
    contrastive terms, so the only difference between the two table rows is those terms.
    """

    lambda_cps: float = param(0.1, ge=0)
    """weight of L_cps after the ramp-up."""
    cps_rampup_fraction: float = param(1.0, ge=0, le=1)
    """sigmoid ramp-up over this fraction of the iterations."""
    warmup_fraction: float = param(0.0, ge=0, lt=1)
    """supervised-only warm-up: CPS weight 0 for this fraction of the iterations, then the ramp-up."""
    cps_entropy_weighting: bool = False
    """weight each voxel's CE by exp(-H / log C) of the pseudo-label's source model."""

    def to_dvcl_params(self) -> DVCLParams:
        """The same run as DVCL with ``lambda_c = 0`` (one code path for both table rows)."""
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
