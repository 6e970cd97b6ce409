"""Checks ``dvcl segment`` runs before it writes anything: no output replaces an input, every input is valid,
the output folder can take the results, and each case fits the memory budget.

Kept apart from :mod:`dvcl.inference.segment` so the segmentation flow stays readable: each function here
either returns quietly or raises a :class:`~dvcl.errors.DVCLError` with one line naming the file.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import SimpleITK as sitk

from dvcl.errors import ConfigError, NotCTError, ResourceLimitError
from dvcl.io.images import check_ct_intensities, read_image
from dvcl.utils.atomic import check_writable

if TYPE_CHECKING:  # pragma: no cover
    from dvcl.inference.model_package import ModelPackage

log = logging.getLogger(__name__)

GIB = 2.0**30


def refuse_aliasing(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    """Raise :class:`ConfigError` when an output would replace an input file or land inside a DICOM input folder.

    ``dvcl segment folder -o folder --overwrite`` would otherwise replace each CT by its label map.
    """
    resolved = [(p, p.resolve()) for p in inputs]
    for out in outputs:
        ro = out.resolve()
        for inp, ri in resolved:
            same = ro == ri or (out.exists() and inp.exists() and os.path.samefile(out, inp))
            if same or (inp.is_dir() and ri in ro.parents):
                raise ConfigError(f"{out}: output would replace the input {inp}; choose another output "
                                  "file or folder")


def check_ct(image: sitk.Image, path: Path, force: bool) -> None:
    """Refuse non-CT intensities (all zero, NaN, constant, MR-like) unless ``force``; then only warn."""
    try:
        check_ct_intensities(image, path)
    except NotCTError as exc:
        if not force:
            raise NotCTError(f"{exc}; use --force to segment it anyway") from exc
        log.warning("%s; segmenting anyway (--force), expect a poor result", exc)


def validate_inputs(inputs: Sequence[Path], accept_nonuniform: bool = False, force: bool = False) -> None:
    """Read and check every input before the first output is written (several inputs only).

    With one input the case loop reads it before writing anything anyway, so it is not read twice.
    """
    if len(inputs) < 2:
        return
    for p in inputs:
        img = read_image(p, accept_nonuniform=accept_nonuniform)
        check_ct(img, p, force)
        del img


def _input_bytes(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    return p.stat().st_size


def check_output_space(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    """Every output folder must be writable and have room for the label maps (estimated from the inputs:
    a compressed uint8 label map is far smaller than its CT; a quarter of the input is a generous bound)."""
    need = {}
    for inp, out in zip(inputs, outputs):
        folder = out.parent
        need[folder] = need.get(folder, 0) + _input_bytes(inp) // 4
    for folder, nbytes in need.items():
        check_writable(folder, nbytes, what="segmentation output")


#: What an unset --sw-batch-size is assumed to become in the estimate (the predictor picks at most this on a CPU).
DEFAULT_BATCH_GUESS = 4


def estimate_bytes(image: sitk.Image, package: ModelPackage, restore: str, sw_batch_size: Optional[int]) -> int:
    """A rough upper estimate of the peak memory of one case (bytes).

    Terms: the image (as read and as float32), the network-grid input and the class-probability accumulators
    (probabilities and blending weights), the windows in flight with the network's activations, and the
    restore (probabilities: the uint8 label on the original grid and one expansion step of it;
    probabilities-exact: the best-probability and argmax arrays plus one resampled class on the original grid;
    label: the uint8 argmax on both grids).
    """
    orig = int(math.prod(image.GetSize()))
    cfg = package.preprocessing
    net = 1
    for n, s, t in zip(image.GetSize(), image.GetSpacing(), cfg.spacing):
        net *= max(1, int(math.ceil((n - 1) * s / t)) + 1)
    c = package.num_classes
    roi = int(math.prod(package.roi))
    act = sum(package.network_config.channels) * 4 * 3  # features kept per voxel for the backward-free pass
    total = orig * (image.GetSizeOfPixelComponent() + 4)
    total += net * 4 + 2 * c * net * 4
    total += (sw_batch_size or DEFAULT_BATCH_GUESS) * roi * (act + 2 * c * 4)
    if restore == "probabilities-exact":
        total += orig * (4 + 1 + 4)
    elif restore == "probabilities":  # dvcl.preprocessing.restore: uint8 label + one gather step, small border
        total += orig * 2 + net * (1 + 4)
    else:
        total += orig + net
    return int(total)


def plan_memory(image: sitk.Image, package: ModelPackage, restore: str, sw_batch_size: Optional[int],
                max_memory: Optional[float], name: str) -> Tuple[str, Optional[int]]:
    """Fit one case into ``max_memory`` GiB by splitting the work, or refuse it before any work.

    Steps, cheapest loss first: one window per network call; then the label restore (argmax on the network
    grid, nearest-neighbour back: no float array on the original grid). Returns ``(restore, sw_batch_size)``.

    Raises:
        ResourceLimitError: even the smallest plan needs more than the budget.
    """
    if max_memory is None:
        return restore, sw_batch_size
    if max_memory <= 0:
        raise ConfigError(f"--max-memory must be positive (GiB), got {max_memory:g}")
    budget = max_memory * GIB
    plans = [(restore, sw_batch_size), (restore, 1), ("label", 1)]
    for r, b in plans:
        est = estimate_bytes(image, package, r, b)
        if est <= budget:
            if (r, b) != (restore, sw_batch_size):
                log.warning("%s: --max-memory %g GiB: using sw-batch-size %d and the %s restore (estimated "
                            "%.2f GiB)", name, max_memory, b, r, est / GIB)
            return r, b
    raise ResourceLimitError(f"{name}: needs about {estimate_bytes(image, package, 'label', 1) / GIB:.2f} GiB "
                             f"even with one window per call and the label restore; --max-memory is "
                             f"{max_memory:g} GiB")
