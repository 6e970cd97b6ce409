"""Synthetic CT phantoms: abdominal (FLARE22 organs) and cardiac (MM-WHS structures), and data sets of them.

The phantoms give the whole pipeline (prepare, train, segment, evaluate, the Slicer module) data with known
ground truth that costs nothing to make, and let learning-curve experiments run on a laptop.
``write_phantom_dataset`` writes the simple layout read by :mod:`dvcl.io.datasets`::

    OUT/labeled/images/<case>.nii.gz   OUT/labeled/labels/<case>.nii.gz   OUT/unlabeled/<case>.nii.gz
    OUT/dataset.json                   (nnU-Net v2 style, plus "preset")
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import ConfigError, OutputExistsError
from dvcl.phantoms.abdomen import make_abdominal_phantom
from dvcl.phantoms.cardiac import make_cardiac_phantom

__all__ = ["KINDS", "make_abdominal_phantom", "make_cardiac_phantom", "case_seed", "case_names",
           "write_phantom_dataset"]

log = logging.getLogger(__name__)

#: kind -> (preset, case-name prefix, generator)
KINDS: Dict[str, Tuple[str, str, Callable[..., Tuple[sitk.Image, sitk.Image]]]] = {
    "abdomen": ("flare22", "phantom_abd", make_abdominal_phantom),
    "cardiac": ("mmwhs", "phantom_card", make_cardiac_phantom),
}
_KIND_CODE = {"abdomen": 1, "cardiac": 2}
#: what a data-set writer records before generating (kind, seed, generator settings): what --resume checks
RUN_SETTINGS = "generation.json"
_SPLIT_CODE = {"labeled": 0, "unlabeled": 1}


def case_seed(seed: int, kind: str, split: str, index: int) -> int:
    """The generator seed of one case: a function of (data-set seed, kind, split, index) only, so case ``i``
    is the same phantom whatever the number of cases asked for."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _KIND_CODE[kind], _SPLIT_CODE[split], int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def case_names(kind: str, n_labeled: int, n_unlabeled: int) -> Tuple[List[str], List[str]]:
    """Case ids: ``phantom_abd_000``... for labeled cases, ``phantom_abd_u000``... for unlabeled ones."""
    prefix = KINDS[kind][1]
    return ([f"{prefix}_{i:03d}" for i in range(n_labeled)], [f"{prefix}_u{i:03d}" for i in range(n_unlabeled)])


def write_phantom_dataset(
    out_dir: Union[str, Path],
    n_labeled: int,
    n_unlabeled: int,
    kind: str = "abdomen",
    seed: int = 0,
    overwrite: bool = False,
    raw_values: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    generator: Optional[Callable[[int], Tuple[sitk.Image, sitk.Image]]] = None,
    prefix: Optional[str] = None,
    meta: Optional[dict] = None,
    workers: int = 1,
    resume: bool = False,
) -> dict:
    """Write a phantom data set in the simple layout and return a summary.

    Args:
        out_dir: data set folder (created if needed).
        n_labeled, n_unlabeled: how many cases of each.
        kind: ``"abdomen"`` (preset flare22) or ``"cardiac"`` (preset mmwhs).
        seed: data-set seed; case ``i`` depends only on (seed, kind, split, i).
        overwrite: replace existing files; stale phantom cases of this kind left over from a larger data set
            are removed too, so the folder holds exactly what dataset.json describes.
        raw_values: cardiac only: store the raw MM-WHS values 205..850 in the label files.
        progress: called with each case id once it is written (progress bars).
        generator: makes one case from its seed instead of the kind's phantom (the synthetic CT of
            :mod:`dvcl.synthesis`); must be picklable when ``workers > 1``.
        prefix: case-name prefix instead of the kind's (``synth_abd``).
        meta: extra keys merged into dataset.json (name, description, generator settings).
        workers: processes generating cases in parallel (1: in this process).
        resume: continue a run that was interrupted (or extend a finished one): cases whose files all exist are
            kept, the others are generated. Allowed only when the folder's recorded settings (everything but the
            counts) equal these; case ``i`` depends only on them, so the result equals an uninterrupted run.

    Returns:
        ``{"out_dir", "kind", "preset", "labeled": [...], "unlabeled": [...], "dataset_json", "seconds",
        "seconds_per_case"}``.

    Raises:
        ConfigError: unknown kind, negative or zero counts, raw values for the abdomen.
        OutputExistsError: a file to be written exists and neither ``overwrite`` nor ``resume`` is set (nothing
            is written then).
        ConfigError: ``resume`` on a folder written with other settings, or whose settings are unknown.
    """
    from dvcl import __version__
    from dvcl.presets import PRESETS
    from dvcl.utils.atomic import check_writable, write_json_atomic

    if kind not in KINDS:
        raise ConfigError(f"unknown phantom kind '{kind}': choose one of {', '.join(KINDS)}")
    if n_labeled < 0 or n_unlabeled < 0 or n_labeled + n_unlabeled == 0:
        raise ConfigError(f"phantom counts must be >= 0 and not both 0 (got labeled={n_labeled}, "
                          f"unlabeled={n_unlabeled})")
    if raw_values and kind != "cardiac":
        raise ConfigError("raw label values exist only for the cardiac (MM-WHS) phantoms")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root}: exists and is not a folder")
    preset_name, kind_prefix, make = KINDS[kind]
    prefix = prefix or kind_prefix
    make = generator or make
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    labeled, unlabeled = case_names(kind, n_labeled, n_unlabeled)
    if prefix != kind_prefix:
        labeled = [prefix + c[len(kind_prefix):] for c in labeled]
        unlabeled = [prefix + c[len(kind_prefix):] for c in unlabeled]
    dirs = {"images": root / "labeled" / "images", "labels": root / "labeled" / "labels",
            "unlabeled": root / "unlabeled"}
    targets = [dirs["images"] / f"{c}.nii.gz" for c in labeled] + [dirs["labels"] / f"{c}.nii.gz" for c in labeled]
    targets += [dirs["unlabeled"] / f"{c}.nii.gz" for c in unlabeled] + [root / "dataset.json"]
    settings = {"kind": kind, "seed": seed, "prefix": prefix, "raw_values": bool(raw_values),
                "meta": json.loads(json.dumps(meta or {}, default=str))}
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    if resume:
        _check_resume_settings(root, settings)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite and not resume:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"{existing[0]}: exists{more} (use --overwrite to replace the data set, "
                                "--resume to continue it)")
    # about 3 MB per compressed phantom image + label; fail before generating, not after the first files
    check_writable(root, (2 * n_labeled + n_unlabeled) * 3 * 2**20, what="phantom output")
    if overwrite:
        keep = set(targets)
        for folder in dirs.values():
            for stale in sorted(folder.glob(f"{prefix}_*.nii.gz")) if folder.is_dir() else []:
                if stale not in keep:
                    log.info("removing stale phantom case %s", stale)
                    stale.unlink()

    start = time.perf_counter()
    gen_seconds = 0.0
    kwargs = {"raw_values": True} if raw_values else {}
    jobs = [(make, case_seed(seed, kind, split, i), kwargs,
             [dirs["images"] / f"{name}.nii.gz", dirs["labels"] / f"{name}.nii.gz"] if split == "labeled"
             else [dirs["unlabeled"] / f"{name}.nii.gz"], name)
            for split, names in (("labeled", labeled), ("unlabeled", unlabeled)) for i, name in enumerate(names)]
    if resume:  # files are written atomically: one that exists is complete
        kept = [job[-1] for job in jobs if all(path.exists() for path in job[3])]
        jobs = [job for job in jobs if job[-1] not in kept]
        log.info("resuming %s: %d case(s) kept, %d to generate", root, len(kept), len(jobs))
        if progress is not None:
            for name in kept:
                progress(name)
    # the settings go down first, so an interrupted run can be resumed (and only with the same settings)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / RUN_SETTINGS, settings)
    if workers == 1:
        for job in jobs:
            gen_seconds += _write_case(*job)
            if progress is not None:
                progress(job[-1])
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, secs in zip(jobs, pool.map(_write_case, *zip(*jobs))):
                gen_seconds += secs
                if progress is not None:
                    progress(job[-1])

    preset = PRESETS[preset_name]
    extra_meta = dict(meta or {})
    meta = {
        "name": f"phantom_{kind}",
        "description": f"synthetic {kind} CT phantoms written by dvcl {__version__} (seed {seed})",
        "preset": preset_name,
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: cid for cid, name in sorted(preset.labels.items())}},
        "numTraining": n_labeled,
        "numUnlabeled": n_unlabeled,
        "file_ending": ".nii.gz",
        "phantom": {"kind": kind, "seed": seed, "dvcl_version": __version__},
    }
    meta.update(extra_meta)
    if raw_values:
        meta["raw_values"] = {str(raw): cid for raw, cid in preset.raw_values.items()}
    write_json_atomic(root / "dataset.json", meta)
    seconds = time.perf_counter() - start
    n = n_labeled + n_unlabeled
    n_made = max(len(jobs), 1)
    what = f"{kind} phantoms" if generator is None else f"{prefix} cases"
    log.info("wrote %d %s to %s in %.1f s (generation %.2f s per case)", len(jobs), what, root, seconds,
             gen_seconds / n_made)
    return {"out_dir": str(root.resolve()), "kind": kind, "preset": preset_name, "labeled": labeled,
            "unlabeled": unlabeled, "dataset_json": str((root / "dataset.json").resolve()),
            "generated": len(jobs), "kept": n - len(jobs),
            "seconds": round(seconds, 3), "seconds_per_case": round(gen_seconds / n_made, 3)}


def _check_resume_settings(root: Path, settings: dict) -> None:
    """Refuse to resume a folder that was written with other settings (or by something else)."""
    recorded = root / RUN_SETTINGS
    if not recorded.is_file():
        if root.is_dir() and any(root.iterdir()):
            raise ConfigError(f"{root}: cannot resume: no {RUN_SETTINGS} records how it was written (use "
                              "--overwrite to replace it)")
        return  # nothing there yet: a resume is a first run
    try:
        before = json.loads(recorded.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{recorded}: unreadable ({exc}); use --overwrite to replace the data set") from exc
    old, new = _flat(before), _flat(settings)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
        raise ConfigError(f"{root}: cannot resume: it was written with other settings ({shown} differ); use the "
                          "same arguments, or --overwrite to replace it")


def _flat(d: dict, prefix: str = "") -> Dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (so a refusal names the setting that differs)."""
    out: Dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _write_case(make: Callable[..., Tuple[sitk.Image, sitk.Image]], seed: int, kwargs: dict, paths: List[Path],
                name: str) -> float:
    """Generate one case and write its image (and label, when two paths are given); returns generation seconds.
    Module-level so that worker processes can run it."""
    from dvcl.io.images import write_image

    t0 = time.perf_counter()
    image, label = make(seed, **kwargs)
    seconds = time.perf_counter() - t0
    write_image(image, paths[0], overwrite=True)
    if len(paths) > 1:
        write_image(label, paths[1], overwrite=True)
    return seconds
