"""Evaluation from the scene: a segmentation node vs. a reference file through the real ``dvcl evaluate``.

The "prediction" is the real FLARE22 label map with known damage (the upper half of the liver erased, the
spleen removed), imported as a segmentation node; the expected Dice values are computed here with numpy from
the same two arrays, and the table node must hold exactly the numbers of the backend's CSV.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
from dvcl_slicer_helpers import ABDOMEN_LABEL, node_count, require_cli, require_slicer

slicer = require_slicer()
sitk = pytest.importorskip("SimpleITK")

from DVCLSegmentationLib.Backend import LabelInfo  # noqa: E402
from DVCLSegmentationLib.EvaluationLogic import EvaluationLogic  # noqa: E402
from DVCLSegmentationLib.Parameter import EvaluationParameters  # noqa: E402
from DVCLSegmentationLib.Process import SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.SceneBridge import SceneInputError, import_segmentation_file, table_to_rows  # noqa: E402

pytestmark = pytest.mark.slow

FLARE22 = ["liver", "right kidney", "spleen", "pancreas", "aorta", "inferior vena cava", "right adrenal gland",
           "left adrenal gland", "gallbladder", "esophagus", "stomach", "duodenum", "left kidney"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture
def damaged_prediction(scene, abdomen_volume, tmp_path):
    reference = sitk.ReadImage(str(ABDOMEN_LABEL))
    array = sitk.GetArrayFromImage(reference).copy()
    liver_z = np.nonzero((array == 1).any(axis=(1, 2)))[0]
    cut = int(liver_z.mean())
    array[cut:][array[cut:] == 1] = 0  # erase the liver above slice `cut`
    array[array == 3] = 0  # the spleen is missed entirely
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(reference)
    sitk.WriteImage(damaged, str(tmp_path / "damaged.nii.gz"))
    labels = [LabelInfo(i + 1, name, (0.5, 0.5, 0.5)) for i, name in enumerate(FLARE22)]
    node = import_segmentation_file(tmp_path / "damaged.nii.gz", labels, abdomen_volume)
    return node, array, sitk.GetArrayFromImage(reference)


def test_evaluate_segmentation_node_against_reference_file(scene, abdomen_volume, damaged_prediction, tmp_path):
    require_cli("evaluate")
    node, pred, ref = damaged_prediction
    logic = EvaluationLogic(SubprocessProcess, temp_root=str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    errors = []
    logic.error_occurred.connect(errors.append)
    before = node_count(scene)
    params = EvaluationParameters(preset="flare22", out_dir=str(tmp_path / "report"), plots=False)
    logic.start(node, str(ABDOMEN_LABEL), params, scene, reference_volume=abdomen_volume)
    report = logic.wait(120)
    assert errors == [] and report is not None
    assert node_count(scene) == before + 1  # the table node, nothing else
    assert os.listdir(tmp_path / "work") == []

    # the table node holds exactly the CSV the backend wrote
    with open(report.csv_path, newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    rows = table_to_rows(report.table_node)
    assert len(rows) == len(csv_rows) > 0
    assert list(rows[0]) == list(csv_rows[0])
    for row, expected in zip(rows, csv_rows):
        for key, text in expected.items():
            value = row[key]
            if isinstance(value, float):
                expected_value = float(text) if text.strip() else math.nan
                assert (math.isnan(value) and math.isnan(expected_value)) or value == expected_value, (key, text)
            else:
                assert value == text

    # and the numbers are right: Dice from the two label arrays
    by_name = {r["structure"]: r for r in rows}  # the report gives Dice in percent (dice_pct)
    assert by_name["liver"]["dice_pct"] == pytest.approx(100 * _dice(pred == 1, ref == 1), abs=1e-3)
    assert by_name["liver"]["dice_pct"] < 90
    assert by_name["spleen"]["dice_pct"] == 0.0
    assert by_name["right kidney"]["dice_pct"] == pytest.approx(100.0, abs=1e-4)
    assert report.summary["mean_dice_pct"] == pytest.approx(
        np.mean([r["dice_pct"] for r in rows if not math.isnan(r["dice_pct"])]), abs=1e-2)


def test_unknown_segment_names_are_refused_before_running(scene, abdomen_volume, tmp_path):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hand made")
    node.SetReferenceImageGeometryParameterFromVolumeNode(abdomen_volume)
    node.GetSegmentation().AddEmptySegment("t", "tumour", [1, 0, 0])
    logic = EvaluationLogic(SubprocessProcess, temp_root=str(tmp_path))
    before = node_count(scene)
    with pytest.raises(SceneInputError, match="segment 'tumour' of 'hand made' is not a structure"):
        logic.start(node, str(ABDOMEN_LABEL), EvaluationParameters("flare22", str(tmp_path / "r")), scene,
                    reference_volume=abdomen_volume)
    with pytest.raises(SceneInputError, match="reference file not found"):
        logic.start(str(ABDOMEN_LABEL), str(tmp_path / "missing.nii.gz"),
                    EvaluationParameters("flare22", str(tmp_path / "r")), scene)
    assert node_count(scene) == before and not logic.running and os.listdir(tmp_path) == []
