"""Per-case, per-structure Dice, Jaccard, HD95 (and ASSD) with MONAI's metrics, under a stated convention.

Convention (also written into every report):

* structure present in both prediction and reference: Dice, Jaccard, HD95 and ASSD in mm (the image
  spacing is passed to MONAI), status ``ok``;
* absent from both: every metric NaN, status ``absent_both``; excluded from all means;
* present in the reference only (``missed``) or in the prediction only (``false_positive``): Dice 0,
  Jaccard 0, HD95/ASSD NaN (a distance to nothing is undefined); Dice/Jaccard enter the means, the
  distances do not;
* a case's mean is over its non-NaN structures (the paper: mean over classes, then over test cases).

Each structure is evaluated on the bounding box of prediction and reference together, with a one-voxel
margin: Dice/Jaccard counts outside it are zero, and MONAI's surface extraction crops to the same box, so
the numbers equal a whole-volume computation while a 512 x 512 x 300 CT stays cheap.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from dvcl.errors import GeometryMismatchError, LabelValueError
from dvcl.io.images import same_geometry
from dvcl.io.segmentation import label_statistics

log = logging.getLogger(__name__)

STATUSES = ("ok", "absent_both", "missed", "false_positive")
CONVENTION = (
    "Dice, Jaccard, HD95 and ASSD (mm) per case and structure with MONAI's DiceMetric, MeanIoU, "
    "HausdorffDistanceMetric (95th percentile, symmetric) and SurfaceDistanceMetric (symmetric), using the "
    "image spacing. A structure absent from both prediction and reference is excluded (all metrics NaN, "
    "status absent_both). A structure absent from only one of them scores Dice 0 and Jaccard 0 with HD95 and "
    "ASSD NaN (status missed / false_positive). Means skip NaN values: per case over structures, then over "
    "cases (structure columns: over cases)."
)


@dataclass
class StructureScore:
    """Metrics of one structure in one case (NaN where undefined; see the module's convention)."""

    label: int
    name: str
    dice: float
    jaccard: float
    hd95: float
    assd: float
    status: str
    pred_voxels: int
    ref_voxels: int


@dataclass
class CaseResult:
    """All structures of one case."""

    case: str
    scores: List[StructureScore] = field(default_factory=list)
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    def metric(self, name: str) -> Dict[str, float]:
        """Structure name -> value of ``name`` (``dice``, ``jaccard``, ``hd95``, ``assd``)."""
        return {s.name: getattr(s, name) for s in self.scores}

    def mean(self, name: str) -> float:
        """Mean of ``name`` over structures with a defined value (NaN if none)."""
        return nanmean([getattr(s, name) for s in self.scores])

    def to_dict(self) -> dict:
        return {"case": self.case, "spacing": list(self.spacing), "scores": [asdict(s) for s in self.scores]}


def nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def nanstd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1) of the defined values; NaN for fewer than two."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else float("nan")


def dice_per_structure(pred: np.ndarray, ref: np.ndarray, labels: Mapping[int, str]) -> Dict[str, float]:
    """Dice of every structure present in the reference array (0 when the prediction misses it).

    The quick overlap figure of model cards and of the shipped-model test, on arrays already on one grid;
    :func:`evaluate_case` is the full report (Jaccard, distances, geometry checks) on images.
    """
    out: Dict[str, float] = {}
    for value, name in sorted(labels.items()):
        r = ref == value
        if not r.any():
            continue
        p = pred == value
        out[name] = float(2.0 * np.logical_and(p, r).sum() / (p.sum() + r.sum()))
    return out


def check_pair(pred: sitk.Image, ref: sitk.Image, pred_name: str, ref_name: str) -> None:
    """Raise :class:`GeometryMismatchError` when prediction and reference do not share one grid."""
    why = same_geometry(ref, pred)
    if why is not None:
        raise GeometryMismatchError(f"{pred_name}: prediction does not lie on the grid of the reference "
                                    f"{ref_name}: {why}")


def label_values(img: sitk.Image) -> Dict[int, Tuple[slice, slice, slice]]:
    """Non-zero values of a label map -> (z, y, x) slices of their bounding boxes (one ITK pass).

    Values that do not fit uint8 (negative, > 255, fractional) are returned as keys with an empty box, so
    that :func:`check_values` reports them instead of a cast silently wrapping them around.
    """
    if img.GetPixelID() != sitk.sitkUInt8:
        mm = sitk.MinimumMaximumImageFilter()
        mm.Execute(img)
        if mm.GetMinimum() < 0 or mm.GetMaximum() > 255:
            return {int(v): (slice(0, 0),) * 3 for v in np.unique(sitk.GetArrayViewFromImage(img)) if v != 0}
        img = sitk.Cast(img, sitk.sitkUInt8)
    return {v: (slice(k0, k1 + 1), slice(j0, j1 + 1), slice(i0, i1 + 1))
            for v, (_n, (i0, i1, j0, j1, k0, k1)) in label_statistics(img).items()}


def check_values(values: Iterable[int], allowed: Sequence[int], name: str, what: str) -> None:
    """Raise :class:`LabelValueError` for label values outside ``allowed``."""
    bad = sorted({int(v) for v in values} - {int(a) for a in allowed})
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        ids = sorted(int(a) for a in allowed)
        table = f"0..{ids[-1]}" if ids == list(range(ids[-1] + 1)) else ", ".join(str(i) for i in ids)
        raise LabelValueError(f"{name}: {what} holds label values {shown} that are not in the label set "
                              f"({table}); evaluate with the preset the model was trained for")


def _union_box(a: Optional[Tuple[slice, ...]], b: Optional[Tuple[slice, ...]], shape: Sequence[int]
               ) -> Tuple[slice, ...]:
    boxes = [s for s in (a, b) if s is not None]
    return tuple(
        slice(max(0, min(bx[d].start for bx in boxes) - 1), min(shape[d], max(bx[d].stop for bx in boxes) + 1))
        for d in range(3)
    )


class MonaiMetrics:
    """MONAI metric objects, built once per evaluation (importing MONAI/torch only when evaluating)."""

    def __init__(self) -> None:
        from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDistanceMetric

        # ignore_empty=False: an empty reference with a non-empty prediction scores 0 (our convention);
        # the both-empty case never reaches MONAI.
        self.dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
        self.iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)
        self.hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, directed=False, reduction="none")
        self.assd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")

    def overlap(self, p, g) -> Tuple[float, float]:
        d = float(self.dice(y_pred=p, y=g)[0, 0])
        j = float(self.iou(y_pred=p, y=g)[0, 0])
        self.dice.reset()
        self.iou.reset()
        return d, j

    def distances(self, p, g, spacing: Sequence[float]) -> Tuple[float, float]:
        with warnings.catch_warnings():
            # MONAI warns about empty masks (never reached here) and about its own deprecated internals
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            h = float(self.hd95(y_pred=p, y=g, spacing=list(spacing))[0, 0])
            a = float(self.assd(y_pred=p, y=g, spacing=list(spacing))[0, 0])
        self.hd95.reset()
        self.assd.reset()
        return h, a


def evaluate_case(
    pred: sitk.Image,
    ref: sitk.Image,
    labels: Mapping[int, str],
    case: str = "case",
    pred_name: str = "prediction",
    ref_name: str = "reference",
    distances: bool = True,
    metrics: Optional[MonaiMetrics] = None,
) -> CaseResult:
    """Score one predicted label map against its reference label map.

    Args:
        pred / ref: integer label maps on the same grid, values in ``{0} | labels``.
        labels: class id -> structure name (background 0 excluded).
        distances: compute HD95/ASSD (the expensive part; Dice/Jaccard only when False).
        metrics: reuse one :class:`MonaiMetrics` across cases.

    Raises:
        GeometryMismatchError: the two images are not on the same grid.
        LabelValueError: a value outside the label set in either image.
    """
    import torch

    check_pair(pred, ref, pred_name, ref_name)
    allowed = [0, *sorted(int(k) for k in labels)]
    p_boxes, g_boxes = label_values(pred), label_values(ref)
    check_values(p_boxes, allowed, pred_name, "prediction")
    check_values(g_boxes, allowed, ref_name, "reference")
    if not p_boxes:
        log.warning("%s: prediction is empty (background only); every structure scores Dice 0", pred_name)
    p_arr = sitk.GetArrayViewFromImage(pred)
    g_arr = sitk.GetArrayViewFromImage(ref)
    spacing_zyx = tuple(float(s) for s in reversed(ref.GetSpacing()))
    metrics = metrics or MonaiMetrics()
    result = CaseResult(case=case, spacing=tuple(float(s) for s in ref.GetSpacing()))
    nan = float("nan")
    for lid in sorted(int(k) for k in labels):
        name = labels[lid]
        pb, gb = p_boxes.get(lid), g_boxes.get(lid)
        if pb is None and gb is None:
            result.scores.append(StructureScore(lid, name, nan, nan, nan, nan, "absent_both", 0, 0))
            continue
        box = _union_box(pb, gb, p_arr.shape)
        p = np.asarray(p_arr[box]) == lid
        g = np.asarray(g_arr[box]) == lid
        n_p, n_g = int(p.sum()), int(g.sum())
        pt = torch.from_numpy(p)[None, None]
        gt = torch.from_numpy(g)[None, None]
        dice, jac = metrics.overlap(pt, gt)
        if n_p and n_g:
            status = "ok"
            hd95, assd = metrics.distances(pt, gt, spacing_zyx) if distances else (nan, nan)
        else:
            status = "missed" if n_g else "false_positive"
            hd95 = assd = nan
        result.scores.append(StructureScore(lid, name, dice, jac, hd95, assd, status, n_p, n_g))
    return result
