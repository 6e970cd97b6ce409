"""The sliding window, in one place: its settings, the overlap <-> stride conversion, and the tiling itself.

Training validates with a window given as ``val_roi`` + ``val_overlap`` (a profile's data); a model package
stores ``roi`` + ``stride`` (``model.json`` "inference"); ``dvcl segment`` and validation both run
:func:`sliding_window`. :class:`WindowConfig` converts between the two spellings, so an exported model
predicts with exactly the windows its validation used (METHOD.md section 4: window 64 x 160 x 160, stride
32 x 80 x 80 (z, y, x) [given], Gaussian blending [decided]).

:func:`sliding_window` tiles, pads and blends with the arithmetic of MONAI's ``sliding_window_inference``
(same window positions, same Gaussian weights, same accumulation order, so the same probabilities) in a few
lines, without importing MONAI (about 3 s per process). It is written once against
:mod:`dvcl.inference.arrays`, so it runs on torch tensors (the torch engine, validation on the GPU) and on numpy
arrays (ONNX Runtime and OpenVINO: a ``dvcl segment`` with a cached graph never imports torch), both reading
one :class:`WindowPlan`; the numpy weights differ from torch's by a few float32 ulp (the two libraries' ``exp``).

Importing this module does not import torch (the CLI help and the export read :class:`WindowConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from dvcl.errors import ConfigError
from dvcl.inference.arrays import NUMPY, ArrayOps, ops_for, torch_ops

if TYPE_CHECKING:  # pragma: no cover
    import torch

    Volume = Union[np.ndarray, torch.Tensor]
else:
    Volume = Any

Triple = Tuple[int, int, int]

#: The paper's window and stride [given] (z, y, x).
PAPER_ROI: Triple = (64, 160, 160)
PAPER_STRIDE: Triple = (32, 80, 80)
#: Blending of overlapping windows [decided]: a Gaussian, sigma = SIGMA_SCALE x window size (MONAI's default).
MODE = "gaussian"
SIGMA_SCALE = 0.125

WindowCallback = Callable[[int, int], None]


def stride_for_overlap(roi: Sequence[int], overlap: float) -> Triple:
    """The step MONAI takes for a window ``roi`` and an ``overlap`` fraction: ``int(roi * (1 - overlap))``."""
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"sliding-window overlap must be in [0, 1), got {overlap}")
    return tuple(max(1, int(int(r) * (1.0 - float(overlap)))) for r in roi)  # type: ignore[return-value]


def overlap_for_stride(roi: Sequence[int], stride: Sequence[int]) -> List[float]:
    """Per-axis overlap fractions that give exactly ``stride`` under :func:`stride_for_overlap`'s rounding.

    With 1 - s/r the float product can fall just below ``s`` (e.g. 160 * (1 - 0.7) = 47.99...), so the
    fraction is nudged by half a voxel where needed.
    """
    out = []
    for r, s in zip(roi, stride):
        o = 1.0 - s / r
        if int(r * (1.0 - o)) != s:
            o = 1.0 - (s + 0.5) / r
        out.append(o)
    return out


@dataclass(frozen=True)
class WindowConfig:
    """One sliding window: ``roi`` and ``stride`` (z, y, x), windows per network call, Gaussian blending."""

    roi: Triple = PAPER_ROI
    stride: Triple = PAPER_STRIDE
    sw_batch_size: int = 1
    mode: str = MODE
    sigma_scale: float = SIGMA_SCALE

    def __post_init__(self) -> None:
        roi = tuple(int(v) for v in self.roi)
        stride = tuple(int(v) for v in self.stride)
        if len(roi) != 3 or len(stride) != 3 or min(roi) < 1 or min(stride) < 1:
            raise ConfigError(f"sliding window needs three positive sizes, got window {list(roi)}, stride "
                              f"{list(stride)}")
        if any(s > r for s, r in zip(stride, roi)):
            raise ConfigError(f"sliding-window stride {list(stride)} exceeds the window {list(roi)}")
        if self.mode != MODE:
            raise ConfigError(f"sliding-window blending must be '{MODE}', got '{self.mode}'")
        object.__setattr__(self, "roi", roi)
        object.__setattr__(self, "stride", stride)

    @classmethod
    def from_overlap(cls, roi: Sequence[int], overlap: float, sw_batch_size: int = 1) -> WindowConfig:
        return cls(tuple(roi), stride_for_overlap(roi, overlap), int(sw_batch_size))  # type: ignore[arg-type]

    @classmethod
    def from_train_config(cls, cfg: Any) -> WindowConfig:
        """The validation window of a run (a :class:`~dvcl.training.config.TrainConfig` or its dict); the
        paper's when the config has none (old runs)."""
        get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
        roi = get("val_roi")
        if not roi:
            return cls()
        return cls.from_overlap(tuple(int(v) for v in roi), float(get("val_overlap", 0.5) or 0.0),
                                int(get("val_sw_batch", 1) or 1))

    @property
    def overlap(self) -> List[float]:
        return overlap_for_stride(self.roi, self.stride)

    def to_json(self) -> dict:
        """The ``model.json`` "inference" entry."""
        return {"roi": list(self.roi), "stride": list(self.stride)}

    def describe(self) -> str:
        return f"window {'x'.join(map(str, self.roi))}, stride {'x'.join(map(str, self.stride))}"

    def count(self, shape: Sequence[int]) -> int:
        """Windows visited for a (Z, Y, X) ``shape``."""
        return count_windows(shape, self.roi, self.stride)


# ------------------------------------------------------------------------------------------ the windows
def window_starts(size: int, roi: int, stride: int) -> List[int]:
    """Start indices of the windows along one axis of ``size`` (>= ``roi``) voxels.

    Windows every ``stride`` voxels; the last one is shifted back to end at the border; a window that fits
    exactly is the only one (MONAI's ``dense_patch_slices`` with its scan interval).
    """
    step = roi if size == roi else stride
    n = 1 + max(0, math.ceil((size - roi) / step))
    return [min(i * step, size - roi) for i in range(n)]


def count_windows(shape: Sequence[int], roi: Sequence[int], stride: Sequence[int]) -> int:
    """Number of windows the sliding window visits for a (Z, Y, X) ``shape`` (after padding to the window)."""
    n = 1
    for size, r, s in zip(shape, roi, stride):
        n *= len(window_starts(max(int(size), int(r)), int(r), int(s)))
    return n


def window_corners(shape: Sequence[int], roi: Sequence[int], stride: Sequence[int]) -> List[Triple]:
    """Corner (z, y, x) of every window over a padded ``shape``, z slowest (MONAI's order)."""
    axes = [window_starts(int(n), int(r), int(s)) for n, r, s in zip(shape, roi, stride)]
    return [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]


Region = Tuple[slice, slice, slice]


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one volume go: the padding, the window corners and the crop back.

    The one plan both array flavours of :func:`sliding_window` (torch tensors, numpy arrays) and the engine check
    of :class:`~dvcl.inference.predictor.Predictor` read, so they always visit the same windows.
    """

    shape: Triple  # the input (Z, Y, X)
    roi: Triple
    stride: Triple
    pads: Tuple[Tuple[int, int], ...]  # zero padding (before, after) per axis, up to one window
    padded: Triple
    corners: Tuple[Triple, ...]

    @classmethod
    def of(cls, shape: Sequence[int], roi: Sequence[int], stride: Sequence[int]) -> WindowPlan:
        """The plan for a (Z, Y, X) ``shape``: inputs smaller than the window are padded symmetrically (MONAI's
        constant padding), then windows every ``stride`` voxels, the last one flush with the border."""
        shape_t = tuple(int(n) for n in shape)
        roi_t = tuple(int(r) for r in roi)
        stride_t = tuple(int(s) for s in stride)
        pads = tuple((max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(shape_t, roi_t))
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(shape_t, pads))
        return cls(shape_t, roi_t, stride_t, pads, padded,  # type: ignore[arg-type]
                   tuple(window_corners(padded, roi_t, stride_t)))

    @property
    def needs_padding(self) -> bool:
        return self.padded != self.shape

    @property
    def crop(self) -> Region:
        """The input's region of the padded volume."""
        return tuple(slice(lo, lo + n) for (lo, _), n in zip(self.pads, self.shape))  # type: ignore[return-value]

    def region(self, corner: Sequence[int]) -> Region:
        """The voxels of the window at ``corner``."""
        return tuple(slice(c, c + r) for c, r in zip(corner, self.roi))  # type: ignore[return-value]

    def batches(self, size: int) -> Iterator[Tuple[int, List[Region]]]:
        """``(windows done after this batch, regions)`` for batches of ``size`` windows, in window order."""
        step = max(1, int(size))
        for b in range(0, len(self.corners), step):
            group = self.corners[b:b + step]
            yield b + len(group), [self.region(c) for c in group]

    def middle_batch(self, size: int) -> List[Region]:
        """The ``size`` windows around the middle of the volume (the engine check's sample: tissue, not air)."""
        mid = max(0, len(self.corners) // 2 - int(size) // 2)
        return [self.region(c) for c in self.corners[mid:mid + int(size)]]


def _gaussian(roi: Sequence[int], sigma_scale: float, ops: ArrayOps) -> Any:
    """Separable Gaussian over ``roi`` (sigma = ``sigma_scale`` x size), peak 1, clamped below at
    max(min, 1e-3): MONAI's ``compute_importance_map``, mode ``gaussian``, in float32."""
    w: Any = None
    for i, size in enumerate(roi):
        sigma = size * sigma_scale
        x = ops.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1)
        x = ops.exp(x ** 2 / (-2 * sigma ** 2))
        w = w[..., None] * x[(None,) * i] if w is not None else x
    if w is None:
        raise ConfigError("empty window")
    return ops.clamp_min_(w, max(float(w.min()), 1e-3))


def gaussian_importance(roi: Sequence[int], sigma_scale: float = SIGMA_SCALE, device: Any = None) -> torch.Tensor:
    """Blending weights of one window as a torch tensor on ``device`` (imports torch)."""
    ops = torch_ops()
    return ops.to(_gaussian(roi, sigma_scale, ops), device)


def gaussian_importance_array(roi: Sequence[int], sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """Blending weights of one window as a float32 numpy array (no torch)."""
    return _gaussian(roi, sigma_scale, NUMPY)


def sliding_window(
    image: Volume,
    roi: Sequence[int],
    stride: Sequence[int],
    window_fn: Callable[[Volume], Volume],
    batch_size: int = 1,
    on_batch: Optional[WindowCallback] = None,
    sigma_scale: float = SIGMA_SCALE,
) -> Volume:
    """Gaussian-blended sliding-window prediction over a volume ``(Cin, Z, Y, X)``: a torch tensor or a numpy array.

    ``window_fn`` maps a batch ``(N, Cin, *roi)`` to ``(N, C, *roi)`` float32 (e.g. probabilities) of the same
    kind, on the image's device; the blend accumulates there too (a CPU volume for ``dvcl segment``, the training
    device for validation). Inputs smaller than the window are zero-padded symmetrically (MONAI's constant
    padding) and the result cropped back; the output is ``(C, Z, Y, X)`` float32, the weighted mean of the
    windows, of the image's kind. ``on_batch(done, total)`` is called after every batch. A numpy image never
    imports torch (the ONNX engines' path in ``dvcl segment``).
    """
    if image.ndim != 4:
        raise ConfigError(f"sliding_window expects (C, Z, Y, X), got {tuple(image.shape)}")
    ops = ops_for(image)
    plan = WindowPlan.of(image.shape[1:], roi, stride)
    if plan.needs_padding:
        image = ops.pad(image, plan.pads)
    weight = ops.to(_gaussian(plan.roi, sigma_scale, ops), image)
    out: Any = None
    count = ops.zeros(plan.padded, like=image)
    total = len(plan.corners)
    for done, regions in plan.batches(batch_size):
        windows = ops.float32(ops.stack([image[(slice(None), *r)] for r in regions]))
        probs = ops.float32(window_fn(windows))
        if out is None:
            out = ops.zeros((probs.shape[1], *plan.padded), like=image)
        for p, r in zip(probs, regions):
            out[(slice(None), *r)] += weight * p
            count[r] += weight
        if on_batch is not None:
            on_batch(done, total)
    if out is None:  # unreachable: there is always at least one window
        raise RuntimeError("no window")
    out /= count
    return out[(slice(None), *plan.crop)]
