"""Moves data between the MRML scene and the files the ``dvcl`` CLI reads and writes.

Only ``slicer`` (MRML, segmentations logic, ``slicer.util`` array helpers) and ``vtk`` are used, so the same
code runs inside Slicer and in pytest with the ``slicer-core`` wheel. Rules that the logic relies on:

* the input volume is never modified (it is written through a storage node that is not attached to it);
* files are read into a private scratch scene, so the user's scene never sees temporary nodes;
* a segmentation result updates the segments of an existing node in place (same node, same segment IDs);
* results are files on the volume's own voxel grid (its local coordinates): they are imported with the
  segmentation node detached from its parent transform and re-attached to the volume's transform afterwards,
  so a volume under a (linear or not) transform gets its segmentation on the anatomy;
* every segment gets the model's name and color, the label value it came from, and a SNOMED terminology entry
  when the structure is known (``Terminology.py``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import slicer
import vtk
from slicer import util as slicer_util

from .Backend import DVCLModuleError, LabelInfo
from .Terminology import terminology_entry

PathLike = Union[str, Path]

#: segment tags written by this module, read back by evaluation and by later runs
LABEL_VALUE_TAG = "DVCL.LabelValue"
LABEL_NAME_TAG = "DVCL.LabelName"
MODEL_TAG = "DVCL.Model"

#: geometry tolerance between a result file and its volume: NIfTI stores float32 transforms
POSITION_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4


class SceneInputError(DVCLModuleError):
    """A node given to the module cannot be used (no image data, wrong type, result off the volume grid)."""


# -- small helpers --------------------------------------------------------------------------------------
def ensure_segmentation_converters() -> None:
    """Register the binary-labelmap / closed-surface converter rules when nobody did.

    Slicer's Segmentations module registers them at start-up; a bare ``slicer-core`` process has none, and
    then no segment can even be created ("Unable to construct empty representation type").
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = factory.GetConverterRules()
    if rules is not None and len(rules) > 0:
        return
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def require_volume(node, role: str = "input volume") -> None:
    """Raise :class:`SceneInputError` unless ``node`` is a scalar (non-label) volume with voxels."""
    if node is None:
        raise SceneInputError(f"no {role} selected")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise SceneInputError(f"{role} '{node.GetName()}' is a {node.GetClassName()}, not a scalar volume")
    image = node.GetImageData()
    if image is None:
        raise SceneInputError(f"{role} '{node.GetName()}' has no image data (load or compute the volume first)")
    dims = image.GetDimensions()
    if min(dims) < 1 or image.GetNumberOfPoints() == 0 or image.GetPointData().GetScalars() is None:
        raise SceneInputError(f"{role} '{node.GetName()}' has an empty image ({dims[0]}x{dims[1]}x{dims[2]})")
    if image.GetNumberOfScalarComponents() != 1:
        raise SceneInputError(f"{role} '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components; "
                              "a single-channel CT volume is needed")


def _new_scratch_scene():
    return slicer.vtkMRMLScene()


def _write_volume_node(node, path: Path, compress: bool) -> Path:
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(1 if compress else 0)
    if not storage.WriteData(node):
        raise SceneInputError(f"could not write '{node.GetName()}' to {path}")
    return path


def export_volume(volume_node, path: PathLike, compress: bool = False) -> Path:
    """Write a scalar volume to NRRD/NIfTI (chosen by the extension) in RAS->LPS-correct geometry.

    The storage node is created here and never attached to ``volume_node``, so the user's node keeps its
    own storage (file name, compression) and is not marked modified.
    """
    require_volume(volume_node)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_volume_node(volume_node, path, compress)


def read_labelmap(path: PathLike):
    """Read a label image into a ``vtkMRMLLabelMapVolumeNode`` that lives in a private scratch scene.

    Returns ``(scratch_scene, labelmap_node)``; keep the scene referenced while the node is used.
    """
    return _read_into_scratch_scene(path, slicer.vtkMRMLLabelMapVolumeNode(), "label image")


def _read_into_scratch_scene(path: PathLike, node, what: str):
    """Read ``path`` into ``node`` inside a new private scratch scene; ``(scene, node)``."""
    path = Path(path)
    if not path.is_file():
        raise SceneInputError(f"{path}: result file not found")
    scene = _new_scratch_scene()
    scene.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    storage.SetSingleFile(1)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise SceneInputError(f"{path}: could not read the {what}")
    return scene, node


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def check_same_grid(node, reference_volume) -> None:
    """Raise :class:`SceneInputError` when ``node`` does not lie on the voxel grid of ``reference_volume``."""
    dims = tuple(node.GetImageData().GetDimensions())
    ref_dims = tuple(reference_volume.GetImageData().GetDimensions())
    if dims != ref_dims:
        raise SceneInputError(f"result size {dims} differs from volume '{reference_volume.GetName()}' {ref_dims}")
    a, b = _ijk_to_ras(node), _ijk_to_ras(reference_volume)
    spacing = np.array(reference_volume.GetSpacing())
    if not np.allclose(a[:3, :3] / spacing, b[:3, :3] / spacing, atol=DIRECTION_TOLERANCE) or \
            not np.allclose(a[:3, 3], b[:3, 3], atol=POSITION_TOLERANCE_MM * max(1.0, float(spacing.max()))):
        raise SceneInputError(f"result geometry (origin/spacing/direction) differs from volume "
                              f"'{reference_volume.GetName()}'")


# -- segmentation import --------------------------------------------------------------------------------
def _segments_by_label_name(segmentation) -> Dict[str, str]:
    found = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        tag = vtk.reference("")
        if segment.GetTag(LABEL_NAME_TAG, tag):
            found[str(tag)] = segmentation.GetNthSegmentID(i)
    return found


def create_segmentation_node(scene, reference_volume, name: Optional[str] = None):
    """A new segmentation node on ``reference_volume``'s grid, under the same parent transform."""
    ensure_segmentation_converters()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                   name or scene.GenerateUniqueName(f"{reference_volume.GetName()} segmentation"))
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    if reference_volume.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(reference_volume.GetParentTransformNode().GetID())
    return node


def update_segmentation_from_labelmap(labelmap_node, labels: Sequence[LabelInfo], segmentation_node,
                                      reference_volume, model_name: str = "") -> List[str]:
    """Put each label of ``labelmap_node`` into the segment for that structure; returns the segment IDs.

    Segments this module created earlier (recognised by their ``DVCL.LabelName`` tag) are updated in place,
    so their IDs, visibility and opacity survive a re-run; structures the model does not have any more are
    removed; segments the user added by hand are left alone. Label values not in ``labels`` are ignored.
    """
    ensure_segmentation_converters()
    check_same_grid(labelmap_node, reference_volume)
    segmentation = segmentation_node.GetSegmentation()
    existing = _segments_by_label_name(segmentation)
    wanted = {lab.name for lab in labels}
    for name, segment_id in existing.items():
        if name not in wanted:
            segmentation.RemoveSegment(segment_id)

    # Relabel to 1..N in model order: ImportLabelmapToSegmentationNode maps value i to the i-th segment ID.
    values = slicer_util.arrayFromVolume(labelmap_node)
    lut = np.zeros(max(int(values.max()) if values.size else 0, max(lab.value for lab in labels)) + 1, np.uint16)
    for index, lab in enumerate(labels, start=1):
        lut[lab.value] = index
    relabeled = lut[np.clip(values, 0, len(lut) - 1).astype(np.int64)]
    relabeled[values < 0] = 0
    scratch = _new_scratch_scene()
    import_node = slicer.vtkMRMLLabelMapVolumeNode()
    scratch.AddNode(import_node)
    matrix = vtk.vtkMatrix4x4()
    labelmap_node.GetIJKToRASMatrix(matrix)
    import_node.SetIJKToRASMatrix(matrix)
    slicer_util.updateVolumeFromArray(import_node, relabeled.astype(np.uint16))

    segment_ids = vtk.vtkStringArray()
    ids: List[str] = []
    existing = _segments_by_label_name(segmentation)
    for lab in labels:
        segment_id = existing.get(lab.name)
        if segment_id is None:
            segment_id = segmentation.GenerateUniqueSegmentID(lab.name)
            segmentation.AddEmptySegment(segment_id, lab.name, list(lab.color))
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(lab.name)
        segment.SetColor(*lab.color)
        segment.SetTag(LABEL_NAME_TAG, lab.name)
        segment.SetTag(LABEL_VALUE_TAG, str(lab.value))
        if model_name:
            segment.SetTag(MODEL_TAG, model_name)
        entry = terminology_entry(lab.name)
        if entry:
            segment.SetTerminology(entry)
        segment_ids.InsertNextValue(segment_id)
        ids.append(segment_id)
    # The label image is in the volume's local coordinates; the import maps world -> the segmentation's local
    # coordinates through the node's transform, so import untransformed, then share the volume's transform.
    segmentation_node.SetAndObserveTransformNodeID(None)
    try:
        imported = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            import_node, segmentation_node, segment_ids)
    finally:
        segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    if not imported:
        raise SceneInputError("could not import the label image into the segmentation")
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation_node.SetNodeReferenceID(segmentation_node.GetReferenceImageGeometryReferenceRole(),
                                         reference_volume.GetID())
    segmentation_node.Modified()
    return ids


def import_segmentation_file(path: PathLike, labels: Sequence[LabelInfo], reference_volume,
                             segmentation_node=None, model_name: str = ""):
    """Load a label file onto ``reference_volume``'s grid into a segmentation node (new or given).

    The file is read and checked before any node is created, and a node created here is removed again if
    the import fails, so the scene is unchanged on error.
    """
    require_volume(reference_volume, "reference volume")
    if segmentation_node is not None and not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise SceneInputError(f"'{segmentation_node.GetName()}' is not a segmentation node")
    if not labels:
        raise SceneInputError("the model has no labels")
    scratch, labelmap = read_labelmap(path)
    check_same_grid(labelmap, reference_volume)
    scene = reference_volume.GetScene()
    created = segmentation_node is None
    node = segmentation_node or create_segmentation_node(scene, reference_volume)
    try:
        update_segmentation_from_labelmap(labelmap, labels, node, reference_volume, model_name)
        place_in_subject_hierarchy(node, reference_volume)
    except Exception:
        if created:
            scene.RemoveNode(node)
        raise
    finally:
        del scratch
    return node


def place_in_subject_hierarchy(node, reference_volume) -> None:
    """Put ``node`` next to ``reference_volume`` in the subject hierarchy (same study), if it has one."""
    scene = reference_volume.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(reference_volume)
    if not volume_item:
        return
    parent = sh.GetItemParent(volume_item)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(parent, node)
    elif sh.GetItemParent(item) != parent:
        sh.SetItemParent(item, parent)


# -- uncertainty maps (dvcl segment --uncertainty) ------------------------------------------------------
#: quantity -> file suffix of contract 5 (``<case>_entropy.nii.gz``, ``<case>_disagreement.nii.gz``)
UNCERTAINTY_QUANTITIES = ("entropy", "disagreement")
#: colour maps tried in order for an uncertainty overlay (Slicer's default colour nodes)
UNCERTAINTY_COLOR_NODES = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeFileViridis.txt",
                           "vtkMRMLColorTableNodeRainbow")


def uncertainty_quantity(path: PathLike) -> Optional[str]:
    """``entropy`` / ``disagreement`` from a file name of contract 5, else None."""
    name = Path(path).name.lower()
    for quantity in UNCERTAINTY_QUANTITIES:
        if name.endswith(f"_{quantity}.nii.gz") or name.endswith(f"_{quantity}.nrrd"):
            return quantity
    return None


def load_uncertainty_volume(path: PathLike, reference_volume, quantity: str, volume_node=None):
    """Load an uncertainty map (values in [0, 1] on the volume's grid) as a scalar volume shown over the CT.

    The node shares the CT's parent transform, has a colour map and the fixed window [0, 1] (values mean the
    same in every case, so no auto window). An existing ``volume_node`` is refilled in place.
    """
    scratch, read = read_labelmap_as_scalar(path)
    check_same_grid(read, reference_volume)
    scene = reference_volume.GetScene()
    created = volume_node is None
    if created:
        volume_node = scene.AddNewNodeByClass(
            "vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{reference_volume.GetName()} {quantity}"))
    matrix = vtk.vtkMatrix4x4()
    read.GetIJKToRASMatrix(matrix)
    volume_node.SetIJKToRASMatrix(matrix)
    image = vtk.vtkImageData()
    image.DeepCopy(read.GetImageData())
    volume_node.SetAndObserveImageData(image)
    volume_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    volume_node.SetAttribute("DVCL.Uncertainty", quantity)
    if volume_node.GetDisplayNode() is None:
        volume_node.CreateDefaultDisplayNodes()
    display = volume_node.GetDisplayNode()
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(0.0, 1.0)
    for color_id in UNCERTAINTY_COLOR_NODES:
        if scene.GetNodeByID(color_id) is not None:
            display.SetAndObserveColorNodeID(color_id)
            break
    place_in_subject_hierarchy(volume_node, reference_volume)
    del scratch
    return volume_node


def read_labelmap_as_scalar(path: PathLike):
    """Read a float image into a ``vtkMRMLScalarVolumeNode`` of a private scratch scene."""
    return _read_into_scratch_scene(path, slicer.vtkMRMLScalarVolumeNode(), "image")


def structure_statistics(label_path: PathLike, labels: Sequence[LabelInfo],
                         maps: Dict[str, PathLike]) -> List[Dict[str, Union[str, float]]]:
    """Per structure: label, voxels, volume in ml and the mean of each map (e.g. ``mean_entropy``) inside it.

    Read from the files the backend wrote (all on the input's grid), so the numbers are those of the result.
    """
    scratch, labelmap = read_labelmap(label_path)
    values = slicer_util.arrayFromVolume(labelmap)
    voxel_ml = float(np.prod(labelmap.GetSpacing())) / 1000.0
    arrays = {}
    for quantity, path in maps.items():
        map_scene, node = read_labelmap_as_scalar(path)
        check_same_grid(node, labelmap)
        arrays[quantity] = np.asarray(slicer_util.arrayFromVolume(node), dtype=np.float64)
        del map_scene
    rows = []
    for lab in labels:
        mask = values == lab.value
        count = int(mask.sum())
        row: Dict[str, Union[str, float]] = {"structure": lab.name, "label": float(lab.value),
                                             "voxels": float(count), "volume_ml": count * voxel_ml}
        for quantity, array in arrays.items():
            row[f"mean_{quantity}"] = float(array[mask].mean()) if count else math.nan
        rows.append(row)
    del scratch
    return rows


def table_from_rows(rows: Sequence[Dict[str, Union[str, float]]], scene, table_node=None,
                    name: str = "DVCL volumes"):
    """A table node from dict rows (numbers as double columns, the rest as strings); refilled if given."""
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table_node.RemoveAllColumns()
    header = list(rows[0]) if rows else []
    for title in header:
        numeric = all(isinstance(row.get(title), (int, float)) for row in rows)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(title)
        for row in rows:
            array.InsertNextValue(float(row[title]) if numeric else str(row.get(title, "")))
        table_node.AddColumn(array)
    table_node.SetUseColumnNameAsColumnHeader(True)
    table_node.Modified()
    return table_node


# -- segmentation export (for evaluation) ----------------------------------------------------------------
def segment_label_values(segmentation_node, names_to_values: Optional[Dict[str, int]] = None) -> List[Tuple[str, int]]:
    """``(segment_id, label value)`` for every segment: from the module's tag, else by name from the preset.

    Raises:
        SceneInputError: a segment has neither a tag nor a name found in ``names_to_values``.
    """
    lookup = {k.strip().lower(): int(v) for k, v in (names_to_values or {}).items()}
    segmentation = segmentation_node.GetSegmentation()
    pairs = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetNthSegment(i)
        tag = vtk.reference("")
        if segment.GetTag(LABEL_VALUE_TAG, tag) and str(tag).strip().isdigit():
            pairs.append((segment_id, int(str(tag))))
            continue
        value = lookup.get(segment.GetName().strip().lower())
        if value is None:
            known = ", ".join(sorted(lookup)) or "none"
            raise SceneInputError(f"segment '{segment.GetName()}' of '{segmentation_node.GetName()}' is not a "
                                  f"structure of the preset (known: {known})")
        pairs.append((segment_id, value))
    if not pairs:
        raise SceneInputError(f"segmentation '{segmentation_node.GetName()}' has no segments")
    return pairs


def export_segmentation_labelmap(segmentation_node, path: PathLike, segment_values: Sequence[Tuple[str, int]],
                                 reference_volume=None) -> Path:
    """Write the segments as one label image with the given values, on the reference volume's grid.

    Uses ``GenerateMergedLabelmapInReferenceGeometry``, which creates no node in any scene (the node-based
    export adds color-table and subject-hierarchy nodes to the user's scene).
    """
    reference_volume = reference_volume or segmentation_node.GetNodeReference(
        segmentation_node.GetReferenceImageGeometryReferenceRole())
    if reference_volume is None:
        raise SceneInputError(f"segmentation '{segmentation_node.GetName()}' has no reference volume; select one")
    ids = vtk.vtkStringArray()
    values = vtk.vtkIntArray()
    for segment_id, value in segment_values:
        ids.InsertNextValue(segment_id)
        values.InsertNextValue(int(value))
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, reference_volume, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged, values)
    scratch = _new_scratch_scene()
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    scratch.AddNode(labelmap)
    if not slicer.vtkSlicerSegmentationsModuleLogic.CopyOrientedImageDataToVolumeNode(merged, labelmap):
        raise SceneInputError(f"could not export segmentation '{segmentation_node.GetName()}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_volume_node(labelmap, path, compress=True)


def export_labelmap_volume(labelmap_node, path: PathLike) -> Path:
    """Write a label map volume node as it is (its voxel values are the label ids)."""
    if labelmap_node is None or labelmap_node.GetImageData() is None:
        raise SceneInputError("the label map has no image data")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_volume_node(labelmap_node, path, compress=True)


# -- tables and plots ----------------------------------------------------------------------------------
def _as_float(text: str) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_csv_rows(path: PathLike) -> Tuple[List[str], List[List[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise SceneInputError(f"{path}: empty CSV")
    return rows[0], rows[1:]


def table_from_csv(path: PathLike, scene, table_node=None, name: str = "DVCL evaluation"):
    """Fill a ``vtkMRMLTableNode`` from a CSV file: numeric columns as doubles, the rest as strings.

    An existing ``table_node`` is emptied and refilled (so views showing it update); otherwise one is added.
    Empty cells in numeric columns become NaN (e.g. HD95 of a structure absent from both label maps).
    """
    header, rows = read_csv_rows(path)
    columns = []
    for c, title in enumerate(header):
        cells = [row[c] if c < len(row) else "" for row in rows]
        numeric = bool(cells) and all(_as_float(x) is not None or x.strip() == "" for x in cells) and \
            any(x.strip() for x in cells)
        if numeric:
            array = vtk.vtkDoubleArray()
            for x in cells:
                value = _as_float(x)
                array.InsertNextValue(math.nan if value is None else value)
        else:
            array = vtk.vtkStringArray()
            for x in cells:
                array.InsertNextValue(x)
        array.SetName(title)
        columns.append(array)
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table_node.RemoveAllColumns()
    for array in columns:
        table_node.AddColumn(array)
    table_node.SetUseColumnNameAsColumnHeader(True)
    table_node.Modified()
    return table_node


def table_to_rows(table_node) -> List[Dict[str, Union[str, float]]]:
    """The table as a list of dicts (header -> value); used by tests and the summary text."""
    table = table_node.GetTable()
    out = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            value = column.GetValue(r)
            row[column.GetName()] = float(value) if column.IsA("vtkDataArray") else str(value)
        out.append(row)
    return out


_CURVE_COLORS = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
                 (0.58, 0.4, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5)]


class TrainingCurves:
    """Live plot of a training run: loss terms and validation Dice against the iteration.

    Two tables (losses every logged iteration; validation Dice only where it was computed, so the Dice line
    has no gaps), one plot series per column and one chart. ``add(event)`` takes a ``metrics`` event of the
    progress protocol. All nodes are created in ``scene`` on the first event and reused afterwards.
    """

    def __init__(self, scene, name: str = "DVCL training") -> None:
        self.scene = scene
        self.name = name
        self.loss_table = None
        self.val_table = None
        self.chart = None
        self.series: Dict[str, object] = {}

    @property
    def nodes(self) -> List[object]:
        return [n for n in [self.chart, self.loss_table, self.val_table, *self.series.values()] if n is not None]

    def _ensure_nodes(self) -> None:
        if self.chart is not None:
            return
        scene = self.scene
        self.loss_table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{self.name} losses"))
        self.val_table = scene.AddNewNodeByClass("vtkMRMLTableNode",
                                                 scene.GenerateUniqueName(f"{self.name} validation"))
        for table in (self.loss_table, self.val_table):
            column = vtk.vtkDoubleArray()
            column.SetName("iteration")
            table.AddColumn(column)
        column = vtk.vtkDoubleArray()
        column.SetName("val_dice")
        self.val_table.AddColumn(column)
        self.chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(self.name))
        self.chart.SetTitle(self.name)
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss / Dice")
        self._add_series(self.val_table, "val_dice")

    def _add_series(self, table, column: str) -> None:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.name} {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("iteration")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineWidth(2 if column == "val_dice" else 1)
        series.SetColor(*_CURVE_COLORS[len(self.series) % len(_CURVE_COLORS)])
        self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self.series[column] = series

    def add(self, event: Dict) -> None:
        """Append one ``metrics`` event: ``{"iteration": i, "losses": {...}, "val_dice": d | null}``."""
        iteration = event.get("iteration")
        if iteration is None:
            return
        self._ensure_nodes()
        losses = {str(k): float(v) for k, v in (event.get("losses") or {}).items() if _as_float(v) is not None}
        if losses:
            table = self.loss_table.GetTable()
            rows = table.GetNumberOfRows()
            for key in losses:
                if table.GetColumnByName(key) is None:
                    column = vtk.vtkDoubleArray()
                    column.SetName(key)
                    for _ in range(rows):
                        column.InsertNextValue(math.nan)
                    self.loss_table.AddColumn(column)
                    self._add_series(self.loss_table, key)
            for c in range(table.GetNumberOfColumns()):
                column = table.GetColumn(c)
                name = column.GetName()
                column.InsertNextValue(float(iteration) if name == "iteration" else losses.get(name, math.nan))
            table.Modified()
            self.loss_table.Modified()
        dice = _as_float(event.get("val_dice"))
        if dice is not None and not math.isnan(dice):
            table = self.val_table.GetTable()
            table.GetColumnByName("iteration").InsertNextValue(float(iteration))
            table.GetColumnByName("val_dice").InsertNextValue(dice)
            table.Modified()
            self.val_table.Modified()

    def column(self, name: str) -> List[float]:
        """Values of a column (``val_dice`` from the validation table, anything else from the losses)."""
        node = self.val_table if name == "val_dice" else self.loss_table
        if node is None:
            return []
        array = node.GetTable().GetColumnByName(name)
        if name == "iteration" and node is self.loss_table:
            array = node.GetTable().GetColumnByName("iteration")
        return [] if array is None else [array.GetValue(i) for i in range(array.GetNumberOfTuples())]

    def remove(self) -> None:
        for node in self.nodes:
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.loss_table = self.val_table = self.chart = None
        self.series = {}


def remove_nodes(scene, nodes: Iterable) -> None:
    for node in nodes:
        if node is not None and node.GetScene() is scene:
            scene.RemoveNode(node)
