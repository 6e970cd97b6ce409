"""Shared fixtures: the real CT test data (tests/data) and small helpers to lay out data sets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

DATA = Path(__file__).parent / "data"


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
