"""DICOM series geometry, checked like a careful viewer does before a volume is built from slices.

ITK's series reader takes the spacing between the first two slices and assumes every other gap is the same;
on a gappy series it prints a warning ("non uniform sampling or missing slices") and returns a volume on an
invented grid. A label map written on that grid is silently wrong. So before reading, every slice's
ImagePositionPatient (0020,0032) and ImageOrientationPatient (0020,0037) are compared:

- one orientation for all slices, and the same rows x columns;
- positions along the slice normal distinct (no duplicate slices);
- gaps uniform within ``max(GAP_ATOL, GAP_RTOL x median gap)`` (no missing slice, no uneven spacing);
- every slice centred on the normal through the first one (no gantry tilt, which shears the stack).

A folder with several series is refused unless the series is named (``series_uid``). With
``accept_nonuniform`` an uneven, gappy or tilted series is resampled onto a uniform grid (linear
interpolation between the two nearest slices along the normal) with a warning naming what was fixed;
duplicates are never accepted (two slices at one place cannot be told apart).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from dvcl.errors import DicomSeriesError, ImageReadError

log = logging.getLogger(__name__)

#: Gap tolerance: absolute (mm) and relative to the median gap.
GAP_ATOL = 0.01
GAP_RTOL = 0.01
#: Largest sideways offset (mm) of a slice from the first slice's normal: absolute + per mm along the normal.
TILT_ATOL = 0.01
TILT_SLOPE = 0.002  # about 0.1 degree
ORIENTATION_ATOL = 1e-4


@dataclass(frozen=True)
class SliceInfo:
    """Geometry tags of one DICOM file."""

    path: str
    position: Tuple[float, float, float]
    orientation: Tuple[float, ...]  # row cosine (3) + column cosine (3)
    rows: int
    columns: int
    spacing: Tuple[float, float]  # in-plane (x along rows... as ITK reports: column spacing, row spacing)


@dataclass
class SeriesGeometry:
    """What the checks found: slices sorted along the normal, the normal, the median gap and the problems."""

    slices: List[SliceInfo]
    normal: np.ndarray
    distances: np.ndarray
    gap: float
    problems: List[str]
    duplicates: bool


def _floats(text: str, n: int, what: str, path: str) -> Tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.replace(",", "\\").split("\\") if v.strip())
    except ValueError:
        vals = ()
    if len(vals) != n or not all(np.isfinite(vals)):
        raise DicomSeriesError(f"{path}: malformed {what} tag {text!r}")
    return vals


def read_slice_infos(files: Sequence[str]) -> List[SliceInfo]:
    """Read the geometry tags of every file (headers only, no pixel data)."""
    out: List[SliceInfo] = []
    reader = sitk.ImageFileReader()
    for f in files:
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ImageReadError(f"{f}: cannot read DICOM header") from exc
        keys = set(reader.GetMetaDataKeys())
        if "0020|0032" not in keys or "0020|0037" not in keys:
            raise DicomSeriesError(f"{f}: DICOM slice without ImagePositionPatient/ImageOrientationPatient; "
                                   "cannot place it in a volume")
        pos = _floats(reader.GetMetaData("0020|0032"), 3, "ImagePositionPatient", str(f))
        ori = _floats(reader.GetMetaData("0020|0037"), 6, "ImageOrientationPatient", str(f))
        size = reader.GetSize()
        sp = reader.GetSpacing()
        out.append(SliceInfo(str(f), pos, ori, int(size[1]), int(size[0]), (float(sp[0]), float(sp[1]))))
    return out


def analyse_series(infos: Sequence[SliceInfo], where: str) -> SeriesGeometry:
    """Sort slices along the normal and list every geometry problem (empty list: a regular volume).

    Raises:
        DicomSeriesError: problems no resampling can fix (mixed orientations or slice sizes, a degenerate
            orientation, fewer than two slices).
    """
    if len(infos) < 2:
        raise DicomSeriesError(f"{where}: DICOM series has {len(infos)} slice; a 3D volume needs at least 2")
    ori0 = np.array(infos[0].orientation)
    for s in infos[1:]:
        if not np.allclose(s.orientation, ori0, atol=ORIENTATION_ATOL):
            raise DicomSeriesError(f"{where}: slices have different orientations ({Path(s.path).name}); "
                                   "not one volume")
        if (s.rows, s.columns) != (infos[0].rows, infos[0].columns):
            raise DicomSeriesError(f"{where}: slices have different sizes ({Path(s.path).name}: "
                                   f"{s.columns} x {s.rows}, first: {infos[0].columns} x {infos[0].rows})")
    row, col = ori0[:3], ori0[3:]
    normal = np.cross(row, col)
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
            and abs(float(row @ col)) < 1e-3):
        raise DicomSeriesError(f"{where}: ImageOrientationPatient {list(ori0)} is not two orthonormal vectors")
    pos = np.array([s.position for s in infos])
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    slices = [infos[i] for i in order]
    pos, d = pos[order], d[order]
    gaps = np.diff(d)
    problems: List[str] = []
    duplicates = bool(np.any(gaps < GAP_ATOL))
    if duplicates:
        k = int(np.argmax(gaps < GAP_ATOL))
        problems.append(f"duplicate slice position {_num(d[k])} mm along the normal "
                        f"({Path(slices[k].path).name} and {Path(slices[k + 1].path).name})")
    real_gaps = gaps[gaps >= GAP_ATOL]
    gap = float(np.median(real_gaps)) if real_gaps.size else 0.0
    if real_gaps.size:
        tol = max(GAP_ATOL, GAP_RTOL * gap)
        uneven = np.abs(real_gaps - gap) > tol
        if np.any(uneven):
            ratios = real_gaps / gap
            missing = np.any((ratios > 1.5) & (np.abs(ratios - np.round(ratios)) < 0.05))
            kind = "missing slice(s)" if missing else "non-uniform slice spacing"
            shown = ", ".join(_num(g) for g in sorted(set(np.round(real_gaps, 3).tolist()))[:6])
            problems.append(f"{kind}: gaps of {shown} mm between slices (median {_num(gap)} mm)")
    lateral = (pos - pos[0]) - np.outer(d - d[0], normal)
    off = np.linalg.norm(lateral, axis=1)
    tilt = off > TILT_ATOL + TILT_SLOPE * np.abs(d - d[0])
    if np.any(tilt):
        k = int(np.argmax(off))
        angle = float(np.degrees(np.arctan2(off[k], abs(d[k] - d[0])))) if d[k] != d[0] else 90.0
        problems.append(f"tilted stack (gantry tilt about {_num(angle, 2)} degrees: slices shift sideways by "
                        f"up to {_num(off[k])} mm)")
    return SeriesGeometry(slices, normal, d, gap, problems, duplicates)


def _num(x: float, digits: int = 3) -> str:
    """A plain number for messages (no ``np.float64(...)``)."""
    return f"{float(x):.{digits}f}".rstrip("0").rstrip(".")


def read_series(folder: Path, files: Sequence[str], accept_nonuniform: bool = False) -> sitk.Image:
    """Read one series after checking its geometry; resample onto a uniform grid only when accepted.

    Raises:
        DicomSeriesError: a geometry problem and ``accept_nonuniform`` is false, or duplicate slices.
        ImageReadError: unreadable files.
    """
    geo = analyse_series(read_slice_infos(files), str(folder))
    if geo.problems:
        if geo.duplicates or not accept_nonuniform:
            hint = "" if geo.duplicates else "; pass --accept-nonuniform to resample it onto a uniform grid"
            raise DicomSeriesError(f"{folder}: DICOM series geometry: {'; '.join(geo.problems)}{hint}")
        img = _resample_uniform(geo, folder)
        log.warning("%s: %s; resampled onto a uniform %s mm grid (--accept-nonuniform)", folder,
                    "; ".join(geo.problems), _num(img.GetSpacing()[2]))
        return img
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([s.path for s in geo.slices])
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{folder}: cannot read DICOM series ({_last_line(exc)})") from exc
    if abs(img.GetSpacing()[2] - geo.gap) > max(GAP_ATOL, GAP_RTOL * geo.gap):
        # the checks above make this impossible; refuse rather than return an invented grid
        raise DicomSeriesError(f"{folder}: DICOM reader spacing {_num(img.GetSpacing()[2])} mm differs from the "
                               f"slice positions' {_num(geo.gap)} mm")
    return img


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _read_slice(path: str) -> sitk.Image:
    try:
        img = sitk.ReadImage(path, sitk.sitkFloat32)
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: cannot read DICOM slice ({_last_line(exc)})") from exc
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    return img


def _resample_uniform(geo: SeriesGeometry, folder: Path) -> sitk.Image:
    """Build a uniform volume: for each output slice, the two nearest input slices (along the normal) are
    moved onto its plane along the normal, resampled in-plane (which removes a tilt's sideways shift) and
    blended linearly by distance."""
    first = geo.slices[0]
    row, col = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    direction = np.stack([row, col, geo.normal], axis=1)  # columns: x, y, z axes
    d0, d1 = float(geo.distances[0]), float(geo.distances[-1])
    # the median gap, adjusted so whole steps span the stack exactly (first and last slice kept)
    steps = max(1, int(round((d1 - d0) / geo.gap)))
    gap = (d1 - d0) / steps
    nz = steps + 1
    spacing = (first.spacing[0], first.spacing[1], gap)
    origin0 = np.array(first.position)
    out = np.empty((nz, first.rows, first.columns), np.float32)
    fill = None
    cache: dict = {}

    def slice_img(i: int) -> sitk.Image:
        if i not in cache:
            if len(cache) > 4:  # slices are visited in order; keep only the last few
                cache.clear()
            cache[i] = _read_slice(geo.slices[i].path)
        return cache[i]

    for k in range(nz):
        dk = d0 + k * gap
        j = int(np.clip(np.searchsorted(geo.distances, dk), 1, len(geo.slices) - 1))
        lo, hi = j - 1, j
        span = geo.distances[hi] - geo.distances[lo]
        w = 0.0 if span <= 0 else float(np.clip((dk - geo.distances[lo]) / span, 0.0, 1.0))
        plane_origin = origin0 + (dk - d0) * geo.normal
        acc = np.zeros((first.rows, first.columns), np.float64)
        for i, wi in ((lo, 1.0 - w), (hi, w)):
            if wi == 0.0:
                continue
            src = slice_img(i)
            if fill is None:
                fill = float(sitk.GetArrayViewFromImage(src).min())
            moved = sitk.Image(src)
            shift = (dk - geo.distances[i]) * geo.normal
            moved.SetOrigin(tuple(float(v) for v in np.array(src.GetOrigin()) + shift))
            res = sitk.Resample(moved, [first.columns, first.rows, 1], sitk.Transform(), sitk.sitkLinear,
                                tuple(float(v) for v in plane_origin), spacing,
                                tuple(float(v) for v in direction.ravel()), fill, sitk.sitkFloat32)
            acc += wi * sitk.GetArrayViewFromImage(res)[0]
        out[k] = acc
    img = sitk.GetImageFromArray(out)
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetOrigin(tuple(float(v) for v in origin0))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img
