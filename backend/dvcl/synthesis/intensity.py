"""Intensities: a contrast phase, one HU mean per tissue from :data:`priors.HU`, and a smooth texture per tissue.

Why ranges and not values: the network must not learn one scanner's look. Each case draws every tissue's
mean uniformly from the range of its phase, so the organs' relative brightness changes with the phase the
way real scans do (aorta far above the liver in the arterial phase, below it without contrast) while staying
within what the literature reports.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import numpy as np

from dvcl.synthesis.anatomy import Anatomy
from dvcl.synthesis.config import SynthesisConfig
from dvcl.synthesis.priors import N_ABDOMEN_TISSUES, N_BASE_TISSUES, PHASE_TABLES, TEXTURE_SD, TISSUES, hu_range
from dvcl.synthesis.spatial import smooth_field

log = logging.getLogger(__name__)


def draw_phase(rng: np.random.Generator, cfg: SynthesisConfig, override: Optional[str] = None,
               kind: str = "abdomen") -> str:
    """The case's contrast phase (one draw always, so other draws do not depend on the switch); a cardiac case
    draws from the cardiac timings."""
    phases, weights, default = PHASE_TABLES[kind]
    p = np.array([weights[ph] for ph in phases], float)
    drawn = phases[int(rng.choice(len(phases), p=p / p.sum()))]
    if override is not None:
        return override
    return drawn if cfg.phase else default


def draw_means(rng: np.random.Generator, phase: str, tissues=TISSUES[:N_BASE_TISSUES],
               kind: str = "abdomen") -> np.ndarray:
    """One mean HU per tissue of ``tissues`` (default: those before the pelvis), uniform in the phase's range."""
    u = rng.uniform(size=len(tissues))
    lo = np.array([hu_range(t, phase, kind)[0] for t in tissues])
    hi = np.array([hu_range(t, phase, kind)[1] for t in tissues])
    return (lo + u * (hi - lo)).astype(np.float32)


def tissue_image(a: Anatomy, rng: np.random.Generator, cfg: SynthesisConfig, phase: str,
                 kind: str = "abdomen") -> Tuple[np.ndarray, Dict[str, object]]:
    """HU image on the anatomy grid: tissue means plus (if ``cfg.texture``) two smooth texture fields mixed
    with per-tissue weights. Returns the image and the drawn means by tissue name.

    An abdominal case draws its tissues in the order they were added to the generator (those before the pelvis,
    then the pelvis's), so older cases keep their values; a cardiac case draws every tissue in one go."""
    if kind == "cardiac":
        groups = [TISSUES]
    else:
        groups = [TISSUES[:N_BASE_TISSUES], TISSUES[N_BASE_TISSUES:N_ABDOMEN_TISSUES]]
    base = groups[0]
    means = draw_means(rng, phase, base, kind)
    sd = np.array([rng.uniform(*TEXTURE_SD[t]) for t in base], np.float32)
    mix = rng.uniform(size=len(base)).astype(np.float32)
    cells = rng.uniform(*cfg.texture_mm, size=2)
    field_seed = int(rng.integers(2**32))
    # tissues added later (the pelvis's) draw after all of the above, so older draws keep their values
    for extra in groups[1:]:
        means = np.concatenate([means, draw_means(rng, phase, extra, kind)])
        sd = np.concatenate([sd, np.array([rng.uniform(*TEXTURE_SD[t]) for t in extra], np.float32)])
        mix = np.concatenate([mix, rng.uniform(size=len(extra)).astype(np.float32)])
    img = means[a.tissue]
    if cfg.texture:
        frng = np.random.default_rng(field_seed)
        for k, w in enumerate((np.sqrt(mix), np.sqrt(1 - mix))):
            f = smooth_field(frng, a.tissue.shape, cells[k] / a.spacing)
            f /= max(float(f.std()), 1e-6)
            img += (sd * w)[a.tissue] * f
    info = {"phase": phase, "means": {t: round(float(m), 1) for t, m in zip(TISSUES, means)}}
    return img, info
