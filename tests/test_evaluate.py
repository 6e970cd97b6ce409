"""`dvcl evaluate`: metrics against an independent numpy/scipy computation on the real FLARE22-labelled CT,
the NaN convention, reports and plots, seed aggregation, and clear errors for bad input."""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dvcl.cli.main import main
from dvcl.errors import ConfigError, DatasetError, GeometryMismatchError, LabelValueError
from dvcl.evaluation import aggregate_runs, evaluate_paths, load_summary, markdown_table
from dvcl.io.segmentation import segments_from_labels, write_seg_nrrd
from dvcl.presets import get_preset

FLARE = get_preset("flare22").labels


# ------------------------------------------------------------------------------------ independent reference
def np_dice_jaccard(p: np.ndarray, g: np.ndarray):
    inter = np.logical_and(p, g).sum()
    return 2.0 * inter / (p.sum() + g.sum()), inter / np.logical_or(p, g).sum()


def np_hd95(p: np.ndarray, g: np.ndarray, spacing_zyx) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the masks' surfaces (voxels removed by a
    6-connected erosion), distances from scipy's exact Euclidean distance transform with the voxel spacing.

    Computed on the union's bounding box plus a 2-voxel zero margin (every surface voxel lies inside it, so
    the distances are those of the whole volume; it only keeps the test fast)."""
    nz = np.nonzero(p | g)
    box = tuple(slice(max(0, int(i.min()) - 2), int(i.max()) + 3) for i in nz)
    p, g = np.pad(p[box], 2), np.pad(g[box], 2)
    sp = p & ~ndimage.binary_erosion(p)
    sg = g & ~ndimage.binary_erosion(g)
    to_g = ndimage.distance_transform_edt(~sg, sampling=spacing_zyx)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx)[sg]
    return max(np.percentile(to_g, 95), np.percentile(to_p, 95))


def perturb(ref: np.ndarray, variant: str) -> np.ndarray:
    """A plausible imperfect prediction: liver eroded, spleen shifted, pancreas missed, (a) a false esophagus."""
    pred = ref.copy()
    liver = ref == 1
    pred[liver & ~ndimage.binary_erosion(liver)] = 0
    shift = 2 if variant == "a" else -3
    pred[ref == 3] = 0
    pred[np.roll(ref == 3, shift, axis=2) & (pred == 0)] = 3
    pred[ref == 4] = 0
    if variant == "a":
        pred[40:43, 50:53, 60:63] = 10  # esophagus is absent from the reference
    else:
        kid = ref == 13
        pred[ndimage.binary_dilation(kid, iterations=2) & (pred == 0)] = 13
    return pred


@pytest.fixture(scope="module")
def cases(tmp_path_factory, abdomen_label):
    """Two cases (a, b) of predictions and references in folders, on the real CT's geometry."""
    root = tmp_path_factory.mktemp("eval")
    ref_img = sitk.ReadImage(str(abdomen_label))
    ref = sitk.GetArrayFromImage(ref_img)
    arrays = {}
    for case in ("a", "b"):
        pred = perturb(ref, case)
        for kind, arr in (("pred", pred), ("gt", ref)):
            img = sitk.GetImageFromArray(arr.astype(np.uint8))
            img.CopyInformation(ref_img)
            (root / kind).mkdir(exist_ok=True)
            sitk.WriteImage(img, str(root / kind / f"{case}.nii.gz"))
        arrays[case] = (pred, ref)
    spacing_zyx = tuple(reversed(ref_img.GetSpacing()))
    return root, arrays, spacing_zyx


@pytest.fixture(scope="module")
def result(cases):
    root, _, _ = cases
    return evaluate_paths(root / "pred", root / "gt", preset="flare22")


def test_metrics_equal_independent_computation(cases, result):
    _, arrays, spacing = cases
    assert [c.case for c in result.cases] == ["a", "b"]
    for c in result.cases:
        pred, ref = arrays[c.case]
        for s in c.scores:
            p, g = pred == s.label, ref == s.label
            assert (s.pred_voxels, s.ref_voxels) == (p.sum(), g.sum())
            if not p.any() and not g.any():
                assert s.status == "absent_both" and math.isnan(s.dice) and math.isnan(s.hd95)
                continue
            d, j = np_dice_jaccard(p, g)
            assert s.dice == pytest.approx(d, abs=1e-6), (c.case, s.name)
            assert s.jaccard == pytest.approx(j, abs=1e-6), (c.case, s.name)
            if p.any() and g.any():
                assert s.status == "ok"
                assert s.hd95 == pytest.approx(np_hd95(p, g, spacing), abs=1e-4), (c.case, s.name)
            else:
                assert s.dice == 0 and s.jaccard == 0 and math.isnan(s.hd95) and math.isnan(s.assd)
    a = {s.name: s for s in result.cases[0].scores}
    b = {s.name: s for s in result.cases[1].scores}
    assert a["pancreas"].status == "missed" and a["esophagus"].status == "false_positive"
    assert b["esophagus"].status == "absent_both"
    assert a["right kidney"].dice == 1.0 and a["right kidney"].hd95 == 0.0
    assert 0.5 < a["spleen"].dice < 0.95 and a["spleen"].hd95 > 0  # really perturbed
    assert a["liver"].hd95 == pytest.approx(3.0)  # one 3 mm voxel of erosion


def test_distances_use_anisotropic_spacing_in_the_right_order(cases):
    """The CT is isotropic, so re-stamp case a with (x, y, z) spacing 0.7, 1.1, 2.5 mm: HD95 must follow."""
    from dvcl.evaluation import evaluate_case

    _, arrays, _ = cases
    pred, ref = arrays["a"]
    images = []
    for arr in (pred, ref):
        img = sitk.GetImageFromArray(arr.astype(np.uint8))
        img.SetSpacing((0.7, 1.1, 2.5))
        images.append(img)
    r = evaluate_case(images[0], images[1], FLARE, case="aniso")
    for s in r.scores:
        if s.status == "ok" and s.hd95 > 0:
            assert s.hd95 == pytest.approx(np_hd95(pred == s.label, ref == s.label, (2.5, 1.1, 0.7)), abs=1e-4)
    spleen = {s.name: s for s in r.scores}["spleen"]
    assert spleen.hd95 == pytest.approx(np_hd95(pred == 3, ref == 3, (2.5, 1.1, 0.7)), abs=1e-4)
    assert spleen.hd95 != pytest.approx(np_hd95(pred == 3, ref == 3, (0.7, 1.1, 2.5)), abs=1e-2)


def test_summary_means_follow_the_convention(cases, result):
    _, arrays, _ = cases
    per_case = []
    for case in ("a", "b"):
        pred, ref = arrays[case]
        vals = [np_dice_jaccard(pred == k, ref == k)[0] for k in FLARE if (pred == k).any() or (ref == k).any()]
        per_case.append(np.mean(vals))  # both-absent structures excluded; missed/false positive count as 0
    s = result.summary()
    assert s["cases"]["a"]["mean_dice"] == pytest.approx(per_case[0], abs=1e-6)
    assert s["mean_dice"] == pytest.approx(np.mean(per_case), abs=1e-6)
    assert s["mean_dice_sd"] == pytest.approx(np.std(per_case, ddof=1), abs=1e-6)
    eso = s["structures"]["esophagus"]
    assert eso["n_evaluated"] == 1 and eso["n_absent_both"] == 1 and eso["dice_mean"] == 0.0
    assert math.isnan(eso["hd95_mean"])
    pan = s["structures"]["pancreas"]
    assert pan["dice_mean"] == 0.0 and pan["n_missed"] == 2


def test_cli_writes_report_files(cases, tmp_path, abdomen_image, capsys):
    root, _, _ = cases
    out = tmp_path / "report"
    rc = main(["evaluate", str(root / "pred"), str(root / "gt"), "--preset", "flare22", "--out", str(out),
               "--images", str(abdomen_image), "--name", "perturbed", "--max-overlays", "1"])
    assert rc == 0
    table = capsys.readouterr().out
    assert table.startswith("| Method | liver | right kidney |") and "| perturbed |" in table
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 13
    row = next(r for r in rows if r["case"] == "a" and r["structure"] == "pancreas")
    assert (row["dice_pct"], row["hd95_mm"], row["status"]) == ("0.0000", "nan", "missed")
    liver = next(r for r in rows if r["case"] == "a" and r["structure"] == "liver")
    assert float(liver["dice_pct"]) == pytest.approx(100 * result_a_liver(cases), abs=1e-3)  # percent, not fraction
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: NaN written as null
    assert summary["units"] == {"dice": "percent", "jaccard": "percent", "hd95": "millimetres",
                                "assd": "millimetres"}
    assert summary["structures"]["esophagus"]["hd95_mm_mean"] is None and summary["num_cases"] == 2
    assert 1.0 < summary["mean_dice_pct"] <= 100.0 and "mean_dice" not in summary
    loaded = load_summary(out / "summary.json")  # back to the in-memory convention: fractions
    assert loaded["mean_dice"] == pytest.approx(summary["mean_dice_pct"] / 100)
    assert math.isnan(loaded["structures"]["esophagus"]["hd95_mean"])
    md = (out / "report.md").read_text()
    assert "Mean Dice" in md and "Mean Jaccard" in md and "absent from both" in md
    mean, sd = summary["mean_dice_pct"], summary["mean_dice_pct_sd"]
    assert f"{mean:.2f} ± {sd:.2f}" in md
    for png in (out / "dice_boxplot.png", out / "overlays" / "a.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not (out / "overlays" / "b.png").exists()  # --max-overlays 1
    assert main(["evaluate", str(root / "pred"), str(root / "gt"), "--preset", "flare22", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def result_a_liver(cases) -> float:
    _, arrays, _ = cases
    pred, ref = arrays["a"]
    return np_dice_jaccard(pred == 1, ref == 1)[0]


def test_seg_nrrd_prediction_and_label_table_check(cases, tmp_path, abdomen_label, result):
    _, arrays, _ = cases
    ref_img = sitk.ReadImage(str(abdomen_label))
    img = sitk.GetImageFromArray(arrays["a"][0].astype(np.uint8))
    img.CopyInformation(ref_img)
    good = write_seg_nrrd(img, tmp_path / "a.seg.nrrd", segments_from_labels(FLARE))
    r = evaluate_paths(good, abdomen_label, preset="flare22", distances=False)
    assert [s.dice for s in r.cases[0].scores] == pytest.approx([s.dice for s in result.cases[0].scores])
    # the same voxels labelled with the AMOS table (1 spleen, 2 right kidney, ...): wrong label set
    amos = write_seg_nrrd(img, tmp_path / "amos.seg.nrrd", segments_from_labels(get_preset("amos").labels))
    with pytest.raises(LabelValueError, match="another label table"):
        evaluate_paths(amos, abdomen_label, preset="flare22")


def test_bad_inputs(cases, tmp_path, abdomen_label, caplog):
    root, arrays, _ = cases
    ref_img = sitk.ReadImage(str(abdomen_label))

    def write(arr, name, spacing=None):
        img = sitk.GetImageFromArray(arr.astype(np.uint8))
        img.CopyInformation(ref_img)
        if spacing:
            img.SetSpacing(spacing)
        sitk.WriteImage(img, str(tmp_path / name))
        return tmp_path / name

    pred = arrays["a"][0]
    with pytest.raises(GeometryMismatchError, match="does not lie on the grid of the reference"):
        evaluate_paths(write(pred, "sp.nii.gz", (3.0, 3.0, 2.0)), abdomen_label, preset="flare22")
    bad = pred.copy()
    bad[0, 0, 0] = 14
    with pytest.raises(LabelValueError, match="14"):
        evaluate_paths(write(bad, "v14.nii.gz"), abdomen_label, preset="flare22")
    with pytest.raises(LabelValueError, match="not in the label table"):
        evaluate_paths(abdomen_label, write(bad, "gt14.nii.gz"), preset="flare22")
    with caplog.at_level(logging.WARNING):
        r = evaluate_paths(write(np.zeros_like(pred), "empty.nii.gz"), abdomen_label, preset="flare22")
    assert any("prediction is empty" in rec.getMessage() for rec in caplog.records)
    scores = r.cases[0].scores
    assert all(s.dice == 0.0 for s in scores if s.ref_voxels) and r.summary()["mean_dice"] == 0.0
    with pytest.raises(ConfigError, match="two files or two folders"):
        evaluate_paths(root / "pred", abdomen_label)
    only_b = tmp_path / "only_b"
    only_b.mkdir()
    (only_b / "b.nii.gz").write_bytes((root / "pred" / "b.nii.gz").read_bytes())
    with pytest.raises(DatasetError, match="no prediction for 1 reference case"):
        evaluate_paths(only_b, root / "gt")
    with pytest.raises(DatasetError, match="not found"):
        evaluate_paths(tmp_path / "nothing", root / "gt")


def test_aggregate_runs_over_seeds(result, tmp_path):
    """Mean and sample SD over seeds, from results or summary dicts, in the paper's table layout."""
    base = result.summary()

    def seed(delta: float) -> dict:
        s = json.loads(json.dumps(base, default=str))
        s["mean_dice"] = base["mean_dice"] + delta
        s["mean_jaccard"] = base["mean_jaccard"] + delta / 2
        s["structures"]["liver"]["dice_mean"] = 0.9 + delta
        return s

    table = aggregate_runs({"DVCL": [seed(-0.01), seed(0.0), seed(0.01)], "single": [result]})
    dv = table["rows"][0]
    assert dv["name"] == "DVCL" and dv["n_seeds"] == 3
    assert dv["mean_dice"] == pytest.approx(base["mean_dice"])
    assert dv["mean_dice_sd"] == pytest.approx(0.01)  # sample SD of (-0.01, 0, 0.01)
    assert dv["mean_jaccard_sd"] == pytest.approx(0.005)
    assert dv["structures"]["liver"] == pytest.approx(0.9) and dv["structures_sd"]["liver"] == pytest.approx(0.01)
    single = table["rows"][1]
    assert single["mean_dice"] == pytest.approx(base["mean_dice"]) and math.isnan(single["mean_dice_sd"])
    md = markdown_table(table["rows"], table["structures"])
    lines = md.strip().splitlines()
    assert lines[0].split("|")[1:3] == [" Method ", " liver "] and len(lines) == 4
    assert "| DVCL | 90.00 |" in md
    assert f"{100 * base['mean_dice']:.2f} ± 1.00" in md
    with pytest.raises(ConfigError):
        aggregate_runs({"empty": []})


def test_labels_from_files_without_preset(cases):
    root, _, _ = cases
    r = evaluate_paths(root / "pred" / "a.nii.gz", root / "gt" / "a.nii.gz", distances=False)
    assert r.labels == {i: f"label_{i}" for i in range(1, 14)} and r.cases[0].case == "a"


# ------------------------------------------------------------------------- label sets, float maps, the CLI
def _small(tmp_path, name, arr, dtype=np.uint8):
    img = sitk.GetImageFromArray(np.asarray(arr).astype(dtype))
    img.SetSpacing((1.5, 1.5, 3.0))
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def _three_blobs() -> np.ndarray:
    arr = np.zeros((8, 16, 16), np.uint8)
    arr[1:4, 2:6, 2:6] = 1
    arr[4:7, 8:12, 2:6] = 2
    arr[2:6, 4:9, 10:14] = 3
    return arr


def test_names_come_from_the_segment_sidecar(tmp_path):
    from dvcl.io.label_table import write_label_sidecar

    arr = _three_blobs()
    pred = _small(tmp_path / "pred", "c.nii.gz", arr)
    ref = _small(tmp_path / "gt", "c.nii.gz", arr)
    write_label_sidecar(pred, FLARE, preset="flare22", model="m")  # what `dvcl segment` writes
    r = evaluate_paths(tmp_path / "pred", tmp_path / "gt", distances=False)
    assert r.labels == FLARE and r.structures[:3] == ["liver", "right kidney", "spleen"]
    assert [s.dice for s in r.cases[0].scores[:3]] == [1.0, 1.0, 1.0]
    # the preset the sidecar records applies as --preset would: reference values outside its table are refused
    bad = arr.copy()
    bad[0, 0, 0] = 14
    with pytest.raises(LabelValueError, match="not in the label table"):
        evaluate_paths(pred, _small(tmp_path / "gt14", "c.nii.gz", bad), distances=False)
    # a reference folder inside a data set with its dataset.json names the reference side the same way
    (tmp_path / "dataset.json").write_text(json.dumps({"preset": "flare22"}))
    assert evaluate_paths(pred, ref, distances=False).labels == FLARE


def test_mismatched_label_sets_are_refused(tmp_path, capsys):
    """A liver/spine/heart reference must not be scored as 'right kidney' and 'spleen' (issue 15, item 6)."""
    from dvcl.io.label_table import write_label_sidecar

    arr = _three_blobs()
    pred = _small(tmp_path / "pred", "c.nii.gz", arr)
    write_label_sidecar(pred, FLARE, preset="flare22")
    img = sitk.ReadImage(str(pred))
    ref = write_seg_nrrd(img, tmp_path / "gt" / "c.seg.nrrd",
                         segments_from_labels({1: "liver", 2: "spine", 3: "heart"}))
    with pytest.raises(LabelValueError, match="the reference calls label 2 'spine' but preset 'flare22'"):
        evaluate_paths(pred, ref, distances=False)  # the preset recorded in the prediction's sidecar
    (tmp_path / "pred" / "c.labels.json").write_text(json.dumps({"labels": FLARE}))  # names, no preset
    with pytest.raises(LabelValueError, match="different label tables.*label 2: 'right kidney' vs 'spine'"):
        evaluate_paths(pred, ref, distances=False)
    assert main(["-q", "evaluate", str(pred), str(ref)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dvcl: error:") and "spine" in err[0]
    # the preset check covers references too
    with pytest.raises(LabelValueError, match="the reference calls label 2 'spine' but preset 'flare22'"):
        evaluate_paths(pred, ref, preset="flare22", distances=False)


@pytest.mark.parametrize("values, message", [
    (1.5, "non-integer values \\(e.g. 1.5\\): not a label map"),
    (0.7, "probability map"),
    (float("nan"), "NaN"),
])
def test_float_predictions_are_refused(tmp_path, capsys, values, message):
    arr = _three_blobs().astype(np.float32)
    if values < 1:  # a foreground probability map: every value in 0..1
        arr = (arr > 0) * np.float32(values)
    else:
        arr[arr == 1] = values
    pred = _small(tmp_path, "pred.nrrd", arr, np.float32)  # (ITK's NIfTI writer stores NaN as 0)
    ref = _small(tmp_path, "ref.nii.gz", _three_blobs())
    with pytest.raises(LabelValueError, match=message):
        evaluate_paths(pred, ref, preset="flare22", distances=False)
    capsys.readouterr()
    assert main(["-q", "evaluate", str(pred), str(ref)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dvcl: error:")


def test_a_data_sets_own_spelling_yields_to_a_preset(tmp_path):
    """nnU-Net's FLARE22 dataset.json says 'ivc' where the preset says 'inferior vena cava': without a preset that
    is a conflict (refused, with the hint), with --preset the dataset.json next to the files is not held against it."""
    arr = _three_blobs()
    arr[6:8, 12:15, 12:15] = 6
    pred = _small(tmp_path / "pred", "c.nii.gz", arr)
    (tmp_path / "pred" / "c.labels.json").write_text(json.dumps({"labels": FLARE}))  # names, no preset
    ref = _small(tmp_path / "ds" / "labelsTr", "c.nii.gz", arr)
    nnunet = {"background": 0, **{("ivc" if k == 6 else v.replace(" ", "_")): k for k, v in FLARE.items()}}
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"labels": nnunet, "file_ending": ".nii.gz"}))
    with pytest.raises(LabelValueError, match="label 6: 'inferior vena cava' vs 'ivc'.*only the spelling differs"):
        evaluate_paths(pred, ref, distances=False)
    r = evaluate_paths(pred, ref, preset="flare22", distances=False)
    assert r.labels == FLARE and {s.name: s.dice for s in r.cases[0].scores}["inferior vena cava"] == 1.0


def test_integer_valued_float_maps_are_fine(tmp_path):
    pred = _small(tmp_path, "pred.nii.gz", _three_blobs(), np.float32)
    ref = _small(tmp_path, "ref.nii.gz", _three_blobs())
    r = evaluate_paths(pred, ref, distances=False)
    assert [s.dice for s in r.cases[0].scores] == [1.0, 1.0, 1.0]


def test_output_folder_is_checked_before_computing(tmp_path, capsys):
    ref = _small(tmp_path, "ref.nii.gz", _three_blobs())
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("an earlier report")
    missing = tmp_path / "nothing.nii.gz"  # computing would fail with "not found"; the output check comes first
    assert main(["evaluate", str(missing), str(ref), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists (use --overwrite" in err and "not found" not in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["evaluate", str(missing), str(ref), "--out", str(afile)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_quiet_shows_no_progress(tmp_path, capsys):
    pred = _small(tmp_path, "pred.nii.gz", _three_blobs())
    ref = _small(tmp_path, "ref.nii.gz", _three_blobs())
    assert main(["evaluate", str(pred), str(ref), "--no-distances"]) == 0
    loud = capsys.readouterr()
    assert "evaluate" in loud.err  # the bar
    for argv in (["-q", "evaluate", str(pred), str(ref), "--no-distances"],
                 ["evaluate", str(pred), str(ref), "--no-distances", "-q"]):
        assert main(argv) == 0
        quiet = capsys.readouterr()
        assert quiet.err == "" and "| pred | 100.00 | 100.00 | 100.00 |" in quiet.out
        assert "Dice and Jaccard in %" in quiet.out


def test_dice_per_structure_by_hand():
    """Structures absent from the reference are left out; a missed one scores 0; overlap as counted by hand."""
    from dvcl.evaluation.metrics import dice_per_structure

    ref = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, :2, :2] = 1          # 4 voxels of structure 1
    pred[0, :2, :1] = 1         # 2 of them predicted -> 2 * 2 / (2 + 4)
    ref[3, 3, 3] = 2            # structure 2 missed entirely
    pred[2, 2, 2] = 3           # structure 3 predicted but absent from the reference: not scored
    dice = dice_per_structure(pred, ref, {1: "liver", 2: "spleen", 3: "aorta"})
    assert dice == {"liver": pytest.approx(4 / 6), "spleen": 0.0}


def test_groups_score_a_prediction_against_a_coarser_label_set(tmp_path, capsys):
    # prediction in MM-WHS style (1..5 chambers and myocardium, 6 aorta), reference with 2 = whole heart, 1 = aorta
    pred = np.zeros((8, 16, 16), np.uint8)
    pred[1:5, 2:6, 2:6] = 3  # LV
    pred[1:5, 6:9, 2:6] = 1  # myocardium
    pred[1:5, 9:12, 2:6] = 5  # RV
    pred[5:7, 2:6, 10:14] = 6  # aorta
    ref = np.zeros_like(pred)
    ref[1:5, 2:11, 2:6] = 2  # the whole heart, one row short of the RV
    ref[4:7, 2:6, 10:14] = 1  # aorta, one slice more
    p, r = _small(tmp_path, "pred/case.nii.gz", pred), _small(tmp_path, "ref/case.nii.gz", ref)
    heart_p, heart_r = np.isin(pred, [1, 2, 3, 4, 5]), ref == 2
    aorta_p, aorta_r = pred == 6, ref == 1
    code = main(["--progress", "none", "evaluate", str(p), str(r), "--group", "heart=1,2,3,4,5:2",
                 "--group", "aorta=6:1", "--no-distances", "--out", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    for name, (a, b) in {"heart": (heart_p, heart_r), "aorta": (aorta_p, aorta_r)}.items():
        assert summary["structures"][name]["dice_pct_mean"] == pytest.approx(100 * np_dice_jaccard(a, b)[0], abs=1e-4)
    assert set(summary["structures"]) == {"heart", "aorta"}
    # an empty group list is no grouping: the files' own values are scored (value 1: myocardium vs aorta)
    plain = evaluate_paths(p, r, groups=[])
    assert "heart" not in plain.structures and len(plain.structures) == 6
    for bad, message in ((["--group", "heart"], "NAME=PRED_VALUES:REF_VALUES"),
                         (["--group", "heart=1,x:2"], "whole numbers"),
                         (["--group", "heart=1,2:2", "--group", "aorta=2:1"], "both 'heart' and 'aorta'"),
                         (["--group", "heart=1:2", "--preset", "mmwhs"], "--preset")):
        capsys.readouterr()
        assert main(["--progress", "none", "evaluate", str(p), str(r), "--no-distances", *bad]) == 2, bad
        assert message in capsys.readouterr().err, bad
