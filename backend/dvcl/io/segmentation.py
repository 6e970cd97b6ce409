"""Label maps on disk: NIfTI/NRRD/MHA, and 3D Slicer ``.seg.nrrd`` with per-segment names and colors.

A ``.seg.nrrd`` is an ordinary NRRD label volume whose header carries, per segment ``i``, the key-value
pairs ``Segment<i>_ID/_Name/_Color/_LabelValue/_Layer/_Extent/_Tags`` that Slicer's segmentation
storage node reads; with them a prediction opens in Slicer as named, colored segments instead of an
anonymous label map. SimpleITK's NRRD writer stores string metadata as ``key:=value`` lines, which is
exactly the NRRD key-value syntax Slicer expects, so no extra NRRD library is needed.

Torch-free on purpose: the Slicer module and ``dvcl evaluate`` read segmentations without importing torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import DimensionError, ImageReadError, LabelValueError
from dvcl.io.images import image_suffix, read_image, write_image

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Output formats ``dvcl segment`` offers, by the suffix of the written file.
SEGMENTATION_FORMATS = ("nii.gz", "seg.nrrd", "nrrd", "nii", "mha")

#: Slicer writes the extent of an empty segment as an empty range.
EMPTY_EXTENT = (0, -1, 0, -1, 0, -1)


@dataclass(frozen=True)
class SegmentInfo:
    """One structure of a label map: its voxel value, name, display color and free-form tags.

    Attributes:
        label_value: voxel value of the structure in the label map (the class id).
        name: structure name shown in Slicer (e.g. ``liver``).
        color: RGB in 0..255 (Slicer stores 0..1 floats; converted on write/read).
        tags: extra ``key:value`` tags written to ``Segment<i>_Tags``.
        segment_id: Slicer segment ID; default ``Segment_<label_value>``.
        layer: Slicer layer index (always 0 for the single-layer files written here).
    """

    label_value: int
    name: str
    color: Tuple[int, int, int] = (128, 174, 128)
    tags: Mapping[str, str] = field(default_factory=dict)
    segment_id: str = ""
    layer: int = 0

    @property
    def id(self) -> str:
        return self.segment_id or f"Segment_{self.label_value}"


def segments_from_labels(labels: Mapping[int, Union[str, Mapping]], tags: Optional[Mapping[str, str]] = None
                         ) -> Dict[int, SegmentInfo]:
    """Build :class:`SegmentInfo` objects from ``{id: name}`` or ``{id: {"name", "color"}}`` (model.json style)."""
    from dvcl.presets import default_color

    out: Dict[int, SegmentInfo] = {}
    for key, entry in labels.items():
        lid = int(key)
        if lid == 0:
            continue
        if isinstance(entry, Mapping):
            name = str(entry.get("name", f"label_{lid}"))
            color = tuple(int(c) for c in entry.get("color", default_color(name, lid)))
        else:
            name = str(entry)
            color = default_color(name, lid)
        out[lid] = SegmentInfo(label_value=lid, name=name, color=color, tags=dict(tags or {}))
    return out


def label_statistics(label: sitk.Image) -> Dict[int, Tuple[int, Tuple[int, int, int, int, int, int]]]:
    """Non-zero label value -> (voxel count, inclusive extent ``(i0, i1, j0, j1, k0, k1)`` in ITK x, y, z order).

    One pass of ITK's label statistics: ``np.unique``/``np.bincount`` on a 512 x 512 x 300 volume would take
    seconds and copy it to 64-bit integers (600 MB) first.
    """
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOff()
    stats.ComputeFeretDiameterOff()
    stats.Execute(sitk.Cast(label, sitk.sitkUInt8) if label.GetPixelID() != sitk.sitkUInt8 else label)
    out = {}
    for v in stats.GetLabels():
        x, y, z, sx, sy, sz = stats.GetBoundingBox(v)
        out[int(v)] = (int(stats.GetNumberOfPixels(v)), (x, x + sx - 1, y, y + sy - 1, z, z + sz - 1))
    return out


def segment_extents(label: sitk.Image, values: Sequence[int]) -> Dict[int, Tuple[int, int, int, int, int, int]]:
    """Inclusive voxel index extent of each label value (:data:`EMPTY_EXTENT` when absent)."""
    stats = label_statistics(label)
    return {int(v): stats[int(v)][1] if int(v) in stats else EMPTY_EXTENT for v in values}


def _format_tags(tags: Mapping[str, str]) -> str:
    # Slicer's tag syntax: "key:value|key:value|"; '|' and ':' inside values would break parsing.
    parts = []
    for k, v in tags.items():
        k, v = str(k), str(v)
        if any(ch in k for ch in ":|") or "|" in v:
            raise ValueError(f"segment tag {k!r}={v!r} must not contain '|' (or ':' in the key)")
        parts.append(f"{k}:{v}|")
    return "".join(parts)


def _parse_tags(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for part in text.split("|"):
        if ":" in part:
            k, v = part.split(":", 1)
            out[k] = v
    return out


def write_seg_nrrd(label: sitk.Image, path: PathLike, segments: Mapping[int, SegmentInfo],
                   overwrite: bool = False, include_empty: bool = True) -> Path:
    """Write a label map as a single-layer Slicer ``.seg.nrrd`` with one segment per structure.

    Args:
        label: integer label map (values 0..255).
        path: output path ending in ``.seg.nrrd``.
        segments: label value -> :class:`SegmentInfo`; values present in ``label`` but missing here raise
            :class:`LabelValueError` (they would be invisible in Slicer).
        include_empty: also list structures with no voxel (Slicer shows them as empty segments), so every
            structure of the model is present and named in the file.
    """
    if not str(path).lower().endswith(".seg.nrrd"):
        raise ImageReadError(f"{path}: a Slicer segmentation file must end in .seg.nrrd")
    lab = _as_uint8(label, path)
    stats = label_statistics(lab)
    unknown = sorted(set(stats) - {int(k) for k in segments})
    if unknown:
        raise LabelValueError(f"{path}: label values {unknown} have no segment name")
    values = sorted(int(k) for k in segments if include_empty or int(k) in stats)
    extents = {v: stats[v][1] if v in stats else EMPTY_EXTENT for v in values}
    out = sitk.Image(lab)  # a copy: metadata must not leak into the caller's image
    for key in list(out.GetMetaDataKeys()):
        out.EraseMetaData(key)
    out.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    out.SetMetaData("Segmentation_SourceRepresentation", "Binary labelmap")
    out.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    out.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for i, v in enumerate(values):
        seg = segments[v]
        prefix = f"Segment{i}_"
        out.SetMetaData(prefix + "ID", seg.id)
        out.SetMetaData(prefix + "Name", seg.name)
        out.SetMetaData(prefix + "NameAutoGenerated", "0")
        out.SetMetaData(prefix + "Color", " ".join(f"{c / 255.0:.6g}" for c in seg.color))
        out.SetMetaData(prefix + "ColorAutoGenerated", "0")
        out.SetMetaData(prefix + "LabelValue", str(v))
        out.SetMetaData(prefix + "Layer", "0")
        out.SetMetaData(prefix + "Extent", " ".join(str(e) for e in extents[v]))
        out.SetMetaData(prefix + "Tags", _format_tags(seg.tags))
    return write_image(out, path, overwrite=overwrite)


def write_segmentation(label: sitk.Image, path: PathLike, segments: Optional[Mapping[int, SegmentInfo]] = None,
                       overwrite: bool = False) -> Path:
    """Write a label map, as ``.seg.nrrd`` (with segment metadata) or any other image format by suffix."""
    if str(path).lower().endswith(".seg.nrrd"):
        if segments is None:
            segments = {v: SegmentInfo(v, f"label_{v}") for v in sorted(label_statistics(_as_uint8(label, path)))}
        return write_seg_nrrd(label, path, segments, overwrite=overwrite)
    return write_image(_as_uint8(label, path), path, overwrite=overwrite)


def _as_uint8(label: sitk.Image, path: PathLike) -> sitk.Image:
    if label.GetPixelID() == sitk.sitkUInt8:
        return label
    arr = sitk.GetArrayViewFromImage(label)
    if arr.size and arr.dtype.kind == "f":  # a cast would turn 1.5 into 1, a probability map into 0, NaN into 0
        if np.isnan(arr).any():
            raise LabelValueError(f"{path}: holds NaN values; a label map holds integer class ids")
        frac = arr[arr != np.round(arr)]
        if frac.size:
            what = ("a probability map? (all values in 0..1)" if 0 <= arr.min() and arr.max() <= 1
                    else "not a label map")
            raise LabelValueError(f"{path}: holds non-integer values (e.g. {float(frac[0]):g}): {what}; "
                                  "write integer class ids (argmax or threshold first)")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise LabelValueError(f"{path}: label values must lie in 0..255")
    return sitk.Cast(label, sitk.sitkUInt8)


def read_segment_infos(img: sitk.Image) -> List[SegmentInfo]:
    """The segments described in a ``.seg.nrrd`` header (empty list when there are none), in file order."""
    keys = set(img.GetMetaDataKeys())
    indices = sorted({int(m.group(1)) for k in keys if (m := re.match(r"Segment(\d+)_", k))})
    out: List[SegmentInfo] = []
    for i in indices:
        def get(name: str, default: str = "", _i: int = i) -> str:
            key = f"Segment{_i}_{name}"
            return img.GetMetaData(key) if key in keys else default

        try:
            color = tuple(int(round(float(c) * 255)) for c in get("Color", "0.5 0.5 0.5").split())
            value = int(get("LabelValue", "1"))
            layer = int(get("Layer", "0"))
        except ValueError as exc:
            raise ImageReadError(f"segment {i}: malformed header value ({exc})") from exc
        out.append(SegmentInfo(label_value=value, name=get("Name", f"Segment_{i}"), color=color,
                               tags=_parse_tags(get("Tags")), segment_id=get("ID"), layer=layer))
    return out


def read_segmentation(path: PathLike) -> Tuple[sitk.Image, Dict[int, SegmentInfo]]:
    """Read a label map and its segment descriptions.

    For ``.seg.nrrd`` files the segments come from the header; a multi-layer file (Slicer writes one when
    segments overlap) is merged into one label map when its label values are distinct and no voxel
    belongs to two segments, else :class:`DimensionError`. Other formats return the label map and an empty
    description dict.

    Returns:
        ``(label map as sitkUInt8, {label value: SegmentInfo})``.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if image_suffix(path) != ".seg.nrrd":
        img = read_image(path)
        return _as_uint8(img, path), {}
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: cannot read segmentation ({str(exc).strip().splitlines()[-1]})") from exc
    try:
        infos = read_segment_infos(img)
    except ImageReadError as exc:
        raise ImageReadError(f"{path}: {exc}") from exc
    if img.GetDimension() != 3:
        raise DimensionError(f"{path}: expected a 3D segmentation, got a {img.GetDimension()}D image")
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp == 1:
        lab = _as_uint8(img, path)
    else:
        lab = _merge_layers(img, infos, path)
    return lab, {s.label_value: s for s in infos}


def _merge_layers(img: sitk.Image, infos: List[SegmentInfo], path: Path) -> sitk.Image:
    values = [s.label_value for s in infos]
    if len(set(values)) != len(values):
        raise DimensionError(f"{path}: multi-layer segmentation reuses label values across layers; "
                             "merge the segments in Slicer or export a label map")
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X, layers)
    merged = np.zeros(arr.shape[:3], np.uint8)
    for s in infos:
        mask = arr[..., s.layer] == s.label_value
        if np.any(merged[mask]):
            raise DimensionError(f"{path}: segments overlap (segment '{s.name}'); a single label map cannot hold them")
        merged[mask] = s.label_value
    out = sitk.GetImageFromArray(merged)
    out.SetSpacing(img.GetSpacing())
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(img.GetDirection())
    return out
