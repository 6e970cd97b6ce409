"""A folder of synthetic cases that ``dvcl prepare`` reads: the phantom writer's simple layout and dataset.json
(preset flare22), with the synthesis settings recorded in dataset.json so a data set can be rebuilt."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import SimpleITK as sitk

from dvcl.errors import ConfigError
from dvcl.synthesis.config import SynthesisConfig
from dvcl.synthesis.generator import synthesize

log = logging.getLogger(__name__)

PREFIX = "synth_abd"


def _make(seed: int, config: SynthesisConfig) -> Tuple[sitk.Image, sitk.Image]:
    case = synthesize(seed, config)
    return case.image, case.label


def write_synthetic_dataset(
    out_dir: Union[str, Path],
    count: int,
    seed: int = 0,
    config: Optional[SynthesisConfig] = None,
    overwrite: bool = False,
    workers: int = 1,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Write ``count`` labeled synthetic cases (``synth_abd_000`` ...) in the simple layout.

    Case ``i`` depends only on (``seed``, ``i``, ``config``), so asking for more cases keeps the first ones.
    Returns the summary of :func:`dvcl.phantoms.write_phantom_dataset` (``seconds_per_case`` is generation time).

    Raises:
        ConfigError: ``count < 1``, ``workers < 1``.
        OutputExistsError: files exist and ``overwrite`` is false.
    """
    from dvcl import __version__
    from dvcl.phantoms import write_phantom_dataset

    if count < 1:
        raise ConfigError(f"synthetic case count must be >= 1, got {count}")
    cfg = config or SynthesisConfig()
    meta = {"name": "synthetic_abdomen",
            "description": f"domain-randomised synthetic abdominal CT written by dvcl {__version__} (seed {seed})",
            "synthesis": {"seed": seed, "config": cfg.to_dict(), "dvcl_version": __version__}}
    result = write_phantom_dataset(out_dir, count, 0, kind="abdomen", seed=seed, overwrite=overwrite,
                                   progress=progress, generator=functools.partial(_make, config=cfg), prefix=PREFIX,
                                   meta=meta, workers=workers)
    log.info("synthetic data set: %d cases, %.2f s per case (generation)", count, result["seconds_per_case"])
    return result
