"""The training configuration: one dataclass, saved as the run's ``config.yaml``.

Values come, in increasing priority, from: the defaults below (METHOD.md), the preset's schedule
(batch, iterations, LR [given]), the profile (``paper`` or ``quick``, data in :mod:`dvcl.profiles`), a YAML
file, explicit CLI flags, and ``--set key=value``. Every layer goes through :func:`apply_options` /
:func:`set_option`, which convert strings with the one rule of :func:`dvcl.utils.fields.convert_value`;
ranges are declared next to each field (:func:`dvcl.utils.fields.param`) and checked by :meth:`TrainConfig.validate`.

Torch-free on purpose (the Slicer module reads and writes these files).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import yaml

from dvcl.errors import ConfigError
from dvcl.networks.config import CHANNELS_LAST_CHOICES, NetworkConfig
from dvcl.profiles import PRESET_SCHEDULE_KEYS, get_profile, profile_names
from dvcl.utils.atomic import write_text_atomic
from dvcl.utils.fields import convert_field, param, validate_params

#: where an oversampled labeled crop is centred (TrainConfig.oversample_mode)
OVERSAMPLE_MODES = ("any", "class")

PROFILES = tuple(profile_names())


@dataclass
class TrainConfig:
    """Everything that defines a training run (the run directory's ``config.yaml``).

    Attributes (tagged as in METHOD.md):
        preset: data-set preset name; empty means "the preset of the cache".
        data: prepared cache folder (``dvcl prepare``) the run reads.
        method: registered method name (``dvcl``, ``cps``, ``supervised``, ``fully``, ...).
        labeled_fraction: part of the training cases used with labels (0.1 or 0.5 [given]).
        labeled_count: number of training cases used with labels; overrides ``labeled_fraction`` (the paper's
            splits: MM-WHS 2 of 12 at 10 %, which the preset gives by itself, see
            :data:`dvcl.data.splits.PAPER_LABELED_COUNTS`).
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
        oversample_mode: which foreground voxel an oversampled crop is centred on: ``any`` labeled voxel (large
            organs dominate) or ``class``: an organ drawn uniformly among those present, then one of its voxels
            (nnU-Net; MONAI RandCropByLabelClassesd), so small organs are seen as often as large ones.
        flip_prob: probability of a flip along each axis [given: random flips; 0.5 decided].
        affine_prob: probability that a crop is also scaled and rotated (nnU-Net's spatial augmentation; MONAI
            RandAffined) [decided: 0, the paper's protocol has flips only]; measured on the synthetic-CT
            models and not adopted there either (dvcl.synthetic_training says why).
        scale_range: the scale factor of such a crop is drawn from 1 +- this, per axis (0.25: 0.75-1.25).
        rotate_deg: in-plane rotation (about the slice axis) of such a crop, +- degrees; in-plane only, as
            nnU-Net does for anisotropic grids, so that thick slices are not tilted into the plane.
        val_every: validate (and checkpoint) every N iterations; 0 = only at the end.
        val_cases: validate on at most N val cases (0 = all).
        val_roi / val_overlap: sliding window for validation, 64x160x160 with 50% overlap [given for
            inference], Gaussian blending [decided].
        val_sw_batch: windows per forward pass in validation.
        checkpoint_every: also save ``last`` every N iterations (0 = at validations only).
        log_every: a metrics.csv/TensorBoard row every N iterations (mean of the loss terms since the last row).
        amp: mixed precision on CUDA (ignored on CPU). bf16 where the GPU supports it, else fp16 + GradScaler.
        channels_last: lay the networks' weights, activations and the batch images out channels-last
            (``torch.channels_last_3d``) while training: ``auto`` = on for the CPU (1.5x faster steps there,
            docs/results/train_speed.md) and off on a GPU (not measured there), unless the environment variable
            ``DVCL_CHANNELS_LAST=on|off`` says otherwise; ``on``; ``off``. Same arithmetic up to the summation
            order, same checkpoints (:mod:`dvcl.networks.memory_format`).
        num_workers: data-loading worker processes per loader.
        cache_in_memory: keep decoded volumes in worker memory (small data sets only).
        network: the U-Net (:class:`NetworkConfig`); ``num_classes`` is filled from the data set.
        method_params: the method's hyper-parameters (its ``params_class``), resolved to the full set.
        profile: which profile seeded the values (informational).
        device: device the run was started on (informational; ``--device`` decides).
        init_model: a model package (folder or installed model name) whose networks initialise a fresh run
            instead of random weights: fine-tuning and site adaptation (``dvcl adapt``). The run's ``network``
            section is taken from the package (it is recorded resolved in config.yaml, so nobody repeats it),
            its label set must equal the data's, and each of the method's U-Nets takes the package network of
            the same name, else the package's first one (:meth:`dvcl.methods.base.Method.init_model_sources`).
            Ignored by ``--resume``, which restores the run's own checkpoint. ``None``: random initialisation.
    """

    preset: str = ""
    data: str = ""
    method: str = "dvcl"
    labeled_fraction: float = param(0.1, gt=0, le=1)
    labeled_count: Optional[int] = param(None, ge=1, nullable=True)
    subset_seed: Optional[int] = None
    seed: int = 0
    iterations: int = param(20000, ge=1)
    batch_labeled: int = param(4, ge=1)
    batch_unlabeled: int = param(4, ge=0)
    patch: Tuple[int, int, int] = param((64, 128, 128), ge=1)
    lr: float = param(0.1, gt=0)
    momentum: float = param(0.9, ge=0)
    weight_decay: float = param(1e-4, ge=0)
    poly_power: float = param(0.9, ge=0)
    nesterov: bool = False
    optimizer: str = param("sgd", choices=("sgd", "adamw"))
    foreground_oversample: float = param(0.0, ge=0, le=1)
    oversample_mode: str = param("any", choices=OVERSAMPLE_MODES)
    flip_prob: float = param(0.5, ge=0, le=1)
    affine_prob: float = param(0.0, ge=0, le=1)
    scale_range: float = param(0.25, ge=0, lt=1)
    rotate_deg: float = param(15.0, ge=0, le=180)
    val_every: int = param(500, ge=0)
    val_cases: int = param(0, ge=0)
    val_roi: Tuple[int, int, int] = param((64, 160, 160), ge=1)
    val_overlap: float = param(0.5, ge=0, lt=1)
    val_sw_batch: int = param(2, ge=1)
    checkpoint_every: int = param(0, ge=0)
    log_every: int = param(10, ge=1)
    amp: bool = True
    channels_last: str = param("auto", choices=CHANNELS_LAST_CHOICES)
    num_workers: int = param(4, ge=0)
    cache_in_memory: bool = False
    network: NetworkConfig = field(default_factory=NetworkConfig)
    method_params: Dict[str, Any] = field(default_factory=dict)
    profile: str = "paper"
    device: str = "auto"
    init_model: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            self.network = NetworkConfig.from_dict(self.network)
        self.patch = _triple("patch", self.patch)
        self.val_roi = _triple("val_roi", self.val_roi)
        self.method_params = dict(self.method_params or {})

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot train (checked before anything is written)."""
        validate_params(self, what="option")
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


def preset_schedule(preset: Any) -> Dict[str, Any]:
    """The options a :class:`dvcl.presets.Preset` sets: its name and its batch, iterations and LR [given]."""
    return {"preset": preset.name, **{k: getattr(preset, k) for k in PRESET_SCHEDULE_KEYS}}


def apply_preset_schedule(cfg: TrainConfig, preset: Any) -> None:
    """Batch, iterations and LR of a :class:`dvcl.presets.Preset` [given per data set]."""
    apply_options(cfg, preset_schedule(preset))


def apply_profile(cfg: TrainConfig, profile: str) -> None:
    """Overwrite ``cfg`` with a profile's values (data in :data:`dvcl.profiles.PROFILES`)."""
    apply_options(cfg, get_profile(profile))
    cfg.profile = profile


def apply_options(cfg: TrainConfig, options: Mapping[str, Any]) -> None:
    """The one override mechanism: set every ``KEY: VALUE`` (profile data, preset schedule, ``--set``)."""
    for key, value in options.items():
        set_option(cfg, key, value)


def set_option(cfg: TrainConfig, key: str, value: Any) -> None:
    """Set one option from ``--set key=value``: ``network.X`` for the U-Net, a TrainConfig field, or else a
    method parameter (converted and checked later against the method's dataclass, which knows its types).

    Strings are converted to the field's type by :func:`dvcl.utils.fields.convert_field` (``iterations=3.5``
    is refused, ``amp=0`` is False, ``subset_seed=none`` is None)."""
    if key.startswith("network."):
        sub = key.split(".", 1)[1]
        d = cfg.network.to_dict()
        if sub not in d:
            raise ConfigError(f"unknown network option '{sub}'; valid: {', '.join(sorted(d))}")
        d[sub] = convert_field(NetworkConfig, sub, value, what="network option")
        cfg.network = NetworkConfig.from_dict(d)
        return
    names = {f.name for f in dataclasses.fields(cfg)}
    if key.startswith("method."):
        key = key.split(".", 1)[1]
    elif key in names and key not in ("network", "method_params"):
        setattr(cfg, key, convert_field(TrainConfig, key, value, what="option"))
        return
    cfg.method_params[key] = value


def _triple(name: str, v: Any) -> Tuple[int, int, int]:
    try:
        t = tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be three integers (z, y, x), got {v!r}") from exc
    if len(t) != 3 or any(x < 1 for x in t):
        raise ConfigError(f"{name} must be three positive integers (z, y, x), got {v!r}")
    return t
