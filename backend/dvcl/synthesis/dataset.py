"""A folder of synthetic cases that ``dvcl prepare`` reads: the phantom writer's simple layout and dataset.json
(preset flare22, or mmwhs for cardiac cases), with the synthesis settings recorded in dataset.json so a data set
can be rebuilt."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import SimpleITK as sitk

from dvcl.errors import ConfigError
from dvcl.synthesis.config import SynthesisConfig, check_kind
from dvcl.synthesis.generator import synthesize

log = logging.getLogger(__name__)

#: case-name prefix and data-set name per kind of case
PREFIX = "synth_abd"
PREFIXES = {"abdomen": PREFIX, "cardiac": "synth_heart"}
NAMES = {"abdomen": "synthetic_abdomen", "cardiac": "synthetic_heart"}


def _make(seed: int, config: SynthesisConfig, kind: str = "abdomen",
          raw_values: bool = False) -> Tuple[sitk.Image, sitk.Image]:
    case = synthesize(seed, config, kind=kind)
    if not raw_values:
        return case.image, case.label
    from dvcl.phantoms.cardiac import to_raw_mmwhs

    label = sitk.GetImageFromArray(to_raw_mmwhs(sitk.GetArrayViewFromImage(case.label)))
    label.CopyInformation(case.label)
    return case.image, label


def write_synthetic_dataset(
    out_dir: Union[str, Path],
    count: int,
    seed: int = 0,
    config: Optional[SynthesisConfig] = None,
    overwrite: bool = False,
    workers: int = 1,
    progress: Optional[Callable[[str], None]] = None,
    kind: str = "abdomen",
    resume: bool = False,
) -> dict:
    """Write ``count`` labeled synthetic cases (``synth_abd_000`` ..., or ``synth_heart_000`` ... for
    ``kind="cardiac"``, whose label files hold the raw MM-WHS values 205..850) in the simple layout.

    Case ``i`` depends only on (``seed``, ``i``, ``config``), so asking for more cases keeps the first ones, and
    ``resume`` continues an interrupted run (same arguments) with the cases it finished.
    Returns the summary of :func:`dvcl.phantoms.write_phantom_dataset` (``seconds_per_case`` is generation time).

    Raises:
        ConfigError: ``count < 1``, ``workers < 1``, an unknown ``kind``.
        OutputExistsError: files exist and ``overwrite`` is false.
    """
    from dvcl import __version__
    from dvcl.phantoms import write_phantom_dataset

    if count < 1:
        raise ConfigError(f"synthetic case count must be >= 1, got {count}")
    check_kind(kind)
    cfg = config or SynthesisConfig()
    what = "abdominal" if kind == "abdomen" else "cardiac"
    meta = {"name": NAMES[kind],
            "description": f"domain-randomised synthetic {what} CT written by dvcl {__version__} (seed {seed})",
            "synthesis": {"seed": seed, "kind": kind, "config": cfg.to_dict(), "dvcl_version": __version__}}
    # cardiac label files hold the raw MM-WHS values, as the real data set's do (the mmwhs preset remaps them)
    result = write_phantom_dataset(out_dir, count, 0, kind=kind, seed=seed, overwrite=overwrite,
                                   progress=progress, generator=functools.partial(_make, config=cfg, kind=kind),
                                   prefix=PREFIXES[kind], meta=meta, workers=workers, raw_values=kind == "cardiac",
                                   resume=resume)
    log.info("synthetic data set: %d cases, %.2f s per case (generation)", count, result["seconds_per_case"])
    return result
