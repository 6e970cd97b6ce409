"""Inference engines (torch, ONNX Runtime, OpenVINO), the window-batch default and the lean imports of
``dvcl segment`` (issue 17). Engine tests skip when the runtime is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dvcl.errors import ConfigError
from dvcl.inference import engines
from dvcl.inference.model_package import load_model_package, save_model_package
from dvcl.inference.predictor import CPU_SW_BATCH, Predictor, choose_sw_batch_size
from dvcl.networks import build_network
from dvcl.networks.config import NetworkConfig

LABELS = {1: "liver", 2: "spleen", 3: "kidney"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory) -> Path:
    """A small two-model U-Net package (4 classes) with a 16x32x32 window."""
    cfg = NetworkConfig(num_classes=4, channels=(4, 8, 16), feature_dim=8)
    torch.manual_seed(0)
    nets = {"A": build_network(cfg), "B": build_network(cfg)}
    return save_model_package(nets, cfg, LABELS, tmp_path_factory.mktemp("models") / "small", name="small",
                              preset="flare22", roi=(16, 32, 32), stride=(8, 16, 16))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """A smooth random volume (normalised-intensity-like), several windows in each direction."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((22, 44, 46)).astype(np.float32)
    k = np.ones(3, np.float32) / 3
    for ax in range(3):
        v = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), ax, v)
    return v


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(0) == b.argmax(0)).float().mean())


# ------------------------------------------------------------------------------------------ selection
def test_resolve_engine_choices_and_fallbacks(monkeypatch, caplog):
    assert engines.resolve_engine("torch", "cpu") == "torch"
    assert engines.resolve_engine("auto", "cuda") == "torch"  # no regression on GPUs: torch there
    with pytest.raises(ConfigError, match="unknown engine"):
        engines.resolve_engine("tensorrt", "cpu")
    expected_auto = next(e for e in engines.AUTO_ORDER["cpu"] if engines.engine_installed(e))
    assert engines.resolve_engine("auto", "cpu") == expected_auto
    # the order is the measured table's: engines below the agreement bar never, the rest fastest first
    table = engines.MEASURED["cpu"]
    speeds = [table[e]["speedup"] for e in engines.AUTO_ORDER["cpu"]]
    assert speeds == sorted(speeds, reverse=True)
    assert all(table[e]["voxel_agreement"] >= engines.MIN_AGREEMENT for e in engines.AUTO_ORDER["cpu"])
    # an engine that cannot be imported degrades to torch with a message (None in sys.modules blocks an import)
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert not engines.engine_installed("openvino") and engines.installed_engines() == ["torch"]
    caplog.clear()
    assert engines.resolve_engine("openvino", "cpu") == "torch"
    assert any("not installed" in r.getMessage() for r in caplog.records)
    assert engines.resolve_engine("auto", "cpu") == "torch"
    assert engines.resolve_engine("onnxruntime", "cuda") == "torch"


def test_predictor_falls_back_to_torch_when_engine_missing(package_dir, volume, monkeypatch):
    pkg = load_model_package(package_dir)
    monkeypatch.setitem(sys.modules, "openvino", None)
    p = Predictor(pkg, "cpu", engine="openvino")
    assert p.engine_name == "torch"
    ref = Predictor(pkg, "cpu", engine="torch").predict(volume[:16, :32, :32])
    assert torch.equal(p.predict(volume[:16, :32, :32]), ref)


# ------------------------------------------------------------------------------------------ window batch
def test_window_batch_default_and_memory_cap(package_dir, volume):
    pkg = load_model_package(package_dir)
    cpu = torch.device("cpu")
    assert choose_sw_batch_size(pkg, cpu) == CPU_SW_BATCH >= 4  # batch 1 runs PyTorch's slow_conv3d path
    # a window that needs more than a quarter of any real machine's memory gets one window per call
    assert choose_sw_batch_size(pkg, cpu, roi=(1024, 1024, 1024)) == 1
    assert Predictor(pkg, "cpu", engine="torch").sw_batch_size == CPU_SW_BATCH
    assert Predictor(pkg, "cpu", engine="torch", sw_batch_size=1).sw_batch_size == 1
    with pytest.raises(ConfigError):
        Predictor(pkg, "cpu", engine="torch", sw_batch_size=0)
    # the batch changes how windows are grouped, not the result
    a = Predictor(pkg, "cpu", engine="torch", sw_batch_size=1).predict(volume)
    b = Predictor(pkg, "cpu", engine="torch").predict(volume)
    assert torch.allclose(a, b, atol=1e-5) and _agreement(a, b) == 1.0


# ------------------------------------------------------------------------------------------ engines
@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_engine_agrees_with_torch(package_dir, volume, name):
    pytest.importorskip(name)
    pkg = load_model_package(package_dir)
    ref = Predictor(pkg, "cpu", engine="torch").predict(volume)
    p = Predictor(pkg, "cpu", engine=name)
    assert p.engine_name == name and len(p.graphs) == 2  # one graph per model of the A+B ensemble
    got = p.predict(volume)
    assert got.shape == ref.shape
    assert _agreement(got, ref) >= engines.MIN_AGREEMENT
    assert float((got - ref).abs().max()) < 1e-3
    # the first use measured the agreement on real windows and stored it next to each graph
    assert engines.recorded_agreement(p.graphs, name) >= engines.MIN_AGREEMENT
    # test-time augmentation goes through the engine too
    tta_ref = Predictor(pkg, "cpu", engine="torch", tta=True).predict(volume[:16, :32, :32])
    tta = Predictor(pkg, "cpu", engine=name, tta=True).predict(volume[:16, :32, :32])
    assert _agreement(tta, tta_ref) >= engines.MIN_AGREEMENT


def test_graph_is_cached_by_weights_and_falls_back_when_cache_unwritable(package_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pkg = load_model_package(package_dir)
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "cache"))
    first = engines.ensure_graph(pkg, "A")
    assert first.parent == tmp_path / "cache" / "onnx" and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert engines.ensure_graph(pkg, "A") == first and first.stat().st_mtime_ns == stamp  # exported once
    assert engines.graph_key(pkg, "A") != engines.graph_key(pkg, "B")  # other weights, other graph
    assert not list((tmp_path / "cache" / "onnx").glob("*.tmp*"))  # atomic: no leftovers
    # a cache location that cannot be created: the graph goes to a temporary folder for this run
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv(engines.CACHE_ENV, str(blocker))
    fallback = engines.ensure_graph(pkg, "A")
    assert fallback.is_file() and blocker not in fallback.parents


def test_auto_uses_torch_when_the_recorded_check_failed(package_dir, volume):
    name = engines.resolve_engine("auto", "cpu")
    if name == "torch":
        pytest.skip("auto picks torch here (no faster ONNX engine installed)")
    pkg = load_model_package(package_dir)
    p = Predictor(pkg, "cpu", engine="auto")
    assert p.engine_name == name
    graphs = list(p.graphs)
    engines.record_check(graphs, name, 0.5)  # a check that failed on this machine, as record_check stores it
    p.predict(volume[:16, :32, :32])
    assert p.engine_name == "torch"
    explicit = Predictor(pkg, "cpu", engine=name)  # asked for by name: kept, with a warning
    explicit.predict(volume[:16, :32, :32])
    assert explicit.engine_name == name
    assert p.graphs == []
    engines.record_check(graphs, name, 1.0)
    check = json.loads(Path(str(graphs[0]) + ".check.json").read_text())
    assert check[engines.engine_fingerprint(name)] == 1.0  # one entry per engine version and CPU


# ------------------------------------------------------------------------------------------ lean imports
def test_dvcl_segment_does_not_import_monai(abdomen_image, tmp_path):
    """A `dvcl segment` process (real CLI, real CT crop, demo model) never imports MONAI or matplotlib."""
    img = sitk.ReadImage(str(abdomen_image))
    size = img.GetSize()
    cx, cy, cz = (s // 2 for s in size)
    crop = img[cx - 24:cx + 24, cy - 24:cy + 24, cz - 8:cz + 8]
    src = tmp_path / "crop.nii.gz"
    sitk.WriteImage(crop, str(src))
    out = tmp_path / "seg.nii.gz"
    code = (
        "import sys, json\n"
        "from dvcl.cli.main import main\n"
        f"rc = main(['--progress', 'none', 'segment', {str(src)!r}, '-o', {str(out)!r}, '--model', 'phantom_demo', "
        "'--engine', 'torch', '--sw-batch-size', '2'])\n"
        "print(json.dumps({'rc': rc, 'mods': [m for m in ('monai', 'monai.transforms', 'monai.inferers', "
        "'matplotlib', 'scipy.signal') if m in sys.modules]}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "mods": []}
    assert sitk.ReadImage(str(out)).GetSize() == crop.GetSize()


def test_openvino_engine_does_not_phone_home(abdomen_image, tmp_path):
    """`dvcl segment --engine openvino` runs OpenVINO without its conversion tool: no usage event sent to Google
    Analytics, no telemetry thread, no client id or usage counter written to ~/intel (what `import openvino`
    alone does for a user who never opted out)."""
    pytest.importorskip("openvino")
    img = sitk.ReadImage(str(abdomen_image))
    cx, cy, cz = (s // 2 for s in img.GetSize())
    src = tmp_path / "crop.nii.gz"
    sitk.WriteImage(img[cx - 24:cx + 24, cy - 24:cy + 24, cz - 8:cz + 8], str(src))
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys, json, threading\n"
        "from dvcl.cli.main import main\n"
        f"rc = main(['--progress', 'none', 'segment', {str(src)!r}, '-o', {str(tmp_path / 'seg.nii.gz')!r}, "
        "'--model', 'phantom_demo', '--engine', 'openvino', '--sw-batch-size', '2'])\n"
        "print(json.dumps({'rc': rc, 'threads': threading.active_count(), 'mods': [m for m in ('openvino', "
        "'openvino.tools.ovc', 'openvino_telemetry') if m in sys.modules]}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"), HOME=str(home), DVCL_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "threads": 1, "mods": ["openvino"]}  # the engine ran, its telemetry did not
    assert not (home / "intel").exists()


def test_openvino_engines_leave_signals_deliverable(package_dir):
    """Two OpenVINO predictors released in the order they were made, then a signal: the process must get its
    KeyboardInterrupt, not a segmentation fault. (With one OpenVINO Core per engine, the second CPU plugin put
    back the first plugin's freed alternate signal stack, and the next signal, e.g. the Slicer module's Cancel,
    crashed the process; faulthandler gives the thread an alternate stack first, as pytest and Slicer do.)"""
    pytest.importorskip("openvino")
    code = (
        "import faulthandler, gc, os, signal\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # a runner started with & ignores SIGINT
        "faulthandler.enable()\n"
        "from dvcl.inference.model_package import load_model_package\n"
        "from dvcl.inference.predictor import Predictor\n"
        f"pkg = load_model_package({str(package_dir)!r})\n"
        "a = Predictor(pkg, 'cpu', engine='openvino')\n"
        "b = Predictor(pkg, 'cpu', engine='openvino')\n"
        "assert a.engine_name == b.engine_name == 'openvino'\n"
        "del a; gc.collect(); del b; gc.collect()\n"
        "junk = [bytearray(50_000_000) for _ in range(2)]; del junk\n"
        "import time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(10)\n"  # (interrupted at once; a handler that runs late still lands inside the try)
        "    print('no interrupt within 10 s')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted cleanly')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "backend"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.strip().endswith("interrupted cleanly")


def test_plain_torch_blocks_match_monai():
    """dvcl.networks.blocks builds exactly MONAI's modules: same structure, keys, initialisation and output."""
    from monai.networks.blocks import UpSample as MonaiUpSample
    from monai.networks.nets.basic_unet import TwoConv as MonaiTwoConv

    from dvcl.networks import blocks

    act = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
    pairs = [
        (lambda m: m.TwoConv(3, 2, 8, act, ("instance", {"affine": True}), True, 0.0), blocks, MonaiTwoConv),
        (lambda m: m.TwoConv(3, 2, 8, act, ("group", {"num_groups": 4}), True, 0.1), blocks, MonaiTwoConv),
        (lambda m: m.UpSample(3, 8, 4, scale_factor=(1, 2, 2), mode="deconv"), blocks, MonaiUpSample),
        (lambda m: m.UpSample(3, 8, 4, scale_factor=(2, 2, 2), mode="nontrainable", interp_mode="trilinear",
                              align_corners=False), blocks, MonaiUpSample),
    ]
    x = torch.randn(2, 8, 4, 8, 8)
    for make, ours_mod, theirs_cls in pairs:
        torch.manual_seed(0)
        ours = make(ours_mod).eval()
        torch.manual_seed(0)
        theirs = make(SimpleNamespace(TwoConv=theirs_cls, UpSample=theirs_cls)).eval()
        a, b = ours.state_dict(), theirs.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        inp = x[:, :2] if isinstance(ours, blocks.TwoConv) else x
        with torch.no_grad():
            assert torch.equal(ours(inp), theirs(inp))
