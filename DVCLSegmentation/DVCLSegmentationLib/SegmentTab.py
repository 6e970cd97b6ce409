"""The Segment tab: pick a CT volume and a model, press Segment; the result lands next to the volume.

First run: before the backend is installed there is no model to list; Segment stays pressable and offers
the installation (as SlicerTotalSegmentator does), after which the model list is refreshed in place.
Each input volume gets its own segmentation node: the output selector is reused only when it holds the
result of the same volume (or is still empty), else the node made earlier for this volume is updated, else a
new node is made; segmenting a second volume never overwrites the first one's result.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from . import Catalog
from .Backend import DVCLModuleError
from .ModelRegistry import ModelRegistry
from .Parameter import SegmentationParameters
from .Process import ProgressInfo
from .SegmentationLogic import SegmentationLogic, attached_result
from .Signal import Signal
from .TabBase import PanelHost, Tab, prop, show_progress

log = logging.getLogger(__name__)

NO_BACKEND_TEXT = ("The DVCL backend is not installed yet: press Segment (or Install in the Setup tab) to install "
                   "it. Its models (trained on synthetic CT only; research use, not clinical) come with it.")
NO_MODEL_TEXT = "No model: add a model package folder (model.json + weights)."


def result_volume(segmentation_node: Any) -> Any:
    """The volume a segmentation node was made on (its reference geometry), or None."""
    if segmentation_node is None:
        return None
    return segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())


class SegmentTab(Tab):
    """Binds the Segment page to a :class:`SegmentationLogic` and the model list.

    Signals:
        models_changed()   the model list was re-read (the Train tab's adaptation lists the same models)
    """

    def __init__(self, ui: Any, host: PanelHost, logic: SegmentationLogic, models: ModelRegistry,
                 backend_ready=lambda: True) -> None:
        super().__init__(ui, host)
        self.logic = logic
        self.models = models
        self._backend_ready = backend_ready
        self.models_changed = Signal("models_changed")
        ui.segmentButton.clicked.connect(self.on_segment)
        ui.cancelSegmentButton.clicked.connect(self.on_cancel)
        ui.addModelButton.clicked.connect(self.on_add_model)
        ui.modelComboBox.currentIndexChanged.connect(self.on_model_changed)
        ui.show3DCheckBox.toggled.connect(self.on_show_3d)
        logic.progress.connect(self.on_progress)
        logic.log.connect(host.append_log)
        logic.finished.connect(self.on_finished)
        logic.error_occurred.connect(self.on_error)
        logic.cancelled.connect(self.on_cancelled)

    # -- model list -----------------------------------------------------------------------------------
    def refresh_catalogue(self) -> None:
        self.refresh_models(self.current_model_dir() or self.host.settings_value("lastModel"))

    def refresh_models(self, select: str = "") -> None:
        combo = self.ui.modelComboBox
        was_blocked = combo.blockSignals(True)
        try:
            combo.clear()
            for info in self.models.models():
                combo.addItem(info.name, str(info.path))
                combo.setItemData(prop(combo, "count") - 1, info.description or str(info.path), 3)  # ToolTipRole
            index = combo.findData(select) if select else -1
            if index < 0:  # nothing chosen before: the model `dvcl segment` uses by default
                index = combo.findData(self._preferred_model_dir())
            combo.setCurrentIndex(index if index >= 0 else 0)
        finally:
            combo.blockSignals(was_blocked)
        self.on_model_changed()
        self.models_changed.emit()

    def _preferred_model_dir(self) -> str:
        try:
            best = Catalog.preferred_model(self.models.models())
        except DVCLModuleError as exc:  # no backend found: the first model is as good as any
            log.debug("no preferred model: %s", exc)
            return ""
        return str(best.path) if best is not None else ""

    def add_model_package(self, info: Any) -> None:
        """A model made by the panel (training, adaptation): remember its folder and select it."""
        self.models.add(info.path)
        self.host.set_settings_value("models", self.models.to_json())
        self.refresh_models(str(info.path))

    def current_model_dir(self) -> str:
        combo = self.ui.modelComboBox
        index = prop(combo, "currentIndex")
        data = combo.itemData(index) if index >= 0 else None
        return str(data) if data else ""

    def on_model_changed(self, *_: Any) -> None:
        folder = self.current_model_dir()
        info = next((m for m in self.models.models() if str(m.path) == folder), None)
        if info is None:
            self.ui.modelInfoLabel.setText(NO_MODEL_TEXT if self._backend_ready() else NO_BACKEND_TEXT)
        else:
            names = ", ".join(lab.name for lab in info.labels)
            self.ui.modelInfoLabel.setText(f"{info.description}\n{len(info.labels)} structures: {names}".strip())
            self.host.set_settings_value("lastModel", folder)
        self.update_buttons()

    def on_add_model(self) -> None:
        folder = self.host.choose_folder("Choose a model package folder (with model.json)")
        if not folder:
            return
        try:
            info = self.models.add(folder)
        except DVCLModuleError as exc:
            self.host.report_error("Not a model package", str(exc))
            return
        self.host.set_settings_value("models", self.models.to_json())
        self.refresh_models(str(info.path))

    # -- running --------------------------------------------------------------------------------------
    def output_node_for(self, volume: Any) -> Optional[Any]:
        """Where this volume's result goes: the selected node if it is this volume's (or empty), else the node
        made earlier for this volume, else None (a new node)."""
        node = self.host.params.output_segmentation
        if node is not None and node.GetScene() is not None:
            made_on = result_volume(node)
            if made_on is volume or (made_on is None and node.GetSegmentation().GetNumberOfSegments() == 0):
                return node
        return attached_result(volume) if volume is not None else None

    def parameters(self) -> SegmentationParameters:
        p = self.host.params
        return SegmentationParameters(model_dir=self.current_model_dir(), device=p.segment_device, tta=p.tta,
                                      fast=p.fast, uncertainty=p.uncertainty)

    def on_segment(self) -> None:
        if not self.host.ensure_backend(False):
            return
        if not self.current_model_dir():
            self.refresh_models()  # the installation may just have brought the demo model
        if not self.current_model_dir():
            self.host.report_error("Cannot segment", NO_MODEL_TEXT)
            return
        volume = self.host.params.input_volume
        self.ui.segmentProgressBar.setValue(0)
        try:
            self.logic.start(volume, self.parameters(), self.output_node_for(volume))
            self.ui.segmentStatusLabel.setText("Segmenting...")
        except DVCLModuleError as exc:
            self.host.report_error("Cannot segment", str(exc))
        except Exception as exc:  # e.g. the backend could not be launched
            self.host.report_error("Cannot start dvcl", str(exc))
        self.update_buttons()

    def on_cancel(self) -> None:
        self.logic.cancel()

    def on_progress(self, info: ProgressInfo) -> None:
        show_progress(self.ui.segmentProgressBar, info)

    def on_finished(self, node: Any) -> None:
        p = self.host.params
        p.output_segmentation = node
        self.ui.segmentStatusLabel.setText(f"Done: '{node.GetName()}'")
        self.ui.segmentProgressBar.setRange(0, 100)
        self.ui.segmentProgressBar.setValue(100)
        if p.show_3d:
            node.CreateClosedSurfaceRepresentation()
        else:
            node.RemoveClosedSurfaceRepresentation()
        if self.logic.volumes_table is not None:
            self.ui.volumesTableView.setMRMLTableNode(self.logic.volumes_table)
        self.host.show_segmentation(p.input_volume, node, self.logic.uncertainty_nodes.get("disagreement"))
        self.update_buttons()

    def on_show_3d(self, checked: bool) -> None:
        """Show 3D toggled: build or drop the surfaces of the current result at once."""
        node = self.host.params.output_segmentation
        if node is None or node.GetScene() is None or node.GetSegmentation().GetNumberOfSegments() == 0:
            return
        if checked:
            node.CreateClosedSurfaceRepresentation()
        else:
            node.RemoveClosedSurfaceRepresentation()

    def on_error(self, message: str) -> None:
        self.ui.segmentStatusLabel.setText("Failed: " + message)
        self.host.report_error("Segmentation failed", message)
        self.update_buttons()

    def on_cancelled(self) -> None:
        self.ui.segmentStatusLabel.setText("Cancelled; the scene was not changed")
        self.ui.segmentProgressBar.setValue(0)
        self.update_buttons()

    def update_buttons(self) -> None:
        running = self.logic.running
        self.ui.segmentButton.setEnabled(not running)
        self.ui.cancelSegmentButton.setEnabled(running)

    def cleanup(self) -> None:
        self.logic.cancel()
