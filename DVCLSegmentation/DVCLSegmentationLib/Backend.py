"""Where the ``dvcl`` backend is and what it offers, without importing torch into Slicer's process.

Everything here is plain Python: it reads model packages (``model.json``) directly, finds the backend's
source folder shipped with the extension, and builds the command line that starts ``dvcl``. The lists the
backend owns (methods, presets, profiles) come from its torch-free catalogue files (``Catalog.py``); the
installed models are found by scanning the model folders, never by importing the backend.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: where users install models (backend/dvcl/inference/model_package.py ``user_models_dir``)
USER_MODELS_ENV = "DVCL_MODELS"
MODEL_FORMAT_PREFIX = "dvcl-model/"
SEGMENTATION_FORMATS = ("seg.nrrd", "nii.gz")


class DVCLModuleError(Exception):
    """Base class of the errors the module reports to the user as one clear line."""


class ModelPackageError(DVCLModuleError):
    """A model folder is missing, or its model.json / weights are absent or malformed."""


def module_dir() -> Path:
    """The folder that holds ``DVCLSegmentation.py`` (and ``Resources/``)."""
    return Path(__file__).resolve().parent.parent


def resource_path(*parts: str) -> Path:
    return module_dir().joinpath("Resources", *parts)


def find_backend_dir() -> Optional[Path]:
    """The backend's source folder (with ``pyproject.toml``) that ships with the extension.

    Looked for, in order: ``$DVCL_BACKEND_DIR``; ``DVCLSegmentationBackend/`` next to the module (installed
    extension, see CMakeLists.txt); ``../backend`` (source checkout).
    """
    candidates = []
    if os.environ.get("DVCL_BACKEND_DIR"):
        candidates.append(Path(os.environ["DVCL_BACKEND_DIR"]))
    candidates += [module_dir() / "DVCLSegmentationBackend", module_dir().parent / "backend"]
    for path in candidates:
        if (path / "pyproject.toml").is_file():
            return path
    return None


def python_executable() -> str:
    """The Python that runs ``dvcl``: ``PythonSlicer`` inside Slicer, ``sys.executable`` elsewhere.

    Inside Slicer ``sys.executable`` is the application itself (running it with ``-m`` would open another
    Slicer), and ``PythonSlicer`` is the launcher that gives Slicer's Python its environment.
    ``$DVCL_PYTHON`` overrides both (e.g. a separate environment with a CUDA build of torch).
    """
    override = os.environ.get("DVCL_PYTHON")
    if override:
        return override
    slicer = sys.modules.get("slicer")
    if slicer is not None and hasattr(slicer, "app"):
        exe = Path(sys.executable)
        for candidate in (shutil.which("PythonSlicer"), exe.with_name("PythonSlicer"),
                          exe.with_name("PythonSlicer.exe")):
            if candidate and Path(candidate).is_file():
                return str(candidate)
        raise DVCLModuleError(f"PythonSlicer was not found next to {exe}; cannot start the dvcl backend "
                              "(set DVCL_PYTHON to a Python that has dvcl installed)")
    return sys.executable


def dvcl_command(args: Sequence[str], progress: str = "json") -> List[str]:
    """The full argv for ``dvcl --progress json <args...>``.

    ``python -m dvcl.cli.main`` rather than the ``dvcl`` console script: the script's location differs by
    platform and virtual environment, while the interpreter is always known.
    """
    return [python_executable(), "-m", "dvcl.cli.main", "--progress", progress, *[str(a) for a in args]]


@dataclass(frozen=True)
class LabelInfo:
    """One structure of a model: its label value, name and display color (r, g, b in 0..1)."""

    value: int
    name: str
    color: Tuple[float, float, float]


@dataclass
class ModelInfo:
    """The parts of ``model.json`` the GUI needs (see docs/architecture.md, "Model package")."""

    path: Path
    name: str
    description: str = ""
    preset: str = ""
    labels: List[LabelInfo] = field(default_factory=list)
    #: the whole model.json, for rules the backend owns (which model to preselect: ``Catalog.preferred_model``)
    meta: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display_name(self) -> str:
        return f"{self.name} ({len(self.labels)} structures)"

    def label(self, value: int) -> Optional[LabelInfo]:
        for lab in self.labels:
            if lab.value == value:
                return lab
        return None


def _color(raw, value: int) -> Tuple[float, float, float]:
    """Colors in model.json are 0..255 ints; accept 0..1 floats too. Missing -> a stable hue from the id."""
    if isinstance(raw, (list, tuple)) and len(raw) >= 3:
        rgb = [float(c) for c in raw[:3]]
        if max(rgb) > 1.0:
            rgb = [c / 255.0 for c in rgb]
        return (min(max(rgb[0], 0.0), 1.0), min(max(rgb[1], 0.0), 1.0), min(max(rgb[2], 0.0), 1.0))
    import colorsys

    return colorsys.hsv_to_rgb((value * 0.618033988749895) % 1.0, 0.65, 0.95)


def read_model_info(path: PathLike) -> ModelInfo:
    """Read and check a model package folder.

    Raises:
        ModelPackageError: the folder, ``model.json`` or ``weights.safetensors`` is missing, or model.json is
            not valid JSON / has no usable label table. The message names the path and the problem.
    """
    folder = Path(path).expanduser() if str(path).strip() else None
    if folder is None:
        raise ModelPackageError("no model selected: choose a model package folder (with model.json)")
    if not folder.is_dir():
        raise ModelPackageError(f"{folder}: model folder not found")
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise ModelPackageError(f"{folder}: not a dvcl model package (model.json is missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelPackageError(f"{meta_path}: expected a JSON object")
    fmt = str(meta.get("format", ""))
    if fmt and not fmt.startswith(MODEL_FORMAT_PREFIX):
        raise ModelPackageError(f"{meta_path}: unknown format '{fmt}' (expected {MODEL_FORMAT_PREFIX}N)")
    raw_labels = meta.get("labels")
    if not isinstance(raw_labels, dict) or not raw_labels:
        raise ModelPackageError(f"{meta_path}: 'labels' must map label ids to {{name, color}}")
    labels = []
    for key, entry in raw_labels.items():
        try:
            value = int(key)
        except ValueError as exc:
            raise ModelPackageError(f"{meta_path}: label id '{key}' is not an integer") from exc
        if value == 0:
            continue  # background
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not str(entry.get("name", "")).strip():
            raise ModelPackageError(f"{meta_path}: label {value} has no name")
        labels.append(LabelInfo(value, str(entry["name"]), _color(entry.get("color"), value)))
    if not labels:
        raise ModelPackageError(f"{meta_path}: no foreground labels")
    if not (folder / "weights.safetensors").is_file():
        raise ModelPackageError(f"{folder}: weights.safetensors is missing")
    labels.sort(key=lambda lab: lab.value)
    return ModelInfo(
        path=folder.resolve(),
        name=str(meta.get("name") or folder.name),
        description=str(meta.get("description", "")),
        preset=str(meta.get("preset", "")),
        labels=labels,
        meta=meta,
    )


def is_shipped_model(info: ModelInfo) -> bool:
    """The model came with the installed backend (not from the user models folder or an added folder)."""
    root = _package_models_dir()
    return root is not None and info.path.parent == root.resolve()


def _package_models_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("dvcl")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def user_models_dir() -> Path:
    """``$DVCL_MODELS`` or ``~/.dvcl/models``, as the backend defines it."""
    env = os.environ.get(USER_MODELS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".dvcl" / "models"


def installed_models() -> List[ModelInfo]:
    """Model packages of the installed backend (the demo model) and of the user models folder.

    The folders are scanned, the backend is not imported: importing it could pull torch into the GUI process.
    """
    folders: List[Path] = []
    for models_dir in (_package_models_dir(), user_models_dir()):
        if models_dir is not None and models_dir.is_dir():
            folders += sorted(p for p in models_dir.iterdir() if (p / "model.json").is_file())
    models, seen = [], set()
    for folder in folders:
        key = str(folder.resolve())
        if key in seen:
            continue
        seen.add(key)
        try:
            models.append(read_model_info(folder))
        except ModelPackageError as exc:
            log.warning("skipping model: %s", exc)
    return models


def format_eta(seconds: Optional[float]) -> str:
    """``1:02:03`` / ``4:05`` for an ETA in seconds; '' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
