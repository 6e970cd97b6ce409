"""The paper's preprocessing, step by step, and its inverse.

Order [given, METHOD.md section 1]:
  1. reorient to the canonical "LPI" orientation (``SimpleITK.DICOMOrient``; see ``orient_canonical``);
  2. clip intensities to [-325, 325] HU;
  3. resample to 1.25 x 1.25 x 2.5 mm (x, y, z): image linear, label nearest-neighbour;
  4. normalise with the volume's 0.5th / 99.5th percentiles: (x - p0.5) / (p99.5 - p0.5).

The inverse maps a network-grid prediction back onto the original grid (size, spacing, origin and
direction), nearest-neighbour for labels and linear for probabilities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from dvcl.preprocessing.geometry import GeometryRecord, Grid

#: SimpleITK's orientation letters name the direction each index axis points *towards* (the DICOM
#: convention: "LPS" is the identity direction). "LPI": x towards Left, y towards Posterior, z towards
#: Inferior, i.e. direction diag(1, 1, -1) for an axis-aligned scan.
CANONICAL_ORIENTATION = "LPI"


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing parameters; defaults are the paper's [given] values."""

    orientation: str = CANONICAL_ORIENTATION
    clip: Tuple[float, float] = (-325.0, 325.0)
    spacing: Tuple[float, float, float] = (1.25, 1.25, 2.5)  # (x, y, z) in mm
    percentiles: Tuple[float, float] = (0.5, 99.5)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(
            orientation=d.get("orientation", CANONICAL_ORIENTATION),
            clip=tuple(d.get("clip", (-325.0, 325.0))),
            spacing=tuple(d.get("spacing", (1.25, 1.25, 2.5))),
            percentiles=tuple(d.get("percentiles", (0.5, 99.5))),
        )


#: Pixel types that hold the paper's clip range [-325, 325] exactly (clamped before the float cast).
_WIDE_SIGNED_INTS = (sitk.sitkInt16, sitk.sitkInt32, sitk.sitkInt64)


def orient_canonical(img: sitk.Image, orientation: str = CANONICAL_ORIENTATION) -> sitk.Image:
    """Permute/flip axes (no interpolation) so the index axes point as ``orientation`` says."""
    return sitk.DICOMOrient(img, orientation)


def target_grid(oriented: sitk.Image, spacing: Tuple[float, float, float]) -> Grid:
    """The resampled grid: same origin and direction, new spacing, and enough voxels that its last voxel
    centre reaches at least as far as the original's (so every original voxel has a neighbour)."""
    size = tuple(
        max(1, int(math.ceil((n - 1) * s / t - 1e-6)) + 1)
        for n, s, t in zip(oriented.GetSize(), oriented.GetSpacing(), spacing)
    )
    return Grid(size, tuple(float(s) for s in spacing), tuple(oriented.GetOrigin()), tuple(oriented.GetDirection()))


def check_resample_budget(img: sitk.Image, grid: Grid) -> None:
    """Refuse a network grid larger than :data:`dvcl.io.images.MAX_NETWORK_VOXELS` before allocating it.

    An implausible header spacing (30 mm instead of 3 mm) would otherwise turn a small file into a resampled
    volume of many GiB and end in an allocation traceback or an OOM kill.
    """
    from dvcl.errors import ResourceLimitError
    from dvcl.io.images import MAX_NETWORK_VOXELS

    n = math.prod(grid.size)
    if n > MAX_NETWORK_VOXELS:
        sp = ", ".join(f"{float(v):g}" for v in img.GetSpacing())
        raise ResourceLimitError(
            f"resampling {' x '.join(str(v) for v in img.GetSize())} voxels of ({sp}) mm to "
            f"{' x '.join(f'{float(v):g}' for v in grid.spacing)} mm would give {n:,} voxels, more than the limit "
            f"of {MAX_NETWORK_VOXELS:,}; is the voxel spacing in the header right?"
        )


def _resample(img: sitk.Image, grid: Grid, interpolator: int, default: float, pixel_type: int) -> sitk.Image:
    return sitk.Resample(img, list(grid.size), sitk.Transform(), interpolator, grid.origin, grid.spacing,
                         grid.direction, default, pixel_type)


def preprocess_image(img: sitk.Image, cfg: Optional[PreprocessConfig] = None) -> Tuple[np.ndarray, GeometryRecord]:
    """Steps 1-4 for an image.

    Returns:
        ``(array, record)``: float32 array of shape (Z, Y, X) on the network grid, and the record needed to
        preprocess the matching label map and to restore predictions.
    """
    cfg = cfg or PreprocessConfig()
    original = Grid.of(img)
    lo, hi = cfg.clip
    if img.GetPixelID() in _WIDE_SIGNED_INTS and float(lo).is_integer() and float(hi).is_integer():
        # integer HU (most CT files): orienting and clamping before the float cast gives bit-identical values
        # and saves two full-size float32 copies (about 0.6 s of CPU on a 512 x 512 x 300 CT)
        oriented = orient_canonical(img, cfg.orientation)
        clipped = sitk.Clamp(oriented, oriented.GetPixelID(), lo, hi)
    else:
        oriented = orient_canonical(sitk.Cast(img, sitk.sitkFloat32), cfg.orientation)
        clipped = sitk.Clamp(oriented, sitk.sitkFloat32, lo, hi)
    grid = target_grid(oriented, cfg.spacing)
    check_resample_budget(oriented, grid)
    resampled = _resample(clipped, grid, sitk.sitkLinear, lo, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(resampled)
    arr = normalise_percentiles(arr, cfg.percentiles)
    return arr, GeometryRecord(original=original, resampled=grid)


def normalise_percentiles(arr: np.ndarray, percentiles: Tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """(x - p_lo) / (p_hi - p_lo) with the volume's own percentiles; float32 in, float32 out, in place."""
    # A strided subsample keeps the percentile cost bounded on large volumes without changing the result
    # materially (the clipped histogram is coarse); below 4M voxels every voxel is used.
    flat = arr.reshape(-1)
    step = max(1, flat.size // 4_000_000)
    p_lo, p_hi = np.percentile(flat[::step], percentiles)
    scale = float(p_hi - p_lo)
    if scale <= 1e-6:
        scale = 1.0
    arr -= np.float32(p_lo)
    arr *= np.float32(1.0 / scale)
    return arr


def preprocess_label(label: sitk.Image, record: GeometryRecord, cfg: Optional[PreprocessConfig] = None) -> np.ndarray:
    """Steps 1 and 3 for a label map already on its image's grid: uint8 array (Z, Y, X), nearest neighbour."""
    cfg = cfg or PreprocessConfig()
    oriented = orient_canonical(sitk.Cast(label, sitk.sitkUInt8), cfg.orientation)
    resampled = _resample(oriented, record.resampled, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled)


def restore_label(arr: np.ndarray, record: GeometryRecord) -> sitk.Image:
    """Map a (Z, Y, X) class-id array on the network grid back to the original image geometry.

    The result has exactly the original size, spacing, origin and direction (nearest neighbour).
    """
    expected = tuple(reversed(record.resampled.size))
    if tuple(arr.shape) != expected:
        raise ValueError(f"prediction shape {arr.shape} does not match the network grid {expected}")
    net = record.resampled.apply(sitk.GetImageFromArray(np.ascontiguousarray(arr.astype(np.uint8))))
    out = _resample(net, record.original, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return record.original.apply(out)


def restore_probabilities(prob: np.ndarray, record: GeometryRecord, min_prob: float = 0.05) -> sitk.Image:
    """Resample class probabilities (C, Z, Y, X) linearly onto the original grid and take the argmax there.

    Smoother organ borders than :func:`restore_label` when the original grid is finer than the network's.
    Background (class 0) is resampled over the whole grid; every other class only over the original-grid box
    that covers its voxels with probability >= ``min_prob`` (a class cannot win the argmax elsewhere), which
    makes restoring a 512 x 512 x 300 CT several times faster than resampling every class everywhere.
    """
    if prob.ndim != 4:
        raise ValueError(f"probabilities must be (C, Z, Y, X), got shape {prob.shape}")
    orig = record.original
    full = Grid(orig.size, orig.spacing, orig.origin, orig.direction)
    best = _resample_channel(prob[0], record, full, default=1.0)
    arg = np.zeros(best.shape, np.uint8)
    net = record.resampled.reference_image()
    for c in range(1, prob.shape[0]):
        box = _class_box(prob[c] >= min_prob, net, orig)
        if box is None:
            continue
        (x0, y0, z0), (x1, y1, z1) = box
        sub = Grid((x1 - x0, y1 - y0, z1 - z0), orig.spacing,
                   tuple(full.reference_image().TransformIndexToPhysicalPoint((x0, y0, z0))), orig.direction)
        res = _resample_channel(prob[c], record, sub, default=0.0)
        view_best = best[z0:z1, y0:y1, x0:x1]
        better = res > view_best
        view_best[better] = res[better]
        arg[z0:z1, y0:y1, x0:x1][better] = c
    out = sitk.GetImageFromArray(arg)
    return record.original.apply(out)


def _resample_channel(channel: np.ndarray, record: GeometryRecord, target: Grid, default: float) -> np.ndarray:
    img = record.resampled.apply(sitk.GetImageFromArray(np.ascontiguousarray(channel, dtype=np.float32)))
    return sitk.GetArrayFromImage(_resample(img, target, sitk.sitkLinear, default, sitk.sitkFloat32))


def _class_box(mask: np.ndarray, net: sitk.Image, orig: Grid):
    """The original-grid index box ((x0, y0, z0), (x1, y1, z1)), end exclusive, covering ``mask`` (network grid)
    with a margin of 2 network voxels, or None when the mask is empty. Works for any direction matrices: the
    8 corners of the network-grid box are mapped through physical space and the box is their hull."""
    nz = np.nonzero(mask)
    if not len(nz[0]):
        return None
    lo = [int(a.min()) - 2 for a in nz]  # z, y, x
    hi = [int(a.max()) + 2 for a in nz]
    ref = orig.reference_image()
    corners = []
    for z in (lo[0], hi[0]):
        for y in (lo[1], hi[1]):
            for x in (lo[2], hi[2]):
                pt = net.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))
                corners.append(ref.TransformPhysicalPointToContinuousIndex(pt))
    corners = np.array(corners)
    start = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, np.array(orig.size))
    if np.any(stop <= start):
        return None
    return tuple(int(v) for v in start), tuple(int(v) for v in stop)
