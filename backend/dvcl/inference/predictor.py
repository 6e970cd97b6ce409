"""Sliding-window prediction on a preprocessed volume: the softmax ensemble of models A and B.

METHOD.md section 4: window 64 x 160 x 160, stride 32 x 80 x 80 (z, y, x) [given], Gaussian blending
[decided], prediction = mean of the softmax outputs of A and B [decided; "A only" as an option].

:func:`dvcl.inference.sliding_window.sliding_window` does the tiling, padding and blending with the
arithmetic of MONAI's ``sliding_window_inference`` (same probabilities) without importing MONAI:
``import monai.inferers`` runs ``monai/__init__``, which loads all of MONAI (transforms, apps, scipy,
matplotlib), about 3 s per ``dvcl segment`` process.

Defaults that use the hardware (issue 17): the number of windows per network call is chosen here from the
device and the network (:func:`choose_sw_batch_size`): on the CPU a batch of one window makes PyTorch run
most 3x3x3 convolutions of a small net through its slow reference kernel (it uses oneDNN only when
N*C*D*H > 20480), and 4 windows per call were 3.6x faster with identical output. Which engine runs the
windows (torch, ONNX Runtime, OpenVINO) is :mod:`dvcl.inference.engines`' business.

Importing this module does not import torch, and neither does a prediction by an ONNX engine whose graph and
agreement check are cached: the windows then travel as numpy arrays (the engines' own format) through the same
:func:`sliding_window`, and torch's import (1.5 s idle, up to 8 s on a loaded machine) is saved. torch is
imported for the torch engine, for CUDA, to export a graph and for the one-time agreement check.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from dvcl.errors import ConfigError
from dvcl.inference import engines
from dvcl.inference.model_package import ModelPackage
from dvcl.inference.sliding_window import WindowPlan, count_windows, overlap_for_stride, sliding_window

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: Test-time augmentation: every combination of flips of the three spatial axes of a (B, C, Z, Y, X)
#: tensor, identity first; a model gets those of the axes its training flipped (:func:`tta_flips`).
TTA_FLIPS: Tuple[Tuple[int, ...], ...] = ((), (4,), (3,), (2,), (3, 4), (2, 4), (2, 3), (2, 3, 4))
#: Windows per network call on the CPU: enough for oneDNN's kernels on the demo and paper nets; larger
#: batches gained nothing measurable (benchmarks/bench_segment_speed.py).
CPU_SW_BATCH = 4
#: Windows per call on a GPU (bounded by free memory).
CUDA_SW_BATCH = 4
#: Fraction of the available memory one batch of windows may take.
MEMORY_SHARE = 0.25
#: re-exported: the tiling lives in :mod:`dvcl.inference.sliding_window`
__all__ = ["Predictor", "TTA_FLIPS", "choose_sw_batch_size", "count_windows", "overlap_for_stride", "tta_flips"]

WindowCallback = Callable[[int, int], None]


def tta_flips(flip_axes: Sequence[int]) -> Tuple[Tuple[int, ...], ...]:
    """The flips of :data:`TTA_FLIPS` that use only ``flip_axes`` (spatial axes 0 z, 1 y, 2 x), identity first.

    Why not all eight: a flip the network never saw in training is not a symmetry of its task. Mirroring
    left-right turns the left kidney into what it learnt as the right one, and the mean over flips is then
    wrong, not smoother (:data:`dvcl.inference.model_validation.FLIP_AXES_KEY`).
    """
    dims = {2 + int(a) for a in flip_axes}
    return tuple(f for f in TTA_FLIPS if set(f) <= dims)


# ------------------------------------------------------------------------------------ hardware defaults
def _available_memory_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else None (no cap)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def window_memory_bytes(package: ModelPackage, roi: Sequence[int]) -> int:
    """Rough peak memory of one window through the network (fp32): about four live feature maps per level
    (conv output, norm, skip, concatenation) plus logits, probabilities and their accumulation."""
    cfg = package.network_config
    voxels = int(np.prod(roi))
    feats, scale = 0.0, 1
    for ch, st in zip(cfg.channels, ((1, 1, 1),) + tuple(cfg.level_strides)):
        scale *= int(np.prod(st))
        feats += 4 * ch * voxels / scale
    return int(4 * (feats + 3 * cfg.num_classes * voxels))


Device = Union[str, "torch.device"]


def device_type(device: Device) -> str:
    """``cpu`` or ``cuda`` for a device name (``cuda:1``) or a ``torch.device``, without importing torch."""
    return str(getattr(device, "type", None) or str(device).split(":", 1)[0]).lower()


def _cuda_free_bytes(device: Device) -> Optional[int]:
    import torch

    try:
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    except (RuntimeError, AssertionError):
        return None


def choose_sw_batch_size(package: ModelPackage, device: Device, roi: Optional[Sequence[int]] = None) -> int:
    """Windows per network call for this device and network: :data:`CPU_SW_BATCH` on the CPU,
    :data:`CUDA_SW_BATCH` on a GPU, fewer when a batch would take more than :data:`MEMORY_SHARE` of the
    memory available (at least 1)."""
    roi = tuple(roi or package.roi)
    per_window = max(1, window_memory_bytes(package, roi))
    if device_type(device) == "cuda":
        want, free = CUDA_SW_BATCH, _cuda_free_bytes(device)
    else:
        want, free = CPU_SW_BATCH, _available_memory_bytes()
    if free is not None:
        want = min(want, max(1, int(free * MEMORY_SHARE // per_window)))
    return max(1, want)


# ------------------------------------------------------------------------------------------ the predictor
class Predictor:
    """Softmax-ensemble sliding-window predictor for one model package on one device.

    Args:
        package: the :class:`ModelPackage` (its networks load only if an engine needs them).
        device: compute device for the windows, a name (``cpu``, ``cuda:0``) or a ``torch.device`` (the output
            is accumulated on the CPU).
        models: which of the package's models to average (default: the package's ``models`` list, e.g.
            ``["A", "B"]``; ``["A"]`` for "A only").
        tta: also average over flipped copies of every window, of the axes the model was trained to be
            flipped along (:attr:`ModelPackage.flip_axes`; all three: 8x the compute). A model trained without
            flips has none: a warning, and the windows are not flipped.
        sw_batch_size: windows per network call; None chooses from the device and network
            (:func:`choose_sw_batch_size`).
        amp: fp16 autocast for the torch engine; default on for CUDA, off on the CPU (where fp16 is slow).
        roi / stride: override the package's window and stride (z, y, x).
        engine: ``auto``, ``torch``, ``onnxruntime`` or ``openvino`` (:mod:`dvcl.inference.engines`).
    """

    def __init__(
        self,
        package: ModelPackage,
        device: Device = "cpu",
        models: Optional[Sequence[str]] = None,
        tta: bool = False,
        sw_batch_size: Optional[int] = None,
        amp: Optional[bool] = None,
        roi: Optional[Sequence[int]] = None,
        stride: Optional[Sequence[int]] = None,
        engine: str = "auto",
    ) -> None:
        self.package = package
        self.device = device
        self.device_type = device_type(device)
        names = list(models) if models else package.model_names
        unknown = [m for m in names if m not in package.models]
        if unknown:
            raise ConfigError(f"model(s) {unknown} are not in package '{package.name}' "
                              f"(it has {', '.join(package.models)})")
        self.model_names = names
        self.flips = tta_flips(package.flip_axes) if tta else ((),)
        if tta and len(self.flips) == 1:
            log.warning("model '%s' was trained without random flips (a flipped CT swaps its left and right "
                        "structures): test-time augmentation has nothing to average and is skipped", package.name)
        elif tta and len(self.flips) < len(TTA_FLIPS):
            log.info("test-time augmentation over %d flips (the axes model '%s' was trained to be flipped along)",
                     len(self.flips), package.name)
        self.amp = (self.device_type == "cuda") if amp is None else bool(amp)
        self.roi = tuple(int(v) for v in (roi or package.roi))
        self.stride = tuple(int(v) for v in (stride or package.stride))
        div = package.network_config.divisor
        if any(r % d for r, d in zip(self.roi, div)) or any(s < 1 or s > r for s, r in zip(self.stride, self.roi)):
            raise ConfigError(f"window {self.roi} must be divisible by {div} and stride {self.stride} must lie in "
                              "1..window")
        if sw_batch_size is not None and int(sw_batch_size) < 1:
            raise ConfigError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        self.sw_batch_size = int(sw_batch_size) if sw_batch_size else choose_sw_batch_size(package, device, self.roi)
        self.requested_engine = (engine or "auto").lower()
        name = engines.resolve_engine(self.requested_engine, self.device_type)
        self.engine, self.graphs = self._build(name)
        self._checked = name == "torch"

    def _build(self, name: str) -> Tuple[engines.Engine, list]:
        try:
            return engines.build_engine(name, self.package, self.model_names, self.device, self.amp,
                                        self.sw_batch_size, self.roi)
        except (ImportError, RuntimeError, OSError) as exc:  # a broken runtime install or failed export
            if name == "torch":
                raise
            log.warning("engine %s failed to start (%s): using torch", name, exc)
            return engines.build_engine("torch", self.package, self.model_names, self.device, self.amp,
                                        self.sw_batch_size, self.roi)

    @property
    def engine_name(self) -> str:
        """The engine that runs the windows (after fallbacks)."""
        return self.engine.name

    @property
    def num_classes(self) -> int:
        return self.package.num_classes

    def _window_probabilities(self, x):
        """Mean softmax over models (and flips) for a batch of windows, in fp32, on the CPU."""
        return self.engine.probabilities(x, self.flips)

    def check_engine(self, windows) -> float:
        """Voxel agreement (argmax) of this engine with torch fp32 on ``windows`` (a numpy array or a CPU tensor
        ``(N, 1, *roi)``); recorded next to the graphs. Imports torch: it is the reference.

        ``auto`` switches to torch when the agreement is below :data:`engines.MIN_AGREEMENT`.
        """
        import torch

        x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        ref_engine, _ = engines.build_engine("torch", self.package, self.model_names, "cpu", False,
                                             self.sw_batch_size, self.roi)
        with torch.inference_mode():
            ref = ref_engine.probabilities(x).argmax(1).numpy()
        got = self.engine.probabilities(x.numpy()).argmax(1)  # the ONNX engines take numpy arrays
        agreement = float((ref == got).mean())
        engines.record_check(self.graphs, self.engine.name, agreement)
        return agreement

    def _ensure_checked(self, x: np.ndarray) -> None:
        """First use of a graph on an engine: compare with torch on the middle batch of windows of ``x``
        ``(1, Z, Y, X)``; a recorded check (same graph, engine version and CPU) is read instead."""
        if self._checked:
            return
        self._checked = True
        agreement = engines.recorded_agreement(self.graphs, self.engine.name)
        if agreement is None:
            plan = WindowPlan.of(x.shape[1:], self.roi, self.stride)
            if plan.needs_padding:
                return  # tiny input (padded): not representative, check on a real volume later
            group = plan.middle_batch(self.sw_batch_size)
            agreement = self.check_engine(np.stack([x[(slice(None), *r)] for r in group]))
            log.info("engine %s agrees with torch on %.4f %% of the voxels of %d check window(s)",
                     self.engine.name, 100 * agreement, len(group))
        if agreement < engines.MIN_AGREEMENT:
            if self.requested_engine == "auto":
                log.warning("engine %s agreed with torch on only %.3f %% of voxels: using torch",
                            self.engine.name, 100 * agreement)
                self.engine, self.graphs = self._build("torch")
            else:
                log.warning("engine %s agrees with torch on only %.3f %% of voxels", self.engine.name,
                            100 * agreement)

    def predict_array(self, image: np.ndarray, on_window: Optional[WindowCallback] = None) -> np.ndarray:
        """Class probabilities ``(C, Z, Y, X)`` float32 (numpy) for a preprocessed ``(Z, Y, X)`` volume.

        Inputs smaller than the window are padded (value 0, i.e. the normalised low end of the intensity
        range: air) and the output is cropped back to the input's shape. With an ONNX engine whose check is
        recorded, torch is never imported.
        """
        if image.ndim != 3:
            raise ConfigError(f"expected a (Z, Y, X) volume, got shape {image.shape}")
        x = np.ascontiguousarray(image, dtype=np.float32)[None]
        log.debug("sliding window: %s windows of %s, stride %s, models %s, %d flip(s), engine %s, batch %d, "
                  "device %s", count_windows(image.shape, self.roi, self.stride), self.roi, self.stride,
                  self.model_names, len(self.flips), self.engine.name, self.sw_batch_size, self.device)
        self._ensure_checked(x)
        if self.engine.array_kind == "numpy":
            probs = self._tile(x, on_window)
        else:
            import torch

            with torch.inference_mode():
                probs = self._tile(torch.from_numpy(x), on_window).numpy()
        if tuple(probs.shape) != (self.num_classes, *image.shape):
            raise RuntimeError(f"sliding window returned {tuple(probs.shape)} for input {image.shape}")
        return probs

    def _tile(self, x, on_window: Optional[WindowCallback]):
        return sliding_window(x, self.roi, self.stride, self._window_probabilities, self.sw_batch_size,
                              on_batch=on_window)

    def predict(self, image: np.ndarray, on_window: Optional[WindowCallback] = None) -> torch.Tensor:
        """:meth:`predict_array` as a CPU float32 tensor (imports torch; ``dvcl segment`` uses the array)."""
        import torch

        return torch.from_numpy(self.predict_array(image, on_window))
