"""The Train tab's "Adapt a model to your scans" section: ``dvcl adapt`` from the panel.

A model (one of the Segment tab's: installed and user-added, the same :class:`ModelRegistry`) is fine-tuned with
DVCL on labeled data of its label set plus the user's own unlabeled scans; the result is a new model package that
is added to the Segment tab when the run ends. Stop saves a checkpoint; Start with the same settings then resumes
(the button says Resume when the output's work folder holds an unfinished adaptation). The device is the Train
tab's. The iterations spin box starts at the backend's default (``Catalog.adapt_default_iterations``); 0 ("backend
default") leaves the number to the backend.
"""

from __future__ import annotations

from typing import Any, Optional

from . import Catalog
from .AdaptLogic import STOPPING, TRAIN_TASK, AdaptLogic
from .Backend import DVCLModuleError
from .ModelRegistry import ModelRegistry
from .Parameter import AdaptParameters
from .Process import ProgressInfo
from .TabBase import PanelHost, Tab, progress_status, prop, show_progress, stopped_status

#: what the progress events' tasks are called in the status line
TASK_NAMES = {"prepare": "Preparing the scans", "train": "Iteration", "export": "Exporting the model"}


class AdaptSection(Tab):
    """Binds the adaptation widgets of the Train page to an :class:`AdaptLogic`."""

    def __init__(self, ui: Any, host: PanelHost, logic: AdaptLogic, models: ModelRegistry) -> None:
        super().__init__(ui, host)
        self.logic = logic
        self.models = models
        ui.startAdaptButton.clicked.connect(lambda *_: self.on_start())
        ui.stopAdaptButton.clicked.connect(lambda *_: self.on_stop())
        ui.forceStopAdaptButton.clicked.connect(lambda *_: self.on_force_stop())
        changed = getattr(ui.adaptOutputFolderEdit, "currentPathChanged", None)  # ctkPathLineEdit (Slicer)
        if changed is not None:
            changed.connect(lambda *_: self.update_buttons())
        logic.progress.connect(self.on_progress)
        logic.log.connect(host.append_log)
        logic.stopping.connect(self.on_stopping)
        logic.model_exported.connect(self.on_model_exported)
        logic.cancelled.connect(self.on_stopped)
        logic.finished.connect(lambda *_: self.update_buttons())
        logic.error_occurred.connect(self.on_error)

    # -- lists ----------------------------------------------------------------------------------------
    def refresh_catalogue(self) -> None:
        self.refresh_models()
        spin = self.ui.adaptIterationsSpinBox
        if prop(spin, "value") == 0:  # not chosen yet: show the backend's default
            try:
                spin.setValue(Catalog.adapt_default_iterations())
            except DVCLModuleError as exc:
                self.host.append_log(f"Adaptation defaults unavailable ({exc}); the backend's default is used")
        self.update_buttons()

    def refresh_models(self, select: str = "") -> None:
        """The Segment tab's models (installed and user-added), keeping the current choice."""
        combo = self.ui.adaptModelComboBox
        select = select or self.current_model_dir()
        was_blocked = combo.blockSignals(True)
        try:
            combo.clear()
            for info in self.models.models():
                combo.addItem(info.name, str(info.path))
            index = combo.findData(select) if select else -1
            combo.setCurrentIndex(index if index >= 0 else 0)
        finally:
            combo.blockSignals(was_blocked)

    def current_model_dir(self) -> str:
        combo = self.ui.adaptModelComboBox
        index = prop(combo, "currentIndex")
        data = combo.itemData(index) if index >= 0 else None
        return str(data) if data else ""

    # -- parameters -----------------------------------------------------------------------------------
    def parameters(self) -> AdaptParameters:
        ui = self.ui
        iterations = int(prop(ui.adaptIterationsSpinBox, "value"))
        return AdaptParameters(
            model_dir=self.current_model_dir(), labeled_dir=prop(ui.adaptLabeledFolderEdit, "currentPath"),
            unlabeled_dir=prop(ui.adaptUnlabeledFolderEdit, "currentPath"),
            out_dir=prop(ui.adaptOutputFolderEdit, "currentPath"), iterations=iterations or None,
            device=self.host.params.train_device)

    # -- running --------------------------------------------------------------------------------------
    def on_start(self) -> None:
        host = self.host
        if not host.ensure_backend(True):
            return
        params = self.parameters()
        overwrite = False
        if params.output_exists():
            if not host.confirm(f"{params.out_dir} already exists. Replace it and start the adaptation over?"):
                return
            overwrite = True
        resume = params.resumable() and not overwrite
        try:
            self.logic.start(params, overwrite=overwrite)
            self.ui.adaptStatusLabel.setText("Resuming..." if resume else "Starting...")
        except DVCLModuleError as exc:
            host.report_error("Cannot adapt", str(exc))
        except Exception as exc:  # e.g. the backend could not be launched
            host.report_error("Cannot start dvcl", str(exc))
        self.ui.adaptProgressBar.setValue(0)
        self.update_buttons()

    def on_stop(self) -> None:
        self.logic.stop()

    def on_force_stop(self) -> None:
        if self.host.confirm("Force stop ends the adaptation now: the iterations since the last saved checkpoint "
                             "are lost (Stop saves first). Force stop?"):
            self.logic.force_stop()

    def on_stopping(self) -> None:
        self.ui.adaptStatusLabel.setText(self.logic.stop_message)
        self.update_buttons()

    def on_stopped(self) -> None:
        info: Optional[ProgressInfo] = self.logic.last_progress
        self.ui.adaptStatusLabel.setText(stopped_status(info.step if info is not None and info.task == TRAIN_TASK
                                                        else None))
        self.update_buttons()

    def on_error(self, message: str) -> None:
        self.ui.adaptStatusLabel.setText("Failed: " + message)
        self.host.report_error("Adaptation failed", message)
        self.update_buttons()

    def on_progress(self, info: ProgressInfo) -> None:
        show_progress(self.ui.adaptProgressBar, info)
        if self.logic.state == STOPPING:
            return
        self.ui.adaptStatusLabel.setText(progress_status(info, TASK_NAMES.get(info.task, info.message or info.task)))

    def on_model_exported(self, info: Any) -> None:
        self.host.model_added(info)
        self.ui.adaptStatusLabel.setText(f"Adapted model '{info.name}' added to the Segment tab (scores on the scans "
                                         "used for the adaptation are transductive)")

    def update_buttons(self) -> None:
        ui, logic = self.ui, self.logic
        running = logic.running
        ui.startAdaptButton.setEnabled(not running)
        if not running:
            ui.startAdaptButton.setText("Resume" if self.parameters().resumable() else "Start")
        ui.stopAdaptButton.setEnabled(running and logic.state != STOPPING)
        ui.forceStopAdaptButton.setEnabled(running)

    def cleanup(self) -> None:
        self.logic.stop()
