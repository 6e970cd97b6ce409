"""Device selection in one place, shared by the API, the CLI and the Slicer module."""

from __future__ import annotations

import logging

from dvcl.errors import DeviceError

log = logging.getLogger(__name__)


def select_device(name: str = "auto", strict: bool = False):
    """Return a ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` takes the first GPU when CUDA is available, else the CPU. Asking for ``cuda`` without a GPU
    falls back to the CPU with a warning, or raises :class:`DeviceError` when ``strict``.
    """
    import torch

    name = (name or "auto").lower()
    if name == "gpu":
        name = "cuda"
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            if strict:
                raise DeviceError(f"device '{name}' requested but no CUDA GPU is available")
            log.warning("No CUDA GPU available: running on the CPU (slow). Use --device cpu to silence this.")
            return torch.device("cpu")
        dev = torch.device(name if ":" in name else "cuda:0")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) exist")
        return dev
    raise DeviceError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")


def describe_devices() -> dict:
    """What the machine offers, for `dvcl info` and the Slicer module's device drop-down."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    return info
