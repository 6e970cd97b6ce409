"""A case name for a DICOM series folder whose own name says nothing (``dicom``, ``DICOM``, ``series``, ``1``).

The usual export layout is ``<patient>/<study>/dicom/`` or ``.../series/3/``; naming outputs after the folder
gives ``dicom.seg.nrrd`` for every patient, so outputs of two patients collide. For such generic folder
names the case is named from the series header instead: ``<PatientID>_<SeriesDescription>`` (or
``<PatientID>_series<SeriesNumber>``), else the ``SeriesInstanceUID``, else the parent folder's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import SimpleITK as sitk

#: folder names that do not identify a series (case-insensitive)
GENERIC_FOLDER = re.compile(r"^(dicoms?|dcm|series|images?|img|ct|scans?|data|input|se\d*|series[_-]?\d+|s\d+|\d+)$",
                            re.IGNORECASE)

_TAGS = {"patient": "0010|0020", "description": "0008|103e", "number": "0020|0011", "uid": "0020|000e"}


def is_generic_folder_name(name: str) -> bool:
    return bool(GENERIC_FOLDER.match(name.strip()))


def safe_name(text: str, limit: int = 64) -> str:
    """A file-name-safe version of a header value: letters, digits, '.', '-' and '_' only."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._-")
    return re.sub(r"_+", "_", out)[:limit]


def series_case_name(folder: Path) -> str:
    """The case name of DICOM folder ``folder`` (its own name unless that is generic, see the module)."""
    folder = Path(folder)
    if not is_generic_folder_name(folder.name):
        return folder.name
    from dvcl.io.images import keep_locale

    tags = {}
    with keep_locale():  # GDCM switches the process to the C locale
        files: List[str] = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        if files:
            reader = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            try:
                reader.ReadImageInformation()
                tags = {k: reader.GetMetaData(t).strip() for k, t in _TAGS.items() if reader.HasMetaDataKey(t)}
            except RuntimeError:
                tags = {}
    series = safe_name(tags.get("description", "")) or (
        f"series{safe_name(tags['number'])}" if safe_name(tags.get("number", "")) else "")
    parts = [p for p in (safe_name(tags.get("patient", "")), series) if p]
    if parts:
        return "_".join(parts)
    if safe_name(tags.get("uid", "")):
        return safe_name(tags["uid"])
    parent = safe_name(folder.resolve().parent.name)
    return parent or folder.name
