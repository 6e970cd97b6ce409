"""What the backend offers (methods, presets, profiles), read from its torch-free catalogue files.

The lists are the backend's own data (``dvcl/methods/catalog.py``, ``dvcl/presets.py``, ``dvcl/profiles.py``,
standard library only), loaded by file path with ``importlib.util.spec_from_file_location``: importing them
as ``dvcl.methods.*`` could run package ``__init__`` files that import torch, and Slicer's GUI process must
never import torch or MONAI (seconds of frozen GUI, and torch's files locked on Windows). They are read from
the installed backend when there is one, else from the backend source bundled with the extension, so the
panel shows the real lists before anything is installed. There is no hand-written fallback list.

:func:`reload` forgets what was loaded: after an installation the panel refreshes its lists in place.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, Optional

from .Backend import DVCLModuleError, ModelInfo, find_backend_dir, is_shipped_model

log = logging.getLogger(__name__)

#: catalogue key -> file inside the ``dvcl`` package
CATALOG_FILES = {"methods": "methods/catalog.py", "presets": "presets.py", "profiles": "profiles.py",
                 "models": "model_choice.py"}
#: options of a profile the Train tab shows (profile keys as ``--set`` names them)
SCHEDULE_KEYS = ("iterations", "batch_labeled", "batch_unlabeled", "patch")

_loaded: Dict[str, ModuleType] = {}


class CatalogError(DVCLModuleError):
    """Neither an installed backend nor the bundled backend source was found."""


def dvcl_package_dir() -> Optional[Path]:
    """The ``dvcl`` package folder: the installed backend (found without importing it), else the bundled one."""
    try:
        spec = importlib.util.find_spec("dvcl")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    backend = find_backend_dir()
    if backend is not None and (backend / "dvcl" / "__init__.py").is_file():
        return backend / "dvcl"
    return None


@contextlib.contextmanager
def _errors_importable(package_dir: Path) -> Iterator[None]:
    """Let ``from dvcl.errors import ...`` work while a file of a not-installed backend is executed.

    ``dvcl/__init__.py`` and ``dvcl/errors.py`` (both plain Python) are registered for the duration of the
    load only, so that an installation made afterwards is imported normally.
    """
    if "dvcl" in sys.modules or importlib.util.find_spec("dvcl") is not None:
        yield
        return
    added = []
    try:
        for name, path, package in (("dvcl", package_dir / "__init__.py", True),
                                    ("dvcl.errors", package_dir / "errors.py", False)):
            spec = importlib.util.spec_from_file_location(
                name, path, submodule_search_locations=[str(package_dir)] if package else None)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            added.append(name)
            spec.loader.exec_module(module)
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def load(key: str) -> ModuleType:
    """The catalogue module ``key`` (``methods``, ``presets`` or ``profiles``), loaded once by file path."""
    if key in _loaded:
        return _loaded[key]
    package_dir = dvcl_package_dir()
    if package_dir is None:
        raise CatalogError("the dvcl backend was not found (neither installed nor bundled with the extension)")
    path = package_dir / CATALOG_FILES[key]
    if not path.is_file():
        raise CatalogError(f"{path}: the backend's {key} catalogue is missing")
    name = f"_dvcl_slicer_catalog_{key}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    try:
        with _errors_importable(package_dir):
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise CatalogError(f"{path}: cannot read the backend's {key} catalogue ({exc})") from exc
    _loaded[key] = module
    return module


def reload() -> None:
    """Forget the loaded catalogues (after installing or updating the backend)."""
    for key in list(_loaded):
        sys.modules.pop(f"_dvcl_slicer_catalog_{key}", None)
    _loaded.clear()


def method_names() -> List[str]:
    """Training methods in the paper's table order."""
    return list(load("methods").method_names())


def method_display_name(name: str) -> str:
    return str(load("methods").display_name(name))


def default_method() -> str:
    return str(getattr(load("methods"), "DEFAULT_METHOD", method_names()[0]))


def preset_names() -> List[str]:
    return list(load("presets").list_presets())


def preset_labels(preset: str) -> Dict[int, str]:
    """Label id -> name of a built-in preset or a dataset.json; empty when it cannot be read."""
    try:
        return {int(k): str(v) for k, v in load("presets").get_preset(preset).labels.items()}
    except Exception as exc:  # unknown name, unreadable dataset.json
        log.debug("no labels for preset %s: %s", preset, exc)
        return {}


def profile_names() -> List[str]:
    return list(load("profiles").profile_names())


def default_profile() -> str:
    return str(getattr(load("profiles"), "DEFAULT_PROFILE", profile_names()[0]))


def profile_description(name: str) -> str:
    return str(getattr(load("profiles"), "DESCRIPTIONS", {}).get(name, ""))


def profile_defaults(profile: str, preset: str = "") -> Dict[str, Any]:
    """What the Train tab shows for ``profile``: the preset's schedule, overridden by the profile's own.

    The paper profile leaves batch, iterations and LR to the data set's preset (METHOD.md), the quick profile
    sets them; a custom dataset.json uses the backend's defaults for what the profile leaves open.
    """
    values: Dict[str, Any] = {}
    try:
        preset_obj = load("presets").get_preset(preset) if preset else None
    except Exception:
        preset_obj = None
    if preset_obj is not None:
        for key in ("iterations", "batch_labeled", "batch_unlabeled"):
            if getattr(preset_obj, key, None) is not None:
                values[key] = getattr(preset_obj, key)
    options = dict(load("profiles").PROFILES.get(profile, {}))
    for key in SCHEDULE_KEYS:
        if key in options:
            values[key] = tuple(options[key]) if key == "patch" else options[key]
    return values


def preferred_model(models: List[ModelInfo]) -> Optional[ModelInfo]:
    """The model ``dvcl segment`` would use without ``--model`` (the backend's ``model_choice`` rule, default
    preset, standard mode) among ``models``; None when none serves that preset."""
    rules = load("models")
    index = rules.best_model_index([rules.ranking_entry(m.meta, is_shipped_model(m)) for m in models])
    return None if index is None else models[index]


def adapt_default_iterations() -> int:
    """``dvcl adapt``'s default number of iterations (``DEFAULT_ITERATIONS`` of the backend's ``adapt.py``).

    Read from the file's syntax tree, not executed: ``adapt.py`` is torch-free at import but imports other
    ``dvcl`` modules, which a backend that is bundled but not installed cannot provide.
    """
    package_dir = dvcl_package_dir()
    if package_dir is None:
        raise CatalogError("the dvcl backend was not found (neither installed nor bundled with the extension)")
    path = package_dir / "adapt.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise CatalogError(f"{path}: cannot read the backend's adaptation defaults ({exc})") from exc
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == "DEFAULT_ITERATIONS" for t in targets) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
            break
    raise CatalogError(f"{path}: no DEFAULT_ITERATIONS = <positive integer> (this backend has no `dvcl adapt`?)")
