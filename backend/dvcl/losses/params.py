"""Every hyper-parameter of the DVCL co-training method in one dataclass.

METHOD.md marks each value as [given] (stated in the paper's supplementary), [inferred] (from U2PL, AaD,
NRC or reviews) or [decided] (our own choice). Every [inferred]/[decided] value must be changeable and
ablatable without a code edit, so each one is a field here with METHOD.md's value as its default. Ranges are
declared next to each default (:func:`dvcl.utils.fields.param`) and checked in one place
(:func:`dvcl.utils.fields.validate_params`). The training config stores these as a plain dict
(``TrainConfig.method_params``); :meth:`DVCLParams.from_dict` turns that dict back into a validated object
and rejects unknown keys, so a typo in a YAML config fails loudly instead of silently training with a default.

The paper-literal reading of each option that issue 12 asked to expose (``PAPER_LITERAL``): lambda_c at full
weight from iteration 0, neighbours ranked in feature space, outsiders unweighted and undecayed, one entropy
threshold per batch, HqCL anchors from each model's own pseudo-labels, NRC's NPS affinity (one-way neighbours
0.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from dvcl.errors import ConfigError
from dvcl.utils.fields import Params, param

OUTSIDER_MODES = ("farthest", "random")
NEIGHBOUR_SPACES = ("features", "probabilities")
SPLIT_SCOPES = ("batch", "image")
PSEUDO_SOURCES = ("own", "other")

#: The options of issue 12 at the reading closest to the supplementary's text (no schedule, no decay, ...).
PAPER_LITERAL: Dict[str, Any] = {
    "lambda_cps": 1.0, "cps_rampup_fraction": 0.1,
    "lambda_c_delay_fraction": 0.0, "lambda_c_rampup_fraction": 0.0, "neighbour_space": "features",
    "outsider_weight": 1.0, "outsider_decay": 0.0, "split_scope": "batch", "hqcl_pseudo_source": "own",
    "nps_oneway": 0.1,
}


@dataclass
class DVCLParams(Params):
    """Hyper-parameters of DVCL (and of CPS, which is DVCL with ``lambda_c = 0``)."""

    # --- reliable / unreliable split (METHOD.md 3.3) -------------------------------------------------------
    alpha: float = param(0.5, ge=0)
    """[given] t = mean(H) + alpha * std(H) over the unlabeled batch; H > t is unreliable."""
    split_scope: str = param("batch", choices=SPLIT_SCOPES)
    """[decided] where mean and std of H are taken: 'batch' (METHOD.md: over the whole unlabeled batch) or
    'image' (one threshold per unlabeled patch, so a confident patch does not mark a hard one all unreliable).
    'batch' kept on validation (issue 12, CPU benchmark, seed 0: 81.7 against 80.0, within the seed spread)."""

    # --- cross pseudo supervision (3.4) ----------------------------------------------------------------------
    lambda_cps: float = param(0.1, ge=0)
    """[decided, issue 12, chosen on validation] weight of L_cps after the ramp-up. METHOD.md had 1 (its
    reading, in ``PAPER_LITERAL``); with 1 reached at 10 % of the run both co-training methods collapsed on
    the benchmark's seed 1 (the two networks agree on background), with 0.1 over the whole run (DHC's and
    CLD's released schedule) neither did (docs/results/ssl_benchmark.md, "Choosing the CPS schedule")."""
    cps_rampup_fraction: float = param(1.0, ge=0, le=1)
    """[decided, issue 12, chosen on validation] sigmoid ramp-up exp(-5 (1 - t)^2) of lambda_cps over this
    fraction of the iterations (1 = the whole run, as in DHC; METHOD.md had 0.1)."""
    warmup_fraction: float = param(0.0, ge=0, lt=1)
    """[decided] supervised-only warm-up: for this fraction of the iterations the CPS and contrastive weights
    are 0 (and those terms are not computed); the CPS ramp-up starts after it. 0 = METHOD.md (no warm-up)."""
    cps_entropy_weighting: bool = False
    """[inferred] weight each voxel's CE by exp(-H(p_teacher) / log C) of the pseudo-label's source model."""

    # --- total loss (3.7) --------------------------------------------------------------------------------------
    lambda_c: float = param(0.1, ge=0)
    """[given] weight of L_contra = L_hqcl + beta * L_dvcl. 0 turns DVCL into plain CPS."""
    lambda_c_delay_fraction: float = param(0.0, ge=0, lt=1)
    """[decided] lambda_c is 0 for this fraction of the run (after ``warmup_fraction``): the contrastive terms
    wait until the pseudo-labels mean something. 0 = no delay."""
    lambda_c_rampup_fraction: float = param(1.0, ge=0, le=1)
    """[decided, METHOD.md 3.7 "like lambda_cps"; issue 12, chosen on validation] sigmoid ramp-up of lambda_c
    over this fraction of the run, starting after the warm-up and the delay: the whole run, as lambda_cps.
    With 0.1 (full weight at 10 %) DVCL fell to 36.7 % validation Dice on the benchmark's seed 1, below CPS;
    with 1.0 it reached 67.4 % by iteration 600 (docs/results/ssl_benchmark.md). 0 = the paper's literal
    reading (full weight at once): 60.0 against the current default's 81.7 on seed 0's validation split
    (docs/results/ssl_ablation_cpu, part 4)."""
    beta: float = param(0.3, ge=0)
    """[given] weight of L_dvcl inside L_contra."""
    hqcl_weight: float = param(1.0, ge=0)
    """[decided, for ablations] weight of L_hqcl inside L_contra (1 = METHOD.md; 0 = the DVCL term alone)."""
    feature_dim: int = param(256, ge=1)
    """[given] dimension V of the projected voxel features (must match the network's projection head)."""

    # --- high-quality contrastive loss L_hqcl (3.5) ---------------------------------------------------------
    num_anchors: int = param(256, ge=1)
    """[given] M: anchors sampled per class (fewer when a class has fewer candidate voxels)."""
    prototype_samples: int = param(2048, ge=1)
    """[decided] the class prototype is the mean feature over at most this many voxels of the class."""
    num_negatives: int = param(50, ge=1)
    """[given] N: negatives per anchor."""
    negative_pool_per_class: int = param(512, ge=1)
    """[decided] labeled voxels per class (and per model) projected as the negative candidate pool."""
    temperature: float = param(1.0, gt=0)
    """[given] tau of the InfoNCE loss."""
    anchor_threshold: Optional[float] = param(None, ge=0, lt=1, nullable=True)
    """[inferred, U2PL] when set (U2PL: 0.3), anchors of class c need p_c above it; None = no threshold."""
    hqcl_include_background: bool = True
    """[decided] background is a class with anchors like any organ (U2PL includes class 0)."""
    hqcl_pseudo_source: str = param("own", choices=PSEUDO_SOURCES)
    """[decided] unlabeled anchors and prototypes of model m come from m's 'own' pseudo-labels and reliable
    mask, or from the 'other' model's (cross supervision, as CPS does for L_cps)."""
    memory_bank: bool = False
    """[inferred, U2PL] draw negatives from a per-class FIFO bank of past labeled features."""
    memory_bank_size: int = param(4096, ge=1)
    """[decided] entries per class in the memory bank (U2PL: 30000 for 2D; 3D memory is tighter)."""

    # --- distance-aware voxel-wise contrastive loss L_dvcl (3.6) ------------------------------------------
    num_queries: int = param(256, ge=1)
    """[decided] M': query voxels sampled from the unreliable voxels U_R."""
    pool_size: int = param(4096, ge=1)
    """[decided] P: candidate pool of unreliable voxels; similarities are only M' x P (and neighbours x P)."""
    k: int = param(10, ge=1)
    """[given] K: close neighbours C_i."""
    k_out: int = param(15, ge=0)
    """[given] K': distant outsiders D_i."""
    neighbour_space: str = param("features", choices=NEIGHBOUR_SPACES)
    """[decided] how C_i, D_i, QDS and NPS rank pool voxels: 'features' = cosine of the projected features
    (AaD/NRC; the loss then never trains the feature head) or 'probabilities' = p_m . p_n, the supplementary's
    O_mn. 'features' chosen on validation (issue 12, CPU benchmark, seed 0: best validation Dice 81.7 against
    61.9; in probability space the neighbours agree with each prediction by construction, the unreliable share
    fell to 2.4 % and validation declined from iteration 400; docs/results/ssl_ablation_cpu, part 4)."""
    outsider_mode: str = param("farthest", choices=OUTSIDER_MODES)
    """[decided] 'farthest' = the K' least similar pool voxels; 'random' = K' random pool voxels outside C_i."""
    outsider_weight: float = param(1.0, ge=0)
    """[decided] weight of the dispersion (outsider) sum against the attraction sum; 1 = the paper's bound."""
    outsider_decay: float = param(5.0, ge=0)
    """[inferred, AaD; issue 12, chosen on validation] the outsider weight decays as (1 + 10 t/T)^-outsider_decay
    over the run (AaD: 5 on VisDA, 0.75 on Office-Home); 0 = no decay (the paper's literal reading). Without it
    the dispersion sum drove DVCL's two networks apart once lambda_c neared its full weight (validation Dice
    67.4 at iteration 600, then 41-52); with 5 the run stayed at 68 (docs/results/ssl_benchmark.md). On the
    current default, seed 0: without decay 72.7 at iteration 400, then 21.3; with 5, 81.7 (ssl_ablation_cpu)."""
    nps_mutual: float = param(1.0, ge=0)
    """[inferred, NRC] affinity A_ij of a mutual (reciprocal) K-neighbour."""
    nps_oneway: float = param(1.0, ge=0)
    """[decided, issue 12, chosen on validation] affinity A_ij of a one-way neighbour. NRC's reading (0.1, in
    ``PAPER_LITERAL``) weights most neighbours at 0.1, because among unreliable voxels most K-neighbourhoods are
    one-way; the attraction then nearly vanishes and the K' outsiders dominate. With 1.0 (every neighbour
    weighted like a mutual one) validation Dice was higher on all three seeds of the CPU benchmark
    (81.7 / 75.9 / 78.6 against 74.8 / 70.0 / 74.9; docs/results/ssl_ablation_cpu/)."""
    qds: bool = True
    """[decided] query denoising: drop queries whose mean K-neighbour similarity is an outlier."""
    qds_std_factor: float = param(1.0, ge=0)
    """[decided] QDS drops queries whose score is below mean - qds_std_factor * std over the queries."""

    def check(self) -> None:
        """Rules between fields (each field's own range is declared with it)."""
        if self.num_queries > self.pool_size:
            raise ConfigError(f"method parameter 'num_queries' ({self.num_queries}) must not exceed 'pool_size' "
                              f"({self.pool_size}): queries are drawn from the pool")
        if self.warmup_fraction + self.lambda_c_delay_fraction >= 1.0:
            raise ConfigError("method parameters 'warmup_fraction' + 'lambda_c_delay_fraction' must be < 1, got "
                              f"{self.warmup_fraction} + {self.lambda_c_delay_fraction}")

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work (rather than failing mid-training)."""
        Params.__post_init__(self)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (YAML/JSON friendly) of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> DVCLParams:
        """Build from a (possibly partial) dict; missing keys take their defaults, unknown keys are an error."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown DVCL method parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - every key is known, so only odd values get here
            raise ConfigError(f"invalid DVCL method parameters: {exc}") from exc
