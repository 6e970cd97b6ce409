"""One-click segmentation end to end: volume node -> real ``dvcl segment`` subprocess -> segmentation node.

Checks what a user relies on: the segments are the model's structures with the model's names and colors,
on the volume's voxel grid, holding exactly the labels the backend wrote; a re-run updates the same node;
Cancel stops the child process and leaves nothing behind; bad input is refused with a clear message and
an unchanged scene.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from dvcl_slicer_helpers import ABDOMEN_IMAGE, node_count, require_cli, require_slicer

slicer = require_slicer()
sitk = pytest.importorskip("SimpleITK")

from DVCLSegmentationLib.Backend import ModelPackageError  # noqa: E402
from DVCLSegmentationLib.Parameter import SegmentationParameters  # noqa: E402
from DVCLSegmentationLib.Process import SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.SceneBridge import (  # noqa: E402
    SceneInputError,
    export_segmentation_labelmap,
    segment_label_values,
)
from DVCLSegmentationLib.SegmentationLogic import SegmentationLogic  # noqa: E402

TIMEOUT = 120
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_segment_cli():
    require_cli("segment")


def _logic(tmp_path):
    logic = SegmentationLogic(SubprocessProcess, temp_root=str(tmp_path))
    record = {"finished": [], "errors": [], "cancelled": [], "progress": [], "log": []}
    logic.finished.connect(record["finished"].append)
    logic.error_occurred.connect(record["errors"].append)
    logic.cancelled.connect(lambda: record["cancelled"].append(True))
    logic.progress.connect(record["progress"].append)
    logic.log.connect(record["log"].append)
    return logic, record


def _params(model):
    return SegmentationParameters(model_dir=str(model), device="cpu")


def _segments(node):
    seg = node.GetSegmentation()
    return [(seg.GetNthSegmentID(i), seg.GetNthSegment(i)) for i in range(seg.GetNumberOfSegments())]


def _node_labels(node, volume, path):
    """The segmentation as one label image on ``volume``'s grid, read back with SimpleITK."""
    export_segmentation_labelmap(node, path, segment_label_values(node), volume)
    return sitk.ReadImage(str(path))


def test_segment_volume_into_model_segments(scene, abdomen_volume, tiny_model, tmp_path):
    logic, record = _logic(tmp_path / "work")
    (tmp_path / "work").mkdir()
    before = node_count(scene)
    saved = tmp_path / "result.nii.gz"
    logic.start(abdomen_volume, _params(tiny_model), save_to=str(saved))
    node = logic.wait(TIMEOUT)
    assert record["errors"] == [] and record["cancelled"] == []
    assert record["finished"] == [node] and node.IsA("vtkMRMLSegmentationNode")
    assert record["progress"] and record["progress"][-1].step == record["progress"][-1].total

    # names and colors are the model's (model.json colors are 0..255)
    meta = json.loads((tiny_model / "model.json").read_text())
    expected = [(meta["labels"][k]["name"], np.array(meta["labels"][k]["color"]) / 255.0)
                for k in sorted(meta["labels"], key=int)]
    segments = _segments(node)
    assert [s.GetName() for _, s in segments] == [name for name, _ in expected]
    for (_, segment), (_, color) in zip(segments, expected):
        np.testing.assert_allclose(segment.GetColor(), color, atol=1e-6)

    # geometry: on the volume's grid, holding exactly the labels dvcl wrote
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is abdomen_volume
    original, backend = sitk.ReadImage(str(ABDOMEN_IMAGE)), sitk.ReadImage(str(saved))
    mine = _node_labels(node, abdomen_volume, tmp_path / "from_node.nii.gz")
    for img in (backend, mine):
        assert img.GetSize() == original.GetSize()
        np.testing.assert_allclose(img.GetOrigin(), original.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(img.GetSpacing(), original.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(img.GetDirection(), original.GetDirection(), atol=1e-6)
    backend_array = sitk.GetArrayFromImage(backend)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mine), backend_array)
    assert len(np.unique(backend_array)) >= 2  # a real label map, not an empty one

    # one segmentation (+ its display node) and the volumes table added (+ the subject hierarchy node a bare
    # slicer-core scene lacks), temporary files removed
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1
    assert scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 1
    assert node_count(scene) - before <= 4
    assert os.listdir(tmp_path / "work") == []

    # a second run updates the same node: same object, same segment IDs, no new nodes
    ids = [sid for sid, _ in segments]
    liver = ids[0]
    slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(node, liver)  # the user erased the liver
    count = node_count(scene)
    logic.start(abdomen_volume, _params(tiny_model), segmentation_node=node)
    again = logic.wait(TIMEOUT)
    assert again is node and node_count(scene) == count
    assert [sid for sid, _ in _segments(node)] == ids
    restored = _node_labels(node, abdomen_volume, tmp_path / "again.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), backend_array)


def test_cancel_stops_the_process_and_leaves_no_node(scene, abdomen_volume, tiny_model, tmp_path):
    logic, record = _logic(tmp_path)
    before = node_count(scene)
    logic.start(abdomen_volume, _params(tiny_model))
    process = logic.process
    pid = process.pid
    deadline = time.monotonic() + TIMEOUT
    while not record["progress"]:  # dvcl has started working (torch imported, handlers installed)
        process.poll()
        time.sleep(0.02)
        assert time.monotonic() < deadline
    logic.cancel()
    assert logic.wait(TIMEOUT) is None
    assert record["cancelled"] == [True] and record["finished"] == [] and record["errors"] == []
    assert process.result.cancelled
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert node_count(scene) == before
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    assert os.listdir(tmp_path) == []  # the temporary folder is gone too
    assert not logic.running


def test_bad_input_is_refused_before_anything_runs(scene, abdomen_volume, tiny_model, tmp_path):
    logic, record = _logic(tmp_path)
    before = node_count(scene)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not loaded")
    before = node_count(scene)
    cases = [
        (empty, _params(tiny_model), SceneInputError, "'not loaded' has no image data"),
        (None, _params(tiny_model), SceneInputError, "no input volume selected"),
        (abdomen_volume, _params(tmp_path / "nowhere"), ModelPackageError, "model folder not found"),
        (abdomen_volume, SegmentationParameters(model_dir=""), ModelPackageError, "no model selected"),
        (abdomen_volume, SegmentationParameters(model_dir=str(tiny_model), device="tpu"), Exception,
         "unknown device 'tpu'"),
    ]
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_model / "model.json", no_weights / "model.json")
    cases.append((abdomen_volume, _params(no_weights), ModelPackageError, "weights.safetensors is missing"))
    for volume, params, error, message in cases:
        with pytest.raises(error, match=message):
            logic.start(volume, params)
        assert not logic.running and node_count(scene) == before
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    labelmap.SetAndObserveImageData(abdomen_volume.GetImageData())
    with pytest.raises(SceneInputError, match="is a vtkMRMLLabelMapVolumeNode, not a scalar volume"):
        logic.start(labelmap, _params(tiny_model))
    assert os.listdir(tmp_path) == ["no_weights"] and record["errors"] == []


def test_backend_failure_is_reported_and_scene_unchanged(scene, abdomen_volume, tiny_model, tmp_path):
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    (broken / "weights.safetensors").write_bytes(b"this is not a safetensors file")
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "keep me")
    existing.GetSegmentation().AddEmptySegment("x", "x", [1, 0, 0])
    logic, record = _logic(tmp_path / "work")
    (tmp_path / "work").mkdir()
    before = node_count(scene)
    logic.start(abdomen_volume, _params(broken), segmentation_node=existing)
    assert logic.wait(TIMEOUT) is None
    assert len(record["errors"]) == 1 and record["finished"] == []
    assert "weights.safetensors" in record["errors"][0], record["errors"][0]
    assert logic.last_result.exit_code == 2
    assert node_count(scene) == before
    assert [s.GetName() for _, s in _segments(existing)] == ["x"]
    assert os.listdir(tmp_path / "work") == []


def test_segment_with_the_shipped_demo_model(scene, abdomen_volume, tmp_path):
    """The one-click path a new user takes: the real CT, the demo model that ships with the backend."""
    from dvcl.inference.model_package import default_model_dir

    model = default_model_dir()
    meta = json.loads((model / "model.json").read_text())
    logic, record = _logic(tmp_path / "work")
    (tmp_path / "work").mkdir()
    saved = tmp_path / "demo.nii.gz"
    logic.start(abdomen_volume, _params(model), save_to=str(saved))
    node = logic.wait(TIMEOUT)
    assert record["errors"] == [] and node.IsA("vtkMRMLSegmentationNode")
    names = [s.GetName() for _, s in _segments(node)]
    assert names == [meta["labels"][k]["name"] for k in sorted(meta["labels"], key=int)]
    assert names[0] == "liver" and len(names) == 13
    for (_, segment), k in zip(_segments(node), sorted(meta["labels"], key=int)):
        np.testing.assert_allclose(segment.GetColor(), np.array(meta["labels"][k]["color"]) / 255.0, atol=1e-6)
    original, mine = sitk.ReadImage(str(ABDOMEN_IMAGE)), _node_labels(node, abdomen_volume, tmp_path / "n.nii.gz")
    assert mine.GetSize() == original.GetSize()
    np.testing.assert_allclose(mine.GetOrigin(), original.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mine.GetDirection(), original.GetDirection(), atol=1e-6)
    values = set(np.unique(sitk.GetArrayFromImage(mine)).tolist())
    assert values <= set(range(14)) and len(values) >= 2


def test_uncertainty_maps_from_a_real_run(scene, abdomen_volume, tiny_model, tmp_path):
    """``dvcl segment --uncertainty`` (the backend's contract 5) -> two volumes over the CT and per-structure means."""
    import vtk

    from DVCLSegmentationLib.SceneBridge import table_to_rows

    logic, record = _logic(tmp_path)
    params = SegmentationParameters(model_dir=str(tiny_model), device="cpu", uncertainty=True)
    logic.start(abdomen_volume, params)
    node = logic.wait(TIMEOUT)
    assert record["errors"] == [] and node is not None
    kinds = {kind for _, kind in logic.last_result.outputs}
    assert {"segmentation", "uncertainty"} <= kinds
    ct = slicer.util.arrayFromVolume(abdomen_volume)
    ct_matrix, map_matrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    abdomen_volume.GetIJKToRASMatrix(ct_matrix)
    maps = {}
    for quantity in ("entropy", "disagreement"):
        volume = logic.uncertainty_nodes[quantity]
        maps[quantity] = slicer.util.arrayFromVolume(volume).astype(np.float64)
        assert maps[quantity].shape == ct.shape
        assert 0.0 <= maps[quantity].min() and maps[quantity].max() <= 1.0
        volume.GetIJKToRASMatrix(map_matrix)
        assert all(abs(map_matrix.GetElement(r, c) - ct_matrix.GetElement(r, c)) < 1e-3
                   for r in range(3) for c in range(4))
        assert volume.GetDisplayNode().GetWindowLevelMax() == 1.0
    assert maps["entropy"].max() > 0  # random weights: far from certain
    # the table's means are the maps' means over each structure of the result
    labels = _node_labels(node, abdomen_volume, tmp_path / "labels.nii.gz")
    label_array = sitk.GetArrayFromImage(labels)
    rows = {r["structure"]: r for r in table_to_rows(logic.volumes_table)}
    checked = 0
    for value, name in enumerate(["liver", "right kidney", "spleen", "pancreas", "aorta"], start=1):
        mask = label_array == value
        if mask.any():
            assert rows[name]["voxels"] == mask.sum()
            assert rows[name]["mean_entropy"] == pytest.approx(maps["entropy"][mask].mean(), abs=1e-5)
            assert rows[name]["mean_disagreement"] == pytest.approx(maps["disagreement"][mask].mean(), abs=1e-5)
            checked += 1
    assert checked >= 1
