"""Reading and writing CT volumes and label maps through SimpleITK.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr, .seg.nrrd), MetaImage (.mha, .mhd) and DICOM
series folders (the series with most slices, or one chosen by SeriesInstanceUID). Every reader raises a
:class:`~dvcl.errors.DVCLError` subclass with a one-line message naming the file, never a raw ITK trace.
"""

from __future__ import annotations

import contextlib
import locale
import logging
import os
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import (
    DicomSeriesError,
    DimensionError,
    GeometryMismatchError,
    ImageReadError,
    LabelValueError,
    NotCTError,
    OutputExistsError,
    OutputWriteError,
    ResourceLimitError,
)
from dvcl.utils.atomic import atomic_path

log = logging.getLogger(__name__)

# ITK prints warnings (e.g. about NIfTI header fields) straight to stderr; errors still raise.
sitk.ProcessObject.SetGlobalWarningDisplay(False)

PathLike = Union[str, Path]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Voxel budget of one image (headers are checked against it before any pixel is read); ``DVCL_MAX_VOXELS``
#: raises it. 2**30 voxels is a 1024 x 1024 x 1024 volume, 4 GiB as float32.
MAX_VOXELS = int(os.environ.get("DVCL_MAX_VOXELS", str(2**30)))
#: Budget of the resampled (network) grid, which is held several times over (image, class probabilities).
MAX_NETWORK_VOXELS = MAX_VOXELS // 4
#: The best deflate (gzip) ratio is about 1032:1; a compressed file smaller than data/1100 must be truncated.
MAX_COMPRESSION_RATIO = 1100
#: Formats whose pixel data live in a second file (the header alone says nothing about truncation).
DETACHED_SUFFIXES = (".nhdr", ".mhd")

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


_LOCALE_LOCK = threading.RLock()


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Restore the C locale after GDCM: reading a DICOM series switches the process's LC_CTYPE to "C", after
    which every text file Python opens without an explicit encoding is ASCII (a report with "±" then fails).

    The locale is one per process and ``setlocale`` is not thread-safe: a call in one thread can free the
    string another thread's call is returning (seen as a ``UnicodeDecodeError`` from ``setlocale``). Our own
    callers are serialised by a lock; other libraries (OpenVINO sets and restores the locale while it loads
    a model) are not, so GDCM reads belong on the thread that runs the model, never in a read-ahead thread
    (see :func:`needs_gdcm`). Only GDCM reads use this: NIfTI/NRRD/MHA never touch the locale.
    """
    with _LOCALE_LOCK:
        saved = locale.setlocale(locale.LC_ALL)
        try:
            yield
        finally:
            # ValueError: the name came back garbled from a concurrent setlocale elsewhere; the locale
            # itself was set, so a failed read of the echo must not fail the image read it guards.
            with contextlib.suppress(locale.Error, ValueError):
                locale.setlocale(locale.LC_ALL, saved)


def needs_gdcm(path: PathLike) -> bool:
    """Whether reading ``path`` goes through GDCM (a DICOM folder or a single DICOM file), and so touches the
    process locale (:func:`keep_locale`)."""
    p = Path(path)
    return p.is_dir() or not image_suffix(p)


def is_dicom_dir(path: PathLike) -> bool:
    p = Path(path)
    if not p.is_dir():
        return False
    with keep_locale():
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p)))


def list_dicom_series(folder: PathLike) -> Dict[str, List[str]]:
    """SeriesInstanceUID -> sorted file names of every DICOM series in ``folder`` (not recursive)."""
    folder = str(folder)
    with keep_locale():
        return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
                for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)}


def read_image(path: PathLike, series_uid: Optional[str] = None, accept_nonuniform: bool = False) -> sitk.Image:
    """Read a 3D scalar volume from a file or a DICOM folder.

    The header is read first and checked against the file size and the voxel budget (:data:`MAX_VOXELS`), so
    a tiny file claiming a huge volume fails in milliseconds instead of allocating gigabytes.

    Args:
        path: image file, or folder holding a DICOM series.
        series_uid: for DICOM folders with several series, which one (required when there are several).
        accept_nonuniform: DICOM only: resample a series with missing/uneven/tilted slices onto a uniform
            grid (with a warning) instead of refusing it.

    Raises:
        ImageReadError: missing path, unreadable/corrupt/truncated file, unknown format, empty DICOM folder.
        DicomSeriesError: a DICOM series with geometry problems, or several series and none chosen.
        DimensionError: the image is not 3D scalar with at least 2 voxels per axis.
        ResourceLimitError: the header claims more voxels than the budget.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found")
    if p.is_dir():
        img = _read_dicom_series(p, series_uid, accept_nonuniform)
    else:
        if not image_suffix(p) and not _looks_like_dicom(p):
            raise ImageReadError(f"{p}: not a supported image file (use NIfTI, NRRD, MHA/MHD or a DICOM folder)")
        if image_suffix(p) in (".nii", ".nii.gz"):
            check_nifti_header(p)
        guard = keep_locale if needs_gdcm(p) else contextlib.nullcontext  # a single DICOM file: GDCM too
        with guard():
            header = read_header(p)
        check_header(header, p)
        try:
            with guard():
                img = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise ImageReadError(f"{p}: cannot read image ({_first_line(exc)})") from exc
        except MemoryError as exc:
            raise ResourceLimitError(f"{p}: not enough memory to read the image") from exc
        if image_suffix(p) in (".nii", ".nii.gz"):
            _check_nifti_complete(p, _data_bytes(img))
    check_volume(img, p)
    check_geometry_values(img, p)
    return img


#: Largest magnitude accepted for NIfTI geometry fields (mm); beyond it a header is garbage, not a scan.
NIFTI_GEOMETRY_LIMIT = 1e7


def check_nifti_header(p: Path) -> None:
    """Check a NIfTI-1 header's geometry fields before ITK sees them.

    ITK's NIfTI reader orthogonalises the qform/sform matrices iteratively; with infinite or absurd entries it
    never returns (found by the property tests), so dimensions, voxel sizes, quaternion and sform rows must
    be finite and plausible first. NIfTI-2 headers (540 bytes) are left to ITK.
    """
    import gzip
    import struct
    import zlib

    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rb") as fh:
            hdr = fh.read(348)
    except (EOFError, OSError, zlib.error) as exc:
        raise ImageReadError(f"{p}: corrupt or truncated file ({exc})") from exc
    if len(hdr) < 348:
        raise ImageReadError(f"{p}: truncated NIfTI header ({len(hdr)} of 348 bytes)")
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", hdr[:4])[0] == 348:
            break
    else:
        return  # NIfTI-2 or not NIfTI at all: ITK decides
    dims = struct.unpack(endian + "8h", hdr[40:56])
    if not 1 <= dims[0] <= 7 or any(d < 1 for d in dims[1:dims[0] + 1]):
        raise ImageReadError(f"{p}: invalid NIfTI header: dimensions {list(dims[:max(1, min(dims[0], 7)) + 1])}")
    pixdim = struct.unpack(endian + "8f", hdr[76:108])
    bad = [v for v in pixdim[1:min(dims[0], 3) + 1] if not np.isfinite(v) or v == 0 or abs(v) > NIFTI_GEOMETRY_LIMIT]
    if bad:
        raise ImageReadError(f"{p}: invalid NIfTI header: voxel size {_fmt(pixdim[1:min(dims[0], 3) + 1])}")
    qform_code, sform_code = struct.unpack(endian + "2h", hdr[252:256])
    fields = []
    if qform_code > 0:
        fields += list(struct.unpack(endian + "6f", hdr[256:280]))
    if sform_code > 0:
        fields += list(struct.unpack(endian + "12f", hdr[280:328]))
    if any(not np.isfinite(v) or abs(v) > NIFTI_GEOMETRY_LIMIT for v in fields):
        raise ImageReadError(f"{p}: invalid NIfTI header: orientation (qform/sform) holds infinite or absurd values")


def read_header(path: PathLike) -> sitk.ImageFileReader:
    """The image header (size, spacing, pixel type, ...) without the pixel data."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: cannot read image header ({_first_line(exc)})") from exc
    return reader


def _header_bytes(reader: sitk.ImageFileReader) -> Tuple[int, int]:
    """(voxels, bytes of pixel data) a header claims."""
    nvox = 1
    for n in reader.GetSize():
        nvox *= int(n)
    probe = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()) if reader.GetDimension() in (2, 3, 4) \
        else None
    itemsize = _bytes_per_component(probe) if probe is not None else 1
    return nvox, nvox * max(1, reader.GetNumberOfComponents()) * itemsize


def check_header(reader: sitk.ImageFileReader, path: PathLike) -> None:
    """Refuse a header whose claims cannot be true or cannot be afforded, before reading pixels.

    Raises:
        ResourceLimitError: more voxels than :data:`MAX_VOXELS`.
        ImageReadError: the file is far too small for the data its header announces (truncated), or the
            header holds a non-positive or non-finite spacing.
    """
    p = Path(path)
    nvox, nbytes = _header_bytes(reader)
    size = tuple(int(n) for n in reader.GetSize())
    if nvox > MAX_VOXELS:
        raise ResourceLimitError(
            f"{p}: header claims {' x '.join(str(n) for n in size)} = {nvox:,} voxels, more than the limit of "
            f"{MAX_VOXELS:,} (set DVCL_MAX_VOXELS to raise it)"
        )
    spacing = reader.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ImageReadError(f"{p}: invalid voxel spacing {_fmt(spacing)} in the header")
    if image_suffix(p) in DETACHED_SUFFIXES or _bzip2_nrrd(p):
        return  # the data sit in another file, or bzip2 (unbounded ratio): the reader checks them
    fsize = p.stat().st_size
    if fsize * MAX_COMPRESSION_RATIO < nbytes or (image_suffix(p) == ".nii" and fsize < nbytes):
        raise ImageReadError(
            f"{p}: truncated file: the header announces {' x '.join(str(n) for n in size)} voxels "
            f"({nbytes:,} bytes) but the file has {fsize:,} bytes"
        )


def _bzip2_nrrd(p: Path) -> bool:
    """An NRRD whose data are bzip2-compressed (ratios far beyond gzip's 1032:1 are possible)."""
    if image_suffix(p) not in (".nrrd", ".seg.nrrd"):
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096).lower()
    except OSError:
        return False
    return b"encoding: bz" in head or b"encoding:bz" in head


def check_geometry_values(img: sitk.Image, path: PathLike) -> None:
    """Spacing positive and finite, origin finite, direction a proper rotation (det +-1)."""
    sp, org = np.array(img.GetSpacing()), np.array(img.GetOrigin())
    if not np.all(np.isfinite(sp)) or sp.min() <= 0:
        raise ImageReadError(f"{path}: invalid voxel spacing {_fmt(sp)}")
    if not np.all(np.isfinite(org)):
        raise ImageReadError(f"{path}: invalid origin {_fmt(org)}")
    d = np.array(img.GetDirection(), dtype=float).reshape(img.GetDimension(), img.GetDimension())
    if not np.all(np.isfinite(d)) or not np.allclose(d @ d.T, np.eye(len(d)), atol=1e-3):
        raise ImageReadError(f"{path}: direction matrix is not a rotation (axes not orthonormal)")


def _fmt(values: Sequence[float]) -> str:
    """Plain numbers for messages: ``(1.25, 1.25, 2.5)``, never ``np.float64(1.25)``."""
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _data_bytes(img: sitk.Image) -> int:
    return int(np.prod(img.GetSize())) * img.GetNumberOfComponentsPerPixel() * _bytes_per_component(img)


def _check_nifti_complete(p: Path, nbytes: int) -> None:
    """ITK's NIfTI reader zero-fills a truncated file without an error; detect truncation ourselves.

    The voxel data must hold ``nbytes`` (size x bytes-per-voxel) after the header's vox_offset. For .nii.gz
    the stream is decompressed (counting bytes, not keeping them), which also catches a corrupt gzip stream.
    Used on every NIfTI read and, through :func:`verify_image_file`, on every NIfTI write.
    """
    import gzip
    import struct
    import zlib

    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rb") as fh:
            header = fh.read(352)
            if len(header) < 348:
                raise ImageReadError(f"{p}: truncated NIfTI header")
            sizeof_hdr = struct.unpack("<i", header[:4])[0]
            endian = "<" if sizeof_hdr in (348, 540) else ">"
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0]) if sizeof_hdr in (348, 1543569408) \
                else int(struct.unpack(endian + "q", header[168:176])[0])
            total = len(header)
            if opener is gzip.open and _gzip_isize(p) == (vox_offset + nbytes) % (1 << 32):
                return  # the gzip trailer records exactly the expected length: no need to inflate it all
            while True:
                chunk = fh.read(1 << 22)
                if not chunk:
                    break
                total += len(chunk)
    except (EOFError, OSError, zlib.error, struct.error) as exc:
        raise ImageReadError(f"{p}: corrupt or truncated file ({exc})") from exc
    if total < vox_offset + nbytes:
        raise ImageReadError(f"{p}: truncated file ({total} bytes, expected {vox_offset + nbytes})")


def _gzip_isize(p: Path) -> int:
    """The uncompressed length (mod 2**32) a gzip file's trailer records; -1 when unreadable.

    A truncated or short-written file ends mid-stream, so its last four bytes are deflate data that match the
    expected length with probability 2**-32; reading them costs microseconds where inflating a 512x512x300
    volume costs seconds (it was the largest part of reading an input for `dvcl segment`)."""
    try:
        with open(p, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            tail = fh.read(4)
    except OSError:
        return -1
    return int.from_bytes(tail, "little") if len(tail) == 4 else -1


def _bytes_per_component(img: sitk.Image) -> int:
    return int(sitk.GetArrayViewFromImage(img).dtype.itemsize)  # a view: no copy of the voxels


def _looks_like_dicom(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom_series(folder: Path, series_uid: Optional[str], accept_nonuniform: bool = False) -> sitk.Image:
    from dvcl.io.dicom import read_series

    series = list_dicom_series(folder)
    if not series:
        raise ImageReadError(f"{folder}: folder holds no DICOM series")
    if series_uid is None:
        if len(series) > 1:
            listing = ", ".join(f"{uid} ({len(files)} files)" for uid, files in
                                sorted(series.items(), key=lambda kv: -len(kv[1])))
            raise DicomSeriesError(f"{folder}: folder holds {len(series)} DICOM series ({listing}); "
                                   "put each series in its own folder")
        series_uid = next(iter(series))
    elif series_uid not in series:
        raise ImageReadError(f"{folder}: no DICOM series with SeriesInstanceUID {series_uid}")
    files = series[series_uid]
    for f in files:
        if os.path.getsize(f) == 0:
            raise ImageReadError(f"{f}: empty DICOM file")
    with keep_locale():
        return read_series(folder, files, accept_nonuniform)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with a file:line banner; the description is the most useful line.
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def check_volume(img: sitk.Image, path: PathLike) -> None:
    """Raise :class:`DimensionError` unless ``img`` is a 3D scalar volume with at least 2 voxels per axis.

    One slice is not a volume: resampling and 3D windows need extent along every axis.
    """
    if img.GetDimension() != 3:
        raise DimensionError(f"{path}: expected a 3D volume, got a {img.GetDimension()}D image")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DimensionError(f"{path}: expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components")
    if min(img.GetSize()) < 2:
        raise DimensionError(f"{path}: image of size {' x '.join(str(n) for n in img.GetSize())} is not a 3D "
                             "volume (at least 2 voxels per axis needed)")


#: What counts as CT (docs/bad_inputs.md): finite values, not constant, and a minimum below -50 HU
#: (body CT always holds fat at about -100 HU or air at -1000 HU).
CT_MIN_BELOW_HU = -50.0


def check_ct_intensities(img: sitk.Image, path: PathLike) -> None:
    """Raise :class:`NotCTError` when intensities cannot be CT Hounsfield units.

    CT of the body always contains fat (about -100 HU) or air (-1000 HU), so a volume whose minimum is
    above -50 is not in HU (MR, PET, or CT stored without its rescale intercept); a constant volume
    carries no information at all; NaN or infinite values are never CT.
    """
    arr = sitk.GetArrayViewFromImage(img)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise NotCTError(f"{path}: image holds NaN or infinite values, not a CT scan")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(img)
    lo, hi = float(stats.GetMinimum()), float(stats.GetMaximum())
    if hi - lo < 1e-6:
        raise NotCTError(f"{path}: image is constant ({lo:g} everywhere), not a CT scan")
    if lo > CT_MIN_BELOW_HU:
        raise NotCTError(
            f"{path}: intensities {lo:g}..{hi:g} are not CT Hounsfield units (no air or fat below "
            f"{CT_MIN_BELOW_HU:g} HU); is this an MR image or CT without rescale intercept?"
        )


def same_geometry(a: sitk.Image, b: sitk.Image) -> Optional[str]:
    """None when ``a`` and ``b`` share size, spacing, origin and direction (within tolerance), else why not."""
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} differs from the image's {a.GetSize()}"
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if not np.allclose(sa, sb, rtol=SPACING_RTOL, atol=0):
        return f"spacing {_fmt(np.round(sb, 4))} differs from the image's {_fmt(np.round(sa, 4))}"
    oa, ob = np.array(a.GetOrigin()), np.array(b.GetOrigin())
    if np.any(np.abs(oa - ob) > ORIGIN_VOXEL_TOL * sa.min() + 1e-4):
        return f"origin {_fmt(np.round(ob, 3))} differs from the image's {_fmt(np.round(oa, 3))}"
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
    """Write ``img`` through the verified atomic path; refuse to overwrite an existing file unless ``overwrite``.

    The temporary file is read back (:func:`verify_image_file`) before it takes the final name, because ITK's
    NIfTI writer reports a full disk only on stderr ("wrote only 0 of N bytes") and returns normally.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (use --overwrite to replace it)")
    suffix = image_suffix(path)
    if not suffix:
        raise ImageReadError(f"{path}: unknown output format (use .nii.gz, .nrrd, .seg.nrrd or .mha)")
    if path.is_dir():
        raise OutputWriteError(f"{path}: is a folder, cannot write an image there")
    with atomic_path(path, verify=lambda tmp: verify_image_file(tmp, img)) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            raise OutputWriteError(f"cannot write {path}: {_first_line(exc)} (disk full or folder not "
                                   "writable?)") from exc
    return path


#: Written files up to this many bytes of pixel data are read back completely, larger ones header + length.
FULL_READBACK_BYTES = 64 * 2**20


def verify_image_file(path: PathLike, expected: sitk.Image) -> None:
    """Check a just-written image file: header matches ``expected`` and the pixel data is all there.

    NIfTI: header read back, then the (decompressed) byte count checked (also proves gzip integrity).
    Other formats: header read back; small files are read back completely.

    Raises:
        OutputWriteError: the file does not hold what was written.
    """
    p = Path(path)
    try:
        header = read_header(p)
    except ImageReadError as exc:
        raise OutputWriteError("the written file has no readable header") from exc
    if tuple(header.GetSize()) != tuple(expected.GetSize()):
        raise OutputWriteError(f"the written header says size {tuple(header.GetSize())}, "
                               f"expected {tuple(expected.GetSize())}")
    nbytes = _data_bytes(expected)
    if image_suffix(p) in (".nii", ".nii.gz"):
        try:
            _check_nifti_complete(p, nbytes)
        except ImageReadError as exc:
            raise OutputWriteError("the written file is incomplete") from exc
    elif nbytes <= FULL_READBACK_BYTES or image_suffix(p) in DETACHED_SUFFIXES:
        try:
            sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise OutputWriteError(f"the written file does not read back ({_first_line(exc)})") from exc
