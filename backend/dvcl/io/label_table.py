"""Which structure each label value of a label-map file means, read from what travels with the file.

A NIfTI label map holds numbers only. So that ``dvcl evaluate`` (and people) can tell what 1, 2, 3 mean,
``dvcl segment`` writes a small sidecar next to each NIfTI/NRRD/MHA output::

    OUT/case.nii.gz
    OUT/case.labels.json   {"format": "dvcl-labels/1", "labels": {"1": "liver", ...}, "preset": "flare22",
                            "model": "phantom-demo"}

:func:`label_table` finds a file's table, first match wins:

1. the ``.seg.nrrd`` header's segment names (Slicer's own format carries them);
2. the sidecar ``<case>.labels.json``;
3. a ``dataset.json`` in the file's folder or the folder above (nnU-Net ``labelsTr/`` and the simple layout),
   with ``"labels"`` or ``"preset"``.

The first two travel with the file; a ``dataset.json`` is only found next to it (``LabelTable.nearby``), so
when a preset is in force (``--preset``, or the one recorded by ``dvcl segment``) ``dvcl evaluate`` does not
hold a data set's own spelling (``ivc``, ``right_kidney``) against the preset's names.

Torch-free and cheap: nothing here reads voxels except a ``.seg.nrrd`` header.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import SimpleITK as sitk

from dvcl.errors import DatasetError
from dvcl.io.images import image_suffix, strip_suffix
from dvcl.utils.atomic import write_json_atomic

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
SIDECAR_FORMAT = "dvcl-labels/1"
SIDECAR_SUFFIX = ".labels.json"


@dataclass(frozen=True)
class LabelTable:
    """Label value -> structure name, and where that knowledge came from (for error messages)."""

    labels: Mapping[int, str]
    source: str
    preset: str = ""
    #: found next to the file (a dataset.json), not carried by it: a preset in force takes precedence
    nearby: bool = False


def sidecar_path(label_file: PathLike) -> Path:
    """``OUT/case.nii.gz`` -> ``OUT/case.labels.json``."""
    p = Path(label_file)
    return p.parent / f"{strip_suffix(p)}{SIDECAR_SUFFIX}"


def write_label_sidecar(label_file: PathLike, labels: Mapping[int, str], preset: str = "", model: str = "",
                        overwrite: bool = True) -> Path:
    """Write the sidecar of ``label_file`` (atomically); returns its path."""
    path = sidecar_path(label_file)
    payload = {"format": SIDECAR_FORMAT, "labels": {str(int(k)): str(v) for k, v in sorted(labels.items())},
               "preset": preset or "", "model": model or ""}
    write_json_atomic(path, payload)
    return path


def read_label_sidecar(label_file: PathLike) -> Optional[LabelTable]:
    """The sidecar's table, or None when there is no sidecar. A malformed sidecar raises :class:`DatasetError`."""
    path = sidecar_path(label_file)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        labels = {int(k): str(v) for k, v in data["labels"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: malformed label sidecar ({exc}); delete it or rewrite it with dvcl segment"
                           ) from exc
    return LabelTable(labels, str(path), str(data.get("preset") or ""))


def _seg_nrrd_table(path: Path) -> Optional[LabelTable]:
    from dvcl.io.segmentation import read_segment_infos

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # the voxel reader reports the corrupt file with its own message
    infos = read_segment_infos(reader)
    if not infos:
        return None
    return LabelTable({s.label_value: s.name for s in infos}, f"{path} (segment names)")


def _dataset_json_table(folder: Path) -> Optional[LabelTable]:
    """The table of a ``dataset.json`` next to the folder or one level up; None when there is none or it says
    nothing usable (a foreign or malformed file is not this module's business: the files then carry no names)."""
    from dvcl.errors import PresetError
    from dvcl.presets import get_preset

    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("labels"), dict):
                preset = get_preset(str(candidate))
            elif isinstance(data, dict) and isinstance(data.get("preset"), str):
                preset = get_preset(data["preset"])
            else:
                continue
        except (OSError, ValueError, PresetError) as exc:
            log.debug("%s: no label table (%s)", candidate, exc)
            continue
        return LabelTable(dict(preset.labels), str(candidate), preset.name, nearby=True)
    return None


def label_table(label_file: PathLike) -> Optional[LabelTable]:
    """The label table that travels with ``label_file`` (see the module docstring), or None."""
    p = Path(label_file)
    if image_suffix(p) == ".seg.nrrd":
        table = _seg_nrrd_table(p)
        if table is not None:
            return table
    table = read_label_sidecar(p)
    if table is not None:
        return table
    return _dataset_json_table(p.parent)


def same_name(a: str, b: str) -> bool:
    """Structure names compared as people write them: case, spaces, '_' and '-' do not matter."""
    def norm(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    return norm(a) == norm(b)


def conflicts(a: Mapping[int, str], b: Mapping[int, str]) -> Dict[int, tuple]:
    """Label values both tables name, with different names: ``{value: (name in a, name in b)}``."""
    return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if not same_name(a[k], b[k])}
