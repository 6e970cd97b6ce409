"""Largest-component post-processing: the components, the package field, the choice on validation cases and
its application by `dvcl segment`, checked against `dvcl evaluate` on real files."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dvcl.cli.main import main
from dvcl.cli.postprocess import run
from dvcl.errors import ConfigError, ModelError
from dvcl.inference.model_package import load_model_package, read_model_json, save_model_package
from dvcl.inference.postprocessing import (
    choose_from_scores,
    keep_largest_components,
    removed_components,
    score_records,
    write_postprocessed_package,
)
from dvcl.networks import NetworkConfig, build_network
from dvcl.preprocessing import PreprocessConfig
from dvcl.presets import get_preset

TINY = NetworkConfig(num_classes=14, channels=(4, 8), feature_dim=8)


def test_removed_components_keeps_the_largest_26_connected_one():
    label = np.zeros((10, 12, 12), np.uint8)
    label[1:4, 1:4, 1:4] = 1  # 27 voxels: kept
    label[4, 4, 4] = 1  # touches the cube at a corner only: the same object under 26-connectivity
    label[7:9, 8:10, 8:10] = 1  # 8 voxels apart: removed
    label[6:9, 1:3, 1:3] = 2  # one object of another class: untouched
    removed = removed_components(label, 1)
    expected = np.zeros_like(removed)
    expected[7:9, 8:10, 8:10] = True
    np.testing.assert_array_equal(removed, expected)
    assert not removed_components(label, 2).any() and not removed_components(label, 5).any()

    probs = np.stack([(label == c).astype(np.float32) for c in range(3)])
    before = probs.copy()
    assert keep_largest_components(probs, [1, 2, 7]) == 8  # 7: not a class of these probabilities, ignored
    after = np.argmax(probs, axis=0)
    assert (after[7:9, 8:10, 8:10] == 0).all() and np.allclose(probs[:, 7:9, 8:10, 8:10].sum(axis=0), 1.0)
    untouched = ~expected
    np.testing.assert_array_equal(probs[:, untouched], before[:, untouched])
    assert keep_largest_components(probs, []) == 0


def test_a_case_whose_false_positives_cleaning_removed_is_left_out_as_evaluate_does():
    """Found on a 16..128 model (issue 13): in one validation case the duodenum was absent from the reference and
    predicted as a small island that vanished once cleaned and restored. That case scores Dice 0 without cleaning
    and NaN (absent from both) with it; `dvcl evaluate` leaves such a case out, so the choice must too. A plain mean
    wrote NaN into model.json (not strict JSON) and never chose the class."""
    nan = float("nan")
    labels = {1: "liver", 9: "gallbladder", 12: "duodenum"}
    before = {1: [0.9, 0.8], 9: [0.0], 12: [0.0, 0.6, 0.7]}
    after = {1: [0.85, 0.8], 9: [nan], 12: [nan, 0.6, 0.7]}
    assert choose_from_scores(before, after) == [9, 12]  # duodenum 0.433 -> 0.65; gallbladder: only FPs, all gone
    record = score_records(before, after, labels)
    json.dumps(record, allow_nan=False)  # strict JSON
    assert record["dice_without"] == {"liver": 0.85, "gallbladder": 0.0, "duodenum": 0.4333}
    assert record["dice_with"] == {"liver": 0.825, "duodenum": 0.65}  # gallbladder: no scored case left
    assert record["cases_per_structure"] == {"liver": 2, "gallbladder": 1, "duodenum": 3}
    assert choose_from_scores({1: [nan]}, {1: [0.0]}) == []  # cleaning never adds a structure's voxels


def _ct(shape, rng) -> np.ndarray:
    """Air around a soft-tissue body with noise: what check_ct_intensities accepts as CT."""
    z, y, x = shape
    img = np.full(shape, -1000.0, np.float32)
    img[:, 4:y - 4, 4:x - 4] = 40.0
    return (img + rng.normal(0, 30, shape)).astype(np.int16)


def _write_cases(root: Path, n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for i in range(n):
        arr = _ct((20, 40, 40), rng)
        lab = np.zeros(arr.shape, np.uint8)
        lab[4:14, 8:24, 8:22] = 1  # liver
        lab[6:12, 26:34, 10:16] = 3  # spleen
        lab[8:12, 10:16, 26:34] = 2  # right kidney
        arr[lab > 0] += 60
        for a, path in ((arr, images / f"c{i}.nii.gz"), (lab, labels / f"c{i}.nii.gz")):
            img = sitk.GetImageFromArray(a)
            img.SetSpacing((1.5, 1.5, 3.0))
            sitk.WriteImage(img, str(path))
    return images, labels


def _mean_dice(eval_dir: Path) -> dict:
    """Structure -> mean Dice (fraction) over the cases `dvcl evaluate` scored it on (its metrics.csv)."""
    per: dict = {}
    with open(eval_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row["dice_pct"] not in ("", "nan"):
                per.setdefault(row["structure"], []).append(float(row["dice_pct"]) / 100)
    return {k: float(np.mean(v)) for k, v in per.items()}


def test_postprocess_chooses_on_validation_and_segment_applies_it(tmp_path):
    """`dvcl postprocess`: its 'without' Dice is `dvcl evaluate` of `dvcl segment --no-postprocessing`, its
    'with' Dice that of a package cleaning every structure, a structure is chosen exactly when cleaning raised its
    mean Dice, and `dvcl segment` with the written package gives the cleaned maps of the chosen structures."""
    torch.manual_seed(7)
    labels = get_preset("flare22").labels
    pkg = save_model_package({"A": build_network(TINY)}, TINY, labels, tmp_path / "pkg", name="tiny",
                             preset="flare22", roi=(8, 16, 16), stride=(4, 8, 8),
                             preprocessing=PreprocessConfig(spacing=(1.5, 1.5, 3.0)))
    images, refs = _write_cases(tmp_path / "val", 2)
    out = tmp_path / "pkg_pp"
    assert main(["--progress", "none", "postprocess", str(pkg), str(images), str(refs), "-o", str(out),
                 "--device", "cpu", "--engine", "torch"]) == 0
    post = read_model_json(out)["postprocessing"]
    assert load_model_package(out).largest_component == tuple(post["largest_component"])
    names = {v: k for k, v in labels.items()}
    chosen = {names[s] for s in post["dice_with"] if post["dice_with"][s] > post["dice_without"][s]}
    assert set(post["largest_component"]) == chosen
    assert post["dice_with"] != post["dice_without"]  # a random network scatters islands: cleaning changed Dice

    # the same numbers from the product's own segment + evaluate on files
    every = write_postprocessed_package(pkg, tmp_path / "pkg_all", {"largest_component": sorted(labels)})
    for variant, model, extra in (("without", pkg, ["--no-postprocessing"]), ("with", every, [])):
        pred = tmp_path / f"pred_{variant}"
        assert main(["--progress", "none", "segment", str(images), "-o", str(pred), "--model", str(model),
                     "--device", "cpu", "--engine", "torch", *extra]) == 0
        assert main(["--progress", "none", "evaluate", str(pred), str(refs), "--preset", "flare22",
                     "--out", str(tmp_path / f"eval_{variant}"), "--no-plots", "--no-distances"]) == 0
        measured = _mean_dice(tmp_path / f"eval_{variant}")
        recorded = post[f"dice_{variant}"]
        assert set(measured) == set(recorded)
        for s, v in recorded.items():
            assert measured[s] == pytest.approx(v, abs=1e-3), (variant, s)

    # segment with the chosen package = the all-cleaned map on the chosen structures, untouched elsewhere
    chosen_pred = tmp_path / "pred_chosen"
    assert main(["--progress", "none", "segment", str(images / "c0.nii.gz"), "-o", str(chosen_pred / "c0.nii.gz"),
                 "--model", str(out), "--device", "cpu", "--engine", "torch"]) == 0
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(chosen_pred / "c0.nii.gz")))
    plain = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred_without" / "c0.nii.gz")))
    for k in post["largest_component"]:
        assert (got == k).sum() <= (plain == k).sum()
    kept = ~np.isin(plain, post["largest_component"]) & ~np.isin(got, post["largest_component"])
    assert (got[kept] == plain[kept]).mean() > 0.99


def test_postprocessing_field_is_validated_and_inputs_are_checked(tmp_path):
    labels = get_preset("flare22").labels
    pkg = save_model_package({"A": build_network(TINY)}, TINY, labels, tmp_path / "pkg", name="tiny",
                             preset="flare22", roi=(8, 16, 16), stride=(8, 16, 16))
    assert load_model_package(pkg).largest_component == ()
    with pytest.raises(ModelError, match="not labels of the model"):
        write_postprocessed_package(pkg, tmp_path / "bad", {"largest_component": [1, 99]})
    meta = json.loads((pkg / "model.json").read_text())
    meta["postprocessing"] = {"largest_component": ["liver"]}
    (pkg / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="list of label ids"):
        read_model_json(pkg)
    meta["postprocessing"] = {"largest_component": [1, 3]}
    (pkg / "model.json").write_text(json.dumps(meta))
    assert load_model_package(pkg).largest_component == (1, 3)
    # in place: only model.json is replaced, the weights stay the same file
    weights = (pkg / "weights.safetensors").read_bytes()
    write_postprocessed_package(pkg, pkg, {"largest_component": [2]})
    assert read_model_json(pkg)["postprocessing"]["largest_component"] == [2]
    assert (pkg / "weights.safetensors").read_bytes() == weights

    with pytest.raises(ConfigError, match="not both"):
        run(argparse.Namespace(model=str(pkg), images=None, labels=None, data=None, output=str(tmp_path / "o"),
                               device="cpu", engine="torch", overwrite=False))
    # a reference in another label set is refused before anything is written
    images, refs = _write_cases(tmp_path / "wrong", 1)
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(refs / "c0.nii.gz")))
    arr[arr == 3] = 99
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(sitk.ReadImage(str(refs / "c0.nii.gz")))
    sitk.WriteImage(bad, str(refs / "c0.nii.gz"))
    assert main(["--progress", "none", "postprocess", str(pkg), str(images), str(refs), "-o", str(tmp_path / "o"),
                 "--device", "cpu", "--engine", "torch"]) == 2
    assert not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    (empty / "i").mkdir(parents=True)
    (empty / "l").mkdir()
    assert main(["--progress", "none", "postprocess", str(pkg), str(empty / "i"), str(empty / "l"),
                 "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_postprocess_on_a_cache_uses_its_validation_split(tmp_path, tiny_cache):
    """--data CACHE: the cache's validation cases (original files, raw label values through its preset)."""
    from dvcl.data.cache import Cache

    cache = Cache(tiny_cache)
    cfg = NetworkConfig(num_classes=3, channels=(4, 8), feature_dim=8)
    torch.manual_seed(0)
    pkg = save_model_package({"A": build_network(cfg)}, cfg, cache.labels, tmp_path / "pkg", name="tiny",
                             roi=(8, 16, 16), stride=(8, 16, 16), preprocessing=cache.preprocessing)
    assert main(["--progress", "none", "postprocess", str(pkg), "--data", str(tiny_cache), "-o", str(tmp_path / "o"),
                 "--device", "cpu", "--engine", "torch"]) == 0
    post = read_model_json(tmp_path / "o")["postprocessing"]
    val = sorted(cache.splits["val"])
    assert post["chosen_on"] == f"{len(val)} validation case(s): {', '.join(val)}"
    assert set(post["largest_component"]) <= {1, 2}
