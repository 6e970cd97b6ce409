"""Shared fixtures: the real CT test data (tests/data) and small helpers to lay out data sets."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from dvcl_test_cases import write_tiny_case as _write_case

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# exported ONNX graphs (dvcl.inference.engines) go to a per-session folder, not the user's ~/.cache
_SESSION_CACHE = None
if "DVCL_CACHE" not in os.environ:
    _SESSION_CACHE = os.environ["DVCL_CACHE"] = tempfile.mkdtemp(prefix="dvcl-test-cache-")

DATA = Path(__file__).parent / "data"


def pytest_unconfigure(config):
    """Remove the per-session ONNX cache (not the user's own DVCL_CACHE)."""
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def abdomen_image() -> Path:
    return DATA / "abdomen_ct_3mm" / "image.nii.gz"


@pytest.fixture(scope="session")
def abdomen_label() -> Path:
    return DATA / "abdomen_ct_3mm" / "label_flare22.nii.gz"


@pytest.fixture(scope="session")
def chest_image() -> Path:
    return DATA / "chest_cta_1p5mm" / "image.nii.gz"


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    return DATA / "dicom_ct_3slice" / "dicom"


@pytest.fixture
def abdomen_simple_layout(tmp_path, abdomen_image, abdomen_label) -> Path:
    """A simple-layout data set with the real abdomen CT labeled and the chest CT unlabeled."""
    root = tmp_path / "data"
    (root / "labeled" / "images").mkdir(parents=True)
    (root / "labeled" / "labels").mkdir(parents=True)
    (root / "unlabeled").mkdir(parents=True)
    shutil.copy(abdomen_image, root / "labeled" / "images" / "abd.nii.gz")
    shutil.copy(abdomen_label, root / "labeled" / "labels" / "abd.nii.gz")
    shutil.copy(DATA / "chest_cta_1p5mm" / "image.nii.gz", root / "unlabeled" / "chest.nii.gz")
    return root


# --------------------------------------------------------------------------- a tiny real cache for training tests
@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A prepared cache of 5 labeled + 1 unlabeled tiny volumes (2 classes): real files, seconds to train on."""
    from dvcl.data.cache import prepare_dataset
    from dvcl.presets import Preset

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for i in range(5):
        _write_case(root / "data" / "labeled", f"case{i}", rng, True)
    _write_case(root / "data" / "unlabeled", "extra0", rng, False)
    preset = Preset(name="tiny", labels={1: "box", 2: "ball"}, batch_labeled=1, batch_unlabeled=1,
                    iterations=2, lr=0.01)
    cache, _ = prepare_dataset(root / "data", root / "cache", preset=preset, workers=1)
    return cache.root
