"""The Train tab's "Adapt a model to your scans" section: ``dvcl adapt`` from the panel.

A model (one of the Segment tab's: installed and user-added, the same :class:`ModelRegistry`) is fine-tuned with
DVCL on labeled data of its label set plus the user's own unlabeled scans; the result is a new model package that
is added to the Segment tab when the run ends. Stop saves a checkpoint; Start with the same settings then resumes
(the button says Resume when the output's work folder holds an unfinished adaptation). The device is the Train
tab's. The iterations spin box starts at the backend's default (``Catalog.adapt_default_iterations``); 0 ("backend
default") leaves the number to the backend.
"""

from __future__ import annotations

from typing import Any

from . import Catalog
from .AdaptLogic import AdaptLogic
from .Backend import DVCLModuleError
from .ModelRegistry import ModelRegistry
from .Parameter import AdaptParameters
from .TabBase import PanelHost, RunWidgets, TrainingRunTab, prop


class AdaptSection(TrainingRunTab):
    """Binds the adaptation widgets of the Train page to an :class:`AdaptLogic`."""

    widgets = RunWidgets("adaptStatusLabel", "adaptProgressBar", "stopAdaptButton", "forceStopAdaptButton")
    run_name, refused_title, failed_title = "the adaptation", "Cannot adapt", "Adaptation failed"
    exported_status = ("Adapted model '{name}' added to the Segment tab (scores on the scans used for the adaptation "
                       "are transductive)")

    def __init__(self, ui: Any, host: PanelHost, logic: AdaptLogic, models: ModelRegistry) -> None:
        super().__init__(ui, host, logic)
        self.models = models
        ui.startAdaptButton.clicked.connect(lambda *_: self.on_start())
        changed = getattr(ui.adaptOutputFolderEdit, "currentPathChanged", None)  # ctkPathLineEdit (Slicer)
        if changed is not None:
            changed.connect(lambda *_: self.update_buttons())

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
        self._start(lambda: self.logic.start(params, overwrite=overwrite), resume)

    def update_start_buttons(self, running: bool) -> None:
        ui = self.ui
        ui.startAdaptButton.setEnabled(not running)
        if not running:
            ui.startAdaptButton.setText("Resume" if self.parameters().resumable() else "Start")
