"""Voxel-wise uncertainty of a segmentation: where the model is unsure, and where its two networks disagree.

``dvcl segment --uncertainty`` writes, next to each label map ``OUT/<case>.<ext>``, two float32 volumes on the
input's original grid (team contract 5):

* ``<case>_entropy.nii.gz``: normalised entropy of the ensemble's mean class probabilities,
  ``H(p) / log C`` in [0, 1] (0: one class certain; 1: all classes equally likely);
* ``<case>_disagreement.nii.gz``: total-variation distance between models A and B,
  ``0.5 * sum_c |p_A - p_B|`` in [0, 1] (the mean over model pairs for larger ensembles; zeros for a
  one-model package, which cannot disagree with itself).

Both are computed on the network grid, where the probabilities live, and brought to the original grid by
linear interpolation (:func:`dvcl.preprocessing.restore.resample_linear`): one channel each, so the cost is
that of writing one float volume. Per-structure means over each predicted structure's voxels go into the
volumes table (``<structure> mean_entropy`` / ``<structure> mean_disagreement``) so a reviewer can sort cases
and organs by how much to trust them. Numpy only (no torch import): probabilities may come as numpy arrays or
CPU tensors.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Dict, Mapping, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.io.images import strip_suffix
from dvcl.preprocessing.geometry import GeometryRecord
from dvcl.preprocessing.restore import resample_linear

#: The uncertainty quantities, in output order; file ``<case>_<quantity>.nii.gz``, volumes-table column
#: ``<structure> mean_<quantity>``.
QUANTITIES: Tuple[str, ...] = ("entropy", "disagreement")
_EPS = 1e-12


def _as_numpy(arr) -> np.ndarray:
    if not isinstance(arr, np.ndarray) and hasattr(arr, "numpy"):
        arr = arr.numpy()
    return np.asarray(arr, dtype=np.float32)


def normalised_entropy(prob) -> np.ndarray:
    """``-sum_c p_c log p_c / log C`` over axis 0 of ``(C, ...)`` probabilities, float32 in [0, 1]."""
    prob = _as_numpy(prob)
    num_classes = prob.shape[0]
    if num_classes < 2:
        return np.zeros(prob.shape[1:], np.float32)
    out = np.zeros(prob.shape[1:], np.float32)
    for c in range(num_classes):  # one class at a time: no (C, ...) temporaries on large grids
        p = prob[c]
        out -= p * np.log(np.maximum(p, _EPS))
    out *= np.float32(1.0 / math.log(num_classes))
    return np.clip(out, 0.0, 1.0, out=out)


def model_disagreement(per_model) -> np.ndarray:
    """``0.5 * sum_c |p_A - p_B|`` over axis 1 of ``(M, C, ...)`` per-model probabilities, float32 in [0, 1];
    the mean over all model pairs when M > 2, zeros when M == 1."""
    per_model = _as_numpy(per_model)
    out = np.zeros(per_model.shape[2:], np.float32)
    pairs = list(itertools.combinations(range(per_model.shape[0]), 2))
    for a, b in pairs:
        for c in range(per_model.shape[1]):
            out += np.abs(per_model[a, c] - per_model[b, c])
    if pairs:
        out *= np.float32(0.5 / len(pairs))
    return np.clip(out, 0.0, 1.0, out=out)


def uncertainty_maps(per_model, record: GeometryRecord) -> Dict[str, sitk.Image]:
    """Entropy and disagreement on the original grid from ``(M, C, Z, Y, X)`` network-grid probabilities.

    Returns:
        ``{"entropy": img, "disagreement": img}``, ``sitkFloat32`` images with exactly the original size,
        spacing, origin and direction, values in [0, 1].
    """
    per_model = _as_numpy(per_model)
    if per_model.ndim != 5:
        raise ValueError(f"per-model probabilities must be (M, C, Z, Y, X), got shape {per_model.shape}")
    maps = {"entropy": normalised_entropy(per_model.mean(axis=0)), "disagreement": model_disagreement(per_model)}
    out = {}
    for name in QUANTITIES:
        img = resample_linear(maps.pop(name), record)
        out[name] = sitk.Clamp(img, sitk.sitkFloat32, 0.0, 1.0)  # interpolation is convex; guard rounding
        out[name].CopyInformation(img)
    return out


def structure_means(label: sitk.Image, value: sitk.Image, labels: Mapping[int, str]) -> Dict[str, float]:
    """Mean of ``value`` over each structure's voxels in ``label`` (same grid), by structure name; NaN for a
    structure that was not predicted (no voxels to average)."""
    lab = sitk.GetArrayViewFromImage(label).reshape(-1)
    val = sitk.GetArrayViewFromImage(value).reshape(-1).astype(np.float64)
    n = max(int(lab.max(initial=0)), max(labels, default=0)) + 1
    counts = np.bincount(lab, minlength=n)
    sums = np.bincount(lab, weights=val, minlength=n)
    return {name: (round(float(sums[i] / counts[i]), 6) if counts[i] else float("nan"))
            for i, name in sorted(labels.items())}


def uncertainty_paths(label_output: Union[str, Path]) -> Dict[str, Path]:
    """Where the maps of a label output go: ``<dir>/<name>_<quantity>.nii.gz`` next to it."""
    out = Path(label_output)
    stem = strip_suffix(out)
    return {q: out.parent / f"{stem}_{q}.nii.gz" for q in QUANTITIES}


def predict_per_model(package, device, image: np.ndarray, models=None, tta: bool = False, sw_batch_size=None,
                      engine: str = "auto", on_window=None) -> np.ndarray:
    """Every model's sliding-window probabilities, ``(M, C, Z, Y, X)`` float32 numpy array.

    One :class:`~dvcl.inference.predictor.Predictor` per model (its ``models=[name]`` subset): the same
    network work as the ensemble, which the mean over axis 0 reproduces (blending is linear), with M times
    the output memory. ``on_window(done, total)`` counts the windows of all models together.
    """
    from dvcl.inference.predictor import Predictor

    names = list(models) if models else list(package.model_names)
    outs = []
    for k, name in enumerate(names):
        def report(done: int, total: int, _k: int = k) -> None:
            on_window(_k * total + done, len(names) * total)

        predictor = Predictor(package, device, models=[name], tta=tta, sw_batch_size=sw_batch_size, engine=engine)
        outs.append(predictor.predict_array(image, on_window=report if on_window is not None else None))
    return np.stack(outs)
