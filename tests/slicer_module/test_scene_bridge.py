"""SceneBridge on a real MRML scene: volume export, label import into segments, tables and plots.

Expected values come from the test data itself (tests/data/README.md lists the voxel count of every
FLARE22 structure in the abdomen label map) and from SimpleITK reading the same files independently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dvcl_slicer_helpers import ABDOMEN_IMAGE, ABDOMEN_LABEL, DATA, node_count, require_slicer

slicer = require_slicer()
sitk = pytest.importorskip("SimpleITK")
import vtk  # noqa: E402

from DVCLSegmentationLib.Backend import LabelInfo  # noqa: E402
from DVCLSegmentationLib.SceneBridge import (  # noqa: E402
    LABEL_VALUE_TAG,
    SceneInputError,
    TrainingCurves,
    export_segmentation_labelmap,
    export_volume,
    import_segmentation_file,
    segment_label_values,
    table_from_csv,
    table_to_rows,
)
from DVCLSegmentationLib.Terminology import terminology_entry  # noqa: E402

FLARE22 = ["liver", "right kidney", "spleen", "pancreas", "aorta", "inferior vena cava", "right adrenal gland",
           "left adrenal gland", "gallbladder", "esophagus", "stomach", "duodenum", "left kidney"]
# tests/data/README.md: voxel counts per structure (esophagus absent)
README_COUNTS = {1: 41692, 2: 7134, 3: 9668, 4: 695, 5: 1839, 6: 2266, 7: 166, 8: 210, 9: 1319, 10: 0,
                 11: 4836, 12: 2319, 13: 5090}


def flare22_labels():
    return [LabelInfo(i + 1, name, ((i * 19) % 256 / 255.0, 0.5, 1.0 - i / 13.0)) for i, name in enumerate(FLARE22)]


def _geometry(img):
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def _assert_same_grid(a, b):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_export_volume_is_exact_and_leaves_the_node_alone(scene, abdomen_volume, tmp_path):
    before = node_count(scene)
    mtime = abdomen_volume.GetMTime()
    out = export_volume(abdomen_volume, tmp_path / "input.nrrd")
    original, written = sitk.ReadImage(str(ABDOMEN_IMAGE)), sitk.ReadImage(str(out))
    _assert_same_grid(written, original)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(original))
    assert abdomen_volume.GetStorageNode() is None  # no storage node attached to the user's volume
    assert abdomen_volume.GetMTime() == mtime and node_count(scene) == before


def test_export_refuses_a_volume_without_voxels(scene, tmp_path):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(SceneInputError, match="'empty' has no image data"):
        export_volume(empty, tmp_path / "x.nrrd")
    assert not (tmp_path / "x.nrrd").exists()


def _segment_counts(seg_node, volume, tmp_path):
    """Voxels per label value, read back through an independent export + SimpleITK."""
    out = export_segmentation_labelmap(seg_node, tmp_path / "check.nii.gz", segment_label_values(seg_node), volume)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    return {v: int((array == v).sum()) for v in range(1, 14)}, sitk.ReadImage(str(out))


def test_import_labels_into_named_colored_segments(scene, abdomen_volume, tmp_path):
    before = node_count(scene)
    labels = flare22_labels()
    node = import_segmentation_file(ABDOMEN_LABEL, labels, abdomen_volume, model_name="reference")
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 13
    for i, lab in enumerate(labels):
        segment = segmentation.GetNthSegment(i)
        assert segment.GetName() == lab.name
        np.testing.assert_allclose(segment.GetColor(), lab.color, atol=1e-6)
        value = vtk.reference("")
        assert segment.GetTag(LABEL_VALUE_TAG, value) and str(value) == str(lab.value)
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is abdomen_volume
    counts, exported = _segment_counts(node, abdomen_volume, tmp_path)
    assert counts == README_COUNTS
    _assert_same_grid(exported, sitk.ReadImage(str(ABDOMEN_IMAGE)))
    # the segmentation and its display node are the only new nodes in the user's scene
    new = {scene.GetNthNode(i).GetClassName() for i in range(before, node_count(scene))}
    assert {"vtkMRMLSegmentationNode", "vtkMRMLSegmentationDisplayNode"} <= new
    assert "vtkMRMLLabelMapVolumeNode" not in new


def test_reimport_updates_the_same_node_and_keeps_user_segments(scene, abdomen_volume, tmp_path):
    labels = flare22_labels()
    node = import_segmentation_file(ABDOMEN_LABEL, labels, abdomen_volume)
    ids = [node.GetSegmentation().GetNthSegmentID(i) for i in range(13)]
    node.GetSegmentation().AddEmptySegment("my_note", "my note", [1, 1, 0])
    # a second label map on the same grid: only the liver (value 1) kept
    label = sitk.ReadImage(str(ABDOMEN_LABEL))
    only_liver = sitk.Cast(label == 1, sitk.sitkUInt8)
    only_liver.CopyInformation(label)
    sitk.WriteImage(only_liver, str(tmp_path / "liver.nii.gz"))
    count = node_count(scene)
    same = import_segmentation_file(tmp_path / "liver.nii.gz", labels, abdomen_volume, segmentation_node=node)
    assert same is node and node_count(scene) == count
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(13)] == ids
    assert segmentation.GetSegment("my_note") is not None  # user segment untouched
    pairs = [(sid, v) for sid, v in segment_label_values(node, {"my note": 99}) if sid != "my_note"]
    out = export_segmentation_labelmap(node, tmp_path / "after.nii.gz", pairs, abdomen_volume)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert int((array == 1).sum()) == README_COUNTS[1] and int((array > 1).sum()) == 0


def test_model_with_fewer_structures_removes_stale_segments(scene, abdomen_volume):
    node = import_segmentation_file(ABDOMEN_LABEL, flare22_labels(), abdomen_volume)
    import_segmentation_file(ABDOMEN_LABEL, flare22_labels()[:3], abdomen_volume, segmentation_node=node)
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        ["liver", "right kidney", "spleen"]


def test_label_map_on_another_grid_is_refused_and_scene_unchanged(scene, abdomen_volume):
    before = node_count(scene)
    with pytest.raises(SceneInputError, match="differs from volume 'abdomen_ct_3mm'"):
        import_segmentation_file(DATA / "chest_cta_1p5mm" / "label.nii.gz", flare22_labels(), abdomen_volume)
    assert node_count(scene) == before


def test_segment_values_from_names_and_unknown_names(scene, abdomen_volume):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "manual")
    node.GetSegmentation().AddEmptySegment("a", "Liver", [1, 0, 0])
    node.GetSegmentation().AddEmptySegment("b", "spleen", [0, 1, 0])
    assert segment_label_values(node, {"liver": 1, "spleen": 3}) == [("a", 1), ("b", 3)]
    node.GetSegmentation().AddEmptySegment("c", "tumour", [0, 0, 1])
    with pytest.raises(SceneInputError, match="segment 'tumour' of 'manual' is not a structure of the preset"):
        segment_label_values(node, {"liver": 1, "spleen": 3})


def test_terminology_matches_slicers_serializer():
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    context = "Segmentation category and type - DICOM master list"
    anatomy = "Anatomic codes - DICOM master list"
    assert terminology_entry("Liver") == logic.SerializeTerminologyEntry(
        context, "123037004", "SCT", "Anatomical Structure", "10200004", "SCT", "Liver", "", "", "",
        anatomy, "", "", "", "", "", "")
    assert terminology_entry("left kidney") == logic.SerializeTerminologyEntry(
        context, "123037004", "SCT", "Anatomical Structure", "64033007", "SCT", "Kidney", "7771000", "SCT", "Left",
        anatomy, "", "", "", "", "", "")
    assert terminology_entry("prostate/uterus") is None


def test_imported_segments_carry_terminology(scene, abdomen_volume):
    node = import_segmentation_file(ABDOMEN_LABEL, flare22_labels(), abdomen_volume)
    spleen = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("spleen"))
    assert "SCT^78961009^Spleen" in spleen.GetTerminology()


def test_table_from_csv_types_values_and_update(scene, tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("case,label,structure,dice,hd95_mm,status\n"
                        "abd,1,liver,0.912345,4.5,ok\n"
                        "abd,10,esophagus,nan,,absent_both\n")
    table = table_from_csv(csv_path, scene)
    rows = table_to_rows(table)
    assert [r["structure"] for r in rows] == ["liver", "esophagus"]
    assert rows[0]["dice"] == 0.912345 and rows[0]["label"] == 1.0 and rows[0]["status"] == "ok"
    assert math.isnan(rows[1]["dice"]) and math.isnan(rows[1]["hd95_mm"])
    assert table.GetTable().GetColumnByName("dice").IsA("vtkDoubleArray")
    assert table.GetTable().GetColumnByName("case").IsA("vtkStringArray")
    count = node_count(scene)
    csv_path.write_text("case,dice\nabd,0.5\n")
    same = table_from_csv(csv_path, scene, table)
    assert same is table and node_count(scene) == count
    assert table_to_rows(table) == [{"case": "abd", "dice": 0.5}]


def test_training_curves_rows_nan_fill_and_plot_nodes(scene):
    curves = TrainingCurves(scene, "run")
    curves.add({"event": "metrics", "iteration": 10, "losses": {"sup": 1.0}, "lr": 0.1, "val_dice": None})
    curves.add({"event": "metrics", "iteration": 20, "losses": {"sup": 0.8, "dvcl": 0.3}, "val_dice": 0.42})
    curves.add({"event": "metrics", "iteration": 30, "losses": {"sup": 0.6, "dvcl": 0.2}})
    assert curves.column("iteration") == [10.0, 20.0, 30.0]
    assert curves.column("sup") == [1.0, 0.8, 0.6]
    dvcl = curves.column("dvcl")
    assert math.isnan(dvcl[0]) and dvcl[1:] == [0.3, 0.2]
    assert curves.column("val_dice") == [0.42]
    chart = curves.chart
    assert chart.GetNumberOfPlotSeriesNodes() == 3  # val_dice, sup, dvcl
    names = {chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(3)}
    assert names == {"val_dice", "sup", "dvcl"}
    curves.remove()
    assert scene.GetNodesByClass("vtkMRMLPlotChartNode").GetNumberOfItems() == 0


def test_import_a_seg_nrrd_written_by_the_backend(scene, abdomen_volume, tmp_path):
    """``dvcl segment --format seg.nrrd`` output (a NRRD label volume with Slicer segment metadata)."""
    segmentation_io = pytest.importorskip("dvcl.io.segmentation")
    label = sitk.ReadImage(str(ABDOMEN_LABEL))
    segments = segmentation_io.segments_from_labels({i + 1: name for i, name in enumerate(FLARE22)})
    path = tmp_path / "result.seg.nrrd"
    segmentation_io.write_seg_nrrd(label, path, segments)
    node = import_segmentation_file(path, flare22_labels(), abdomen_volume)
    counts, _ = _segment_counts(node, abdomen_volume, tmp_path)
    assert counts == README_COUNTS
