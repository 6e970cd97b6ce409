"""Field-by-field validation of a model package's ``model.json`` (torch-free).

A model package may come from someone else, so every field is checked for type, length and range before
anything is built from it: a spacing of 0 would divide by zero, a reversed clip window would silently
invert the image, an orientation like "XYZ" or 100000 channels would end in a raw traceback or an
out-of-memory kill. Each validator returns the cleaned value or raises :class:`~dvcl.errors.ModelError`
naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from dvcl.errors import ModelError

#: Plausible ranges. Spacing: CT voxels from 0.05 mm (micro-CT) to 20 mm; a resampling grid finer than that
#: or coarser is an error, not a setting.
SPACING_RANGE = (0.05, 20.0)
HU_RANGE = (-32768.0, 65535.0)
MAX_CHANNELS = 1024
#: Weight budget of one network (3x3x3 convolutions, two per level, encoder + decoder): 200 M parameters.
MAX_PARAMETERS = 200_000_000
MAX_LEVELS = 8
MAX_IN_CHANNELS = 16
MAX_CLASSES = 256
MAX_FEATURE_DIM = 4096
#: Sliding window budget: at most this many voxels per window (the paper's 64x160x160 is 1.6 M) and at most
#: ROI_MAX_SIDE along any axis; larger windows need tens of GB and are refused before any allocation.
ROI_MAX_VOXELS = 128 * 256 * 256
ROI_MAX_SIDE = 512
MAX_MODELS = 8
MAX_NAME = 200
PREPROCESSING_KEYS = ("orientation", "clip", "spacing", "percentiles")
_AXIS_LETTERS = ({"R", "L"}, {"A", "P"}, {"S", "I"})


def _where(path: Path, field: str) -> str:
    return f"{path}: {field}"


def _number(value: Any, path: Path, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError(f"{_where(path, field)} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ModelError(f"{_where(path, field)} must be finite, got {value!r}")
    return v


def _integer(value: Any, path: Path, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{_where(path, field)} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ModelError(f"{_where(path, field)} must be in {lo}..{hi}, got {value}")
    return int(value)


def _numbers(value: Any, n: int, path: Path, field: str) -> List[float]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ModelError(f"{_where(path, field)} must be a list of {n} numbers, got {value!r}")
    return [_number(v, path, f"{field}[{i}]") for i, v in enumerate(value)]


def validate_spacing(value: Any, path: Path) -> List[float]:
    """Three spacings (x, y, z) in mm, each in :data:`SPACING_RANGE`."""
    sp = _numbers(value, 3, path, "preprocessing.spacing")
    lo, hi = SPACING_RANGE
    for v in sp:
        if not lo <= v <= hi:
            raise ModelError(f"{_where(path, 'preprocessing.spacing')} values must be in {lo:g}..{hi:g} mm, "
                             f"got {[float(x) for x in sp]}")
    return sp


def validate_clip(value: Any, path: Path) -> List[float]:
    """The HU window [low, high], low < high, inside the range of stored CT values."""
    lo, hi = _numbers(value, 2, path, "preprocessing.clip")
    if not HU_RANGE[0] <= lo < hi <= HU_RANGE[1]:
        raise ModelError(f"{_where(path, 'preprocessing.clip')} must be [low, high] with low < high (HU), "
                         f"got [{lo:g}, {hi:g}]")
    return [lo, hi]


def validate_percentiles(value: Any, path: Path) -> List[float]:
    """Normalisation percentiles [low, high] in [0, 100], low < high."""
    lo, hi = _numbers(value, 2, path, "preprocessing.percentiles")
    if not 0.0 <= lo < hi <= 100.0:
        raise ModelError(f"{_where(path, 'preprocessing.percentiles')} must be [low, high] with "
                         f"0 <= low < high <= 100, got [{lo:g}, {hi:g}]")
    return [lo, hi]


def validate_orientation(value: Any, path: Path) -> str:
    """Three letters naming one direction per anatomical axis (e.g. ``LPI``, ``RAS``)."""
    if not isinstance(value, str) or len(value) != 3:
        raise ModelError(f"{_where(path, 'preprocessing.orientation')} must be three letters like 'LPI', "
                         f"got {value!r}")
    letters = value.upper()
    used = [next((i for i, axis in enumerate(_AXIS_LETTERS) if ch in axis), -1) for ch in letters]
    if -1 in used or sorted(used) != [0, 1, 2]:
        raise ModelError(f"{_where(path, 'preprocessing.orientation')} must use one of R/L, A/P and S/I each, "
                         f"got {value!r}")
    return letters


def validate_preprocessing(value: Any, path: Path) -> Dict[str, Any]:
    """The ``preprocessing`` object: only known keys, each validated; missing keys take the paper's defaults."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelError(f"{_where(path, 'preprocessing')} must be an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(PREPROCESSING_KEYS))
    if unknown:
        raise ModelError(f"{_where(path, 'preprocessing')} has unknown key(s) {', '.join(map(str, unknown))}")
    out: Dict[str, Any] = {}
    if "orientation" in value:
        out["orientation"] = validate_orientation(value["orientation"], path)
    if "clip" in value:
        out["clip"] = validate_clip(value["clip"], path)
    if "spacing" in value:
        out["spacing"] = validate_spacing(value["spacing"], path)
    if "percentiles" in value:
        out["percentiles"] = validate_percentiles(value["percentiles"], path)
    return out


def validate_network(value: Any, path: Path) -> Dict[str, Any]:
    """Ranges of the network fields that size allocations (channels, classes, levels, strides)."""
    if not isinstance(value, dict):
        raise ModelError(f"{_where(path, 'network')} must be an object, got {type(value).__name__}")
    chans = value.get("channels", [16, 32, 64, 128, 256])
    if not isinstance(chans, (list, tuple)) or not 2 <= len(chans) <= MAX_LEVELS:
        raise ModelError(f"{_where(path, 'network.channels')} must list 2..{MAX_LEVELS} sizes, got {chans!r}")
    for i, c in enumerate(chans):
        _integer(c, path, f"network.channels[{i}]", 1, MAX_CHANNELS)
    params = 27 * 2 * sum(a * b + b * b for a, b in zip([1] + list(chans[:-1]), chans))
    if params > MAX_PARAMETERS:
        raise ModelError(f"{_where(path, 'network.channels')} {list(chans)} would need about {params:,} weights, "
                         f"more than the budget of {MAX_PARAMETERS:,}")
    if "in_channels" in value:
        _integer(value["in_channels"], path, "network.in_channels", 1, MAX_IN_CHANNELS)
    if "num_classes" in value:
        _integer(value["num_classes"], path, "network.num_classes", 2, MAX_CLASSES)
    if "feature_dim" in value:
        _integer(value["feature_dim"], path, "network.feature_dim", 1, MAX_FEATURE_DIM)
    if "dropout" in value:
        d = _number(value["dropout"], path, "network.dropout")
        if not 0.0 <= d < 1.0:
            raise ModelError(f"{_where(path, 'network.dropout')} must be in [0, 1), got {d:g}")
    strides = value.get("strides", [])
    if not isinstance(strides, (list, tuple)):
        raise ModelError(f"{_where(path, 'network.strides')} must be a list, got {strides!r}")
    for i, s in enumerate(strides):
        items = s if isinstance(s, (list, tuple)) else [s]
        if isinstance(s, (list, tuple)) and len(s) != 3:
            raise ModelError(f"{_where(path, f'network.strides[{i}]')} must be an integer or 3 integers, got {s!r}")
        for v in items:
            _integer(v, path, f"network.strides[{i}]", 1, 4)
    for key in ("norm", "upsample"):
        if key in value and not isinstance(value[key], str):
            raise ModelError(f"{_where(path, f'network.{key}')} must be a string, got {value[key]!r}")
    return value


def validate_window(roi: Any, stride: Any, path: Path) -> Tuple[List[int], List[int]]:
    """Sliding window (z, y, x) and stride: positive integers, stride <= window, window inside the budget."""
    out = []
    for name, value in (("inference.roi", roi), ("inference.stride", stride)):
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ModelError(f"{_where(path, name)} must be three positive integers (z, y, x), got {value!r}")
        out.append([_integer(v, path, f"{name}[{i}]", 1, ROI_MAX_SIDE) for i, v in enumerate(value)])
    r, s = out
    if math.prod(r) > ROI_MAX_VOXELS:
        raise ModelError(f"{_where(path, 'inference.roi')} {r} has {math.prod(r):,} voxels, more than the window "
                         f"budget of {ROI_MAX_VOXELS:,}")
    if any(a > b for a, b in zip(s, r)):
        raise ModelError(f"{_where(path, 'inference.stride')} {s} exceeds the window {r}")
    return r, s


def validate_models(value: Any, path: Path) -> List[str]:
    """1..:data:`MAX_MODELS` distinct non-empty names without '.' (weights keys are ``<model>.<param>``)."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MODELS:
        raise ModelError(f"{_where(path, 'models')} must be a list of 1..{MAX_MODELS} model names, e.g. "
                         f"[\"A\", \"B\"], got {value!r}")
    for m in value:
        if not isinstance(m, str) or not m or "." in m or len(m) > MAX_NAME:
            raise ModelError(f"{_where(path, 'models')} names must be non-empty strings without '.', got {m!r}")
    if len(set(value)) != len(value):
        raise ModelError(f"{_where(path, 'models')} lists a model twice: {value}")
    return list(value)


def validate_text(meta: Dict[str, Any], key: str, path: Path, required: bool = False, limit: int = MAX_NAME
                  ) -> None:
    """A string field (name, description, preset) of bounded length."""
    if key not in meta:
        if required:
            raise ModelError(f"{path}: required field '{key}' is missing")
        return
    value = meta[key]
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise ModelError(f"{_where(path, key)} must be a {'non-empty ' if required else ''}string of at most "
                         f"{limit} characters, got {str(value)[:60]!r}")


def validate_label_names(labels: Dict[str, dict], path: Path) -> None:
    """Label names: non-empty strings of bounded length, no two alike."""
    names: Sequence[str] = [entry["name"] for entry in labels.values()]
    for n in names:
        if not n.strip() or len(n) > MAX_NAME:
            raise ModelError(f"{_where(path, 'labels')} names must be non-empty and at most {MAX_NAME} characters, "
                             f"got {n[:60]!r}")
    if len(set(names)) != len(names):
        raise ModelError(f"{_where(path, 'labels')} names must be distinct, got {list(names)}")


#: the model.json key of the post-processing choice (dvcl.inference.postprocessing writes it, segment applies it)
POSTPROCESSING_KEY = "postprocessing"


def validate_postprocessing(post: Any, labels: Dict[str, Any], path: Path) -> Any:
    """Check a ``postprocessing`` entry: an object whose ``largest_component`` lists label ids of the model."""
    if post is None:
        return None
    if not isinstance(post, dict):
        raise ModelError(f"{_where(path, POSTPROCESSING_KEY)} must be an object, got {type(post).__name__}")
    ids = post.get("largest_component", [])
    if not isinstance(ids, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in ids):
        raise ModelError(f"{_where(path, POSTPROCESSING_KEY)}.largest_component must be a list of label ids, "
                         f"got {ids!r}")
    unknown = [v for v in ids if str(v) not in labels]
    if unknown:
        raise ModelError(f"{_where(path, POSTPROCESSING_KEY)}.largest_component names ids {unknown} that are not "
                         f"labels of the model ({', '.join(sorted(labels, key=int))})")
    return post


#: ``training.flip_axes`` in model.json: the spatial axes (0 z, 1 y, 2 x of the network's grid) that training
#: flipped at random. Test-time augmentation may flip only these: a network that never saw a mirrored patch
#: labels the mirrored left kidney "right kidney" (measured on a synthetic validation CT with the default model:
#: mean Dice 80.2 % without flips, 2.9 % with all eight).
FLIP_AXES_KEY = "flip_axes"
#: What a package made before that record was written is taken to have used: TrainConfig's flips on every axis.
ALL_AXES = (0, 1, 2)


def recorded_flip_axes(training: Any, path: Path) -> Tuple[int, ...]:
    """The axes every training member flipped (:attr:`ModelPackage.flip_axes`); all three when not recorded.

    Raises:
        ModelError: ``training`` is not an object, or a recorded value is not a list of distinct axes 0..2.
    """
    training = {} if training is None else training
    if not isinstance(training, dict):
        raise ModelError(f"{path}: 'training' must be an object, got {type(training).__name__}")
    members = training.get("ensemble") if isinstance(training.get("ensemble"), list) else [training]
    axes = set(ALL_AXES)
    for member in members:
        value = member.get(FLIP_AXES_KEY, list(ALL_AXES)) if isinstance(member, dict) else list(ALL_AXES)
        if (not isinstance(value, list) or any(type(a) is not int or a not in ALL_AXES for a in value)
                or len(set(value)) != len(value)):
            raise ModelError(f"{path}: training.{FLIP_AXES_KEY} must be a list of distinct axes 0, 1, 2; got "
                             f"{value!r}")
        axes &= set(value)
    return tuple(sorted(axes))
