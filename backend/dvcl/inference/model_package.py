"""Model packages: a trained segmentation model as a folder anyone can run (docs/architecture.md).

```
MODEL_DIR/model.json           format, name, labels (names + colors), preprocessing, network config,
                               the models averaged at inference, sliding-window settings, training summary,
                               optional post-processing chosen on validation (dvcl.inference.postprocessing)
MODEL_DIR/weights.safetensors  keys "<model>.<param>", e.g. "A.stem.conv_0.conv.weight"
```

Weights are safetensors only: loading a package never unpickles anything, so a package downloaded from
someone else cannot run code on load. Every problem with a package (missing folder, corrupt weights, a
JSON error, weights that do not fit the network config) is a :class:`~dvcl.errors.ModelError` naming the
file. The JSON side (``read_model_json``, ``list_installed_models``) is torch-free so the Slicer module and
``dvcl info`` can list models instantly; torch is imported only when weights are loaded or saved. A package
loaded with ``lazy=True`` (``dvcl segment``) builds its networks on first use, so a run whose engine finds its
ONNX graphs cached never loads the weights into torch.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from dvcl import __version__
from dvcl.errors import ConfigError, DVCLError, ModelError, OutputExistsError
from dvcl.inference.model_validation import (
    ALL_AXES,
    FLIP_AXES_KEY,
    POSTPROCESSING_KEY,
    recorded_flip_axes,
    validate_label_names,
    validate_models,
    validate_network,
    validate_postprocessing,
    validate_preprocessing,
    validate_text,
    validate_window,
)
from dvcl.inference.sliding_window import PAPER_ROI, PAPER_STRIDE, WindowConfig
from dvcl.io.segmentation import SegmentInfo, segments_from_labels
from dvcl.model_choice import DEFAULT_SEGMENT_PRESET, best_model_index, card_score, mode_of
from dvcl.networks.config import NetworkConfig
from dvcl.preprocessing.pipeline import PreprocessConfig
from dvcl.utils.atomic import atomic_path, write_json_atomic
from dvcl.utils.json_files import read_json_object

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

FORMAT = "dvcl-model/1"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
#: The paper's sliding window [given] (dvcl.inference.sliding_window): window 64 x 160 x 160, stride 32 x 80 x 80.
DEFAULT_ROI = PAPER_ROI
DEFAULT_STRIDE = PAPER_STRIDE
USER_MODELS_ENV = "DVCL_MODELS"


# ------------------------------------------------------------------------------------------- locations
def builtin_models_dir() -> Path:
    """Folder of the models shipped inside the ``dvcl`` package (package data)."""
    return Path(__file__).resolve().parent.parent / "models"


def default_model_dir() -> Path:
    """The demo model for the phantoms, shipped as package data (``dvcl/models/phantom_demo``)."""
    return builtin_models_dir() / "phantom_demo"


def user_models_dir() -> Path:
    """Where users install models: ``$DVCL_MODELS`` or ``~/.dvcl/models``."""
    env = os.environ.get(USER_MODELS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".dvcl" / "models"


@dataclass(frozen=True)
class ModelInfo:
    """What ``model.json`` says about an installed model (no weights loaded)."""

    name: str
    path: Path
    description: str
    preset: str
    labels: Dict[int, str]
    source: str  # "builtin" or "user"
    window: str = ""  # the sliding window it segments with, e.g. "window 32x64x64, stride 24x48x48"
    mode: str = "standard"  # "fast": the lower-resolution model that `dvcl segment --fast` picks
    real_ct_dice: Optional[float] = None  # the model card's mean Dice on real CT, if measured

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "description": self.description, "preset": self.preset,
                "labels": {str(k): v for k, v in self.labels.items()}, "source": self.source, "window": self.window,
                "mode": self.mode, "real_ct_dice": self.real_ct_dice}


def list_installed_models() -> List[ModelInfo]:
    """Models in the package's ``models/`` folder (the demo) and in the user folder, by name.

    Folders whose ``model.json`` is missing or invalid are skipped with a warning: one broken download must
    not hide the other models.
    """
    found: List[ModelInfo] = []
    for source, root in (("builtin", builtin_models_dir()), ("user", user_models_dir())):
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if not (folder / MODEL_JSON).is_file():
                continue
            try:
                meta = read_model_json(folder)
            except ModelError as exc:
                log.warning("skipping model folder: %s", exc)
                continue
            found.append(ModelInfo(name=meta["name"], path=folder, description=meta.get("description", ""),
                                   preset=meta.get("preset", ""),
                                   labels={int(k): v["name"] for k, v in meta["labels"].items()}, source=source,
                                   window=WindowConfig(tuple(meta["inference"]["roi"]),
                                                       tuple(meta["inference"]["stride"])).describe(),
                                   mode=mode_of(meta), real_ct_dice=card_score(meta)))
    return found


def default_model(preset: Optional[str] = None, fast: bool = False) -> Path:
    """The best installed model for ``preset`` (default :data:`DEFAULT_SEGMENT_PRESET`): what ``dvcl segment``
    uses without ``--model`` and what the Slicer Segment tab preselects (the ranking:
    :func:`dvcl.model_choice.best_model_index`).

    Raises:
        ModelError: no installed model for the preset (or no fast one when ``fast``); the message lists what
            is installed.
    """
    preset = preset or DEFAULT_SEGMENT_PRESET
    installed = list_installed_models()
    index = best_model_index([(m.preset, m.mode, m.real_ct_dice, m.source == "builtin", m.name) for m in installed],
                             preset, fast)
    if index is None:
        names = ", ".join(f"{m.name} ({m.preset or 'no preset'}, {m.mode})" for m in installed) or "none"
        kind = "fast model" if fast else "model"
        raise ModelError(f"no installed {kind} for preset '{preset}' (installed: {names}); give --model")
    best = installed[index]
    log.info("model: %s (%s, best installed %s model for preset %s)", best.name, best.path,
             "fast" if fast else "standard", preset)
    return best.path


def resolve_model(spec: PathLike) -> Path:
    """A model folder from a path, or from the name of an installed model (``phantom_demo``).

    Raises:
        ModelError: neither a folder nor a known name; the message lists the installed names.
    """
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    installed = list_installed_models()
    for info in installed:
        if info.name == str(spec) or info.path.name == str(spec):
            return info.path
    names = ", ".join(sorted({i.name for i in installed})) or "none"
    raise ModelError(f"{spec}: model folder not found and no installed model has this name (installed: {names})")


# -------------------------------------------------------------------------------------------- model.json
def read_model_json(model_dir: PathLike) -> dict:
    """Read and validate ``model.json`` without touching the weights (torch-free).

    Raises:
        ModelError: missing folder or file, invalid JSON, wrong format version, inconsistent fields.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: model folder not found")
    path = model_dir / MODEL_JSON
    if not path.is_file():
        raise ModelError(f"{path}: missing (not a dvcl model package)")
    meta = read_json_object(path, ModelError)
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise ModelError(f"{path}: unsupported format {fmt!r} (this dvcl reads {FORMAT!r})")
    for key in ("name", "labels", "network", "models"):
        if key not in meta:
            raise ModelError(f"{path}: required field '{key}' is missing")
    # field by field first (types, lengths, ranges): a shared package must never reach a traceback or an OOM
    validate_text(meta, "name", path, required=True)
    validate_text(meta, "description", path, limit=10_000)
    validate_text(meta, "preset", path)
    prep = validate_preprocessing(meta.get("preprocessing"), path)
    validate_network(meta["network"], path)
    try:
        net_cfg = NetworkConfig.from_dict(meta["network"])
        PreprocessConfig.from_dict(prep)
    except (ConfigError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path}: invalid 'network' or 'preprocessing' ({exc})") from exc
    meta["preprocessing"] = {**(meta.get("preprocessing") or {}), **prep}
    meta["labels"] = _validate_labels(meta["labels"], net_cfg.num_classes, path)
    validate_label_names(meta["labels"], path)
    meta["models"] = validate_models(meta["models"], path)
    inf = meta.get("inference") or {}
    if not isinstance(inf, dict):
        raise ModelError(f"{path}: inference must be an object, got {type(inf).__name__}")
    roi, stride = validate_window(inf.get("roi", list(DEFAULT_ROI)), inf.get("stride", list(DEFAULT_STRIDE)), path)
    div = net_cfg.divisor
    if any(r % d for r, d in zip(roi, div)):
        raise ModelError(f"{path}: inference.roi {list(roi)} is not divisible by the network's {list(div)}")
    meta["inference"] = {**inf, "roi": list(roi), "stride": list(stride)}
    validate_postprocessing(meta.get(POSTPROCESSING_KEY), meta["labels"], path)
    recorded_flip_axes(meta.get("training"), path)  # a bad record fails at load, not at the first --tta
    return meta


def _triple(value: Any, what: str, path: Path) -> Tuple[int, int, int]:
    try:
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: {what} must be three positive integers (z, y, x), got {value!r}") from exc
    if len(t) != 3 or min(t) < 1:
        raise ModelError(f"{path}: {what} must be three positive integers (z, y, x), got {value!r}")
    return t


def _validate_labels(labels: Any, num_classes: int, path: Path) -> Dict[str, dict]:
    if not isinstance(labels, dict) or not labels:
        raise ModelError(f"{path}: 'labels' must map class ids to {{\"name\", \"color\"}}")
    out: Dict[str, dict] = {}
    for key, entry in labels.items():
        try:
            lid = int(key)
        except ValueError as exc:
            raise ModelError(f"{path}: label id {key!r} is not an integer") from exc
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ModelError(f"{path}: label {lid} needs a 'name'")
        color = entry.get("color")
        if color is not None and (not isinstance(color, list) or len(color) != 3
                                  or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
            raise ModelError(f"{path}: label {lid} color must be [r, g, b] in 0..255, got {color!r}")
        out[str(lid)] = dict(entry)
    ids = sorted(int(k) for k in out)
    if ids != list(range(1, num_classes)):
        raise ModelError(f"{path}: label ids {ids} do not match the network's {num_classes} classes "
                         f"(expected 1..{num_classes - 1})")
    return {str(k): out[str(k)] for k in ids}


def labels_to_json(labels: Mapping[int, Any]) -> Dict[str, dict]:
    """``{id: name}``, ``{id: {"name", "color"}}`` or ``{id: SegmentInfo}`` -> model.json's label table."""
    out: Dict[str, dict] = {}
    for key, entry in sorted(labels.items(), key=lambda kv: int(kv[0])):
        if int(key) == 0:
            continue
        if isinstance(entry, SegmentInfo):
            out[str(int(key))] = {"name": entry.name, "color": [int(c) for c in entry.color]}
        else:
            info = segments_from_labels({int(key): entry})[int(key)]
            out[str(int(key))] = {"name": info.name, "color": [int(c) for c in info.color]}
    return out


# ----------------------------------------------------------------------------------------- the package
class LazyNetworks(Mapping[str, "nn.Module"]):
    """A package's networks by model name, built and loaded from the weights on first access.

    The names (iteration, ``in``, ``len``) come from ``model.json`` and need no torch; the first ``[name]`` or
    :meth:`load` builds every network at once (one weights file). Why: an engine that runs a cached ONNX graph
    never needs the networks, and building them means importing torch.
    """

    def __init__(self, names: Sequence[str], build: Callable[[], Dict[str, nn.Module]]) -> None:
        self._names = list(names)
        self._build = build
        self._nets: Optional[Dict[str, nn.Module]] = None

    @property
    def loaded(self) -> bool:
        return self._nets is not None

    def load(self) -> Dict[str, nn.Module]:
        """The networks, built now if they are not yet (raises :class:`ModelError` for bad weights)."""
        if self._nets is None:
            self._nets = self._build()
        return self._nets

    def __getitem__(self, name: str) -> nn.Module:
        if name not in self._names:
            raise KeyError(name)
        return self.load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"LazyNetworks({self._names}, {'loaded' if self.loaded else 'not loaded'})"


@dataclass
class ModelPackage:
    """A loaded model package: metadata plus the networks (a dict, or :class:`LazyNetworks`), on the CPU in
    eval mode.

    Use :meth:`to` to move the networks to a device; :mod:`dvcl.inference.predictor` does that.
    """

    path: Path
    meta: dict
    network_config: NetworkConfig
    models: Mapping[str, nn.Module] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def description(self) -> str:
        return str(self.meta.get("description", ""))

    @property
    def preset(self) -> str:
        return str(self.meta.get("preset", ""))

    @property
    def num_classes(self) -> int:
        return self.network_config.num_classes

    @property
    def labels(self) -> Dict[int, str]:
        """Class id -> structure name (background excluded)."""
        return {int(k): v["name"] for k, v in self.meta["labels"].items()}

    @property
    def segments(self) -> Dict[int, SegmentInfo]:
        """Class id -> :class:`SegmentInfo` (name and color), for ``.seg.nrrd`` output."""
        return segments_from_labels({int(k): v for k, v in self.meta["labels"].items()},
                                    tags={"DVCL.Model": self.name})

    @property
    def model_names(self) -> List[str]:
        """The models whose softmax outputs are averaged at inference (e.g. ``["A", "B"]``)."""
        return list(self.meta["models"])

    @property
    def largest_component(self) -> Tuple[int, ...]:
        """Classes whose largest connected component alone is kept (chosen on validation; may be empty)."""
        post = self.meta.get(POSTPROCESSING_KEY) or {}
        return tuple(int(v) for v in post.get("largest_component", []))

    @property
    def flip_axes(self) -> Tuple[int, ...]:
        """Spatial axes (z 0, y 1, x 2) training flipped at random, so the only flips test-time augmentation may
        use; for an ensemble, the axes every member was trained with. Not recorded: all three (TrainConfig's
        default, what packages made before the record used).

        Raises:
            ModelError: a recorded value that is not a list of distinct axes 0..2.
        """
        return recorded_flip_axes(self.meta.get("training"), self.path / MODEL_JSON)

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.meta.get("preprocessing") or {})

    @property
    def roi(self) -> Tuple[int, int, int]:
        return tuple(self.meta["inference"]["roi"])

    @property
    def stride(self) -> Tuple[int, int, int]:
        return tuple(self.meta["inference"]["stride"])

    def to(self, device: torch.device) -> ModelPackage:
        for net in self.models.values():
            net.to(device)
        return self


def load_model_package(model_dir: PathLike, device: Optional[Any] = None, lazy: bool = False) -> ModelPackage:
    """Load a model package: validate ``model.json``, build the networks, load the safetensors weights.

    Args:
        model_dir: the package folder (see :func:`resolve_model` for names of installed models).
        device: optional device to move the networks to (default: stay on the CPU; loads them now).
        lazy: build the networks on first use (:class:`LazyNetworks`): no torch import until an engine needs
            them; weight problems then surface at that point, still as :class:`ModelError`.

    Raises:
        ModelError: missing folder/files, invalid JSON, corrupt weights, weight keys or shapes that do not
            match the network config.
    """
    model_dir = Path(model_dir)
    meta = read_model_json(model_dir)
    net_cfg = NetworkConfig.from_dict(meta["network"])
    if not (model_dir / WEIGHTS).is_file():
        raise ModelError(f"{model_dir / WEIGHTS}: weights file missing")
    networks = LazyNetworks(meta["models"], lambda: _build_networks(model_dir, meta, net_cfg))
    pkg = ModelPackage(path=model_dir, meta=meta, network_config=net_cfg, models=networks)
    if not lazy:
        networks.load()
    if device is not None:
        pkg.to(device)
    log.info("%s model '%s' (%s; models %s) from %s", "found" if lazy else "loaded", pkg.name,
             pkg.preset or "custom", "+".join(pkg.model_names), model_dir)
    return pkg


def _build_networks(model_dir: Path, meta: Mapping[str, Any], net_cfg: NetworkConfig) -> Dict[str, nn.Module]:
    """Build the package's networks and load their weights, checked key by key (imports torch)."""
    from dvcl.networks import build_network

    weights = _load_weights(model_dir / WEIGHTS)
    models: Dict[str, nn.Module] = {}
    for name in meta["models"]:
        try:
            net = build_network(net_cfg)
        except DVCLError as exc:
            raise ModelError(f"{model_dir / MODEL_JSON}: cannot build network ({exc})") from exc
        state = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
        _check_state(net, state, name, model_dir / WEIGHTS)
        net.load_state_dict(state, strict=True)
        net.eval()
        models[name] = net
    claimed = tuple(n + "." for n in meta["models"])
    stray = sorted(k for k in weights if not k.startswith(claimed))
    if stray:
        raise ModelError(f"{model_dir / WEIGHTS}: {len(stray)} weights belong to no model listed in model.json "
                         f"(e.g. {stray[0]!r})")
    log.debug("built the networks of %s", model_dir)
    return models


def _load_weights(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"{path}: weights file missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: corrupt or unreadable weights ({exc})") from exc


def _check_state(net: nn.Module, state: Mapping[str, torch.Tensor], name: str, path: Path) -> None:
    """Compare a state dict with what the network expects; one clear message instead of torch's list."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not state:
        raise ModelError(f"{path}: no weights for model '{name}' (keys must start with '{name}.')")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} with wrong shape (e.g. {wrong[0]})")
    if problems:
        raise ModelError(f"{path}: weights of model '{name}' do not match the network config: " + "; ".join(problems))


def save_model_package(
    models: Mapping[str, nn.Module],
    config: Union[NetworkConfig, Mapping[str, Any]],
    labels: Mapping[int, Any],
    out_dir: PathLike,
    name: str,
    description: str = "",
    preset: str = "",
    preprocessing: Optional[Union[PreprocessConfig, Mapping[str, Any]]] = None,
    model_names: Optional[Sequence[str]] = None,
    roi: Sequence[int] = DEFAULT_ROI,
    stride: Sequence[int] = DEFAULT_STRIDE,
    training: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    mode: Optional[str] = None,
) -> Path:
    """Write networks and their metadata as a model package folder.

    Args:
        models: name -> network (e.g. ``{"A": net_a, "B": net_b}``); only ``model_names`` are saved.
        config: the :class:`NetworkConfig` the networks were built from.
        labels: class id -> name, ``{"name", "color"}`` or :class:`SegmentInfo` (background omitted).
        out_dir: package folder (created).
        model_names: models averaged at inference (default: all of ``models`` in the given order).
        roi / stride: sliding-window settings (z, y, x); the paper's by default.
        training: free-form summary stored in model.json (method, iterations, val Dice, ...).
        mode: ``fast`` for a lower-resolution model of ``dvcl segment --fast`` (:mod:`dvcl.model_choice`).

    Returns:
        The package folder. ``model.json`` is written last, so a folder without it is never a package.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    cfg = config if isinstance(config, NetworkConfig) else NetworkConfig.from_dict(dict(config))
    names = list(model_names) if model_names is not None else list(models)
    missing = [n for n in names if n not in models]
    if not names or missing:
        raise ModelError(f"{out_dir}: models {missing or names} to save are not given")
    if any("." in n for n in names):
        raise ModelError(f"{out_dir}: model names must not contain '.', got {names}")
    for target in (out_dir / MODEL_JSON, out_dir / WEIGHTS):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target}: exists (use --overwrite to replace it)")
    prep = preprocessing if isinstance(preprocessing, PreprocessConfig) else PreprocessConfig.from_dict(
        dict(preprocessing or {}))
    meta = {
        "format": FORMAT,
        "name": str(name),
        "description": str(description),
        "preset": str(preset),
        "labels": labels_to_json(labels),
        "preprocessing": prep.to_dict(),
        "network": cfg.to_dict(),
        "models": names,
        "inference": {"roi": [int(v) for v in roi], "stride": [int(v) for v in stride]},
        "training": dict(training or {}),
        "dvcl_version": __version__,
    }
    if mode is not None:
        meta["mode"] = str(mode)
    # Validate the metadata before writing anything (the same checks a reader applies).
    _validate_meta_for_write(meta, out_dir)
    tensors = {}
    for n in names:
        for key, value in models[n].state_dict().items():
            tensors[f"{n}.{key}"] = value.detach().to("cpu").contiguous().clone()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "name": str(name)})
    write_json_atomic(out_dir / MODEL_JSON, meta, strict=True)
    log.info("wrote model package '%s' (%d tensors) to %s", name, len(tensors), out_dir)
    return out_dir


def _validate_meta_for_write(meta: dict, out_dir: Path) -> None:
    path = out_dir / MODEL_JSON
    recorded_flip_axes(meta.get("training"), path)
    cfg = NetworkConfig.from_dict(meta["network"])
    meta["labels"] = _validate_labels(meta["labels"], cfg.num_classes, path)
    roi = _triple(meta["inference"]["roi"], "roi", path)
    stride = _triple(meta["inference"]["stride"], "stride", path)
    if any(s > r for s, r in zip(stride, roi)) or any(r % d for r, d in zip(roi, cfg.divisor)):
        raise ModelError(f"{path}: window {list(roi)} / stride {list(stride)} do not suit the network "
                         f"(window divisible by {list(cfg.divisor)}, stride <= window)")


# ---------------------------------------------------------------------------------------------- export
def export_model(
    run_dir: PathLike,
    out_dir: PathLike,
    name: Optional[str] = None,
    checkpoint: str = "auto",
    description: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Turn a training run directory (docs/architecture.md, "Run directory") into a model package.

    Reads ``config.yaml`` (network, preset, labels, preprocessing), ``run.json`` (inference models, summary)
    and ``checkpoints/<checkpoint>.safetensors``; builds the networks and loads the weights before writing,
    so a package that exports always loads.

    ``checkpoint``: ``best`` (best validation Dice), ``last``, or ``auto``: best, else last with a warning
    (a short or interrupted run has not validated yet, so it has no best checkpoint). The package records
    the run by its folder name only: no absolute paths of the machine it was trained on.
    """
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: run directory not found")
    if checkpoint not in ("best", "last", "auto"):
        raise ConfigError(f"checkpoint must be 'best', 'last' or 'auto', got '{checkpoint}'")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ModelError(f"{cfg_path}: missing (not a dvcl run directory)")
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ModelError(f"{cfg_path}: not valid YAML ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_path}: must hold a mapping")
    run_info = _read_json_optional(run_dir / "run.json")
    checkpoint = _choose_checkpoint(run_dir, checkpoint, run_info)
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.safetensors"
    weights = _load_weights(ckpt)

    net_dict = cfg.get("network")
    if not isinstance(net_dict, dict):
        raise ModelError(f"{cfg_path}: no 'network' section")
    labels = _run_labels(cfg, run_dir)
    net_dict = {**net_dict}
    if not net_dict.get("num_classes"):
        net_dict["num_classes"] = max(labels) + 1
    try:
        net_cfg = NetworkConfig.from_dict(net_dict)
    except ConfigError as exc:
        raise ModelError(f"{cfg_path}: invalid network config ({exc})") from exc
    prefixes = sorted({k.split(".", 1)[0] for k in weights})
    inference_models = (run_info.get("inference_models") or cfg.get("inference_models") or prefixes)
    from dvcl.networks import build_network

    nets: Dict[str, nn.Module] = {}
    for m in inference_models:
        net = build_network(net_cfg)
        state = {k[len(m) + 1:]: v for k, v in weights.items() if k.startswith(m + ".")}
        _check_state(net, state, m, ckpt)
        net.load_state_dict(state, strict=True)
        nets[m] = net
    preset = cfg.get("preset")
    preset_name = preset.get("name", "") if isinstance(preset, dict) else str(preset or "")
    training = {
        "method": cfg.get("method", ""),
        "checkpoint": checkpoint,
        "seed": cfg.get("seed"),
        "iteration": run_info.get("best_iteration") if checkpoint == "best" else run_info.get("iteration"),
        "best_val_dice": run_info.get("best_val_dice", run_info.get("best_metric")),
        "labeled_fraction": cfg.get("labeled_fraction"),
        "run": run_dir.resolve().name,
    }
    if cfg.get("flip_prob") is not None:  # what test-time augmentation may flip (ModelPackage.flip_axes)
        training[FLIP_AXES_KEY] = list(ALL_AXES) if float(cfg["flip_prob"]) > 0 else []
    roi, stride = _run_window(cfg)
    return save_model_package(
        nets, net_cfg, labels, out_dir,
        name=name or run_dir.name,
        description=description if description is not None else
        f"{training['method'] or 'dvcl'} model trained on {preset_name or 'custom data'} ({checkpoint} checkpoint)",
        preset=preset_name,
        preprocessing=_run_preprocessing(cfg, run_dir),
        model_names=list(inference_models),
        roi=roi,
        stride=stride,
        training={k: v for k, v in training.items() if v is not None},
        overwrite=overwrite,
    )


def _choose_checkpoint(run_dir: Path, checkpoint: str, run_info: Mapping[str, Any]) -> str:
    """``best`` or ``last`` (see :func:`export_model`); a missing checkpoint is a one-line ModelError that says
    what to do."""
    ckpts = run_dir / "checkpoints"
    has = {c: (ckpts / f"{c}.safetensors").is_file() for c in ("best", "last")}
    if checkpoint == "auto":
        if has["best"]:
            return "best"
        if has["last"]:
            log.warning("%s: no best checkpoint (no validation has run yet: the run is short or was stopped "
                        "early); exporting the last one (iteration %s)", run_dir, run_info.get("iteration", "?"))
            return "last"
    elif has[checkpoint]:
        return checkpoint
    if checkpoint == "best" and has["last"]:
        raise ModelError(f"{ckpts / 'best.safetensors'}: no best checkpoint (no validation has run yet: the run "
                         "is short or was stopped early); export the last one with --checkpoint last")
    raise ModelError(f"{ckpts}: no checkpoint to export (the run has not saved one yet; resume or finish "
                     "training first)")


def _read_json_optional(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _run_labels(cfg: dict, run_dir: Path) -> Dict[int, Any]:
    """The label table of a run: ``run.labels`` (or ``labels``) in config.yaml, else the preset's."""
    run_section = cfg.get("run") if isinstance(cfg.get("run"), dict) else {}
    labels = run_section.get("labels") or cfg.get("labels")
    if isinstance(labels, dict) and labels:
        out = {int(k): v for k, v in labels.items() if int(k) != 0}
        if out:
            return {k: {"name": v, "color": list(_preset_color(cfg, k, v))} if isinstance(v, str) else v
                    for k, v in out.items()}
    preset = cfg.get("preset")
    if isinstance(preset, dict) and preset.get("labels"):
        from dvcl.presets import Preset

        p = Preset.from_dict(preset)
        return {k: {"name": n, "color": list(p.color(k))} for k, n in p.labels.items()}
    if isinstance(preset, str) and preset:
        from dvcl.presets import get_preset

        try:
            p = get_preset(preset)
        except DVCLError as exc:
            raise ModelError(f"{run_dir / 'config.yaml'}: {exc}") from exc
        return {k: {"name": n, "color": list(p.color(k))} for k, n in p.labels.items()}
    raise ModelError(f"{run_dir / 'config.yaml'}: no label table ('labels' or 'preset')")


def _run_window(cfg: dict) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The sliding window the run validated with (``val_roi``, ``val_overlap``); the paper's by default.

    With the paper profile this is the paper's 64x160x160 window with stride 32x80x80 [given]; a quick-profile
    model keeps the smaller window it was validated with, so exported models behave as their validation.
    """
    window = WindowConfig.from_train_config(cfg)
    return window.roi, window.stride


def _preset_color(cfg: dict, label_id: int, name: str) -> Tuple[int, int, int]:
    """The preset's color for a label when the preset is known and agrees on the name, else the default."""
    from dvcl.presets import PRESETS, default_color

    preset = PRESETS.get(str(cfg.get("preset", "")).lower())
    if preset is not None and preset.labels.get(label_id) == name:
        return preset.color(label_id)
    return default_color(name, label_id)


def _run_preprocessing(cfg: dict, run_dir: Path) -> dict:
    """The run's preprocessing: recorded in config.yaml, else from its cache's dataset.json.

    A model applied with other preprocessing than it was trained with gives wrong results without any
    error, so a run whose preprocessing cannot be found is refused rather than exported with defaults.
    """
    run_section = cfg.get("run") if isinstance(cfg.get("run"), dict) else {}
    for prep in (run_section.get("preprocessing"), cfg.get("preprocessing")):
        if isinstance(prep, dict):
            return prep
    cache = cfg.get("data") or cfg.get("cache")
    if isinstance(cache, str) and cache:
        for base in (Path(cache), run_dir / cache, run_dir.parent / cache):
            meta = _read_json_optional(base / "dataset.json")
            if isinstance(meta.get("preprocessing"), dict):
                return meta["preprocessing"]
    raise ModelError(f"{run_dir / 'config.yaml'}: preprocessing settings not recorded and the training cache "
                     f"'{cache}' (its dataset.json) is not found; export where the cache is reachable")


# ---------------------------------------------------------------------------------------------- ensemble
#: What the members of an ensemble must share: one input pipeline, one label set, one network, one window.
ENSEMBLE_SHARED = ("preset", "labels", "preprocessing", "network", "inference", "mode")


def ensemble_packages(
    members: Sequence[PathLike],
    out_dir: PathLike,
    name: Optional[str] = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """One package that averages the softmax of several packages' networks (nnU-Net's ensemble of trainings).

    Why: trainings that differ only in their seed disagree by up to 13 Dice points per organ on real CT
    (docs/results/synthetic_model_cpu.md); the average of their probabilities has less of that variance. The
    members must share preset, labels, preprocessing, network, window and mode (:data:`ENSEMBLE_SHARED`); model
    ``A`` of the second member becomes ``A2``, and so on. Inference costs one network pass per model. ``name``:
    the output folder's name by default.

    Raises:
        ModelError: fewer than two members, or members that differ in a shared setting.
    """
    if len(members) < 2:
        raise ModelError(f"an ensemble needs at least two model packages, got {len(members)}")
    packages = [load_model_package(resolve_model(m)) for m in members]
    first = packages[0]
    for pkg in packages[1:]:
        for key in ENSEMBLE_SHARED:
            if pkg.meta.get(key) != first.meta.get(key):
                raise ModelError(f"{pkg.path}: its {key} differs from {first.path}'s; an ensemble's members must "
                                 f"share {', '.join(ENSEMBLE_SHARED)}")
    nets: Dict[str, nn.Module] = {}
    training: Dict[str, Any] = {"ensemble": []}
    for i, pkg in enumerate(packages, start=1):
        for model in pkg.model_names:
            nets[f"{model}{i}"] = pkg.models[model]
        training["ensemble"].append({"name": pkg.name, "models": pkg.model_names, **pkg.meta.get("training", {})})
    return save_model_package(
        nets, first.network_config, first.segments, out_dir, name=name or Path(out_dir).name, description=description,
        preset=first.preset, preprocessing=first.meta["preprocessing"], roi=first.roi, stride=first.stride,
        training=training, overwrite=overwrite, mode=first.meta.get("mode"))
