"""Reading and writing CT volumes and label maps through SimpleITK.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seg.nrrd), MetaImage (.mha, .mhd) and DICOM
series folders (the series with most slices, or one chosen by SeriesInstanceUID). Every reader raises a
:class:`~dvcl.errors.DVCLError` subclass with a one-line message naming the file, never a raw ITK trace.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import (
    DimensionError,
    GeometryMismatchError,
    ImageReadError,
    LabelValueError,
    NotCTError,
    OutputExistsError,
)
from dvcl.utils.atomic import atomic_path

log = logging.getLogger(__name__)

# ITK prints warnings (e.g. about NIfTI header fields) straight to stderr; errors still raise.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

PathLike = Union[str, Path]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Geometry tolerances: spacing/origin relative to the voxel size, direction cosines absolute.
SPACING_RTOL = 1e-3
ORIGIN_VOXEL_TOL = 1e-2
DIRECTION_ATOL = 1e-3


def image_suffix(path: PathLike) -> str:
    """The image extension of ``path`` (``.nii.gz`` counts as one), or ``''``."""
    name = Path(path).name.lower()
    for suf in IMAGE_SUFFIXES:
        if name.endswith(suf):
            return suf
    return ""


def strip_suffix(path: PathLike) -> str:
    """File name without its image extension (``case_01.nii.gz`` -> ``case_01``)."""
    name = Path(path).name
    suf = image_suffix(name)
    return name[: len(name) - len(suf)] if suf else Path(name).stem


def is_image_file(path: PathLike) -> bool:
    return Path(path).is_file() and bool(image_suffix(path))


def is_dicom_dir(path: PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p)))


def list_dicom_series(folder: PathLike) -> Dict[str, List[str]]:
    """SeriesInstanceUID -> sorted file names of every DICOM series in ``folder`` (not recursive)."""
    folder = str(folder)
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)}


def read_image(path: PathLike, series_uid: Optional[str] = None) -> sitk.Image:
    """Read a 3D scalar volume from a file or a DICOM folder.

    Args:
        path: image file, or folder holding a DICOM series.
        series_uid: for DICOM folders with several series, which one; default is the one with most files.

    Raises:
        ImageReadError: missing path, unreadable/corrupt file, unknown format, empty DICOM folder.
        DimensionError: the image is not 3D scalar.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found")
    if p.is_dir():
        img = _read_dicom_series(p, series_uid)
    else:
        if not image_suffix(p) and not _looks_like_dicom(p):
            raise ImageReadError(f"{p}: not a supported image file (use NIfTI, NRRD, MHA/MHD or a DICOM folder)")
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise ImageReadError(f"{p}: cannot read image ({_first_line(exc)})") from exc
        if image_suffix(p) in (".nii", ".nii.gz"):
            _check_nifti_complete(p, img)
    check_volume(img, p)
    return img


def _check_nifti_complete(p: Path, img: sitk.Image) -> None:
    """ITK's NIfTI reader zero-fills a truncated file without an error; detect truncation ourselves.

    The voxel data must hold size x bytes-per-voxel bytes after the header's vox_offset. For .nii.gz the
    stream is decompressed (counting bytes, not keeping them), which also catches a corrupt gzip stream.
    """
    import gzip
    import struct
    import zlib

    nbytes = int(np.prod(img.GetSize())) * img.GetNumberOfComponentsPerPixel() * _bytes_per_component(img)
    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rb") as fh:
            header = fh.read(352)
            if len(header) < 352:
                raise ImageReadError(f"{p}: truncated NIfTI header")
            sizeof_hdr = struct.unpack("<i", header[:4])[0]
            endian = "<" if sizeof_hdr in (348, 540) else ">"
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0]) if sizeof_hdr in (348, 1543569408) \
                else int(struct.unpack(endian + "q", header[168:176])[0])
            total = len(header)
            while True:
                chunk = fh.read(1 << 22)
                if not chunk:
                    break
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise ImageReadError(f"{p}: corrupt or truncated file ({exc})") from exc
    if total < vox_offset + nbytes:
        raise ImageReadError(f"{p}: truncated file ({total} bytes, expected {vox_offset + nbytes})")


def _bytes_per_component(img: sitk.Image) -> int:
    return int(sitk.GetArrayViewFromImage(img).dtype.itemsize)  # a view: no copy of the voxels


def _looks_like_dicom(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom_series(folder: Path, series_uid: Optional[str]) -> sitk.Image:
    series = list_dicom_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: folder holds no DICOM series")
    if series_uid is None:
        series_uid = max(series, key=lambda uid: len(series[uid]))
        if len(series) > 1:
            log.info("%s: %d series, reading the largest (%s)", folder, len(series), series_uid)
    elif series_uid not in series:
        raise ImageReadError(f"{folder}: no DICOM series with SeriesInstanceUID {series_uid}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[series_uid])
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{folder}: cannot read DICOM series ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with a file:line banner; the description is the most useful line.
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def check_volume(img: sitk.Image, path: PathLike) -> None:
    """Raise :class:`DimensionError` unless ``img`` is a 3D scalar volume with more than one voxel per axis."""
    if img.GetDimension() != 3:
        raise DimensionError(f"{path}: expected a 3D volume, got a {img.GetDimension()}D image")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DimensionError(f"{path}: expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components")
    if min(img.GetSize()) < 1:
        raise DimensionError(f"{path}: empty image of size {img.GetSize()}")


def check_ct_intensities(img: sitk.Image, path: PathLike) -> None:
    """Raise :class:`NotCTError` when intensities cannot be CT Hounsfield units.

    CT of the body always contains fat (about -100 HU) or air (-1000 HU), so a volume whose minimum is
    above -50 is not in HU (MR, PET, or CT stored without its rescale intercept); a constant volume
    carries no information at all.
    """
    stats = sitk.StatisticsImageFilter()
    stats.Execute(img)
    lo, hi = stats.GetMinimum(), stats.GetMaximum()
    if hi - lo < 1e-6:
        raise NotCTError(f"{path}: image is constant ({lo:g} everywhere), not a CT scan")
    if lo > -50:
        raise NotCTError(
            f"{path}: intensities {lo:g}..{hi:g} are not CT Hounsfield units (no air or fat below -50 HU); "
            "is this an MR image or CT without rescale intercept?"
        )


def same_geometry(a: sitk.Image, b: sitk.Image) -> Optional[str]:
    """None when ``a`` and ``b`` share size, spacing, origin and direction (within tolerance), else why not."""
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} differs from the image's {a.GetSize()}"
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=SPACING_RTOL, atol=0):
        return f"spacing {tuple(np.round(sb, 4))} differs from the image's {tuple(np.round(sa, 4))}"
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if np.any(np.abs(oa - ob) > ORIGIN_VOXEL_TOL * sa.min() + 1e-4):
        return f"origin {tuple(np.round(ob, 3))} differs from the image's {tuple(np.round(oa, 3))}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=DIRECTION_ATOL):
        return "direction differs from the image's"
    return None


def check_same_geometry(image: sitk.Image, label: sitk.Image, label_path: PathLike) -> None:
    why = same_geometry(image, label)
    if why is not None:
        raise GeometryMismatchError(f"{label_path}: label map does not match its image: {why}")


def read_label(
    path: PathLike,
    image: Optional[sitk.Image] = None,
    allowed_values: Optional[Sequence[int]] = None,
    remap: Optional[Dict[int, int]] = None,
) -> sitk.Image:
    """Read a label map, check it against its image and the label table, remap raw values.

    Args:
        path: label file (NIfTI/NRRD/MHA; .seg.nrrd with a single layer).
        image: the image it belongs to; its geometry must match.
        allowed_values: values the file may contain (0 included); others raise :class:`LabelValueError`.
        remap: raw value -> class id (e.g. MMWHS 205 -> 1); values absent from the map become errors.

    Returns:
        A ``sitkUInt8`` label map on the image's grid, with class ids.
    """
    lab = read_image(path)
    if image is not None:
        check_same_geometry(image, lab, path)
    arr = sitk.GetArrayViewFromImage(lab)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LabelValueError(f"{path}: label map holds non-integer values")
    values = np.unique(arr).astype(np.int64)
    if allowed_values is not None:
        bad = sorted(set(values.tolist()) - set(int(v) for v in allowed_values))
        if bad:
            shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
            raise LabelValueError(
                f"{path}: label values {shown} are not in the label table (allowed: "
                f"{_ranges(sorted(int(v) for v in allowed_values))})"
            )
    out_arr = np.asarray(arr).astype(np.int64)
    if remap:
        lut = np.zeros(int(max(values.max(), max(remap))) + 1, dtype=np.int64)
        for raw, cid in remap.items():
            lut[raw] = cid
        out_arr = lut[out_arr]
    if out_arr.min() < 0 or out_arr.max() > 255:
        raise LabelValueError(f"{path}: label values must lie in 0..255")
    out = sitk.GetImageFromArray(out_arr.astype(np.uint8))
    out.CopyInformation(lab)
    return out


def _ranges(values: List[int]) -> str:
    if values and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(str(v) for v in values)


def write_image(img: sitk.Image, path: PathLike, overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``img`` atomically; refuse to overwrite an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    if not image_suffix(path):
        raise ImageReadError(f"{path}: unknown output format (use .nii.gz, .nrrd, .seg.nrrd or .mha)")
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress)
    return path
