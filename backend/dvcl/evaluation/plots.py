"""Figures for evaluation reports: Dice box plot per structure, and prediction/reference overlays.

Matplotlib runs with the non-interactive Agg backend (no display needed; CI and servers). Overlays are
drawn after reorienting every volume to LPS (``SimpleITK.DICOMOrient(img, "LPS")``: index x towards the
patient's left, y towards posterior, z towards superior), so axial slices appear in the radiological
convention (patient's right on the viewer's left, anterior up) whatever the file's orientation, and
coronal slices with the head up and the true aspect ratio of the voxels.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.utils.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from dvcl.evaluation.report import EvaluationResult

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: Display window for CT backgrounds (soft-tissue abdomen window, HU).
CT_WINDOW = (-160.0, 240.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def dice_boxplot(result: EvaluationResult, path: PathLike) -> Path:
    """Box plot of Dice over cases, one box per structure (structures absent in both are left out)."""
    plt = _pyplot()
    per = result.per_structure("dice")
    names = result.structures
    data = [[v for v in per[n] if not math.isnan(v)] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4.5))
    positions = [i + 1 for i, d in enumerate(data) if d]
    if positions:
        ax.boxplot([d for d in data if d], positions=positions, widths=0.6, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice")
    ax.set_title(f"{result.name}: Dice per structure ({len(result.cases)} case(s))")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: PathLike, plt) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _lps_array(img: sitk.Image) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """(Z, Y, X) array in LPS index orientation and its (x, y, z) spacing."""
    o = sitk.DICOMOrient(img, "LPS")
    return sitk.GetArrayFromImage(o), tuple(o.GetSpacing())


def _slice_indices(ref: np.ndarray, pred: np.ndarray) -> Tuple[int, int]:
    """Axial z and coronal y through the most reference (else prediction) foreground."""
    src = ref if ref.any() else pred
    if not src.any():
        return ref.shape[0] // 2, ref.shape[1] // 2
    fg = src > 0
    return int(np.argmax(fg.sum(axis=(1, 2)))), int(np.argmax(fg.sum(axis=(0, 2))))


def _rgba(label2d: np.ndarray, colors: Mapping[int, Tuple[int, int, int]], alpha: float) -> np.ndarray:
    out = np.zeros(label2d.shape + (4,), np.float32)
    for lid, col in colors.items():
        m = label2d == lid
        if m.any():
            out[m, :3] = np.asarray(col, np.float32) / 255.0
            out[m, 3] = alpha
    return out


def overlay_png(
    prediction: Union[PathLike, sitk.Image],
    reference: Union[PathLike, sitk.Image],
    path: PathLike,
    labels: Mapping[int, str],
    image: Optional[Union[PathLike, sitk.Image]] = None,
    colors: Optional[Mapping[int, Tuple[int, int, int]]] = None,
    title: str = "",
) -> Path:
    """Axial and coronal slices: reference filled, prediction as contour lines, CT underneath if given.

    Slices pass through the largest reference cross-sections. Files are read with the same readers as the
    evaluation, so what is drawn is what was scored.
    """
    from dvcl.io.images import read_image
    from dvcl.io.segmentation import read_segmentation
    from dvcl.presets import default_color

    plt = _pyplot()
    pred_img = prediction if isinstance(prediction, sitk.Image) else read_segmentation(prediction)[0]
    ref_img = reference if isinstance(reference, sitk.Image) else read_segmentation(reference)[0]
    pred, _ = _lps_array(pred_img)
    ref, spacing = _lps_array(ref_img)
    ct = None
    if image is not None:
        ct_img = image if isinstance(image, sitk.Image) else read_image(image)
        if ct_img.GetSize() == ref_img.GetSize():
            ct, _ = _lps_array(ct_img)
        else:
            log.warning("%s: CT grid differs from the reference; overlay drawn without it", image)
    colors = dict(colors or {k: default_color(n, k) for k, n in labels.items()})
    z, y = _slice_indices(ref, pred)
    sx, _sy, sz = spacing
    views = [
        ("axial", lambda a: a[z], spacing[1] / sx, "upper"),
        ("coronal", lambda a: a[:, y, :], sz / sx, "lower"),  # z grows towards superior: head up
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, (view, take, aspect, origin) in zip(axes, views):
        r2, p2 = take(ref), take(pred)
        if ct is not None:
            ax.imshow(np.clip(take(ct), *CT_WINDOW), cmap="gray", aspect=aspect, origin=origin,
                      interpolation="nearest")
        else:
            ax.imshow(np.zeros(r2.shape), cmap="gray", vmin=0, vmax=1, aspect=aspect, origin=origin)
        ax.imshow(_rgba(r2, colors, 0.45), aspect=aspect, origin=origin, interpolation="nearest")
        for lid, col in colors.items():
            m = p2 == lid
            if m.any() and m.shape[0] > 1 and m.shape[1] > 1:
                # contour places Z[i, j] at (x=j, y=i), the pixel centres imshow uses for either origin
                ax.contour(m.astype(np.float32), levels=[0.5], colors=[np.asarray(col) / 255.0], linewidths=1.2)
        ax.set_title(f"{view} ({'z' if view == 'axial' else 'y'} = {z if view == 'axial' else y})")
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted(set(np.unique(ref[z]).tolist() + np.unique(ref[:, y, :]).tolist()
                         + np.unique(pred[z]).tolist()) - {0})
    handles = [plt.Line2D([0], [0], color=np.asarray(colors[k]) / 255.0, lw=6) for k in present if k in colors]
    if handles:
        fig.legend(handles, [labels[k] for k in present if k in colors], loc="lower center",
                   ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"{title}  (fill: reference, line: prediction)".strip())
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return _save(fig, path, plt)

