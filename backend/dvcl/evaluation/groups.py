"""Scoring predictions against a reference with a different (usually coarser) label set.

Why: the references people have are often not in the model's label set. The chest CT angiography in
``tests/data`` labels the whole heart and the whole aorta, while a cardiac model predicts the seven MM-WHS
structures; a TotalSegmentator output names organs with its own numbers. Comparing them needs each side's
values grouped into shared structures (``heart`` = MM-WHS 1..5 on the prediction side, 2 on the reference
side), then the usual metrics on the groups. A group is written ``NAME=PRED_VALUES:REF_VALUES``, values
separated by commas, as stored in the files (raw values, no preset remapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from dvcl.errors import ConfigError


@dataclass(frozen=True)
class StructureGroup:
    """One shared structure: its name and the label values that make it on each side."""

    name: str
    pred_values: Tuple[int, ...]
    ref_values: Tuple[int, ...]


def _values(text: str, spec: str) -> Tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--group '{spec}': label values must be positive whole numbers separated by commas")
    return values


def parse_group(spec: str) -> StructureGroup:
    """``"heart=1,2,3,4,5:2"`` -> :class:`StructureGroup` (name before ``=``, then prediction and reference values)."""
    name, sep, rest = spec.partition("=")
    pred, colon, ref = rest.partition(":")
    if not sep or not colon or not name.strip():
        raise ConfigError(f"--group '{spec}': expected NAME=PRED_VALUES:REF_VALUES, e.g. 'heart=1,2,3,4,5:2'")
    return StructureGroup(name.strip(), _values(pred, spec), _values(ref, spec))


def check_groups(groups: Sequence[StructureGroup]) -> Dict[int, str]:
    """The label table the grouped maps use (1..n in the given order).

    Raises:
        ConfigError: two groups share a name, or a label value of one side is claimed by two groups (a voxel
            would belong to both).
    """
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"--group names must differ, got {', '.join(names)}")
    for side in ("pred_values", "ref_values"):
        seen: Dict[int, str] = {}
        for g in groups:
            for v in getattr(g, side):
                if v in seen:
                    which = "prediction" if side == "pred_values" else "reference"
                    raise ConfigError(f"--group: {which} value {v} is in both '{seen[v]}' and '{g.name}'")
                seen[v] = g.name
    return {i + 1: g.name for i, g in enumerate(groups)}


def apply_groups(image: sitk.Image, groups: Sequence[StructureGroup], side: str) -> sitk.Image:
    """A label map whose value ``i`` marks the voxels of group ``i`` (1-based; 0: none), same geometry."""
    arr = sitk.GetArrayViewFromImage(image)
    out = np.zeros(arr.shape, np.uint8)
    for i, g in enumerate(groups, start=1):
        out[np.isin(arr, g.pred_values if side == "prediction" else g.ref_values)] = i
    grouped = sitk.GetImageFromArray(out)
    grouped.CopyInformation(image)
    return grouped
