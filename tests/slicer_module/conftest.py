"""Fixtures for the Slicer module's tests: a real MRML scene (``slicer-core``) and a tiny model package.

The module's logic is imported from ``DVCLSegmentation/`` exactly as Slicer imports it. Every test gets a
fresh ``vtkMRMLScene`` installed as ``slicer.mrmlScene``. The model package is built with the backend's own
``save_model_package`` from a randomly initialised, very small network whose preprocessing works on a coarse
6 mm grid, so a real ``dvcl segment`` run on the 3 mm abdomen CT takes seconds on a CPU; its output is noise,
which is fine: the tests check plumbing, geometry and bookkeeping, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dvcl_slicer_helpers import ABDOMEN_IMAGE, load_volume, make_tiny_model, require_slicer


@pytest.fixture(autouse=True)
def _slot_errors_raise():
    """A failing slot must fail the test instead of being logged and swallowed."""
    from DVCLSegmentationLib.Signal import Signal

    old = Signal.raise_errors
    Signal.raise_errors = True
    yield
    Signal.raise_errors = old


@pytest.fixture
def scene():
    """A fresh MRML scene as ``slicer.mrmlScene``, with the segmentation converters registered."""
    slicer = require_slicer()
    from DVCLSegmentationLib.SceneBridge import ensure_segmentation_converters

    ensure_segmentation_converters()
    mrml = slicer.vtkMRMLScene()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = mrml
    yield mrml
    mrml.Clear(1)
    slicer.mrmlScene = previous


@pytest.fixture
def abdomen_volume(scene):
    return load_volume(scene, ABDOMEN_IMAGE, "abdomen_ct_3mm")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny_random")
