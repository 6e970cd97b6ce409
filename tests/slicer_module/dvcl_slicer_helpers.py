"""Helpers shared by the Slicer module's tests (imported by conftest.py and the test files).

A separate module rather than ``from conftest import ...``: the repository has two conftest.py files and a
plain ``import conftest`` could pick the other one. The folder is deliberately not named ``tests/slicer``:
the ``slicer`` meta-package of slicer-core extends its ``__path__`` with every ``slicer/`` folder found on
``sys.path`` (``pkgutil.extend_path``) and imports all modules in it, and pytest puts ``tests/`` on
``sys.path``, so ``import slicer`` would import these test files as ``slicer.*`` submodules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "DVCLSegmentation"
DATA = REPO / "tests" / "data"
ABDOMEN_IMAGE = DATA / "abdomen_ct_3mm" / "image.nii.gz"
ABDOMEN_LABEL = DATA / "abdomen_ct_3mm" / "label_flare22.nii.gz"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


def require_slicer():
    """``slicer`` from the slicer-core wheel, or skip (the whole directory needs real MRML)."""
    return pytest.importorskip("slicer", reason="slicer-core (MRML for Python) is not installed")


def require_cli(command: str) -> None:
    """Skip when the backend does not ship ``dvcl <command>`` yet (the module is developed in parallel)."""
    if importlib.util.find_spec("dvcl") is None:
        pytest.skip("the dvcl backend is not installed")
    if importlib.util.find_spec(f"dvcl.cli.{command}") is None:
        pytest.skip(f"the backend has no 'dvcl {command}' subcommand yet")


def load_volume(scene, path: Path, name: str, labelmap: bool = False):
    """Read an image file into a (label map) volume node of ``scene`` with Slicer's own storage node."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise RuntimeError(f"could not read {path}")
    return node


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def make_tiny_model(out_dir: Path, name: str = "tiny_random") -> Path:
    """A flare22 model package with random weights: 2-level U-Net (4, 8 channels), 6 mm grid, one window."""
    torch = pytest.importorskip("torch", reason="torch is needed to build a model package")
    try:
        from dvcl.inference.model_package import save_model_package
        from dvcl.networks import build_network
        from dvcl.networks.config import NetworkConfig
        from dvcl.presets import get_preset
    except ImportError as exc:
        pytest.skip(f"the backend cannot build model packages yet ({exc})")
    torch.set_num_threads(1)
    preset = get_preset("flare22")
    cfg = NetworkConfig(num_classes=preset.num_classes, channels=(4, 8), feature_dim=8)
    torch.manual_seed(0)
    nets = {"A": build_network(cfg), "B": build_network(cfg)}
    labels = {i: {"name": n, "color": list(preset.color(i))} for i, n in preset.labels.items()}
    return save_model_package(nets, cfg, labels, out_dir, name=name, description="random weights, for tests",
                              preset="flare22", roi=(64, 64, 64), stride=(64, 64, 64),
                              preprocessing={"spacing": (6.0, 6.0, 6.0)}, overwrite=True)
