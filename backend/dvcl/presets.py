"""Data-set presets: label tables, raw-value remapping and the training schedule of METHOD.md section 1.

Torch-free on purpose (it backs `dvcl presets`, the Slicer module's drop-downs and the data checks).
A custom preset comes from an nnU-Net v2 style ``dataset.json`` (``labels`` name -> id).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from dvcl.errors import PresetError
from dvcl.utils.json_files import read_json_object

# Colors follow Slicer's GenericAnatomyColors where an entry exists, so results look familiar in Slicer.
_COLORS: Dict[str, Tuple[int, int, int]] = {
    "liver": (221, 130, 101),
    "right kidney": (185, 102, 83),
    "left kidney": (185, 102, 83),
    "spleen": (157, 108, 162),
    "pancreas": (249, 180, 111),
    "aorta": (224, 97, 76),
    "inferior vena cava": (0, 151, 206),
    "right adrenal gland": (244, 214, 49),
    "left adrenal gland": (244, 214, 49),
    "gallbladder": (139, 150, 98),
    "esophagus": (211, 171, 143),
    "stomach": (216, 132, 105),
    "duodenum": (255, 253, 229),
    "urinary bladder": (222, 154, 132),
    "prostate/uterus": (230, 158, 140),
    "portal and splenic vein": (0, 151, 206),
    "left ventricle myocardium": (188, 65, 28),
    "left atrium": (206, 110, 84),
    "left ventricle": (216, 101, 79),
    "right atrium": (0, 151, 206),
    "right ventricle": (30, 144, 255),
    "ascending aorta": (224, 97, 76),
    "pulmonary artery": (0, 122, 171),
}


def default_color(name: str, label_id: int) -> Tuple[int, int, int]:
    """Slicer-like color for a structure name, or a stable distinct color derived from the id."""
    if name in _COLORS:
        return _COLORS[name]
    golden = (label_id * 0.618033988749895) % 1.0
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(golden, 0.65, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


@dataclass(frozen=True)
class Preset:
    """A data set's label table and training schedule.

    Attributes:
        name: preset name (``flare22``, ``amos``, ``btcv``, ``mmwhs`` or a custom name).
        labels: foreground class id -> structure name; background 0 is implicit.
        raw_values: raw label value -> class id, for data sets whose files store other values (MMWHS).
        batch_labeled / batch_unlabeled / iterations / lr: the paper's schedule [given].
        modality: "CT" (the paper's preprocessing assumes Hounsfield units).
    """

    name: str
    labels: Dict[int, str]
    raw_values: Optional[Dict[int, int]] = None
    batch_labeled: int = 4
    batch_unlabeled: int = 4
    iterations: int = 20000
    lr: float = 0.1
    split_ratios: Tuple[int, int, int] = (6, 2, 2)
    modality: str = "CT"
    description: str = ""
    colors: Dict[int, Tuple[int, int, int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of network outputs, background included."""
        return max(self.labels) + 1 if self.labels else 1

    @property
    def class_names(self) -> List[str]:
        """Names indexed by class id, ``background`` first."""
        return ["background"] + [self.labels.get(i, f"label_{i}") for i in range(1, self.num_classes)]

    @property
    def allowed_raw_values(self) -> List[int]:
        """Values a label file of this preset may contain (0 included)."""
        if self.raw_values:
            return sorted({0, *self.raw_values})
        return list(range(self.num_classes))

    def color(self, label_id: int) -> Tuple[int, int, int]:
        if label_id in self.colors:
            return self.colors[label_id]
        return default_color(self.labels.get(label_id, ""), label_id)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        d["raw_values"] = {str(k): v for k, v in self.raw_values.items()} if self.raw_values else None
        d["colors"] = {str(k): list(self.color(k)) for k in self.labels}
        d["split_ratios"] = list(self.split_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preset:
        return cls(
            name=d["name"],
            labels={int(k): v for k, v in d["labels"].items()},
            raw_values={int(k): int(v) for k, v in d["raw_values"].items()} if d.get("raw_values") else None,
            batch_labeled=int(d.get("batch_labeled", 4)),
            batch_unlabeled=int(d.get("batch_unlabeled", 4)),
            iterations=int(d.get("iterations", 20000)),
            lr=float(d.get("lr", 0.1)),
            split_ratios=tuple(d.get("split_ratios", (6, 2, 2))),
            modality=d.get("modality", "CT"),
            description=d.get("description", ""),
            colors={int(k): tuple(v) for k, v in d.get("colors", {}).items()},
        )


def _table(names: List[str]) -> Dict[int, str]:
    return {i + 1: n for i, n in enumerate(names)}


PRESETS: Dict[str, Preset] = {
    "flare22": Preset(
        name="flare22",
        labels=_table(
            [
                "liver", "right kidney", "spleen", "pancreas", "aorta", "inferior vena cava",
                "right adrenal gland", "left adrenal gland", "gallbladder", "esophagus", "stomach",
                "duodenum", "left kidney",
            ]
        ),
        description="FLARE22 abdominal CT, 13 organs",
    ),
    "amos": Preset(
        name="amos",
        labels=_table(
            [
                "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach",
                "aorta", "inferior vena cava", "pancreas", "right adrenal gland", "left adrenal gland",
                "duodenum", "urinary bladder", "prostate/uterus",
            ]
        ),
        description="AMOS abdominal CT, 15 organs",
    ),
    "btcv": Preset(
        name="btcv",
        labels=_table(
            [
                "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach",
                "aorta", "inferior vena cava", "portal and splenic vein", "pancreas", "right adrenal gland",
                "left adrenal gland",
            ]
        ),
        description="BTCV (Synapse) abdominal CT, 13 organs",
    ),
    "mmwhs": Preset(
        name="mmwhs",
        labels=_table(
            [
                "left ventricle myocardium", "left atrium", "left ventricle", "right atrium",
                "right ventricle", "ascending aorta", "pulmonary artery",
            ]
        ),
        raw_values={205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7},
        batch_labeled=2,
        batch_unlabeled=2,
        iterations=10000,
        lr=0.03,
        description="MM-WHS cardiac CT, 7 structures (raw values 205..850 remapped to 1..7)",
    ),
}


def list_presets() -> List[str]:
    return sorted(PRESETS)


def get_preset(name_or_path: str) -> Preset:
    """Return a built-in preset by name, or a custom one from a ``dataset.json`` path.

    Raises:
        PresetError: unknown name (the message lists the valid names) or an invalid dataset.json.
    """
    key = str(name_or_path).lower()
    if key in PRESETS:
        return PRESETS[key]
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_dir():
        return preset_from_dataset_json(path / "dataset.json" if path.is_dir() else path)
    raise PresetError(f"unknown preset '{name_or_path}': choose one of {', '.join(list_presets())} or a dataset.json")


def preset_from_dataset_json(path: Path) -> Preset:
    """Build a custom preset from an nnU-Net v2 ``dataset.json`` (``labels``: name -> id)."""
    path = Path(path)
    if not path.is_file():
        raise PresetError(f"{path}: dataset.json not found")
    meta = read_json_object(path, PresetError)
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise PresetError(f"{path}: 'labels' must map structure names to integer ids")
    table: Dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, list):  # nnU-Net region-based labels are not supported
            raise PresetError(f"{path}: region-based label '{name}' is not supported")
        try:
            vid = int(value)
        except (TypeError, ValueError) as exc:
            raise PresetError(f"{path}: label '{name}' has non-integer id {value!r}") from exc
        if vid == 0:
            continue
        if vid < 0 or vid in table:
            raise PresetError(f"{path}: label id {vid} of '{name}' is negative or repeated")
        table[vid] = name
    expected = list(range(1, len(table) + 1))
    if sorted(table) != expected:
        raise PresetError(f"{path}: label ids must be consecutive 1..{len(table)}, got {sorted(table)}")
    channels = meta.get("channel_names", {"0": "CT"})
    modality = str(next(iter(channels.values()))) if channels else "CT"
    base = PRESETS.get(str(meta.get("preset", "")).lower())
    return Preset(
        name=str(meta.get("name", path.parent.name or "custom")),
        labels=table,
        batch_labeled=base.batch_labeled if base else 4,
        batch_unlabeled=base.batch_unlabeled if base else 4,
        iterations=base.iterations if base else 20000,
        lr=base.lr if base else 0.1,
        modality=modality,
        description=str(meta.get("description", "custom data set")),
    )
