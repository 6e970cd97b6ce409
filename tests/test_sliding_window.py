"""The one sliding-window module: overlap <-> stride, the window settings of runs and packages, and tiling that
gives MONAI's probabilities on torch tensors and numpy arrays (validation and ``dvcl segment`` share it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvcl.errors import ConfigError
from dvcl.inference.sliding_window import (
    PAPER_ROI,
    PAPER_STRIDE,
    WindowConfig,
    count_windows,
    overlap_for_stride,
    sliding_window,
    stride_for_overlap,
)
from dvcl.profiles import PROFILES, window_text


def test_overlap_and_stride_convert_both_ways() -> None:
    assert stride_for_overlap(PAPER_ROI, 0.5) == PAPER_STRIDE
    assert stride_for_overlap((32, 64, 64), 0.25) == (24, 48, 48)
    for roi, stride in ((PAPER_ROI, PAPER_STRIDE), ((64, 160, 160), (16, 48, 48)), ((32, 64, 64), (24, 48, 48))):
        overlaps = overlap_for_stride(roi, stride)
        assert tuple(int(r * (1 - o)) for r, o in zip(roi, overlaps)) == stride
    with pytest.raises(ConfigError, match="overlap"):
        stride_for_overlap(PAPER_ROI, 1.0)
    with pytest.raises(ConfigError, match="exceeds"):
        WindowConfig((32, 32, 32), (33, 32, 32))


def test_run_window_becomes_the_package_window() -> None:
    """A run validated with a profile's window exports exactly those windows (the paper: 64x160x160 / 32x80x80)."""
    paper = WindowConfig.from_train_config({k: v for k, v in PROFILES["paper"].items() if k.startswith("val_")})
    assert (paper.roi, paper.stride, paper.sw_batch_size) == (PAPER_ROI, PAPER_STRIDE, 2)
    quick = WindowConfig.from_train_config(PROFILES["quick"])
    assert quick.to_json() == {"roi": [32, 64, 64], "stride": [24, 48, 48]}
    assert WindowConfig.from_train_config({}) == WindowConfig()
    assert window_text() == ("paper: window 64x160x160, stride 32x80x80; quick: window 32x64x64, stride 24x48x48")
    assert quick.count((40, 100, 130)) == 2 * 2 * 3


@pytest.mark.parametrize("shape, roi, overlap", [((20, 45, 50), (8, 16, 16), 0.25), ((6, 30, 17), (8, 16, 16), 0.5),
                                                 ((16, 16, 16), (16, 16, 16), 0.5)])
def test_tiling_gives_monai_probabilities(shape, roi, overlap) -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(conv(x), dim=1)

    image = torch.randn(1, 1, *shape)
    expected = sliding_window_inference(image, roi, 3, predict, overlap=overlap, mode="gaussian")
    win = WindowConfig.from_overlap(roi, overlap, sw_batch_size=3)
    calls = []
    got = sliding_window(image[0], win.roi, win.stride, predict, win.sw_batch_size,
                         on_batch=lambda done, total: calls.append((done, total)))
    assert got.shape == (3, *shape)
    assert torch.allclose(got, expected[0], atol=1e-6)
    assert calls[-1] == (count_windows(shape, win.roi, win.stride),) * 2
    # numpy in, numpy out (the ONNX engines' path, no torch): the same windows, batches and probabilities
    np_calls = []
    got_np = sliding_window(image[0].numpy(), win.roi, win.stride, lambda w: predict(torch.from_numpy(w)).numpy(),
                            win.sw_batch_size, on_batch=lambda done, total: np_calls.append((done, total)))
    assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float32
    np.testing.assert_allclose(got_np, expected[0].numpy(), atol=1e-6, rtol=0)
    assert np_calls == calls
