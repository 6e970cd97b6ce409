"""The few array operations the sliding window, its Gaussian and the engines need, for numpy arrays and torch
tensors alike.

Why: with a cached ONNX graph, ONNX Runtime and OpenVINO take and return numpy arrays, and a ``dvcl segment``
process that never touches torch saves its import (1.5 s idle, up to 8 s on a loaded machine). The torch engine
and training validation work on torch tensors (on the GPU too). Writing the tiling, blending and test-time flips
once against :class:`ArrayOps` keeps the two paths the same algorithm, step for step: the same windows, weights
and accumulation order, so the same probabilities up to the last bit of ``exp``.

Importing this module does not import torch; :func:`ops_for` imports it only for a torch tensor, which means it
is already loaded.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

import numpy as np

#: ``((before, after), ...)`` per spatial axis, outermost first.
Pads = Sequence[Tuple[int, int]]


class ArrayOps:
    """numpy flavour (float32 on the CPU). :class:`TorchOps` gives the same operations on torch tensors."""

    name = "numpy"

    def zeros(self, shape: Sequence[int], like: Any) -> Any:
        """float32 zeros of ``shape`` where ``like`` lives."""
        return np.zeros(tuple(shape), np.float32)

    def stack(self, items: Sequence[Any]) -> Any:
        return np.stack(items)

    def float32(self, a: Any) -> Any:
        """``a`` as float32, without a copy when it already is."""
        return a.astype(np.float32, copy=False)

    def pad(self, a: Any, pads: Pads) -> Any:
        """Zero padding of the trailing axes of ``a`` (the leading ones stay)."""
        lead = [(0, 0)] * (a.ndim - len(pads))
        return np.pad(a, lead + [tuple(p) for p in pads], mode="constant", constant_values=0.0)

    def flip(self, a: Any, axes: Tuple[int, ...]) -> Any:
        return np.flip(a, axes)

    def arange(self, start: float, stop: float) -> Any:
        """float32 values ``start, start + 1, ...`` below ``stop``."""
        return np.arange(start, stop, dtype=np.float32)

    def exp(self, a: Any) -> Any:
        return np.exp(a)

    def clamp_min_(self, a: Any, low: float) -> Any:
        """``a`` raised to at least ``low``, in place."""
        return np.maximum(a, np.float32(low), out=a)

    def to(self, a: Any, like: Any) -> Any:
        """``a`` on the device of ``like`` (numpy: always the CPU)."""
        return a


class TorchOps(ArrayOps):
    """torch flavour: the operations of :class:`ArrayOps` on tensors, on the device of the tensor given."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def zeros(self, shape: Sequence[int], like: Any) -> Any:
        device = getattr(like, "device", None)
        return self.torch.zeros(tuple(shape), dtype=self.torch.float32, device=device)

    def stack(self, items: Sequence[Any]) -> Any:
        return self.torch.stack(list(items))

    def float32(self, a: Any) -> Any:
        return a.float()

    def pad(self, a: Any, pads: Pads) -> Any:
        flat = [p for pair in reversed(list(pads)) for p in pair]  # F.pad wants the last axis first
        return self.torch.nn.functional.pad(a, flat, mode="constant", value=0.0)

    def flip(self, a: Any, axes: Tuple[int, ...]) -> Any:
        return self.torch.flip(a, axes)

    def arange(self, start: float, stop: float) -> Any:
        return self.torch.arange(start=start, end=stop, dtype=self.torch.float)

    def exp(self, a: Any) -> Any:
        return self.torch.exp(a)

    def clamp_min_(self, a: Any, low: float) -> Any:
        return self.torch.clamp_(a, min=low)

    def to(self, a: Any, like: Any) -> Any:
        return a.to(getattr(like, "device", like))


NUMPY = ArrayOps()
_TORCH: list = []  # the one TorchOps, made on first use (it imports torch)


def torch_ops() -> TorchOps:
    """The torch flavour (imports torch)."""
    if not _TORCH:
        _TORCH.append(TorchOps())
    return _TORCH[0]


def ops_for(a: Any) -> ArrayOps:
    """The operations that suit ``a``: numpy for a numpy array, torch for anything else (a tensor)."""
    return NUMPY if isinstance(a, np.ndarray) else torch_ops()
