"""Sliding-window prediction on a preprocessed volume: the softmax ensemble of models A and B.

METHOD.md section 4: window 64 x 160 x 160, stride 32 x 80 x 80 (z, y, x) [given], Gaussian blending
[decided], prediction = mean of the softmax outputs of A and B [decided; "A only" as an option]. MONAI's
``sliding_window_inference`` does the tiling, padding of inputs smaller than the window and blending; the
windows run on the compute device (``sw_device``) while the blended output accumulates in CPU memory
(``device``), so a large CT never needs a full-volume C-channel tensor on the GPU.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dvcl.errors import ConfigError
from dvcl.inference.model_package import ModelPackage

log = logging.getLogger(__name__)

#: Test-time augmentation: every combination of flips of the three spatial axes of a (B, C, Z, Y, X)
#: tensor (the flips training used as augmentation), identity first.
TTA_FLIPS: Tuple[Tuple[int, ...], ...] = ((), (4,), (3,), (2,), (3, 4), (2, 4), (2, 3), (2, 3, 4))

WindowCallback = Callable[[int, int], None]


def overlap_for_stride(roi: Sequence[int], stride: Sequence[int]) -> List[float]:
    """MONAI overlap fractions that give exactly ``stride``.

    MONAI computes the step as ``int(roi * (1 - overlap))``; with 1 - s/r the float product can fall just
    below ``s`` (e.g. 160 * (1 - 0.7) = 47.99...), so the fraction is nudged by half a voxel where needed.
    """
    out = []
    for r, s in zip(roi, stride):
        o = 1.0 - s / r
        if int(r * (1.0 - o)) != s:
            o = 1.0 - (s + 0.5) / r
        out.append(o)
    return out


def count_windows(shape: Sequence[int], roi: Sequence[int], stride: Sequence[int]) -> int:
    """Number of windows MONAI's sliding window visits for a (Z, Y, X) ``shape`` (after its padding)."""
    n = 1
    for size, r, s in zip(shape, roi, stride):
        size = max(int(size), int(r))
        step = r if size == r else s  # MONAI uses the full window as the step when it fits exactly
        n *= 1 + max(0, math.ceil((size - r) / step))
    return n


class Predictor:
    """Softmax-ensemble sliding-window predictor for one model package on one device.

    Args:
        package: the loaded :class:`ModelPackage`.
        device: compute device for the windows (the output is accumulated on the CPU).
        models: which of the package's models to average (default: the package's ``models`` list, e.g.
            ``["A", "B"]``; ``["A"]`` for "A only").
        tta: also average over the 7 flipped copies of every window (8x the compute).
        sw_batch_size: windows per network call.
        amp: fp16 autocast; default on for CUDA, off on the CPU (where fp16 is slow).
        roi / stride: override the package's window and stride (z, y, x).
    """

    def __init__(
        self,
        package: ModelPackage,
        device: Union[str, torch.device] = "cpu",
        models: Optional[Sequence[str]] = None,
        tta: bool = False,
        sw_batch_size: int = 1,
        amp: Optional[bool] = None,
        roi: Optional[Sequence[int]] = None,
        stride: Optional[Sequence[int]] = None,
    ) -> None:
        self.package = package
        self.device = torch.device(device)
        names = list(models) if models else package.model_names
        unknown = [m for m in names if m not in package.models]
        if unknown:
            raise ConfigError(f"model(s) {unknown} are not in package '{package.name}' "
                              f"(it has {', '.join(package.models)})")
        self.model_names = names
        self.nets = [package.models[m].to(self.device).eval() for m in names]
        self.flips = TTA_FLIPS if tta else ((),)
        self.sw_batch_size = int(sw_batch_size)
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.roi = tuple(int(v) for v in (roi or package.roi))
        self.stride = tuple(int(v) for v in (stride or package.stride))
        div = package.network_config.divisor
        if any(r % d for r, d in zip(self.roi, div)) or any(s < 1 or s > r for s, r in zip(self.stride, self.roi)):
            raise ConfigError(f"window {self.roi} must be divisible by {div} and stride {self.stride} must lie in "
                              "1..window")

    @property
    def num_classes(self) -> int:
        return self.package.num_classes

    def _window_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Mean softmax over models (and flips) for a batch of windows, in fp32."""
        acc: Optional[torch.Tensor] = None
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            for flips in self.flips:
                xi = torch.flip(x, flips) if flips else x
                for net in self.nets:
                    # softmax in fp32: fp16 logits are fine, fp16 exp/normalisation is not
                    p = torch.softmax(net.segment(xi).float(), dim=1)
                    if flips:
                        p = torch.flip(p, flips)
                    acc = p if acc is None else acc.add_(p)
        if acc is None:  # unreachable: the constructor guarantees a model and the identity flip
            raise RuntimeError("no model to run")
        return acc.div_(len(self.nets) * len(self.flips))

    def predict(self, image: np.ndarray, on_window: Optional[WindowCallback] = None) -> torch.Tensor:
        """Class probabilities ``(C, Z, Y, X)`` float32 on the CPU for a preprocessed ``(Z, Y, X)`` volume.

        Inputs smaller than the window are padded by MONAI (value 0, i.e. the normalised low end of the
        intensity range: air) and the output is cropped back to the input's shape.
        """
        from monai.inferers import sliding_window_inference

        if image.ndim != 3:
            raise ConfigError(f"expected a (Z, Y, X) volume, got shape {image.shape}")
        total = count_windows(image.shape, self.roi, self.stride)
        done = [0]

        def run(windows: torch.Tensor) -> torch.Tensor:
            out = self._window_probabilities(windows)
            done[0] += windows.shape[0]
            if on_window is not None:
                on_window(min(done[0], total), total)
            return out

        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        log.debug("sliding window: %s windows of %s, stride %s, models %s, %d flip(s), device %s",
                  total, self.roi, self.stride, self.model_names, len(self.flips), self.device)
        with torch.inference_mode():
            probs = sliding_window_inference(
                x, roi_size=self.roi, sw_batch_size=self.sw_batch_size, predictor=run,
                overlap=overlap_for_stride(self.roi, self.stride), mode="gaussian",
                sw_device=self.device, device=torch.device("cpu"),
            )
        probs = torch.as_tensor(probs)[0]
        if tuple(probs.shape) != (self.num_classes, *image.shape):
            raise RuntimeError(f"sliding window returned {tuple(probs.shape)} for input {image.shape}")
        return probs.float()
