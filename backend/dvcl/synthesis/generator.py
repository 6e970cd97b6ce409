"""One synthetic case: anatomy -> spatial randomisation -> intensities -> acquisition.

Why one seed drives everything through separate child generators: each stage draws from its own stream, and
each stage draws the same numbers whether its switches are on or off, so an ablation that turns one
randomisation off changes only what that switch governs (same anatomy, same phase, same spacing ...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

from dvcl.errors import ConfigError
from dvcl.synthesis import acquisition, intensity, spatial
from dvcl.synthesis.anatomy import paint_anatomy
from dvcl.synthesis.config import SynthesisConfig, check_kind, check_phase

log = logging.getLogger(__name__)

#: child streams of a case's seed, by stage
_STREAMS = ("anatomy", "spatial", "intensity", "acquisition", "bias", "noise", "streaks", "pelvis")
# (a new stream goes at the end: spawned children keep their index, so the older streams are unchanged)


@dataclass
class SyntheticCase:
    """A synthetic CT (int16 HU) and its labels (uint8; FLARE22 0..13, or MM-WHS 0..7 for a cardiac case) on the
    same grid, plus what was drawn.

    ``tissue`` is the generation tissue map on the output grid (:data:`priors.TISSUES` indices), kept for
    tests and figures; it is not written to disk."""

    image: sitk.Image
    label: sitk.Image
    tissue: np.ndarray
    info: Dict[str, object] = field(default_factory=dict)


def synthesize(seed: int, config: Optional[SynthesisConfig] = None, phase: Optional[str] = None,
               kind: str = "abdomen") -> SyntheticCase:
    """Generate one case. Same ``seed``, ``config`` and ``kind``: the same arrays, bit for bit.

    Args:
        seed: the case's seed (any non-negative integer).
        config: switches and ranges; default :class:`SynthesisConfig()` (everything randomised).
        phase: force a contrast phase, e.g. for figures: "native", "arterial", "portal", "delayed" for the
            abdomen; "native", "arterial", "pulmonary", "venous" for the heart.
        kind: "abdomen" (FLARE22 labels) or "cardiac" (MM-WHS labels, :mod:`dvcl.synthesis.cardiac`).

    Raises:
        ConfigError: a negative seed, an unknown kind or phase, an invalid config.
    """
    cfg = config or SynthesisConfig()
    if not isinstance(cfg, SynthesisConfig):
        raise ConfigError(f"synthesis config must be a SynthesisConfig, got {type(cfg).__name__}")
    if int(seed) < 0:
        raise ConfigError(f"synthesis seed must be >= 0, got {seed}")
    check_phase(phase, check_kind(kind))
    t0 = time.perf_counter()
    children = np.random.SeedSequence([int(seed), 0x53594E]).spawn(len(_STREAMS))
    rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, children)}
    phantom_seed = int(rng["anatomy"].integers(2**31))

    if kind == "cardiac":
        from dvcl.synthesis.cardiac import paint_cardiac_anatomy

        anat = paint_cardiac_anatomy(phantom_seed, rng["anatomy"], cfg)
    else:
        anat = paint_anatomy(phantom_seed, rng["anatomy"], cfg, rng["pelvis"])
    t_anat = time.perf_counter()
    info: Dict[str, object] = {"seed": int(seed), "kind": kind, **anat.info}
    info.update(spatial.deform(anat, rng["spatial"], cfg))
    case_phase = intensity.draw_phase(rng["intensity"], cfg, phase, kind)
    img, iinfo = intensity.tissue_image(anat, rng["intensity"], cfg, case_phase, kind)
    info.update(iinfo)
    info["bias"] = acquisition.apply_bias(img, anat, rng["bias"], cfg)
    acq = acquisition.draw_acquisition(anat, rng["acquisition"], cfg)
    info.update(acq.info)
    out, lab, tis = acquisition.sample(img, anat, acq, cfg)
    del img
    acquisition.add_noise(out, acq, rng["noise"], cfg)
    info.update(acquisition.add_streaks(out, tis, acq, rng["streaks"], cfg))
    np.clip(out, -1024, 3071, out=out)
    arr = np.rint(out).astype(np.int16)

    image, label = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(lab.astype(np.uint8))
    for im in (image, label):
        im.SetSpacing(acq.spacing)
        im.SetOrigin(acq.origin)
    seconds = time.perf_counter() - t0
    info["seconds"] = round(seconds, 3)
    info["size"] = list(acq.size)
    log.info("synthetic %s case seed=%d phase=%s size=%s spacing=%s: %.2f s (anatomy %.2f s)", kind, seed,
             case_phase, acq.size, info["spacing"], seconds, t_anat - t0)
    return SyntheticCase(image, label, tis, info)
