"""Largest-connected-component post-processing, chosen per structure on validation cases (nnU-Net's).

Why: a network that sees one window at a time can label a blob far from the organ (a spleen-like patch of bowel,
a kidney-like patch of muscle); every abdominal organ of the FLARE22 set is one connected object, so keeping only
the largest component of a class removes such blobs. It can also remove true parts (a pancreas predicted in
fragments), so, as nnU-Net does, it is applied only to the classes for which it raised the mean Dice on
validation cases: :func:`choose_largest_component` measures that, the package records the choice
(``model.json`` ``postprocessing``), and ``dvcl segment`` applies it (:func:`keep_largest_components`).

It runs on the network grid, before the restore to the original grid: the label map there is about 30 times
smaller than a 512 x 512 x 300 CT, so cleaning nine classes costs about 0.1 s there, and a removed blob becomes
background in the probabilities that the restore interpolates (the restored map is then free of it too).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import DatasetError, OutputExistsError
from dvcl.evaluation.metrics import nanmean
from dvcl.inference.model_package import MODEL_JSON, WEIGHTS, ModelPackage, read_model_json
from dvcl.inference.model_validation import POSTPROCESSING_KEY, validate_postprocessing
from dvcl.io.segmentation import label_statistics
from dvcl.preprocessing.restore import argmax_classes
from dvcl.utils.atomic import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


def _boxes(label: np.ndarray) -> Dict[int, Tuple[slice, ...]]:
    """Class id -> (z, y, x) bounding box of its voxels in a uint8 label array (one ITK pass for every class)."""
    return {v: (slice(k0, k1 + 1), slice(j0, j1 + 1), slice(i0, i1 + 1))
            for v, (_n, (i0, i1, j0, j1, k0, k1)) in label_statistics(sitk.GetImageFromArray(label)).items()}


def _outside_largest(sub: np.ndarray) -> np.ndarray:
    """Voxels of a boolean mask outside its largest 26-connected component (voxels that touch at a corner are one
    object, as a thin vessel crossing slices diagonally is). SimpleITK's components: already loaded by every
    segmentation (scipy.ndimage would add 0.4 s of import to a `dvcl segment` run). Ties: the component met first
    in scan order is kept (deterministic)."""
    comps = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(sub.astype(np.uint8)), True),
                                  0, True)  # 1 = the largest
    return sub & (sitk.GetArrayViewFromImage(comps) != 1)


def removed_components(label: np.ndarray, value: int) -> np.ndarray:
    """Boolean mask of the voxels of class ``value`` outside its largest connected component (26-connected)."""
    out = np.zeros(label.shape, dtype=bool)
    box = _boxes(label.astype(np.uint8, copy=False)).get(int(value))
    if box is not None:
        out[box] = _outside_largest(label[box] == value)
    return out


def keep_largest_components(probs: np.ndarray, classes: Sequence[int]) -> int:
    """Keep only the largest connected component of each of ``classes`` in the argmax of ``probs``, in place.

    Args:
        probs: ``(C, Z, Y, X)`` class probabilities on the network grid (float, numpy); changed in place.
        classes: class ids to clean (ids outside ``1..C-1`` are ignored).

    Returns:
        The number of network-grid voxels turned into background. A removed voxel's probabilities become
        background only (one-hot class 0), so the restore interpolates background there.
    """
    if not len(classes):
        return 0
    label = argmax_classes(probs)  # the restore's argmax (ties to the lower id), several times numpy's speed
    boxes = _boxes(label)  # every class's box in one pass; each class is labelled inside its box only
    removed_total = 0
    for value in sorted({int(c) for c in classes}):
        if not 0 < value < probs.shape[0] or value not in boxes:
            continue
        box = boxes[value]
        removed = _outside_largest(label[box] == value)
        count = int(removed.sum())
        if count:
            region = probs[(slice(None), *box)]  # a view: the assignments below change probs
            region[:, removed] = 0.0
            region[0, removed] = 1.0
            removed_total += count
    return removed_total


# ------------------------------------------------------------------------------------------- choosing
def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = int(pred.sum()) + int(ref.sum())
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total if total else float("nan")


def cache_cases(cache_dir: PathLike, split: str = "val") -> Tuple[List[Tuple[str, Path, Path]], Any]:
    """The ``(case, image, reference)`` triples of a prepared cache's ``split`` (original files), and its preset.

    Raises:
        DatasetError: the split is empty, or a case's original files are gone.
    """
    from dvcl.data.cache import Cache

    cache = Cache(cache_dir)
    ids = sorted(cache.splits.get(split, []))
    if not ids:
        raise DatasetError(f"{cache.root}: the cache's {split} split is empty")
    return [(cid, *cache.source_files(cid, split)) for cid in ids], cache.preset


def choose_largest_component(
    package: ModelPackage,
    cases: Sequence[Tuple[str, Path, Path]],
    device: Any = "auto",
    engine: str = "auto",
    sw_batch_size: Optional[int] = None,
    on_case: Optional[Callable[[str], None]] = None,
    preset: Any = None,
) -> dict:
    """Which classes gain from keeping their largest component, measured on ``cases`` (validation cases).

    Every case is segmented once; its label map is restored twice from the same probabilities, as they are and
    with every class cleaned, and each class's Dice against the reference is compared. A removed voxel becomes
    background, so cleaning one class changes no other class's Dice and one cleaned copy answers for all. A
    class is chosen when its mean Dice over the cases where it occurs (in the reference or a prediction) rises.

    Args:
        cases: ``(case, image, reference)`` triples (:func:`dvcl.evaluation.report.match_cases`, or
            :func:`cache_cases`); the reference holds the package's label ids, or ``preset``'s raw values. Use
            validation cases: choosing on the cases one reports is tuning on test.
        preset: the data set's :class:`~dvcl.presets.Preset` when the references hold its raw values (a cache's).

    Returns:
        The ``model.json`` entry: ``largest_component`` (chosen ids), and per structure the mean Dice
        without and with cleaning (fractions) and the number of cases, for the record.

    Raises:
        DatasetError: no cases.
        LabelValueError / GeometryMismatchError: a reference with values outside the package's labels or on
            another grid than its image.
    """
    from dvcl.inference.predictor import Predictor
    from dvcl.io.images import read_image, read_label
    from dvcl.preprocessing.pipeline import preprocess_image
    from dvcl.preprocessing.restore import restore_argmax
    from dvcl.utils.device import resolve_device

    if not cases:
        raise DatasetError("no cases to choose the post-processing on")
    labels = package.labels
    allowed = [0, *sorted(labels)]
    dev = resolve_device(device) if isinstance(device, str) else device
    predictor = Predictor(package, dev, sw_batch_size=sw_batch_size, engine=engine)
    before: Dict[int, List[float]] = {k: [] for k in labels}
    after: Dict[int, List[float]] = {k: [] for k in labels}
    for name, image_path, ref_path in cases:
        if on_case is not None:
            on_case(name)
        image = read_image(image_path)
        if preset is not None:
            ref_img = read_label(ref_path, image, allowed_values=preset.allowed_raw_values, remap=preset.raw_values)
        else:
            ref_img = read_label(ref_path, image, allowed_values=allowed)
        ref = sitk.GetArrayFromImage(ref_img)  # a copy, not a view: a view dies with its image
        arr, record = preprocess_image(image, package.preprocessing)
        probs = np.ascontiguousarray(predictor.predict_array(arr), dtype=np.float32)
        plain = sitk.GetArrayFromImage(restore_argmax(probs, record))
        removed = keep_largest_components(probs, list(labels))
        cleaned = sitk.GetArrayFromImage(restore_argmax(probs, record)) if removed else plain
        for k in labels:
            r, p, c = ref == k, plain == k, cleaned == k
            if r.any() or p.any() or c.any():
                before[k].append(_dice(p, r))
                after[k].append(_dice(c, r))
        log.info("%s: %d network-grid voxels outside the largest components", name, removed)
    return {"largest_component": choose_from_scores(before, after),
            "chosen_on": f"{len(cases)} validation case(s): {', '.join(c[0] for c in cases)}",
            "rule": "a class is cleaned when its mean Dice over the cases where it occurs rises",
            **score_records(before, after, labels)}


def choose_from_scores(before: Mapping[int, Sequence[float]], after: Mapping[int, Sequence[float]]) -> List[int]:
    """The classes whose mean Dice rises when cleaned, means as `dvcl evaluate` reports them.

    Means are `dvcl evaluate`'s (:func:`dvcl.evaluation.metrics.nanmean`): a case where cleaning removed a
    class's only (false-positive) voxels scores NaN after cleaning and leaves the mean; a class with no scored
    case left after cleaning had nothing but false positives, all removed, so it is chosen. (A plain mean turned
    such a class's record into NaN and never chose it.)
    """
    chosen = []
    for k in sorted(before):
        without, with_ = nanmean(before[k]), nanmean(after[k])  # NaN: no scored case
        if not np.isnan(without) and (np.isnan(with_) or with_ > without):
            chosen.append(k)
    return chosen


def score_records(before: Mapping[int, Sequence[float]], after: Mapping[int, Sequence[float]],
                  labels: Mapping[int, str]) -> dict:
    """The record beside the choice: per structure the mean Dice without and with cleaning over its scored cases
    (a structure without one is left out, so the record is strict JSON: no NaN) and how many cases it occurs in."""
    def means(scores):
        return {labels[k]: round(m, 4) for k, v in scores.items() if not np.isnan(m := nanmean(v))}

    return {"dice_without": means(before), "dice_with": means(after),
            "cases_per_structure": {labels[k]: len(v) for k, v in before.items() if v}}


def write_postprocessed_package(model_dir: PathLike, out_dir: PathLike, post: Mapping[str, Any],
                                overwrite: bool = False) -> Path:
    """Write ``model_dir`` with the post-processing choice ``post`` to ``out_dir`` (weights copied unchanged).

    ``out_dir`` may be ``model_dir`` itself: then only ``model.json`` is replaced (atomically). ``model.json``
    is written last, so an interrupted copy is never a package.

    Raises:
        OutputExistsError: ``out_dir`` holds a package and ``overwrite`` is false (unless it is ``model_dir``).
    """
    src, out = Path(model_dir), Path(out_dir)
    meta = read_model_json(src)
    validate_postprocessing(dict(post), meta["labels"], out / MODEL_JSON)
    same = out.exists() and out.resolve() == src.resolve()
    if not same:
        if (out / MODEL_JSON).exists() and not overwrite:
            raise OutputExistsError(f"{out / MODEL_JSON}: exists (use --overwrite to replace it)")
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / WEIGHTS) as tmp:
            shutil.copyfile(src / WEIGHTS, tmp)
    meta[POSTPROCESSING_KEY] = dict(post)
    write_json_atomic(out / MODEL_JSON, meta, strict=True)
    read_model_json(out)  # the written package reads back
    log.info("post-processing %s written to %s", list(post.get("largest_component", [])), out)
    return out
