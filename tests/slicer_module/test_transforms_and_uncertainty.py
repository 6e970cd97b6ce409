"""Results on volumes under a transform, subject-hierarchy placement and the uncertainty maps of contract 5.

A segmentation must land on the anatomy wherever the CT is placed: the check compares, in world coordinates,
the centroid of each imported segment with the centroid of the same structure computed from the label file
and the volume's own geometry and parent transform. The uncertainty maps are written here with SimpleITK on
the CT's grid with known values (as ``dvcl segment --uncertainty`` writes them), loaded onto a transformed
CT, and their per-structure means are checked against numpy on the same arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dvcl_slicer_helpers import ABDOMEN_IMAGE, ABDOMEN_LABEL, load_volume, require_slicer

slicer = require_slicer()
sitk = pytest.importorskip("SimpleITK")
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from DVCLSegmentationLib.Backend import LabelInfo  # noqa: E402
from DVCLSegmentationLib.SceneBridge import (  # noqa: E402
    SceneInputError,
    import_segmentation_file,
    load_uncertainty_volume,
    structure_statistics,
    uncertainty_quantity,
)

LABELS = [LabelInfo(1, "liver", (0.8, 0.4, 0.3)), LabelInfo(3, "spleen", (0.2, 0.6, 0.9)),
          LabelInfo(13, "left kidney", (0.9, 0.9, 0.2))]


def _rigid_transform(scene, angle_deg=30.0, translation=(50.0, -20.0, 10.0)):
    """A linear transform node: rotation about the S axis and about the R axis, then a translation."""
    t = vtk.vtkTransform()
    t.Translate(*translation)
    t.RotateZ(angle_deg)
    t.RotateX(angle_deg / 2)
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "placement")
    node.SetMatrixTransformToParent(t.GetMatrix())
    return node


def _to_world(node, points_ras: np.ndarray) -> np.ndarray:
    """Local RAS points (N, 3) of ``node`` -> world, through its parent transforms."""
    m = vtk.vtkMatrix4x4()
    parent = node.GetParentTransformNode()
    if parent is not None:
        parent.GetMatrixTransformToWorld(m)
    mat = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    return (mat @ np.c_[points_ras, np.ones(len(points_ras))].T).T[:, :3]


def _expected_centroid(label_node, value) -> np.ndarray:
    """World centroid of label ``value`` from the label volume's voxels, geometry and parent transform."""
    array = slicer.util.arrayFromVolume(label_node)  # (k, j, i)
    kji = np.argwhere(array == value).mean(axis=0)
    m = vtk.vtkMatrix4x4()
    label_node.GetIJKToRASMatrix(m)
    ijk_to_ras = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    local = (ijk_to_ras @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3]
    return _to_world(label_node, local[None])[0]


def _segment_centroid(seg_node, segment_id) -> np.ndarray:
    """World centroid of a segment from its binary labelmap representation (not from any export)."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    extent = image.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    kji = np.argwhere(array == segment.GetLabelValue()).mean(axis=0)
    ijk = np.array([kji[2] + extent[0], kji[1] + extent[2], kji[0] + extent[4], 1.0])
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    local = (np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)]) @ ijk)[:3]
    return _to_world(seg_node, local[None])[0]


@pytest.mark.parametrize("existing_node", [False, True], ids=["new_node", "update_node"])
def test_segmentation_of_a_transformed_volume_lands_on_the_anatomy(scene, existing_node):
    volume = load_volume(scene, ABDOMEN_IMAGE, "ct")
    reference = load_volume(scene, ABDOMEN_LABEL, "reference", labelmap=True)
    transform = _rigid_transform(scene)
    for node in (volume, reference):
        node.SetAndObserveTransformNodeID(transform.GetID())
    target = None
    if existing_node:  # a node made earlier, elsewhere (no transform): it must follow the volume
        target = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "earlier result")
        target.CreateDefaultDisplayNodes()
    seg = import_segmentation_file(ABDOMEN_LABEL, LABELS, volume, target)
    assert seg.GetTransformNodeID() == transform.GetID()
    segmentation = seg.GetSegmentation()
    for lab in LABELS:
        segment_id = segmentation.GetSegmentIdBySegmentName(lab.name)
        expected = _expected_centroid(reference, lab.value)
        got = _segment_centroid(seg, segment_id)
        assert np.linalg.norm(got - expected) < 0.5, (lab.name, got, expected)
    # the transform really moved things: without it the liver would be far from where it is now
    untransformed = _expected_centroid(reference, 1) - _to_world(reference, np.zeros((1, 3)))[0]
    assert np.linalg.norm(_expected_centroid(reference, 1) - untransformed) > 20


def test_segmentation_is_placed_in_the_volumes_study(scene):
    volume = load_volume(scene, ABDOMEN_IMAGE, "ct")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
    study = sh.CreateStudyItem(patient, "study")
    sh.CreateItem(study, volume)
    seg = import_segmentation_file(ABDOMEN_LABEL, LABELS, volume)
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == study


def _write_maps(folder):
    """Contract-5 files on the CT's grid: entropy = a ramp along x in [0, 1]; disagreement 0.5 in the liver."""
    ct = sitk.ReadImage(str(ABDOMEN_IMAGE))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(ABDOMEN_LABEL)))
    nz, ny, nx = label.shape
    entropy = np.broadcast_to(np.linspace(0.0, 1.0, nx, dtype=np.float32), label.shape).copy()
    disagreement = np.where(label == 1, 0.5, 0.0).astype(np.float32)
    paths = {}
    for quantity, array in (("entropy", entropy), ("disagreement", disagreement)):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(ct)
        paths[quantity] = folder / f"case_{quantity}.nii.gz"
        sitk.WriteImage(image, str(paths[quantity]))
    return paths, {"entropy": entropy, "disagreement": disagreement}, label


def test_uncertainty_maps_are_loaded_on_the_ct_with_window_0_1(scene, tmp_path):
    volume = load_volume(scene, ABDOMEN_IMAGE, "ct")
    transform = _rigid_transform(scene)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    paths, arrays, _ = _write_maps(tmp_path)
    for quantity, path in paths.items():
        assert uncertainty_quantity(path) == quantity
        node = load_uncertainty_volume(path, volume, quantity)
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node), arrays[quantity], atol=1e-6)
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(a)
        volume.GetIJKToRASMatrix(b)
        for r in range(3):
            for c in range(4):
                assert math.isclose(a.GetElement(r, c), b.GetElement(r, c), abs_tol=1e-3)
        assert node.GetTransformNodeID() == transform.GetID()
        display = node.GetDisplayNode()
        assert not display.GetAutoWindowLevel()
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
        assert node.GetAttribute("DVCL.Uncertainty") == quantity
    assert uncertainty_quantity(tmp_path / "case.nii.gz") is None


def test_uncertainty_map_on_another_grid_is_refused(scene, tmp_path):
    volume = load_volume(scene, ABDOMEN_IMAGE, "ct")
    wrong = sitk.Image(10, 10, 10, sitk.sitkFloat32)
    sitk.WriteImage(wrong, str(tmp_path / "x_entropy.nii.gz"))
    before = scene.GetNumberOfNodes()
    with pytest.raises(SceneInputError, match="differs"):
        load_uncertainty_volume(tmp_path / "x_entropy.nii.gz", volume, "entropy")
    assert scene.GetNumberOfNodes() == before


def test_per_structure_mean_uncertainty(tmp_path):
    paths, arrays, label = _write_maps(tmp_path)
    rows = structure_statistics(ABDOMEN_LABEL, LABELS, paths)
    spacing = np.prod(sitk.ReadImage(str(ABDOMEN_LABEL)).GetSpacing()) / 1000.0
    assert [r["structure"] for r in rows] == ["liver", "spleen", "left kidney"]
    for row, lab in zip(rows, LABELS):
        mask = label == lab.value
        assert row["voxels"] == mask.sum() > 0
        assert row["volume_ml"] == pytest.approx(mask.sum() * spacing)
        assert row["mean_entropy"] == pytest.approx(arrays["entropy"][mask].mean(), abs=1e-6)
        assert row["mean_disagreement"] == pytest.approx(0.5 if lab.value == 1 else 0.0, abs=1e-7)
