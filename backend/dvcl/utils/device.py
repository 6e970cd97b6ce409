"""Device selection in one place, shared by the API, the CLI and the Slicer module.

:func:`resolve_device` answers with a name (``cpu``, ``cuda:0``) and imports torch only when the answer needs
it: ``dvcl segment`` on a CPU-only machine with a cached ONNX graph never imports torch (1.5 s idle, up to 8 s
on a loaded machine). Whether a CUDA device can exist at all is decided cheaply and conservatively by
:func:`cuda_possible`; when it cannot tell, torch is asked, as before. :func:`select_device` gives the
``torch.device`` of the same answer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from dvcl.errors import DeviceError

log = logging.getLogger(__name__)

#: Linux device nodes one of which every CUDA (or ROCm, which torch also calls ``cuda``) setup has: the NVIDIA
#: driver's (``nvidia0``, ``nvidiactl``), WSL2's GPU paravirtualisation (``dxg``) and ROCm's (``kfd``).
GPU_DEVICE_NODES = ("nvidia*", "dxg", "kfd")


def torch_build_tag() -> Optional[str]:
    """The local tag of the installed torch's version (``cpu`` for ``2.13.0+cpu``, ``cu130``), without
    importing torch; None when torch has none (PyPI's Linux wheels, which are CUDA builds) or no metadata."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    return version.split("+", 1)[1].lower() if "+" in version else None


def _gpu_nodes(dev: Path, patterns: Iterable[str]) -> bool:
    try:
        return any(any(dev.glob(p)) for p in patterns)
    except OSError:
        return True  # cannot look: assume there may be a GPU


def cuda_possible(dev: Path = Path("/dev")) -> bool:
    """False only when this process certainly cannot use a CUDA device, decided without importing torch.

    Certain: ``CUDA_VISIBLE_DEVICES`` hides every device (empty or ``-1``); the installed torch is a CPU build
    (version tag ``+cpu``); macOS (torch has no CUDA there); Linux without any GPU device node
    (:data:`GPU_DEVICE_NODES`: without them the driver cannot reach a GPU). Anything else (Windows, a node that
    exists, an unreadable ``/dev``) counts as possible, and torch decides.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if torch_build_tag() == "cpu" or sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return _gpu_nodes(dev, GPU_DEVICE_NODES)
    return True


def _cuda_available() -> bool:
    if not cuda_possible():
        return False
    import torch

    return bool(torch.cuda.is_available())


def _cuda_device(name: str) -> str:
    """``cuda`` -> ``cuda:0``; ``cuda:N`` checked against the GPUs present (torch is loaded by now)."""
    import torch

    dev = torch.device(name if ":" in name else "cuda:0")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} GPU(s) exist")
    return str(dev)


def resolve_device(name: str = "auto", strict: bool = False) -> str:
    """The device name for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``: ``cpu`` or ``cuda:N``.

    ``auto`` takes the first GPU when CUDA is available, else the CPU. Asking for ``cuda`` without a GPU
    falls back to the CPU with a warning, or raises :class:`DeviceError` when ``strict``. torch is imported
    only where a GPU may exist (:func:`cuda_possible`).
    """
    name = (name or "auto").lower()
    if name == "gpu":
        name = "cuda"
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "cuda:0" if _cuda_available() else "cpu"
    if name.startswith("cuda"):
        if not _cuda_available():
            if strict:
                raise DeviceError(f"device '{name}' requested but no CUDA GPU is available")
            log.warning("No CUDA GPU available: running on the CPU (slow). Use --device cpu to silence this.")
            return "cpu"
        return _cuda_device(name)
    raise DeviceError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")


def select_device(name: str = "auto", strict: bool = False):
    """:func:`resolve_device` as a ``torch.device`` (imports torch)."""
    import torch

    return torch.device(resolve_device(name, strict))


def describe_devices() -> dict:
    """What the machine offers, for `dvcl info` and the Slicer module's device drop-down."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    return info
