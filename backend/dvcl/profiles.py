"""Training profiles as data: what ``--profile paper`` and ``--profile quick`` set.

Each profile is a mapping of training options, keyed exactly as ``--set KEY=VALUE`` keys them (a
:class:`~dvcl.training.config.TrainConfig` field, or ``network.X``). The one override mechanism
(:func:`dvcl.training.config.apply_options`) applies them, in increasing priority:

    TrainConfig defaults  <  preset schedule (batch, iterations, LR of the data set)  <  profile
        <  --config YAML  <  explicit CLI flags  <  --set KEY=VALUE

The paper profile does not set the batch, iterations or LR: those are the preset's (METHOD.md: 4+4, 20k,
0.1; MMWHS 2+2, 10k, 0.03). CLI help texts, the docs and the Slicer module read the values from here.

Standard library only (the Slicer module may load this file by path).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

#: the preset-given schedule a profile may leave to the data set
PRESET_SCHEDULE_KEYS = ("batch_labeled", "batch_unlabeled", "iterations", "lr")

PROFILES: Dict[str, Dict[str, Any]] = {
    "paper": {
        "optimizer": "sgd",
        "patch": (64, 128, 128),
        "network.strides": (),
        "network.channels": (16, 32, 64, 128, 256),
        "val_every": 500,
        "val_cases": 0,
        "val_roi": (64, 160, 160),
        "val_overlap": 0.5,
        "val_sw_batch": 2,
        "num_workers": 4,
        "log_every": 10,
    },
    "quick": {
        "optimizer": "adamw",
        "lr": 3e-3,
        "patch": (32, 64, 64),
        "network.strides": (),
        "network.channels": (8, 16, 32, 64),
        "batch_labeled": 2,
        "batch_unlabeled": 2,
        "iterations": 300,
        "val_every": 100,
        "val_cases": 4,
        "val_roi": (32, 64, 64),
        "val_overlap": 0.25,
        "val_sw_batch": 4,
        "num_workers": 1,
        "log_every": 10,
    },
}

DESCRIPTIONS: Dict[str, str] = {
    "paper": "the paper's setting (SGD, the preset's batch/iterations/LR, AMP on CUDA)",
    "quick": "a CPU-sized run for trying the pipeline and for phantoms (AdamW: a few hundred iterations are far "
    "too few for SGD from scratch); minutes on a laptop CPU, not a result to compare with the paper",
}

DEFAULT_PROFILE = "paper"


def profile_names() -> List[str]:
    return list(PROFILES)


def get_profile(name: str) -> Dict[str, Any]:
    """A copy of profile ``name``'s options; ``ValueError`` (a ``ConfigError`` in the backend) otherwise."""
    if name not in PROFILES:
        raise _config_error(f"unknown profile '{name}': choose one of {', '.join(PROFILES)}")
    return dict(PROFILES[name])


def _config_error(message: str) -> Exception:
    try:
        from dvcl.errors import ConfigError
    except ImportError:  # loaded by file path without the backend
        return ValueError(message)
    return ConfigError(message)


def _size(v: Any) -> str:
    return "x".join(str(int(x)) for x in v)


def summary(name: str, schedule: Optional[Mapping[str, Any]] = None) -> str:
    """One line for help texts, e.g. ``patch 32x64x64, channels 8..64, batch 2+2, 300 iterations, adamw lr
    0.003, validation window 32x64x64 (overlap 0.25)``. ``schedule`` fills in the preset's batch/iterations/LR
    where the profile leaves them to the data set ("the preset's" otherwise)."""
    p = {**(schedule or {}), **PROFILES[name]}
    ch = p["network.channels"]
    if all(k in p for k in PRESET_SCHEDULE_KEYS):
        sched = f"batch {p['batch_labeled']}+{p['batch_unlabeled']}, {p['iterations']} iterations, " \
                f"{p['optimizer']} lr {p['lr']:g}"
    else:
        sched = f"the preset's batch/iterations/lr, {p['optimizer']}"
    return (f"patch {_size(p['patch'])}, channels {ch[0]}..{ch[-1]}, {sched}, validation window "
            f"{_size(p['val_roi'])} (overlap {p['val_overlap']:g}) every {p['val_every']} iterations")


def help_text() -> str:
    """``paper: ...; quick: ...`` for the ``--profile`` option of the CLI."""
    return "; ".join(f"{n}: {summary(n)}" for n in PROFILES)


def defaults_for(name: str, preset: Any = None) -> Dict[str, Any]:
    """Every option profile ``name`` sets, with the preset's schedule where the profile leaves it to the data
    set (``preset``: a :class:`dvcl.presets.Preset`, a preset name, or None for the TrainConfig defaults of the
    paper schedule: 4+4, 20000 iterations, LR 0.1). What a GUI shows when the profile changes."""
    schedule: Dict[str, Any] = {"batch_labeled": 4, "batch_unlabeled": 4, "iterations": 20000, "lr": 0.1}
    if preset is not None:
        if isinstance(preset, str):
            from dvcl.presets import get_preset

            preset = get_preset(preset)
        schedule = {k: getattr(preset, k) for k in PRESET_SCHEDULE_KEYS}
    return {**schedule, **PROFILES[name]} if name in PROFILES else get_profile(name)


def _fmt(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return _size(v) if v else "default"
    return f"{v:g}" if isinstance(v, float) else str(v)


def default_text(key: str) -> str:
    """Where the default of option ``key`` comes from, per profile, for help texts, e.g. ``paper: the preset's
    (amos/btcv/flare22 20000, mmwhs 10000); quick: 300``."""
    parts = []
    for name, values in PROFILES.items():
        if key in values:
            parts.append(f"{name}: {_fmt(values[key])}")
        elif key in PRESET_SCHEDULE_KEYS:
            parts.append(f"{name}: the preset's ({_preset_values(key)})")
    return "; ".join(parts)


def _preset_values(key: str) -> str:
    try:
        from dvcl.presets import PRESETS
    except ImportError:  # loaded by file path without the backend
        return "per data set"
    groups: Dict[str, List[str]] = {}
    for name in sorted(PRESETS):
        groups.setdefault(_fmt(getattr(PRESETS[name], key)), []).append(name)
    return ", ".join(f"{'/'.join(names)} {value}" for value, names in groups.items())


def window_text() -> str:
    """The validation (and so the exported model's) sliding window of each profile, for help texts."""
    from dvcl.inference.sliding_window import WindowConfig

    return "; ".join(f"{name}: {WindowConfig.from_overlap(v['val_roi'], v['val_overlap']).describe()}"
                     for name, v in PROFILES.items())
