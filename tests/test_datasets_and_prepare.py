"""Data-set layouts, presets, splits and `dvcl prepare` on the real CT (plus every bad-input case)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.cli.main import main as dvcl_main
from dvcl.data.cache import Cache, prepare_dataset
from dvcl.data.splits import labeled_subset, make_splits
from dvcl.errors import ConfigError, DatasetError, LabelValueError, NotCTError, PresetError
from dvcl.io.datasets import discover_dataset
from dvcl.presets import get_preset, list_presets, preset_from_dataset_json


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


# ---------------------------------------------------------------- presets and splits
def test_presets_tables():
    assert list_presets() == ["amos", "btcv", "flare22", "mmwhs"]
    f = get_preset("flare22")
    assert f.num_classes == 14 and f.labels[1] == "liver" and f.labels[13] == "left kidney"
    assert (f.batch_labeled, f.batch_unlabeled, f.iterations, f.lr) == (4, 4, 20000, 0.1)
    a = get_preset("AMOS")
    assert a.num_classes == 16 and a.labels[15] == "prostate/uterus"
    assert get_preset("btcv").labels[10] == "portal and splenic vein"
    m = get_preset("mmwhs")
    assert m.raw_values[205] == 1 and m.raw_values[850] == 7
    assert (m.batch_labeled, m.batch_unlabeled, m.iterations, m.lr) == (2, 2, 10000, 0.03)
    assert m.allowed_raw_values == [0, 205, 420, 500, 550, 600, 820, 850]
    with pytest.raises(PresetError, match="flare22"):
        get_preset("nosuch")


def test_custom_preset_from_dataset_json(tmp_path):
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps({"name": "Kidneys", "labels": {"background": 0, "kidney": 1, "tumor": 2},
                              "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}))
    p = preset_from_dataset_json(dj)
    assert p.labels == {1: "kidney", 2: "tumor"} and p.num_classes == 3 and p.name == "Kidneys"
    dj.write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 3}}))
    with pytest.raises(PresetError, match="consecutive"):
        preset_from_dataset_json(dj)
    dj.write_text("{not json")
    with pytest.raises(PresetError, match="not valid JSON"):
        preset_from_dataset_json(dj)


def test_splits_6_2_2_seeded():
    ids = [f"c{i:02d}" for i in range(50)]
    s = make_splits(ids, seed=3)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (30, 10, 10)
    assert sorted(s["train"] + s["val"] + s["test"]) == ids
    assert make_splits(ids, seed=3) == s and make_splits(ids, seed=4) != s
    assert len(labeled_subset(s["train"], 0.1, seed=0)) == 3
    assert labeled_subset(s["train"], 0.1, 0) == labeled_subset(s["train"], 0.1, 0)
    assert set(labeled_subset(s["train"], 0.5, 0)) <= set(s["train"])
    assert make_splits(["a"], 0) == {"train": ["a"], "val": [], "test": []}
    with pytest.raises(ConfigError):
        labeled_subset(s["train"], 0.0)


# ---------------------------------------------------------------- layouts
def test_simple_layout_discovery(abdomen_simple_layout):
    spec = discover_dataset(abdomen_simple_layout)
    assert spec.layout == "simple"
    assert [c.case_id for c in spec.labeled] == ["abd"] and [c.case_id for c in spec.unlabeled] == ["chest"]


def test_flat_labeled_folder(tmp_path, abdomen_image, abdomen_label):
    shutil.copy(abdomen_image, tmp_path / "p1.nii.gz")
    shutil.copy(abdomen_label, tmp_path / "p1_label.nii.gz")
    spec = discover_dataset(tmp_path)
    assert [(c.case_id, c.label.name) for c in spec.cases] == [("p1", "p1_label.nii.gz")]


def test_nnunet_layout(tmp_path, abdomen_image, abdomen_label, chest_image):
    root = tmp_path / "Dataset001_Abd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shutil.copy(abdomen_image, root / "imagesTr" / "abd_000_0000.nii.gz")
    shutil.copy(abdomen_label, root / "labelsTr" / "abd_000.nii.gz")
    shutil.copy(chest_image, root / "imagesTr" / "chest_001_0000.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{n: i for i, n in get_preset("flare22").labels.items()}},
        "numTraining": 1, "file_ending": ".nii.gz", "preset": "flare22"}))
    spec = discover_dataset(root)
    assert spec.layout == "nnunet"
    assert [(c.case_id, c.labeled) for c in spec.cases] == [("abd_000", True), ("chest_001", False)]
    shutil.copy(abdomen_image, root / "imagesTr" / "bad_0001.nii.gz")
    with pytest.raises(DatasetError, match="single-channel"):
        discover_dataset(root)


def test_empty_folder_and_missing_label(tmp_path, abdomen_image):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        discover_dataset(tmp_path / "empty")
    lab = tmp_path / "d" / "labeled"
    (lab / "images").mkdir(parents=True)
    (lab / "labels").mkdir()
    shutil.copy(abdomen_image, lab / "images" / "x.nii.gz")
    with pytest.raises(DatasetError, match="x.nii.gz.*no label"):
        discover_dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match="not found"):
        discover_dataset(tmp_path / "nope")


# ---------------------------------------------------------------- prepare
def test_prepare_real_ct_then_nothing_to_do(tmp_path, abdomen_simple_layout):
    cache_dir = tmp_path / "cache"
    cache, counts = prepare_dataset(abdomen_simple_layout, cache_dir, preset="flare22", workers=2)
    assert counts == {"processed": 2, "skipped": 0}
    assert cache.labeled_ids == ["abd"] and cache.unlabeled_ids == ["chest"]
    img, lab = cache.load("abd")
    assert img.dtype == np.float32 and lab.dtype == np.uint8 and img.shape == lab.shape == (135, 241, 292)
    assert set(np.unique(lab)) == set(range(14)) - {10}
    assert cache.num_classes == 14 and cache.labels[1] == "liver"
    assert json.loads((cache_dir / "splits.json").read_text())["train"] == ["abd"]
    rec = cache.geometry("abd")
    assert rec.original.size == (122, 101, 112)
    before = _snapshot(cache_dir)
    _, counts2 = prepare_dataset(abdomen_simple_layout, cache_dir, preset="flare22")
    assert counts2 == {"processed": 0, "skipped": 2}
    assert _snapshot(cache_dir) == before  # the second run wrote nothing
    # touching a source re-processes exactly that case
    src = abdomen_simple_layout / "unlabeled" / "chest.nii.gz"
    src.write_bytes(src.read_bytes())
    _, counts3 = prepare_dataset(abdomen_simple_layout, cache_dir, preset="flare22")
    assert counts3 == {"processed": 1, "skipped": 1}


def _bad_label_layout(root: Path, abdomen_image: Path, abdomen_label: Path) -> Path:
    shutil.copytree(root, root.parent / "bad")
    bad = root.parent / "bad"
    lab = sitk.ReadImage(str(abdomen_label))
    arr = sitk.GetArrayFromImage(lab)
    arr[5, 5, 5] = 77
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(lab)
    sitk.WriteImage(out, str(bad / "labeled" / "labels" / "abd.nii.gz"))
    return bad


def test_prepare_bad_input_writes_nothing(tmp_path, abdomen_simple_layout, abdomen_image, abdomen_label):
    cache_dir = tmp_path / "cache"
    bad = _bad_label_layout(abdomen_simple_layout, abdomen_image, abdomen_label)
    with pytest.raises(LabelValueError, match="abd.nii.gz.*77"):
        prepare_dataset(bad, cache_dir, preset="flare22", workers=2)
    assert not cache_dir.exists()
    assert not list(tmp_path.glob(".cache.staging-*"))
    # an existing cache is left untouched by a failing run
    prepare_dataset(abdomen_simple_layout, cache_dir, preset="flare22")
    before = _snapshot(cache_dir)
    with pytest.raises(LabelValueError):
        prepare_dataset(bad, cache_dir, preset="flare22")
    assert _snapshot(cache_dir) == before


def test_prepare_rejects_mr_like_image(tmp_path, abdomen_simple_layout):
    mr = np.random.default_rng(0).integers(0, 1500, (20, 32, 32)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(mr), str(abdomen_simple_layout / "unlabeled" / "mr.nii.gz"))
    with pytest.raises(NotCTError, match="mr.nii.gz"):
        prepare_dataset(abdomen_simple_layout, tmp_path / "cache", preset="flare22", workers=1)
    assert not (tmp_path / "cache").exists()


def test_prepare_refuses_foreign_folder(tmp_path, abdomen_simple_layout):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    with pytest.raises(ConfigError, match="not a dvcl cache"):
        prepare_dataset(abdomen_simple_layout, out, preset="flare22")
    assert (out / "thesis.docx").read_text() == "precious"


def test_cache_open_errors(tmp_path):
    with pytest.raises(DatasetError, match="dvcl prepare"):
        Cache(tmp_path)


# ---------------------------------------------------------------- CLI
def test_cli_prepare_and_errors(tmp_path, abdomen_simple_layout, capsys):
    rc = dvcl_main(["--progress", "none", "prepare", str(abdomen_simple_layout), "-o", str(tmp_path / "c"),
                    "--preset", "flare22", "--workers", "1"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["processed"] == 2 and summary["labeled"] == 1
    rc = dvcl_main(["--progress", "none", "prepare", str(tmp_path / "nothing"), "-o", str(tmp_path / "c2")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "dvcl: error:" in err and "nothing" in err


def test_cli_json_progress_subprocess(tmp_path, abdomen_simple_layout):
    proc = subprocess.run([sys.executable, "-m", "dvcl.cli.main", "--progress", "json", "prepare",
                           str(abdomen_simple_layout), "-o", str(tmp_path / "c"), "--preset", "flare22"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("progress") == 2
    assert events[-1]["processed"] == 2
