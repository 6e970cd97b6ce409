"""The training configuration: one dataclass, saved as the run's ``config.yaml``.

Values come, in increasing priority, from: the defaults below (METHOD.md), the preset's schedule
(batch, iterations, LR [given]), the profile (``paper`` or ``quick``), a YAML file, explicit CLI flags,
and ``--set key=value`` for the method's own hyper-parameters.

Profiles:

* ``paper``: the paper's setting. Patch 64x128x128 (z, y, x), U-Net channels 16..256, the preset's batch
  (4+4; MMWHS 2+2), iterations (20k; MMWHS 10k) and LR (0.1; MMWHS 0.03), AMP on CUDA.
* ``quick``: a CPU-sized run for trying the pipeline and for phantoms: patch 32x64x64, channels 8..64
  (three down-samplings), batch 2+2, 300 iterations, validation every 100 iterations on at most 4 cases
  with a 32x64x64 window, AdamW at LR 3e-3 (poly decay) instead of SGD. Minutes on a laptop CPU, not a result
  to compare with the paper.

Torch-free on purpose (the Slicer module reads and writes these files).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from dvcl.errors import ConfigError
from dvcl.networks.config import NetworkConfig
from dvcl.utils.atomic import write_text_atomic

PROFILES = ("paper", "quick")


@dataclass
class TrainConfig:
    """Everything that defines a training run (the run directory's ``config.yaml``).

    Attributes (tagged as in METHOD.md):
        preset: data-set preset name; empty means "the preset of the cache".
        data: prepared cache folder (``dvcl prepare``) the run reads.
        method: registered method name (``dvcl``, ``cps``, ``supervised``, ``fully``, ...).
        labeled_fraction: part of the training cases used with labels (0.1 or 0.5 [given]).
        subset_seed: seed of the labeled-subset draw; ``None`` uses the seed of splits.json so that every
            method and every training seed sees the same labeled cases [decided].
        seed: training seed (initialisation, sampling, augmentation).
        iterations / batch_labeled / batch_unlabeled / lr: the schedule [given per preset].
        patch: training crop (z, y, x), 64x128x128 [given].
        momentum / weight_decay / poly_power: SGD 0.9, 1e-4, poly 0.9 [given].
        nesterov: Nesterov momentum [decided: off].
        optimizer: ``sgd`` (the paper [given]) or ``adamw`` (the quick profile [decided]: a few hundred CPU
            iterations are far too few for SGD from scratch, AdamW at lr 3e-3 learns in that budget).
        foreground_oversample: probability that a labeled crop is centred on a foreground voxel
            (MONAI RandCropByPosNegLabeld) instead of uniformly random [decided: 0, the paper crops randomly].
        flip_prob: probability of a flip along each axis [given: random flips; 0.5 decided].
        val_every: validate (and checkpoint) every N iterations; 0 = only at the end.
        val_cases: validate on at most N val cases (0 = all).
        val_roi / val_overlap: sliding window for validation, 64x160x160 with 50% overlap [given for
            inference], Gaussian blending [decided].
        val_sw_batch: windows per forward pass in validation.
        checkpoint_every: also save ``last`` every N iterations (0 = at validations only).
        log_every: a metrics.csv/TensorBoard row every N iterations (mean of the loss terms since the last row).
        amp: mixed precision on CUDA (ignored on CPU). bf16 where the GPU supports it, else fp16 + GradScaler.
        num_workers: data-loading worker processes per loader.
        cache_in_memory: keep decoded volumes in worker memory (small data sets only).
        network: the U-Net (:class:`NetworkConfig`); ``num_classes`` is filled from the data set.
        method_params: the method's hyper-parameters (its ``params_class``), resolved to the full set.
        profile: which profile seeded the values (informational).
        device: device the run was started on (informational; ``--device`` decides).
    """

    preset: str = ""
    data: str = ""
    method: str = "dvcl"
    labeled_fraction: float = 0.1
    subset_seed: Optional[int] = None
    seed: int = 0
    iterations: int = 20000
    batch_labeled: int = 4
    batch_unlabeled: int = 4
    patch: Tuple[int, int, int] = (64, 128, 128)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    nesterov: bool = False
    optimizer: str = "sgd"
    foreground_oversample: float = 0.0
    flip_prob: float = 0.5
    val_every: int = 500
    val_cases: int = 0
    val_roi: Tuple[int, int, int] = (64, 160, 160)
    val_overlap: float = 0.5
    val_sw_batch: int = 2
    checkpoint_every: int = 0
    log_every: int = 10
    amp: bool = True
    num_workers: int = 4
    cache_in_memory: bool = False
    network: NetworkConfig = field(default_factory=NetworkConfig)
    method_params: Dict[str, Any] = field(default_factory=dict)
    profile: str = "paper"
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            self.network = NetworkConfig.from_dict(self.network)
        self.patch = _triple("patch", self.patch)
        self.val_roi = _triple("val_roi", self.val_roi)
        self.method_params = dict(self.method_params or {})

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot train (checked before anything is written)."""
        if not 0 < self.labeled_fraction <= 1:
            raise ConfigError(f"labeled_fraction must be in (0, 1], got {self.labeled_fraction}")
        for name in ("iterations", "batch_labeled"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_unlabeled", "val_every", "val_cases", "checkpoint_every", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1 or self.val_sw_batch < 1:
            raise ConfigError("log_every and val_sw_batch must be >= 1")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0 or self.poly_power < 0:
            raise ConfigError("lr must be > 0; momentum, weight_decay and poly_power >= 0")
        if not 0 <= self.foreground_oversample <= 1 or not 0 <= self.flip_prob <= 1:
            raise ConfigError("foreground_oversample and flip_prob must be in [0, 1]")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got '{self.optimizer}'")
        if not 0 <= self.val_overlap < 1:
            raise ConfigError(f"val_overlap must be in [0, 1), got {self.val_overlap}")
        div = self.network.divisor
        for name in ("patch", "val_roi"):
            size = getattr(self, name)
            if any(s % d for s, d in zip(size, div)):
                raise ConfigError(
                    f"{name} {list(size)} must be divisible by {list(div)} (z, y, x), the U-Net's total "
                    f"down-sampling for {len(self.network.channels) - 1} levels"
                )

    # ------------------------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["network"] = self.network.to_dict()
        d["patch"] = list(self.patch)
        d["val_roi"] = list(self.val_roi)
        d["method_params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.method_params.items()}
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError` (a typo must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        kwargs = dict(d)
        if isinstance(kwargs.get("network"), dict):
            kwargs["network"] = NetworkConfig.from_dict(kwargs["network"])
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid training config: {exc}") from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: Union[str, Path], extra: Optional[Dict[str, Any]] = None) -> None:
        """Write as YAML atomically; ``extra`` adds read-only context (labels, split sizes) under ``run``."""
        d = self.to_dict()
        if extra:
            d["run"] = extra
        write_text_atomic(path, yaml.safe_dump(d, sort_keys=False, default_flow_style=None))

    @classmethod
    def load(cls, path: Union[str, Path]) -> TrainConfig:
        """Read a YAML file written by :meth:`save` (its informational ``run`` section is ignored)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping of training options")
        d.pop("run", None)
        return cls.from_dict(d)


def apply_preset_schedule(cfg: TrainConfig, preset: Any) -> None:
    """Batch, iterations and LR of a :class:`dvcl.presets.Preset` [given per data set]."""
    cfg.preset = preset.name
    cfg.batch_labeled = preset.batch_labeled
    cfg.batch_unlabeled = preset.batch_unlabeled
    cfg.iterations = preset.iterations
    cfg.lr = preset.lr


def apply_profile(cfg: TrainConfig, profile: str) -> None:
    """Overwrite ``cfg`` with a profile's values (see the module docstring)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}': choose one of {', '.join(PROFILES)}")
    cfg.profile = profile
    if profile == "paper":
        cfg.optimizer = "sgd"
        cfg.patch = (64, 128, 128)
        cfg.network = NetworkConfig(**{**cfg.network.to_dict(), "channels": (16, 32, 64, 128, 256), "strides": ()})
        cfg.val_roi = (64, 160, 160)
        cfg.val_overlap = 0.5
        cfg.val_every = 500
        cfg.val_cases = 0
        cfg.num_workers = 4
        cfg.log_every = 10
        return
    cfg.patch = (32, 64, 64)
    cfg.network = NetworkConfig(**{**cfg.network.to_dict(), "channels": (8, 16, 32, 64), "strides": ()})
    cfg.optimizer = "adamw"
    cfg.lr = 3e-3
    cfg.batch_labeled = 2
    cfg.batch_unlabeled = 2
    cfg.iterations = 300
    cfg.val_every = 100
    cfg.val_cases = 4
    cfg.val_roi = (32, 64, 64)
    cfg.val_overlap = 0.25
    cfg.val_sw_batch = 4
    cfg.num_workers = 1
    cfg.log_every = 10


def set_option(cfg: TrainConfig, key: str, value: Any) -> None:
    """Set one option from ``--set key=value``: ``network.X`` for the U-Net, a TrainConfig field, or else a
    method parameter (checked later against the method's dataclass)."""
    if key.startswith("network."):
        sub = key.split(".", 1)[1]
        d = cfg.network.to_dict()
        if sub not in d:
            raise ConfigError(f"unknown network option '{sub}'; valid: {', '.join(sorted(d))}")
        d[sub] = _parse_like(value, d[sub])
        cfg.network = NetworkConfig.from_dict(d)
        return
    names = {f.name: f for f in dataclasses.fields(cfg)}
    if key.startswith("method."):
        key = key.split(".", 1)[1]
    elif key in names and key not in ("network", "method_params"):
        current = getattr(cfg, key)
        parsed = _parse_like(value, current)
        if isinstance(current, tuple):
            parsed = _triple(key, parsed)
        setattr(cfg, key, parsed)
        return
    cfg.method_params[key] = value


def _parse_like(value: Any, like: Any) -> Any:
    if not isinstance(value, str) or isinstance(like, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {value!r}") from exc
    if isinstance(like, bool) and not isinstance(parsed, bool):
        raise ConfigError(f"expected true/false, got {value!r}")
    if isinstance(like, float) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    if isinstance(like, (int, float)) and not isinstance(like, bool) and not isinstance(parsed, (int, float)):
        raise ConfigError(f"expected a number, got {value!r}")
    return parsed


def _triple(name: str, v: Any) -> Tuple[int, int, int]:
    try:
        t = tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be three integers (z, y, x), got {v!r}") from exc
    if len(t) != 3 or any(x < 1 for x in t):
        raise ConfigError(f"{name} must be three positive integers (z, y, x), got {v!r}")
    return t
