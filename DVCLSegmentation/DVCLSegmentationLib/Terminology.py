"""Standard (SNOMED CT) codes for the segments the module creates.

Slicer stores a segment's meaning as a "terminology entry" string; with it, a segmentation exported to
DICOM SEG says *liver* in a machine-readable way instead of only carrying a free-text name. The codes live
in ``Resources/Terminology.json`` (one table for all presets); names not in the table get no entry.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Sequence

from .Backend import resource_path


def _code(triple: Optional[Sequence[str]]) -> str:
    """``scheme^value^meaning`` (Slicer's order), or ``^^`` for an empty code."""
    if not triple:
        return "^^"
    scheme, value, meaning = triple
    return f"{scheme}^{value}^{meaning}"


@lru_cache(maxsize=4)
def load_table(path: Optional[str] = None) -> Dict:
    table_path = Path(path) if path else resource_path("Terminology.json")
    return json.loads(table_path.read_text(encoding="utf-8"))


def terminology_entry(name: str, table_path: Optional[str] = None) -> Optional[str]:
    """The serialized terminology entry for a structure name, or None when the name has no code.

    The layout matches ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``:
    ``context~category~type~modifier~anatomicContext~region~regionModifier``.
    """
    table = load_table(table_path)
    entry = table["structures"].get(name.strip().lower())
    if entry is None:
        return None
    return "~".join([
        table["context"],
        _code(table["category"]),
        _code(entry["type"]),
        _code(entry.get("modifier")),
        table["anatomic_context"],
        _code(None),
        _code(None),
    ])
