"""``SynthesisConfig``: one switch per randomisation and the ranges it draws from.

Why a switch each: the study of issue 13 turns each randomisation off once to see what it contributes, so
"off" must mean "the thing it governs is constant" (fixed phase, fixed spacing, no noise ...), never a
different random draw. Literature values (HU, probabilities of absence) live in :mod:`dvcl.synthesis.priors`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Dict, Optional, Tuple

from dvcl.errors import ConfigError
from dvcl.synthesis.priors import PHASE_TABLES

Range = Tuple[float, float]

#: the boolean switches, in the order ``dvcl synth --help`` lists them
SWITCHES: Tuple[str, ...] = ("elastic", "affine", "absence", "phase", "texture", "noise", "bias", "blur",
                             "streaks", "resolution", "fov", "arms", "table", "pelvis", "lesions")
#: choices of ``organ_sizes`` (the first is the default)
ORGAN_SIZES: Tuple[str, ...] = ("phantom", "adult")


@dataclass(frozen=True)
class SynthesisConfig:
    """What one synthetic case may vary. Every ``bool`` is a switch (True: randomised as below)."""

    # --- anatomy ---------------------------------------------------------------------------------------------
    elastic: bool = True
    """smooth random displacement of the whole label map (SynthSeg's non-linear field)"""
    elastic_mm: Range = (0.0, 6.0)
    """standard deviation of the displacement at the control points, drawn per case"""
    elastic_grid_mm: float = 50.0
    """control-point spacing of the displacement (smaller: wigglier)"""
    affine: bool = True
    """random size, rotation and position of the patient"""
    scale: Range = (0.9, 1.1)
    rotate_z_deg: float = 10.0
    rotate_xy_deg: float = 5.0
    absence: bool = True
    """organs missing with the probabilities of :data:`priors.ABSENCE`"""
    body_fov_mm: Range = (300.0, 420.0)
    """the phantom's in-plane field of view; the body fills 80-93 % of it (body width about 240-390 mm)"""
    z_extent_mm: Range = (180.0, 300.0)
    """cranio-caudal extent of the painted anatomy (lung bases to below the kidneys)"""
    heart_z_extent_mm: Range = (110.0, 280.0)
    """the same for a cardiac case (``kind="cardiac"``: from the heart's base, or from up to about 60 mm above
    the aortic arch with its branches, to below the apex, as cardiac CTA and chest CT cover it); ``absence`` and
    ``pelvis`` do not apply to cardiac cases"""
    anatomy_mm: float = 2.0
    """voxel size on which the anatomy is painted (the finest detail of a case; cost grows as its cube)"""
    arms: bool = True
    arms_p: float = 0.25
    """probability of arms down beside the body (abdominal CT is usually taken with the arms up)"""
    table: bool = True
    table_p: float = 0.8
    pelvis: bool = True
    """the case may extend caudally through the pelvis (bladder, pelvic bones, rectum, iliac vessels: label 0);
    off: the abdomen stops where the phantom's does (near the iliac crests), as before"""
    lesions: bool = True
    """abdomen: the hypodense liver lesion (cyst or metastasis, labelled liver as FLARE22 labels it) that about a
    quarter of the phantoms carry; off: its voxels are liver tissue (same label map, every other draw unchanged)"""
    pelvis_p: float = 0.6
    """probability that a case is abdomen + pelvis"""
    pelvis_bottom: Range = (0.0, 1.0)
    """caudal end of a pelvis case: 0 = mid-pelvis (acetabular roof), 1 = 40 mm below the pubic symphysis"""
    # --- intensities -----------------------------------------------------------------------------------------
    phase: bool = True
    """random contrast phase (weights in priors); off: always the default phase (portal venous)"""
    texture: bool = True
    """smooth random texture per tissue"""
    texture_mm: Range = (3.0, 20.0)
    """correlation length of the texture fields"""
    noise: bool = True
    noise_sd: Range = (5.0, 35.0)
    """HU standard deviation of the image noise"""
    noise_corr_px: Range = (0.4, 1.0)
    """in-plane correlation (Gaussian sigma in output pixels) of the noise"""
    bias: bool = True
    bias_hu: float = 20.0
    """largest additive low-frequency offset (HU)"""
    bias_gain: float = 0.03
    """largest multiplicative change of attenuation (HU + 1000)"""
    blur: bool = True
    """point-spread function in-plane and slice profile along z"""
    psf_fwhm_px: Range = (0.8, 1.6)
    """in-plane PSF full width at half maximum, in output pixels"""
    streaks: bool = True
    streaks_p: float = 0.5
    streaks_hu: Range = (10.0, 60.0)
    """amplitude of beam-hardening bands between bones"""
    metal_p: float = 0.08
    """probability of a metal implant (pedicle screws) with strong streaks"""
    # --- acquisition -----------------------------------------------------------------------------------------
    resolution: bool = True
    in_plane_mm: Range = (0.6, 1.0)
    slice_mm: Range = (0.6, 5.0)
    thickness_factor: Range = (1.0, 1.5)
    """reconstructed slice thickness / slice spacing (CT reconstructions often overlap)"""
    fixed_spacing: Tuple[float, float, float] = (0.8, 0.8, 2.5)
    """spacing (x, y, z) when ``resolution`` is off"""
    fov: bool = True
    """truncated fields of view: z range cut (liver dome, kidney poles) or in-plane cut through the body"""
    fov_z_crop_p: float = 0.35
    fov_xy_crop_p: float = 0.2
    matrix: int = 512
    """largest in-plane image size; the pixel is at least FOV / matrix, as on a scanner"""
    max_fov_mm: float = 500.0
    """largest reconstructed field of view (a body wider than this, arms included, is cut)"""
    max_voxels: int = 24_000_000
    """output budget: larger draws get thicker slices (within ``slice_mm``), then a shorter z range"""
    absence_p: Optional[Dict[str, float]] = None
    """override of :data:`priors.ABSENCE` (tests force an absence with 1.0)"""
    organ_sizes: str = ORGAN_SIZES[0]
    """abdomen: "phantom" paints the phantom's own organ sizes (about half of adult volumes for liver, spleen,
    kidneys and gallbladder); "adult" scales those four by :data:`priors.ADULT_ORGAN_SCALE`, drawn from a
    stream of their own so every other draw of the case is unchanged (the shipped ``synthetic_abdomen`` was last
    trained on "adult": docs/results/synthetic_organ_sizes_cpu/)"""
    fatty_pancreas_p: float = 0.0
    """abdomen: probability that a case's pancreas is fatty (fat between the lobules, a fraction drawn from
    :data:`priors.PANCREAS_FAT_FRACTION`), drawn from a stream of its own so every other draw of the case is
    unchanged; 0 (the default) never, :data:`priors.FATTY_PANCREAS_PREVALENCE` the literature's prevalence"""
    fat_planes: bool = False
    """abdomen: the liver within a few millimetres (:data:`priors.FAT_PLANE_MM`) of the pancreas, duodenum, adrenal
    glands and the lower half of the gallbladder becomes fat, as in real anatomy (the phantom paints these organs
    into its liver); drawn from a stream of its own so every other draw of the case is unchanged"""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "bool" and not isinstance(v, bool):  # every switch, and the on/off options
                raise ConfigError(f"synthesis option '{f.name}' must be true or false, got {v!r}")
            if isinstance(v, tuple) and len(v) == 2 and f.name != "fixed_spacing":
                lo, hi = float(v[0]), float(v[1])
                if not lo <= hi or lo < 0:
                    raise ConfigError(f"synthesis range '{f.name}' must be 0 <= low <= high, got {v}")
            if f.name == "pelvis_bottom" and float(v[1]) > 1.0:
                raise ConfigError(f"synthesis range 'pelvis_bottom' must lie in [0, 1], got {v}")
            if (f.name.endswith("_p") and isinstance(v, (int, float)) and not isinstance(v, bool)
                    and not 0.0 <= v <= 1.0):
                raise ConfigError(f"synthesis probability '{f.name}' must be in [0, 1], got {v}")
        if self.in_plane_mm[0] <= 0 or self.slice_mm[0] <= 0 or min(self.fixed_spacing) <= 0:
            raise ConfigError("synthesis spacings must be positive")
        if not 0.3 <= self.anatomy_mm <= 10:
            raise ConfigError(f"synthesis anatomy_mm must be in [0.3, 10], got {self.anatomy_mm}")
        if self.thickness_factor[0] < 1.0:
            raise ConfigError("synthesis thickness_factor must be >= 1 (thickness is at least the spacing)")
        if self.matrix < 16 or self.max_fov_mm < 50:
            raise ConfigError(f"synthesis matrix must be >= 16 and max_fov_mm >= 50, got {self.matrix}, "
                              f"{self.max_fov_mm}")
        if self.max_voxels < 1000:
            raise ConfigError(f"synthesis max_voxels must be >= 1000, got {self.max_voxels}")
        if self.absence_p is not None:
            from dvcl.synthesis.priors import ABSENCE

            bad = [k for k, p in self.absence_p.items() if k not in ABSENCE or not 0 <= float(p) <= 1]
            if bad:
                raise ConfigError(f"synthesis absence_p: unknown organ or bad probability for {bad}; organs: "
                                  f"{', '.join(ABSENCE)}")
        if self.organ_sizes not in ORGAN_SIZES:
            raise ConfigError(f"synthesis organ_sizes must be one of {', '.join(ORGAN_SIZES)}, got "
                              f"{self.organ_sizes!r}")

    def without(self, *switches: str) -> SynthesisConfig:
        """A copy with the named switches off (``cfg.without("noise", "bias")``)."""
        unknown = [s for s in switches if s not in SWITCHES]
        if unknown:
            raise ConfigError(f"unknown synthesis switch {unknown}: choose from {', '.join(SWITCHES)}")
        return replace(self, **{s: False for s in switches})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: what a synthetic case can show: the abdomen (FLARE22 labels) or the heart (MM-WHS labels)
KINDS: Tuple[str, ...] = tuple(PHASE_TABLES)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown synthetic case kind '{kind}': choose one of {', '.join(KINDS)}")
    return kind


def check_phase(phase: Optional[str], kind: str = "abdomen") -> Optional[str]:
    phases = PHASE_TABLES[check_kind(kind)][0]
    if phase is not None and phase not in phases:
        raise ConfigError(f"unknown contrast phase '{phase}' for a {kind} case: choose one of {', '.join(phases)}")
    return phase
