"""benchmarks/synthetic_table.py: the randomisation-study table built from real `dvcl evaluate` reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dvcl_test_cases import load_script

from dvcl.cli.main import main as dvcl_main

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    return load_script(ROOT / "benchmarks" / "synthetic_table.py", "synthetic_table")


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(img, str(path))
    return path


def _reference(tmp_path: Path):
    """A two-structure reference label map (the 'real CT' of these tests) and its file."""
    ref = np.zeros((6, 12, 12), np.uint8)
    ref[1:5, 1:6, 1:6] = 1
    ref[1:5, 6:11, 6:11] = 2
    return ref, _write(tmp_path / "ref.nii.gz", ref)


def _score(folder: Path, pred: np.ndarray, gt: Path) -> None:
    """What benchmarks/synthetic_model.sh leaves per variant: the prediction scored by `dvcl evaluate`."""
    p = _write(folder / "real_ct_pred.nii.gz", pred)
    assert dvcl_main(["--progress", "none", "evaluate", str(p), str(gt), "--no-plots", "--no-distances",
                      "--out", str(folder / "real_ct")]) == 0


def test_table_lists_every_variant_against_the_reference(tmp_path, capsys):
    ref, gt = _reference(tmp_path)
    work = tmp_path / "work"
    good, worse = ref.copy(), ref.copy()
    good[1, 1:6, 1:6] = 0  # one slice of structure 1 missed
    worse[1:3, 1:6, 1:6] = 0  # two slices missed, and structure 2 shifted
    worse[1:5, 6:11, 6:11] = 0
    worse[1:5, 5:10, 6:11] = 2
    for variant, pred, best in (("all", good, 0.61), ("no_noise", worse, 0.55)):
        _score(work / variant, pred, gt)
        (work / variant / "run").mkdir()
        (work / variant / "run" / "run.json").write_text(json.dumps({"best_val_dice": best}))
    (work / "no_bias").mkdir()  # a variant still training: no report yet
    capsys.readouterr()

    table = _load_script().build_table(work)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| variant")}
    assert list(rows) == ["all", "no_noise"]
    summaries = {v: json.loads((work / v / "real_ct" / "summary.json").read_text()) for v in rows}
    means = {v: s["mean_dice_pct"] for v, s in summaries.items()}
    assert rows["all"][3] == f"{means['all']:.1f}" and rows["no_noise"][3] == f"{means['no_noise']:.1f}"
    assert rows["all"][4] == rows["all"][3]  # no structure painted that the reference lacks: the two means agree
    assert rows["no_noise"][5] == f"{means['no_noise'] - means['all']:+.1f}" and means["no_noise"] < means["all"]
    assert rows["no_noise"][6].strip(" |") == "55.0" and "No real-CT report yet: no_bias" in table


def test_mean_over_the_reference_organs_leaves_out_a_false_positive(tmp_path):
    """A model that paints a structure the scan lacks: `dvcl evaluate`'s mean counts it as Dice 0, issue 13's
    "mean over the present organs" leaves it out."""
    ref, gt = _reference(tmp_path)
    pred = ref.copy()
    pred[1, 1:6, 1:6] = 0  # structure 1: one of four slices missed
    pred[0, 0:3, 0:3] = 3  # structure 3: not in the reference
    work = tmp_path / "work"
    _score(work / "all", pred, gt)
    summary = json.loads((work / "all" / "real_ct" / "summary.json").read_text())
    dice = {k: v["dice_pct_mean"] for k, v in summary["structures"].items() if v["dice_pct_mean"] is not None}
    assert dice["label_3"] == 0.0 and summary["structures"]["label_3"]["n_false_positive"] == 1
    present = (dice["label_1"] + dice["label_2"]) / 2
    assert summary["mean_dice_pct"] == pytest.approx((dice["label_1"] + dice["label_2"]) / 3)

    table = _load_script().build_table(work)
    row = next(line.split(" | ") for line in table.splitlines() if line.startswith("| all "))
    header = next(line.split(" | ") for line in table.splitlines() if line.startswith("| variant"))
    col = header.index("mean, organs in the reference")
    assert row[col] == f"{present:.1f}" and row[header.index("mean Dice")] == f"{summary['mean_dice_pct']:.1f}"
    assert float(row[col]) > float(row[header.index("mean Dice")])


def test_replicate_row_spread_line_and_heatmap(tmp_path, capsys):
    ref, gt = _reference(tmp_path)
    work, other_seed = tmp_path / "work", tmp_path / "work_s1"
    rep, worse = ref.copy(), ref.copy()
    rep[1, 1:6, 1:6] = 0  # the replicate misses one slice of structure 1
    worse[1:4, 6:11, 6:11] = 0  # the variant misses three slices of structure 2
    for folder, pred in ((work / "all", ref), (other_seed / "all", rep), (work / "no_texture", worse)):
        _score(folder, pred, gt)
    capsys.readouterr()
    script = _load_script()

    table = script.build_table(work, replicates=[other_seed / "all"])
    names = [line.split(" | ")[0].strip("| ") for line in table.splitlines()
             if line.startswith("| ") and not line.startswith("| variant")]
    assert names == ["all", "all (work_s1)", "no_texture"]
    mean = {f: json.loads((f / "real_ct" / "summary.json").read_text())["mean_dice_pct"]
            for f in (work / "all", other_seed / "all")}
    spread = abs(mean[other_seed / "all"] - mean[work / "all"])
    assert spread > 0 and f"by up to {spread:.1f} points" in table and "(2 seeds of the reference" in table

    rows, _ = script.collect(work, [other_seed / "all"])
    names, cols, diff = script.difference_matrix(rows, "all")
    assert names == ["all (work_s1)", "no_texture"] and cols[-1] == "mean"
    lost = cols.index("label_2")  # structure 2: 3 of its 4 slices missed by the variant, untouched by the replicate
    assert diff[1, lost] < -40 and diff[0, lost] == 0 and diff[0, cols.index("label_1")] < 0
    assert abs(diff[0, -1]) == pytest.approx(spread, abs=0.051)

    png = script.plot_differences(work, tmp_path / "fig" / "diff.png", replicates=[other_seed / "all"])
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 300 and im.size[1] > 100
