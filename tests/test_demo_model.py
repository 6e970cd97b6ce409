"""The embedded demo model: it ships with the backend, loads without unpickling, and segments real CT (NIfTI and
DICOM) into the original geometry with labels from its own label set. On a held-out phantom (a seed it never
saw) it must find the organs; on the real CT (not its domain) only plumbing is checked."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.cli.main import main
from dvcl.errors import ModelError
from dvcl.inference.model_package import default_model, default_model_dir, list_installed_models, load_model_package
from dvcl.inference.segment import choose_model, segment_image
from dvcl.io.images import read_image
from dvcl.phantoms import make_abdominal_phantom
from dvcl.preprocessing import Grid
from dvcl.presets import get_preset

# Measured on three unseen phantoms when the model was trained (tools/train_demo_model.sh): liver Dice
# 0.84-0.87, mean over structures 0.43-0.52. The floors leave room for platform float differences.
LIVER_DICE_FLOOR = 0.6
MEAN_DICE_FLOOR = 0.25


@pytest.fixture(scope="module")
def demo():
    return load_model_package(default_model_dir(), device="cpu")


def test_demo_model_is_shipped_and_labelled_as_a_demo():
    model_dir = default_model_dir()
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["name"] == "phantom_demo" and "phantom" in meta["description"].lower()
    assert "not for clinical use" in meta["description"].lower()
    flare = get_preset("flare22")
    assert {int(k): v["name"] for k, v in meta["labels"].items()} == flare.labels
    assert (model_dir / "weights.safetensors").is_file()
    assert not list(model_dir.glob("*.pt")) and not list(model_dir.glob("*.pth"))  # nothing to unpickle
    assert any(m.path == model_dir for m in list_installed_models())


def test_demo_model_on_real_abdomen_ct(demo, abdomen_image):
    image = read_image(abdomen_image)
    label = segment_image(image, demo, device="cpu")
    assert Grid.of(label) == Grid.of(image)
    values = set(np.unique(sitk.GetArrayViewFromImage(label)).tolist())
    assert values <= set(range(14)) and len(values) >= 2


def test_demo_model_on_real_dicom_series(demo, dicom_dir):
    image = read_image(dicom_dir)
    label = segment_image(image, demo, device="cpu")
    assert Grid.of(label) == Grid.of(image)
    assert set(np.unique(sitk.GetArrayViewFromImage(label)).tolist()) <= set(range(14))


def test_demo_model_finds_organs_on_an_unseen_phantom(demo):
    image, reference = make_abdominal_phantom(seed=987654)
    pred = sitk.GetArrayFromImage(segment_image(image, demo, device="cpu"))
    ref = sitk.GetArrayFromImage(reference)
    dice = {c: 2 * np.logical_and(pred == c, ref == c).sum() / ((pred == c).sum() + (ref == c).sum())
            for c in range(1, 14) if (ref == c).any()}
    assert dice[1] > LIVER_DICE_FLOOR, dice  # the liver, the largest organ
    assert np.mean(list(dice.values())) > MEAN_DICE_FLOOR, dice


# ------------------------------------------------------------------------ default model, fast model, model cards
def _builtin_packages():
    return [m for m in list_installed_models() if m.source == "builtin"]


def test_shipped_models_carry_a_model_card():
    root = Path(__file__).resolve().parents[1]
    packages = _builtin_packages()
    assert {m.name for m in packages} >= {"phantom_demo", "phantom_fast"}
    for info in packages:
        meta = json.loads((info.path / "model.json").read_text())
        card = meta["card"]
        assert "not for clinical use" in card["intended_use"].lower()
        assert "phantom" in card["training_data"] or "synthetic" in card["training_data"]  # no patient data
        words = [w for w in shlex.split(card["rebuild"]) if "=" not in w and w != "bash"]  # env, then the script
        assert card["date"] and (root / words[0]).is_file(), card["rebuild"]
        real = card["real_ct"]
        # the 12 organs of tests/data's abdomen CT, or the chest CTA's three groups for a heart model
        assert real["organs"] == len(real["dice"]) == {"flare22": 12, "mmwhs": 3}[meta["preset"]]
        assert all(0.0 <= v <= 1.0 for v in real["dice"].values())
        assert real["mean_dice"] == pytest.approx(np.mean(list(real["dice"].values())), abs=1e-3)
        assert info.real_ct_dice == real["mean_dice"]
        assert (info.path / "MODEL_CARD.md").read_text().startswith(f"# Model card: {info.name}")


def test_fast_model_is_coarser_and_marked_fast():
    demo, fast = (json.loads((default_model_dir().parent / n / "model.json").read_text())
                  for n in ("phantom_demo", "phantom_fast"))
    assert fast["mode"] == "fast" and demo.get("mode", "standard") == "standard"
    assert np.prod(fast["preprocessing"]["spacing"]) >= 2.5 * np.prod(demo["preprocessing"]["spacing"])
    assert (default_model_dir().parent / "phantom_fast" / "weights.safetensors").stat().st_size < 5_000_000


def _best_shipped(mode: str) -> str:
    """The shipped FLARE22 model of ``mode`` with the best real-CT mean Dice on its card (the documented rule)."""
    shipped = [m for m in list_installed_models() if m.preset == "flare22" and m.mode == mode]
    return max(shipped, key=lambda m: m.real_ct_dice or 0.0).name


def test_default_and_fast_model_selection(tmp_path, monkeypatch):
    monkeypatch.setenv("DVCL_MODELS", str(tmp_path / "none"))
    fast_name = _best_shipped("fast")
    assert default_model().name == _best_shipped("standard")  # best measured on real CT
    assert default_model(fast=True).name == fast_name
    assert fast_name != "phantom_fast"  # a model trained for real CT serves --fast, not the phantom demo
    with pytest.raises(ModelError, match="no installed fast model for preset 'mmwhs'"):
        default_model("mmwhs", fast=True)
    heart = json.loads((default_model("mmwhs") / "model.json").read_text())  # a shipped heart model serves mmwhs
    assert heart["preset"] == "mmwhs" and heart["card"]["real_ct"]["dice"]["heart"] >= 0.70
    # a user model whose card measured more on real CT wins; one without a card does not
    user = tmp_path / "user"
    for name, score in (("better", 0.9), ("unmeasured", None)):
        shutil.copytree(default_model_dir(), user / name)
        meta = json.loads((user / name / "model.json").read_text())
        meta["name"] = name
        if score is None:
            meta.pop("card")
        else:
            meta["card"]["real_ct"]["mean_dice"] = score
        (user / name / "model.json").write_text(json.dumps(meta))
    monkeypatch.setenv("DVCL_MODELS", str(user))
    assert default_model() == user / "better"
    assert default_model(fast=True).name == fast_name  # the mode comes before the score


def test_cli_segments_without_model_and_with_fast(tmp_path, dicom_dir, monkeypatch, capsys):
    monkeypatch.setenv("DVCL_MODELS", str(tmp_path / "none"))
    fast_name = _best_shipped("fast")
    for flags, expected in (([], default_model().name), (["--fast"], fast_name)):
        out = tmp_path / expected
        assert main(["segment", str(dicom_dir), "-o", str(out), *flags]) == 0
        (sidecar,) = out.glob("*.labels.json")
        assert json.loads(sidecar.read_text())["model"] == expected
        (label,) = out.glob("*.nii.gz")
        written, source = Grid.of(sitk.ReadImage(str(label))), Grid.of(read_image(dicom_dir))
        assert written.size == source.size  # NIfTI stores the rest as float32
        for a, b in ((written.spacing, source.spacing), (written.origin, source.origin),
                     (written.direction, source.direction)):
            np.testing.assert_allclose(a, b, atol=1e-4)
    # what the Slicer module sends: its model and --fast means the best fast model of that model's preset
    assert choose_model("phantom_demo", fast=True).name == fast_name
    assert choose_model("synthetic_abdomen", fast=True).name == fast_name
    assert choose_model("phantom_fast", fast=True).name == "phantom_fast"  # a fast model asked for by name
    assert choose_model("phantom_demo") == default_model_dir()
    capsys.readouterr()
    assert main(["segment", str(dicom_dir), "-o", str(tmp_path / "x"), "--preset", "flare22", "--model",
                 "phantom_demo"]) == 2
    assert "--preset" in capsys.readouterr().err
