"""`dvcl segment` without torch (issue 17): on the CPU, with an ONNX engine whose graph and agreement check are
cached, a segmentation process never imports torch. The pieces that make it so are tested one by one: the
numpy sliding window (same windows and blending as the torch one), device and thread choice and graph lookup
without torch, and the lazily loaded package; then two real `python -m dvcl segment` processes on the real
abdomen CT show it end to end, against the torch path's labels."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dvcl.errors import DeviceError, ModelError
from dvcl.inference import engines
from dvcl.inference.model_package import WEIGHTS, default_model_dir, load_model_package, save_model_package
from dvcl.inference.predictor import Predictor
from dvcl.inference.segment import segment_image
from dvcl.inference.sliding_window import (
    WindowPlan,
    gaussian_importance,
    gaussian_importance_array,
    sliding_window,
    window_corners,
)
from dvcl.io.images import read_image
from dvcl.networks import NetworkConfig, build_network
from dvcl.preprocessing.pipeline import preprocess_image
from dvcl.utils import device as device_mod
from dvcl.utils import threads

ROOT = Path(__file__).resolve().parents[1]
#: the least label agreement of the torch-free path with the torch path (issue 17)
MIN_AGREEMENT = 0.9999


def _onnx_engine() -> str:
    name = engines.resolve_engine("auto", "cpu")
    if name == "torch":
        pytest.skip("no ONNX engine installed: auto uses torch")
    return name


# ------------------------------------------------------------------------------------------ the window
def test_one_window_plan_and_gaussian_for_both_array_kinds() -> None:
    """tests/test_sliding_window.py checks both kinds against MONAI; here the shared plan and the weights."""
    shape, roi, stride = (6, 30, 17), (8, 16, 16), (4, 8, 8)
    plan = WindowPlan.of(shape, roi, stride)
    assert plan.needs_padding and plan.pads == ((1, 1), (0, 0), (0, 0)) and plan.padded == (8, 30, 17)
    assert list(plan.corners) == window_corners(plan.padded, roi, stride)
    assert [s.stop - s.start for s in plan.crop] == list(shape)
    assert len(plan.corners) == 6 and [done for done, _ in plan.batches(4)] == [4, 6]
    assert plan.middle_batch(2) == [plan.region(c) for c in plan.corners[2:4]]  # the engine check's windows
    # numpy's and torch's float32 exp differ by at most one ulp, so the weights by a few ulp (three factors)
    np.testing.assert_allclose(gaussian_importance_array(roi), gaussian_importance(roi).numpy(), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_torch_free_path_agrees_with_torch_sliding_window_on_real_ct(abdomen_image) -> None:
    """The real abdomen CT, the demo model, the ONNX engine: numpy tiling vs torch tiling of the same engine
    outputs (replayed, so only the window code differs) agree on >= 99.99 % of the labels."""
    name = _onnx_engine()
    pkg = load_model_package(default_model_dir(), lazy=True)
    arr, _ = preprocess_image(read_image(abdomen_image), pkg.preprocessing)
    predictor = Predictor(pkg, "cpu", engine=name)
    outputs: List[np.ndarray] = []

    def record(x: np.ndarray) -> np.ndarray:
        outputs.append(predictor.engine.probabilities(x))
        return outputs[-1]

    x = arr[None].astype(np.float32)
    got = sliding_window(x, predictor.roi, predictor.stride, record, predictor.sw_batch_size)
    replay = iter(outputs)
    ref = sliding_window(torch.from_numpy(x), predictor.roi, predictor.stride,
                         lambda w: torch.from_numpy(next(replay)), predictor.sw_batch_size).numpy()
    assert float((got.argmax(0) == ref.argmax(0)).mean()) >= MIN_AGREEMENT
    assert float(np.abs(got - ref).max()) < 1e-5


# ------------------------------------------------------------------------------------------ no torch needed
def test_device_is_resolved_without_torch_when_no_gpu_can_exist(monkeypatch, caplog) -> None:
    monkeypatch.setattr(device_mod, "cuda_possible", lambda: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    assert device_mod.resolve_device("auto") == "cpu"
    assert device_mod.resolve_device("cpu") == "cpu"
    assert device_mod.resolve_device("cuda:1") == "cpu"
    assert any("No CUDA GPU" in r.getMessage() for r in caplog.records)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        device_mod.resolve_device("cuda", strict=True)
    with pytest.raises(DeviceError, match="unknown device"):
        device_mod.resolve_device("tpu")


def test_cuda_possible_is_conservative(monkeypatch, tmp_path) -> None:
    """Only certain answers say "no GPU": CPU builds, hidden devices, Linux without GPU device nodes."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(device_mod, "torch_build_tag", lambda: None)  # a CUDA-capable torch (PyPI Linux wheel)
    monkeypatch.setattr(device_mod.sys, "platform", "linux")
    dev = tmp_path / "dev"
    dev.mkdir()
    assert not device_mod.cuda_possible(dev)  # no driver nodes: the driver cannot reach a GPU
    for node in ("nvidia0", "dxg", "kfd"):
        (dev / node).touch()
        assert device_mod.cuda_possible(dev), node
        (dev / node).unlink()
    (dev / "nvidia0").touch()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not device_mod.cuda_possible(dev)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(device_mod, "torch_build_tag", lambda: "cpu")
    assert not device_mod.cuda_possible(dev)
    monkeypatch.setattr(device_mod, "torch_build_tag", lambda: "cu130")
    monkeypatch.setattr(device_mod.sys, "platform", "win32")
    assert device_mod.cuda_possible(dev)  # cannot tell: torch decides


def test_graph_key_keeps_old_caches_valid(tmp_path) -> None:
    """The key reads torch's version from its metadata now; it is the key torch.__version__ gave."""
    cfg = NetworkConfig(num_classes=2, channels=(4, 8), feature_dim=8)
    torch.manual_seed(0)
    folder = save_model_package({"A": build_network(cfg)}, cfg, {1: "liver"}, tmp_path / "p", name="p",
                                roi=(16, 32, 32), stride=(8, 16, 16))
    pkg = load_model_package(folder, lazy=True)
    h = hashlib.sha256((folder / WEIGHTS).read_bytes())
    h.update(json.dumps({"model": "A", "network": pkg.meta.get("network"), "opset": engines.OPSET,
                         "graph": engines.GRAPH_VERSION, "torch": torch.__version__.split("+")[0]},
                        sort_keys=True).encode())
    assert engines.graph_key(pkg, "A") == h.hexdigest()[:16]
    assert not pkg.models.loaded  # the key needs the weights' bytes, not the networks


def test_package_networks_load_on_first_use(tmp_path) -> None:
    cfg = NetworkConfig(num_classes=2, channels=(4, 8), feature_dim=8)
    folder = save_model_package({"A": build_network(cfg), "B": build_network(cfg)}, cfg, {1: "liver"},
                                tmp_path / "p", name="p", roi=(16, 32, 32), stride=(8, 16, 16))
    pkg = load_model_package(folder, lazy=True)
    assert list(pkg.models) == ["A", "B"] and "B" in pkg.models and "C" not in pkg.models
    assert not pkg.models.loaded
    assert isinstance(pkg.models["A"], torch.nn.Module) and pkg.models.loaded
    assert load_model_package(folder).models.loaded  # the default stays eager
    # bad weights still end as a ModelError naming the file, when the networks are first needed
    (folder / WEIGHTS).write_bytes(b"not safetensors")
    lazy = load_model_package(folder, lazy=True)
    with pytest.raises(ModelError, match="weights"):
        lazy.models["A"]
    (folder / WEIGHTS).unlink()
    with pytest.raises(ModelError, match="weights file missing"):
        load_model_package(folder, lazy=True)


def test_engine_threads_come_from_dvcl_without_torch(monkeypatch) -> None:
    assert threads.configured_threads() == torch.get_num_threads()  # torch loaded: its count, for every runtime
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.configured_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.configured_threads() == threads.choose_threads("segment")


# ------------------------------------------------------------------------------------------ end to end
_IMPORT_LINE = re.compile(r"^import time:\s+-?\d+ \|\s+\d+ \| *([\w.]+)\s*$", re.M)


def imported_modules(importtime_stderr: str) -> Set[str]:
    """Every module a ``python -X importtime`` process imported, from its stderr."""
    return set(_IMPORT_LINE.findall(importtime_stderr))


def _segment(src: Path, out: Path, cache: Path) -> Set[str]:
    """One real ``python -X importtime -m dvcl segment`` process with the demo model; its imported modules."""
    device = [] if not device_mod.cuda_possible() else ["--device", "cpu"]  # auto must find the CPU by itself
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"), DVCL_CACHE=str(cache))
    cmd = [sys.executable, "-X", "importtime", "-m", "dvcl", "--progress", "none", "segment", str(src), "-o",
           str(out), "--model", "phantom_demo", *device]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return imported_modules(res.stderr)


@pytest.mark.slow
def test_second_segment_run_never_imports_torch(abdomen_image, tmp_path) -> None:
    """Run 1 exports the graph and records the check (torch); run 2 finds both cached and runs without torch,
    with the same labels, which agree with the torch engine's on >= 99.99 % of the voxels."""
    engine = _onnx_engine()
    cache = tmp_path / "cache"
    first = _segment(abdomen_image, tmp_path / "first.nii.gz", cache)
    assert "torch" in first  # the parser sees torch when it is there: the export and the check need it
    graphs = sorted((cache / "onnx").glob("phantom_demo-A.*.onnx"))
    assert len(graphs) == 1 and engines.recorded_agreement(graphs, engine) is not None
    second = _segment(abdomen_image, tmp_path / "second.nii.gz", cache)
    assert "torch" not in second and not any(m.startswith(("torch.", "monai")) for m in second)
    assert {"dvcl.inference.engines", "dvcl.inference.sliding_window"} <= second
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f))) for f in ("first.nii.gz", "second.nii.gz")]
    assert np.array_equal(labels[0], labels[1])
    reference = segment_image(read_image(abdomen_image), load_model_package(default_model_dir()), device="cpu",
                              engine="torch")
    agreement = float((sitk.GetArrayFromImage(reference) == labels[1]).mean())
    assert agreement >= MIN_AGREEMENT, agreement
