"""Every hyper-parameter of the DVCL co-training method in one dataclass.

METHOD.md marks each value as [given] (stated in the paper's supplementary), [inferred] (from U2PL, AaD,
NRC or reviews) or [decided] (our own choice). Every [inferred]/[decided] value must be changeable and
ablatable without a code edit, so each one is a field here with METHOD.md's value as its default. The
training config stores these as a plain dict (``TrainConfig.method_params``); :meth:`DVCLParams.from_dict`
turns that dict back into a validated object and rejects unknown keys, so a typo in a YAML config fails
loudly instead of silently training with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from dvcl.errors import ConfigError

OUTSIDER_MODES = ("farthest", "random")


@dataclass
class DVCLParams:
    """Hyper-parameters of DVCL (and of CPS, which is DVCL with ``lambda_c = 0``)."""

    # --- reliable / unreliable split (METHOD.md 3.3) -------------------------------------------------------
    alpha: float = 0.5
    """[given] t = mean(H) + alpha * std(H) over the unlabeled batch; H > t is unreliable."""

    # --- cross pseudo supervision (3.4) ----------------------------------------------------------------------
    lambda_cps: float = 1.0
    """[given] weight of L_cps after the ramp-up."""
    cps_rampup_fraction: float = 0.1
    """[decided] sigmoid ramp-up exp(-5 (1 - t)^2) of lambda_cps over this fraction of the iterations."""
    warmup_fraction: float = 0.0
    """[decided] supervised-only warm-up: for this fraction of the iterations the CPS and contrastive weights
    are 0 (and those terms are not computed); the CPS ramp-up starts after it. 0 = METHOD.md (no warm-up)."""
    cps_entropy_weighting: bool = False
    """[inferred] weight each voxel's CE by exp(-H(p_teacher) / log C) of the pseudo-label's source model."""

    # --- total loss (3.7) --------------------------------------------------------------------------------------
    lambda_c: float = 0.1
    """[given] weight of L_contra = L_hqcl + beta * L_dvcl. 0 turns DVCL into plain CPS."""
    beta: float = 0.3
    """[given] weight of L_dvcl inside L_contra."""
    hqcl_weight: float = 1.0
    """[decided, for ablations] weight of L_hqcl inside L_contra (1 = METHOD.md; 0 = the DVCL term alone)."""
    feature_dim: int = 256
    """[given] dimension V of the projected voxel features (must match the network's projection head)."""

    # --- high-quality contrastive loss L_hqcl (3.5) ---------------------------------------------------------
    num_anchors: int = 256
    """[given] M: anchors sampled per class (fewer when a class has fewer candidate voxels)."""
    prototype_samples: int = 2048
    """[decided] the class prototype is the mean feature over at most this many voxels of the class."""
    num_negatives: int = 50
    """[given] N: negatives per anchor."""
    negative_pool_per_class: int = 512
    """[decided] labeled voxels per class (and per model) projected as the negative candidate pool."""
    temperature: float = 1.0
    """[given] tau of the InfoNCE loss."""
    anchor_threshold: Optional[float] = None
    """[inferred, U2PL] when set (U2PL: 0.3), anchors of class c need p_c above it; None = no threshold."""
    hqcl_include_background: bool = True
    """[decided] background is a class with anchors like any organ (U2PL includes class 0)."""
    memory_bank: bool = False
    """[inferred, U2PL] draw negatives from a per-class FIFO bank of past labeled features."""
    memory_bank_size: int = 4096
    """[decided] entries per class in the memory bank (U2PL: 30000 for 2D; 3D memory is tighter)."""

    # --- distance-aware voxel-wise contrastive loss L_dvcl (3.6) ------------------------------------------
    num_queries: int = 256
    """[decided] M': query voxels sampled from the unreliable voxels U_R."""
    pool_size: int = 4096
    """[decided] P: candidate pool of unreliable voxels; similarities are only M' x P (and neighbours x P)."""
    k: int = 10
    """[given] K: close neighbours C_i."""
    k_out: int = 15
    """[given] K': distant outsiders D_i."""
    outsider_mode: str = "farthest"
    """[decided] 'farthest' = the K' least similar pool voxels; 'random' = K' random pool voxels outside C_i."""
    nps_mutual: float = 1.0
    """[inferred, NRC] affinity A_ij of a mutual (reciprocal) K-neighbour."""
    nps_oneway: float = 0.1
    """[inferred, NRC] affinity A_ij of a one-way neighbour."""
    qds: bool = True
    """[decided] query denoising: drop queries whose mean K-neighbour similarity is an outlier."""
    qds_std_factor: float = 1.0
    """[decided] QDS drops queries whose score is below mean - qds_std_factor * std over the queries."""

    def __post_init__(self) -> None:
        # ``--set anchor_threshold=0.3`` arrives as a string (its default, None, gives no type to convert to)
        if isinstance(self.anchor_threshold, str):
            text = self.anchor_threshold.strip().lower()
            try:
                self.anchor_threshold = None if text in ("", "none", "null") else float(text)
            except ValueError as exc:
                raise ConfigError(f"method parameter 'anchor_threshold' must be a number or null, "
                                  f"got {self.anchor_threshold!r}") from exc
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work (rather than failing mid-training)."""
        positive_ints = ("feature_dim", "num_anchors", "prototype_samples", "num_negatives",
                         "negative_pool_per_class", "memory_bank_size", "num_queries", "pool_size", "k")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method parameter '{name}' must be a positive integer, got {value!r}")
        if isinstance(self.k_out, bool) or not isinstance(self.k_out, int) or self.k_out < 0:
            raise ConfigError(f"method parameter 'k_out' must be a non-negative integer, got {self.k_out!r}")
        non_negative = ("alpha", "lambda_cps", "lambda_c", "beta", "hqcl_weight", "nps_mutual", "nps_oneway",
                        "qds_std_factor")
        for name in non_negative:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"method parameter '{name}' must be a number >= 0, got {value!r}")
        if not 0.0 <= float(self.cps_rampup_fraction) <= 1.0:
            raise ConfigError(
                f"method parameter 'cps_rampup_fraction' must be in [0, 1], got {self.cps_rampup_fraction!r}")
        if not 0.0 <= float(self.warmup_fraction) < 1.0:
            raise ConfigError(f"method parameter 'warmup_fraction' must be in [0, 1), got {self.warmup_fraction!r}")
        if not float(self.temperature) > 0:
            raise ConfigError(f"method parameter 'temperature' must be > 0, got {self.temperature!r}")
        if self.anchor_threshold is not None and not 0.0 <= float(self.anchor_threshold) < 1.0:
            raise ConfigError(
                f"method parameter 'anchor_threshold' must be in [0, 1) or null, got {self.anchor_threshold!r}")
        if self.outsider_mode not in OUTSIDER_MODES:
            raise ConfigError(
                f"method parameter 'outsider_mode' must be one of {OUTSIDER_MODES}, got {self.outsider_mode!r}")
        if self.num_queries > self.pool_size:
            raise ConfigError(f"method parameter 'num_queries' ({self.num_queries}) must not exceed 'pool_size' "
                              f"({self.pool_size}): queries are drawn from the pool")

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
