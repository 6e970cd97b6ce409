"""The sliding window, in one place: its settings, the overlap <-> stride conversion, and the tiling itself.

Training validates with a window given as ``val_roi`` + ``val_overlap`` (a profile's data); a model package
stores ``roi`` + ``stride`` (``model.json`` "inference"); ``dvcl segment`` and validation both run
:func:`sliding_window`. :class:`WindowConfig` converts between the two spellings, so an exported model
predicts with exactly the windows its validation used (METHOD.md section 4: window 64 x 160 x 160, stride
32 x 80 x 80 (z, y, x) [given], Gaussian blending [decided]).

:func:`sliding_window` tiles, pads and blends with the arithmetic of MONAI's ``sliding_window_inference``
(same window positions, same Gaussian weights, same accumulation order, so the same probabilities) in a few
lines of torch, without importing MONAI (about 3 s per process).

Importing this module does not import torch (the CLI help and the export read :class:`WindowConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Sequence, Tuple

from dvcl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

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


def gaussian_importance(roi: Sequence[int], sigma_scale: float = SIGMA_SCALE, device: Any = None) -> torch.Tensor:
    """Blending weights of one window: a separable Gaussian (sigma = ``sigma_scale`` x size), peak 1,
    clamped below at max(min, 1e-3) (MONAI's ``compute_importance_map``, mode ``gaussian``)."""
    import torch

    w: Optional[torch.Tensor] = None
    for i, size in enumerate(roi):
        sigma = size * sigma_scale
        x = torch.arange(start=-(size - 1) / 2.0, end=(size - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x ** 2 / (-2 * sigma ** 2))
        w = w.unsqueeze(-1) * x[(None,) * i] if w is not None else x
    if w is None:
        raise ConfigError("empty window")
    return torch.clamp_(w, min=max(torch.min(w).item(), 1e-3)).to(device)


def sliding_window(
    image: torch.Tensor,
    roi: Sequence[int],
    stride: Sequence[int],
    window_fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 1,
    on_batch: Optional[WindowCallback] = None,
    sigma_scale: float = SIGMA_SCALE,
) -> torch.Tensor:
    """Gaussian-blended sliding-window prediction over a volume ``(Cin, Z, Y, X)``.

    ``window_fn`` maps a batch ``(N, Cin, *roi)`` to ``(N, C, *roi)`` float32 (e.g. probabilities) on the
    image's device; the blend accumulates there too (a CPU volume for ``dvcl segment``, the training device
    for validation). Inputs smaller than the window are zero-padded symmetrically (MONAI's constant padding)
    and the result cropped back; the output is ``(C, Z, Y, X)`` float32, the weighted mean of the windows.
    ``on_batch(done, total)`` is called after every batch.
    """
    import torch

    if image.dim() != 4:
        raise ConfigError(f"sliding_window expects (C, Z, Y, X), got {tuple(image.shape)}")
    roi = tuple(int(r) for r in roi)
    stride = tuple(int(s) for s in stride)
    shape = tuple(int(n) for n in image.shape[1:])
    pads = [(max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(shape, roi)]
    if any(p for pair in pads for p in pair):
        flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
        image = torch.nn.functional.pad(image, flat, mode="constant", value=0.0)
    padded = tuple(int(n) for n in image.shape[1:])
    corners = window_corners(padded, roi, stride)
    weight = gaussian_importance(roi, sigma_scale, device=image.device)
    out: Optional[torch.Tensor] = None
    count = torch.zeros(padded, dtype=torch.float32, device=image.device)
    total = len(corners)
    step = max(1, int(batch_size))
    for b in range(0, total, step):
        group = corners[b:b + step]
        sl = [tuple(slice(c, c + r) for c, r in zip(corner, roi)) for corner in group]
        windows = torch.stack([image[(slice(None), *s)] for s in sl]).float()
        probs = window_fn(windows).float()
        if out is None:
            out = torch.zeros((probs.shape[1], *padded), dtype=torch.float32, device=image.device)
        for p, s in zip(probs, sl):
            out[(slice(None), *s)] += weight * p
            count[s] += weight
        if on_batch is not None:
            on_batch(min(b + len(group), total), total)
    if out is None:  # unreachable: there is always at least one window
        raise RuntimeError("no window")
    out /= count
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, shape))
    return out[(slice(None), *crop)]
