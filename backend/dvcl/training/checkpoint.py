"""Checkpoints: safetensors weights for export, one self-contained resume state, both written atomically.

``checkpoints/{best,last}.safetensors`` hold the weights of every model as ``"<model>.<param>"`` (what a
model package and inference read). ``checkpoints/last_state.pt`` holds *everything* a resume needs
(weights too, so a kill between two file replacements can never pair weights of one iteration with an
optimizer of another): optimizer, grad scaler, iteration, RNG states, best metric and the method's extra
state. It contains only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from dvcl.errors import ModelError
from dvcl.utils.atomic import atomic_path

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
STATE_FORMAT = "dvcl-train-state/1"


def models_state(models: Mapping[str, nn.Module]) -> Dict[str, Dict[str, torch.Tensor]]:
    """CPU copies of every model's state dict (parameters and buffers)."""
    return {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in models.items()}


def save_weights(path: PathLike, models: Mapping[str, nn.Module], metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``{"<model>.<param>": tensor}`` as safetensors, atomically; ``metadata`` values become strings."""
    flat: Dict[str, torch.Tensor] = {}
    for name, state in models_state(models).items():
        if "." in name:
            raise ValueError(f"model name {name!r} must not contain '.'")
        for k, v in state.items():
            flat[f"{name}.{k}"] = v.contiguous()
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_weights(path: PathLike) -> Dict[str, Dict[str, torch.Tensor]]:
    """Read a weights file into ``{model: state_dict}``; :class:`ModelError` when unreadable."""
    try:
        flat = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ModelError(f"{path}: cannot read weights ({exc})") from exc
    out: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        model, _, param = key.partition(".")
        out.setdefault(model, {})[param] = v
    return out


def weights_metadata(path: PathLike) -> Dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_models(models: Mapping[str, nn.Module], states: Mapping[str, Mapping[str, torch.Tensor]],
                source: str = "checkpoint") -> None:
    """Load state dicts into ``models``; every model must be present and match exactly."""
    missing = sorted(set(models) - set(states))
    if missing:
        raise ModelError(f"{source}: no weights for model(s) {missing}")
    for name, m in models.items():
        try:
            m.load_state_dict(states[name], strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{source}: weights of model '{name}' do not fit the network ({exc})") from exc


def capture_rng() -> Dict[str, Any]:
    """Every RNG state as tensors/ints (weights_only-loadable)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [int(py[0]), [int(v) for v in py[1]], py[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: PathLike, state: Dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then atomic replace."""
    state = {"format": STATE_FORMAT, **state}
    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def load_state(path: PathLike) -> Dict[str, Any]:
    """Read ``last_state.pt`` safely (``weights_only=True``); :class:`ModelError` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no resume state (was the run started with this --out?)")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a damaged file
        raise ModelError(f"{path}: cannot read resume state ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ModelError(f"{path}: not a dvcl training state")
    return state
