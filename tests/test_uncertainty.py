"""`dvcl segment --uncertainty`: entropy and A/B disagreement maps on the input's grid (team contract 5), with the
shipped one-model demo package (disagreement must be zero) and a two-model package (it must not be), through
the API and the CLI (file names, JSON events, volumes table columns)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dvcl_test_cases import tiny_ab_package

from dvcl.cli.main import main
from dvcl.inference.model_package import default_model_dir, load_model_package
from dvcl.inference.predictor import Predictor
from dvcl.inference.segment import segment_image
from dvcl.inference.uncertainty import (
    model_disagreement,
    normalised_entropy,
    predict_per_model,
    structure_means,
    uncertainty_paths,
)
from dvcl.io.images import read_image
from dvcl.phantoms import make_abdominal_phantom
from dvcl.preprocessing import Grid, preprocess_image

LABELS = {1: "liver", 2: "right kidney", 3: "spleen"}


@pytest.fixture(scope="module")
def pair_package(tmp_path_factory) -> Path:
    """Two differently initialised tiny U-Nets (A, B): they disagree."""
    return tiny_ab_package(tmp_path_factory.mktemp("models"), "pair", 1, LABELS)


@pytest.fixture(scope="module")
def phantom():
    image, reference = make_abdominal_phantom(seed=31337)
    return image, reference


def _values(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def test_entropy_and_disagreement_formulas():
    uniform = np.full((4, 2, 3), 0.25, np.float32)
    onehot = np.zeros((4, 2, 3), np.float32)
    onehot[2] = 1.0
    np.testing.assert_allclose(normalised_entropy(uniform), 1.0, atol=1e-6)
    np.testing.assert_allclose(normalised_entropy(onehot), 0.0, atol=1e-6)
    half = np.zeros((4, 1), np.float32)
    half[:2] = 0.5
    np.testing.assert_allclose(normalised_entropy(half), math.log(2) / math.log(4), atol=1e-6)
    other = np.zeros_like(onehot)
    other[0] = 1.0
    np.testing.assert_allclose(model_disagreement(np.stack([onehot, other])), 1.0, atol=1e-6)
    np.testing.assert_allclose(model_disagreement(np.stack([onehot, onehot])), 0.0)
    np.testing.assert_allclose(model_disagreement(onehot[None]), 0.0)  # one model cannot disagree
    mixed = 0.5 * (onehot + other)
    np.testing.assert_allclose(model_disagreement(np.stack([onehot, mixed])), 0.5, atol=1e-6)


def test_structure_means_and_paths():
    label = sitk.GetImageFromArray(np.array([[[0, 1, 1, 3]]], np.uint8))
    value = sitk.GetImageFromArray(np.array([[[0.9, 0.2, 0.4, 1.0]]], np.float32))
    means = structure_means(label, value, LABELS)
    assert means["liver"] == pytest.approx(0.3) and means["spleen"] == pytest.approx(1.0)
    assert math.isnan(means["right kidney"])  # not predicted: no mean
    paths = uncertainty_paths(Path("/out/case_01.seg.nrrd"))
    assert paths == {"entropy": Path("/out/case_01_entropy.nii.gz"),
                     "disagreement": Path("/out/case_01_disagreement.nii.gz")}


def test_demo_model_maps_on_a_phantom(phantom):
    """The shipped one-model package: maps on the phantom's grid, values in [0, 1], disagreement zero, entropy
    high somewhere (organ borders) and low somewhere (air)."""
    image, _ = phantom
    demo = load_model_package(default_model_dir(), device="cpu")
    assert len(demo.model_names) == 1
    maps = {}
    label = segment_image(image, demo, device="cpu", uncertainty=maps)
    assert set(maps) == {"entropy", "disagreement"}
    for quantity, img in maps.items():
        assert Grid.of(img) == Grid.of(image), quantity
        assert img.GetPixelID() == sitk.sitkFloat32
        v = _values(img)
        assert v.min() >= 0.0 and v.max() <= 1.0, quantity
    assert not _values(maps["disagreement"]).any()
    entropy = _values(maps["entropy"])
    assert entropy.max() > 0.2 and np.percentile(entropy, 10) < 0.05
    # the label is the same as without --uncertainty (the mean of one model is that model)
    plain = segment_image(image, demo, device="cpu")
    assert np.array_equal(_values(label), _values(plain))


def test_two_models_disagree_and_their_mean_is_the_ensemble(pair_package, abdomen_image):
    package = load_model_package(pair_package, device="cpu")
    image = read_image(abdomen_image)
    arr, _ = preprocess_image(image, package.preprocessing)
    per_model = predict_per_model(package, torch.device("cpu"), arr, engine="torch")
    assert tuple(per_model.shape) == (2, 4) + arr.shape
    ensemble = Predictor(package, "cpu", engine="torch").predict(arr)
    torch.testing.assert_close(torch.from_numpy(per_model.mean(0)), ensemble, atol=1e-5, rtol=0)
    maps = {}
    segment_image(image, package, device="cpu", engine="torch", uncertainty=maps)
    disagreement = _values(maps["disagreement"])
    assert Grid.of(maps["disagreement"]) == Grid.of(image)
    assert disagreement.max() > 0.05 and disagreement.min() >= 0.0 and disagreement.max() <= 1.0
    # "A only" is a one-model ensemble again
    only_a = {}
    segment_image(image, package, device="cpu", engine="torch", models=["A"], uncertainty=only_a)
    assert not _values(only_a["disagreement"]).any()


def test_cli_uncertainty_outputs_events_and_volume_columns(tmp_path, pair_package, abdomen_image, capsys):
    out = tmp_path / "out"
    rc = main(["--progress", "json", "segment", str(abdomen_image), "-o", str(out), "--model", str(pair_package),
               "--uncertainty", "--volumes", "json", "--engine", "torch"])
    assert rc == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    outputs = [e for e in events if e.get("event") == "output" and e.get("kind") == "uncertainty"]
    assert {e["quantity"] for e in outputs} == {"entropy", "disagreement"}
    for e in outputs:
        path = Path(e["path"])
        assert path == (out / f"image_{e['quantity']}.nii.gz").resolve() and path.is_file()
        written = sitk.ReadImage(str(path))
        assert Grid.of(written) == Grid.of(read_image(abdomen_image))
        assert written.GetPixelID() == sitk.sitkFloat32
    table = json.loads((out / "volumes.json").read_text())["image"]
    for name in LABELS.values():
        assert f"{name} mean_entropy" in table and f"{name} mean_disagreement" in table
        assert name in table  # the volume in ml stays where it was
    present = [v for k, v in table.items() if k.endswith("mean_entropy") and v is not None]
    assert present and all(0.0 <= v <= 1.0 for v in present)
    # CSV: the same columns
    rc = main(["segment", str(abdomen_image), "-o", str(out), "--model", str(pair_package), "--uncertainty",
               "--volumes", "csv", "--engine", "torch", "--overwrite"])
    assert rc == 0
    header = (out / "volumes.csv").read_text().splitlines()[0].split(",")
    assert "liver [ml]" in header and "liver mean_entropy" in header and "spleen mean_disagreement" in header


def test_uncertainty_outputs_are_not_overwritten(tmp_path, pair_package, abdomen_image, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "image_entropy.nii.gz").write_bytes(b"keep me")
    rc = main(["segment", str(abdomen_image), "-o", str(out), "--model", str(pair_package), "--uncertainty"])
    assert rc == 2
    assert "image_entropy.nii.gz" in capsys.readouterr().err
    assert (out / "image_entropy.nii.gz").read_bytes() == b"keep me"
    assert not (out / "image.nii.gz").exists()  # refused before any work
