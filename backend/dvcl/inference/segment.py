"""Segment CT volumes with a model package: the API behind ``dvcl segment`` and the Slicer module.

One case runs in four stages, each timed and reported: reading (SimpleITK; files or DICOM folders),
preprocessing (the paper's: orient, clip, resample, normalise), network (sliding-window softmax ensemble),
writing (restore to the original geometry, then NIfTI or Slicer ``.seg.nrrd``). The label map always comes
back on exactly the input's grid (size, spacing, origin, direction); this is checked, not assumed.

On the CPU with an ONNX engine whose graph is cached, nothing here imports torch (the package's networks load
lazily, the device is resolved without torch where it can be, probabilities are numpy arrays): the import is a
fixed 1.5 s (idle) to 8 s (loaded machine) of every run otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import ConfigError, ImageReadError, NotCTError, OutputExistsError
from dvcl.inference.model_package import (
    ModelPackage,
    default_model,
    load_model_package,
    read_model_json,
    resolve_model,
)
from dvcl.inference.uncertainty import QUANTITIES as UNCERTAINTY_QUANTITIES
from dvcl.inference.uncertainty import structure_means, uncertainty_paths
from dvcl.io.images import (
    check_ct_intensities,
    image_suffix,
    is_dicom_dir,
    is_image_file,
    needs_gdcm,
    read_image,
    strip_suffix,
    write_image,
)
from dvcl.io.label_table import write_label_sidecar
from dvcl.io.segmentation import SEGMENTATION_FORMATS, label_statistics, write_segmentation
from dvcl.preprocessing.geometry import Grid
from dvcl.preprocessing.pipeline import preprocess_image, restore_label, restore_probabilities
from dvcl.preprocessing.restore import restore_argmax
from dvcl.utils import progress
from dvcl.utils.atomic import write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dvcl.inference.predictor import Predictor

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
STAGES = ("reading", "preprocessing", "network", "writing")
#: ``probabilities``: argmax of the linearly interpolated class probabilities on the original grid, computed
#: only at organ borders (dvcl.preprocessing.restore); ``probabilities-exact``: the same by resampling every
#: class over the whole grid (the reference, 20-30x slower on a 512 x 512 x 300 CT); ``label``: argmax on the
#: network grid, nearest neighbour back (blocky borders).
RESTORE_MODES = ("probabilities", "probabilities-exact", "label")
#: Called as ``on_stage(stage_name)`` when a stage starts and ``on_window(done, total)`` per network window.
StageCallback = Callable[[str], None]
WindowCallback = Callable[[int, int], None]


def segment_image(
    image: sitk.Image,
    package: ModelPackage,
    device: Union[str, torch.device] = "auto",
    tta: bool = False,
    models: Optional[Sequence[str]] = None,
    restore: str = "probabilities",
    sw_batch_size: Optional[int] = None,
    name: str = "image",
    on_stage: Optional[StageCallback] = None,
    on_window: Optional[WindowCallback] = None,
    timings: Optional[Dict[str, float]] = None,
    engine: str = "auto",
    uncertainty: Optional[Dict[str, sitk.Image]] = None,
    postprocess: bool = True,
    predictor: Optional[Predictor] = None,
) -> sitk.Image:
    """Segment one CT volume; returns a ``sitkUInt8`` label map on exactly the image's grid.

    Args:
        image: a 3D CT volume in Hounsfield units (any orientation and spacing).
        package: a loaded model package.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``: where the windows run
            (:func:`~dvcl.utils.device.resolve_device`).
        tta: average over flipped copies too, along the axes the model was trained to be flipped along
            (:attr:`ModelPackage.flip_axes`; up to 8x slower, slightly smoother).
        models: subset of the package's models to average (e.g. ``["A"]``); default all.
        restore: ``probabilities`` takes the argmax of the class probabilities linearly interpolated onto the
            original grid (smooth borders on fine grids; computed at organ borders only);
            ``probabilities-exact`` computes the same by resampling every class everywhere (slow reference);
            ``label`` takes the argmax on the network grid and resamples nearest-neighbour (blockier).
        sw_batch_size: windows per network call; None: chosen from the device and network.
        engine: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``: what runs the network
            (:mod:`dvcl.inference.engines`).
        name: used in log messages (the file name).
        on_stage / on_window: progress callbacks; ``on_stage`` receives ``preprocessing``, ``network`` and
            ``restore`` as each begins.
        timings: if given, receives seconds per stage (``preprocessing``, ``network``, ``restore``).
        uncertainty: if given (an empty dict), receives ``entropy`` and ``disagreement`` float32 maps on
            the image's grid (:mod:`dvcl.inference.uncertainty`); the models then run one at a time.
        postprocess: apply the package's post-processing (the classes whose largest connected component alone
            is kept, chosen on validation: :mod:`dvcl.inference.postprocessing`); part of the restore stage.
        predictor: a :class:`~dvcl.inference.predictor.Predictor` of ``package`` already built (its engine
            loaded), used instead of building one here; ``models``, ``tta``, ``sw_batch_size`` and ``engine``
            are then its own. :func:`segment_files` builds it while the first image is read.

    Raises:
        ConfigError: unknown ``restore`` mode or model names.
    """
    from dvcl.inference.predictor import Predictor
    from dvcl.utils.device import resolve_device

    if restore not in RESTORE_MODES:
        raise ConfigError(f"restore must be one of {', '.join(RESTORE_MODES)}, got '{restore}'")
    timings = timings if timings is not None else {}
    dev = resolve_device(device) if isinstance(device, str) else device
    try:
        check_ct_intensities(image, name)
    except NotCTError as exc:
        log.warning("%s; segmenting anyway, expect a poor result", exc)

    _stage(on_stage, "preprocessing")
    t0 = time.perf_counter()
    arr, record = preprocess_image(image, package.preprocessing)
    timings["preprocessing"] = time.perf_counter() - t0
    log.debug("%s: network grid %s (z, y, x)", name, arr.shape)

    _stage(on_stage, "network")
    t0 = time.perf_counter()
    per_model = None
    if uncertainty is not None:
        from dvcl.inference.uncertainty import predict_per_model

        per_model = predict_per_model(package, dev, arr, models=models, tta=tta, sw_batch_size=sw_batch_size,
                                      engine=engine, on_window=on_window)
        probs = per_model.mean(axis=0)
    else:
        if predictor is None:
            predictor = Predictor(package, dev, models=models, tta=tta, sw_batch_size=sw_batch_size,
                                  engine=engine)
        probs = predictor.predict_array(arr, on_window=on_window)
    del arr
    timings["network"] = time.perf_counter() - t0

    _stage(on_stage, "restore")
    t0 = time.perf_counter()
    if postprocess and package.largest_component:
        from dvcl.inference.postprocessing import keep_largest_components

        probs = np.ascontiguousarray(probs, dtype=np.float32)
        removed = keep_largest_components(probs, package.largest_component)
        log.debug("%s: %d network-grid voxels outside the largest components set to background", name, removed)
    if restore == "probabilities":
        label = restore_argmax(probs, record)
    elif restore == "probabilities-exact":
        label = restore_probabilities(probs, record)
    else:
        label = restore_label(np.argmax(probs, axis=0).astype(np.uint8), record)
    del probs
    timings["restore"] = time.perf_counter() - t0
    if per_model is not None and uncertainty is not None:
        from dvcl.inference.uncertainty import uncertainty_maps

        t0 = time.perf_counter()
        uncertainty.update(uncertainty_maps(per_model, record))
        del per_model
        timings["uncertainty"] = time.perf_counter() - t0
    if Grid.of(label) != Grid.of(image):  # a bug, never user input: the output must sit on the input grid
        raise RuntimeError(f"{name}: restored label grid {Grid.of(label)} differs from the input {Grid.of(image)}")
    return label


def _stage(cb: Optional[StageCallback], stage: str) -> None:
    if cb is not None:
        cb(stage)


def structure_volumes_ml(label: sitk.Image, labels: Mapping[int, str]) -> Dict[str, float]:
    """Volume of every structure in millilitres (voxel count x voxel volume; 0.0 when absent)."""
    stats = label_statistics(label)
    voxel_ml = float(np.prod(label.GetSpacing())) / 1000.0
    return {name: round(stats[i][0] * voxel_ml if i in stats else 0.0, 3) for i, name in sorted(labels.items())}


# ------------------------------------------------------------------------------------------------ files
@dataclass
class SegmentJob:
    """One input and where its segmentation goes."""

    input: Path
    case: str
    output: Path


@dataclass
class SegmentResult:
    """What happened to one case: output path, per-stage seconds, structure volumes."""

    input: str
    case: str
    output: str
    seconds: Dict[str, float] = field(default_factory=dict)
    volumes_ml: Dict[str, float] = field(default_factory=dict)
    #: ``{quantity: {structure: mean}}`` with ``--uncertainty`` (NaN: structure not predicted), else empty.
    uncertainty_means: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"input": self.input, "case": self.case, "output": self.output, "seconds": self.seconds,
               "volumes_ml": self.volumes_ml}
        if self.uncertainty_means:
            out["uncertainty_means"] = {q: {k: (None if v != v else v) for k, v in m.items()}
                                        for q, m in self.uncertainty_means.items()}
        return out


def expand_inputs(inputs: Sequence[PathLike]) -> List[Path]:
    """Files and DICOM folders as given; a folder that is not a DICOM series contributes its image files.

    Raises:
        ImageReadError: a path does not exist, or a folder holds neither a DICOM series nor image files.
    """
    out: List[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise ImageReadError(f"{p}: file not found")
        if p.is_dir() and not is_dicom_dir(p):
            files = sorted(f for f in p.iterdir() if is_image_file(f))
            if not files:
                raise ImageReadError(f"{p}: folder holds no DICOM series and no image files")
            out.extend(files)
        else:
            out.append(p)
    if not out:
        raise ImageReadError("no input images given")
    return out


def case_name(path: Path) -> str:
    """Case name of an input: the file name without image suffix, or the DICOM folder's name (named from the
    series header when the folder's name is generic, e.g. ``dicom``: :mod:`dvcl.io.dicom_names`)."""
    from dvcl.io.dicom_names import series_case_name

    return series_case_name(path) if path.is_dir() else strip_suffix(path)


def plan_jobs(inputs: Sequence[Path], output: PathLike, fmt: Optional[str] = None) -> Tuple[List[SegmentJob], str]:
    """Decide every output path before anything runs, so bad options fail before the first case.

    ``output`` is a file when there is one input and it ends in an image suffix; otherwise a folder that
    receives ``<case>.<fmt>`` per input.

    Returns:
        ``(jobs, fmt)`` with the resolved format.
    """
    output = Path(output)
    if fmt is not None and fmt.lstrip(".") not in SEGMENTATION_FORMATS:
        raise ConfigError(f"unknown output format '{fmt}': use one of {', '.join(SEGMENTATION_FORMATS)}")
    fmt = fmt.lstrip(".") if fmt else None
    suffix = image_suffix(output)
    if suffix:
        if len(inputs) != 1:
            raise ConfigError(f"{output}: an output file takes one input, got {len(inputs)}; give a folder")
        file_fmt = suffix.lstrip(".")
        if file_fmt not in SEGMENTATION_FORMATS:
            raise ConfigError(f"{output}: unsupported output format (use {', '.join(SEGMENTATION_FORMATS)})")
        if fmt and fmt != file_fmt:
            raise ConfigError(f"{output}: --format {fmt} contradicts the output file's suffix .{file_fmt}")
        return [SegmentJob(inputs[0], case_name(inputs[0]), output)], file_fmt
    fmt = fmt or "nii.gz"
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: exists and is not a folder")
    jobs = [SegmentJob(p, case_name(p), output / f"{case_name(p)}.{fmt}") for p in inputs]
    seen: Dict[str, Path] = {}
    for i, job in enumerate(jobs):
        if job.case in seen and job.input.is_dir() and job.case != job.input.name:
            # two series named alike from their headers (same patient and description): number them
            n = 2
            while f"{job.case}_{n}" in seen:
                n += 1
            job = jobs[i] = SegmentJob(job.input, f"{job.case}_{n}", output / f"{job.case}_{n}.{fmt}")
        if job.case in seen:
            raise ConfigError(f"inputs {seen[job.case]} and {job.input} both give case '{job.case}'; "
                              "segment them into different folders")
        seen[job.case] = job.input
    return jobs, fmt


def volumes_path(jobs: Sequence[SegmentJob], output: PathLike, kind: str) -> Path:
    """Where the volume table goes: ``OUT/volumes.<kind>``, or ``<name>_volumes.<kind>`` next to one file."""
    output = Path(output)
    if image_suffix(output):
        return output.parent / f"{strip_suffix(output)}_volumes.{kind}"
    return output / f"volumes.{kind}"


def choose_model(model: Optional[PathLike], fast: bool = False, preset: Optional[str] = None) -> Path:
    """The package folder ``dvcl segment`` uses: ``model`` itself, or without it the best installed model for
    ``preset``; with ``fast`` the installed fast model for the preset (of ``model`` when one is given, so
    ``--model phantom_demo --fast``, which the Slicer module sends, means its fast sibling).

    Raises:
        ConfigError: ``preset`` together with ``model`` (the model has its own preset).
        ModelError: no such model (:func:`~dvcl.inference.model_package.default_model`).
    """
    if model is None:
        return default_model(preset, fast=fast)
    if preset:
        raise ConfigError("--preset chooses an installed model; leave it out when giving --model")
    path = resolve_model(model)
    if not fast:
        return path
    meta = read_model_json(path)
    if meta.get("mode") == "fast":
        return path
    fast_path = default_model(meta.get("preset") or None, fast=True)
    log.info("--fast: using the fast model %s instead of %s", fast_path.name, meta.get("name", path.name))
    return fast_path


def segment_files(
    inputs: Sequence[PathLike],
    output: PathLike,
    model: Union[ModelPackage, PathLike, None] = None,
    device: str = "auto",
    tta: bool = False,
    fmt: Optional[str] = None,
    volumes: Optional[str] = None,
    overwrite: bool = False,
    models: Optional[Sequence[str]] = None,
    restore: str = "probabilities",
    sw_batch_size: Optional[int] = None,
    accept_nonuniform: bool = False,
    force: bool = False,
    max_memory: Optional[float] = None,
    engine: str = "auto",
    fast: bool = False,
    preset: Optional[str] = None,
    uncertainty: bool = False,
    postprocess: bool = True,
) -> List[SegmentResult]:
    """Segment image files and DICOM folders and write one label map per input.

    Args:
        inputs: image files, DICOM folders, or folders of image files.
        output: output file (one input) or folder.
        model: a loaded package, a package folder, or the name of an installed model; None: the best
            installed model for ``preset`` (:func:`~dvcl.inference.model_package.default_model`).
        fast: the installed fast (lower-resolution) model for the preset instead (:func:`choose_model`).
        preset: with ``model=None``, whose label set to segment (default ``flare22``).
        uncertainty: also write ``<case>_entropy.nii.gz`` and ``<case>_disagreement.nii.gz`` next to each
            label map (:mod:`dvcl.inference.uncertainty`) and their per-structure means in the volumes table.
        fmt: ``nii.gz`` (default) or ``seg.nrrd`` (Slicer segmentation with names and colors), ...
        volumes: ``csv`` or ``json``: also write per-structure volumes in ml.
        overwrite: replace existing outputs (else :class:`OutputExistsError` before any work).
        accept_nonuniform: resample DICOM series with missing/uneven/tilted slices instead of refusing them.
        force: segment images whose intensities do not look like CT (else :class:`NotCTError`).
        max_memory: memory budget in GiB: the work is split (one window per network call, label restore)
            to fit it, or refused before any work when even that does not fit (:mod:`dvcl.inference.guards`).
        others: as :func:`segment_image`.

    Every input is validated (readable, 3D, CT-like, DICOM geometry) and no output may replace an input
    before the first output is written.

    Emits progress (bar or JSON events) per case and stage, and an ``output`` event per written file.
    """
    from dvcl.utils.device import resolve_device

    if volumes not in (None, "csv", "json"):
        raise ConfigError(f"volumes must be 'csv' or 'json', got '{volumes}'")
    if restore not in RESTORE_MODES:
        raise ConfigError(f"restore must be one of {', '.join(RESTORE_MODES)}, got '{restore}'")
    from dvcl.inference import guards

    files = expand_inputs(inputs)
    jobs, fmt = plan_jobs(files, output, fmt)
    vol_path = volumes_path(jobs, output, volumes) if volumes else None
    extra = [p for j in jobs for p in uncertainty_paths(j.output).values()] if uncertainty else []
    targets = [j.output for j in jobs] + extra + ([vol_path] if vol_path else [])
    guards.refuse_aliasing([j.input for j in jobs], targets)
    if not overwrite:
        for target in targets:
            if target.exists():
                raise OutputExistsError(f"{target}: exists (use --overwrite to replace it)")
    # lazy: the networks are built only if the engine needs them (not when its ONNX graphs are cached)
    package = (model if isinstance(model, ModelPackage)
               else load_model_package(choose_model(model, fast, preset), lazy=True))
    if fast and package.meta.get("mode") != "fast":
        raise ConfigError(f"--fast: model '{package.name}' is not a fast model")
    guards.validate_inputs([j.input for j in jobs], accept_nonuniform=accept_nonuniform, force=force)
    guards.check_output_space([j.input for j in jobs], [j.output for j in jobs])
    unknown = [m for m in (models or []) if m not in package.models]
    if unknown:  # checked before the first case is read, not after minutes of work
        raise ConfigError(f"model(s) {unknown} are not in package '{package.name}' "
                          f"(it has {', '.join(package.models)})")
    dev = resolve_device(device)
    log.info("segmenting %d case(s) with model '%s' on %s", len(jobs), package.name, dev)

    results: List[SegmentResult] = []
    # Without a memory budget the next image is read in a thread while this one is segmented (SimpleITK
    # releases the GIL), and the first one while the engine loads; one predictor per window batch serves every
    # case. With a budget, one image at a time.
    reader = _ImageReader(jobs, accept_nonuniform, force, ahead=max_memory is None)
    predictors: Dict[Optional[int], Predictor] = {}

    def predictor_for(batch: Optional[int]) -> Predictor:
        if batch not in predictors:
            from dvcl.inference.predictor import Predictor

            predictors[batch] = Predictor(package, dev, models=models, tta=tta, sw_batch_size=batch,
                                          engine=engine)
        return predictors[batch]

    with reader, progress.Progress("segment", total=len(jobs) * len(STAGES), desc="segment",
                                   unit="stage") as bar:
        loading = 0.0
        if max_memory is None and not uncertainty:
            bar.update(0, message=f"{jobs[0].case} (1/{len(jobs)}): reading, loading the model")
            t0 = time.perf_counter()
            predictor_for(sw_batch_size)
            loading = time.perf_counter() - t0
        for i, job in enumerate(jobs):
            prefix = f"{job.case} ({i + 1}/{len(jobs)})"
            seconds: Dict[str, float] = {}

            def on_stage(stage: str, _prefix: str = prefix) -> None:
                # restoring the original geometry is the first half of writing the output
                bar.update(1, message=f"{_prefix}: {'writing' if stage == 'restore' else stage}")

            def on_window(done: int, total: int, _prefix: str = prefix) -> None:
                bar.update(0, message=f"{_prefix}: network", window=f"{done}/{total}")

            bar.update(0, message=f"{prefix}: reading")
            image, seconds["reading"] = reader.get(i)
            if loading:  # the first case's share of the run: the engine, loaded while its image was read
                seconds["loading"], loading = loading, 0.0
            timings: Dict[str, float] = {}
            case_restore, case_batch = guards.plan_memory(image, package, restore, sw_batch_size, max_memory,
                                                          str(job.input))
            maps: Optional[Dict[str, sitk.Image]] = {} if uncertainty else None
            label = segment_image(image, package, dev, tta=tta, models=models, restore=case_restore,
                                  sw_batch_size=case_batch, name=str(job.input), on_stage=on_stage,
                                  on_window=on_window, timings=timings, engine=engine, uncertainty=maps,
                                  postprocess=postprocess,
                                  predictor=None if uncertainty else predictor_for(case_batch))
            del image
            seconds.update(timings)
            t0 = time.perf_counter()
            write_segmentation(label, job.output, package.segments, overwrite=overwrite)
            if fmt != "seg.nrrd":  # what the numbers mean travels with the file (dvcl evaluate reads it)
                write_label_sidecar(job.output, package.labels, preset=package.preset, model=package.name)
            seconds["writing"] = time.perf_counter() - t0
            progress.emit("output", path=str(job.output.resolve()), kind="segmentation", case=job.case)
            means: Dict[str, Dict[str, float]] = {}
            if maps:
                t0 = time.perf_counter()
                for quantity, path in uncertainty_paths(job.output).items():
                    write_image(maps[quantity], path, overwrite=overwrite)
                    progress.emit("output", path=str(path.resolve()), kind="uncertainty", quantity=quantity,
                                  case=job.case)
                    means[quantity] = structure_means(label, maps[quantity], package.labels)
                seconds["writing"] += time.perf_counter() - t0
            vols = structure_volumes_ml(label, package.labels) if volumes else {}
            results.append(SegmentResult(str(job.input), job.case, str(job.output),
                                         {k: round(v, 3) for k, v in seconds.items()}, vols, means))
            bar.update(1, message=f"{prefix}: done")
            log.info("%s -> %s (%s)", job.input, job.output,
                     ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    if vol_path is not None:
        write_volumes(results, package.labels, vol_path, volumes)
        progress.emit("output", path=str(vol_path.resolve()), kind="volumes")
    return results


class _ImageReader:
    """Reads the jobs' images in order, one ahead in a background thread (``ahead``), or each when asked.

    ``get(i)`` returns the image of job ``i`` (read and checked to be CT) and the seconds its reading took,
    and starts reading job ``i + 1`` unless that is DICOM (read when due, see :func:`keep_locale`). A read
    error surfaces at ``get`` of its job, after the earlier cases are written. Used as a context manager:
    leaving it (also on an error) waits for a read in flight.
    """

    def __init__(self, jobs: Sequence[SegmentJob], accept_nonuniform: bool, force: bool, ahead: bool) -> None:
        self.jobs = list(jobs)
        self.accept_nonuniform = accept_nonuniform
        self.force = force
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dvcl-read") if ahead else None
        self.pending: Dict[int, Future] = {}
        self._submit(0)

    def _read(self, i: int) -> Tuple[sitk.Image, float]:
        from dvcl.inference import guards

        job = self.jobs[i]
        t0 = time.perf_counter()
        image = read_image(job.input, accept_nonuniform=self.accept_nonuniform)
        guards.check_ct(image, job.input, self.force)
        return image, time.perf_counter() - t0

    def _submit(self, i: int) -> None:
        # DICOM is read when due, on this thread: GDCM reads switch the process locale, which the engine
        # (OpenVINO compiling a model) also does on this thread; two threads doing it at once crash setlocale.
        if (self.pool is not None and i < len(self.jobs) and i not in self.pending
                and not needs_gdcm(self.jobs[i].input)):
            self.pending[i] = self.pool.submit(self._read, i)

    def get(self, i: int) -> Tuple[sitk.Image, float]:
        future = self.pending.pop(i, None)
        result = future.result() if future is not None else self._read(i)
        self._submit(i + 1)
        return result

    def __enter__(self) -> _ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            for future in self.pending.values():
                future.cancel()
            self.pool.shutdown(wait=True)


def write_volumes(results: Sequence[SegmentResult], labels: Mapping[int, str], path: Path, kind: str) -> Path:
    """Per-structure volumes (ml): CSV with one row per case, or JSON ``{case: {structure: ml}}``.

    With ``--uncertainty`` every structure also gets the columns ``<structure> mean_entropy`` and
    ``<structure> mean_disagreement`` (JSON: the same names as keys next to the structure's volume); a
    structure that was not predicted has no mean (empty CSV cell, JSON null).
    """
    names = [labels[k] for k in sorted(labels)]
    quantities = [q for q in UNCERTAINTY_QUANTITIES if any(q in r.uncertainty_means for r in results)]

    def mean(r: SegmentResult, q: str, n: str) -> Optional[float]:
        v = r.uncertainty_means.get(q, {}).get(n)
        return None if v is None or v != v else v

    if kind == "json":
        table = {}
        for r in results:
            row: Dict[str, Optional[float]] = dict(r.volumes_ml)
            for n in names:
                for q in quantities:
                    row[f"{n} mean_{q}"] = mean(r, q, n)
            table[r.case] = row
        write_json_atomic(path, table)
        return path
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case"] + [f"{n} [ml]" for n in names] + [f"{n} mean_{q}" for n in names for q in quantities])
    for r in results:
        cells = [f"{r.volumes_ml.get(n, 0.0):.3f}" for n in names]
        for n in names:
            for q in quantities:
                v = mean(r, q, n)
                cells.append("" if v is None else f"{v:.4f}")
        writer.writerow([r.case] + cells)
    write_text_atomic(path, buf.getvalue())
    return path


def results_json(results: Sequence[SegmentResult]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2)
