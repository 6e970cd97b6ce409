"""The module's panel: binds the widgets of ``Resources/UI/DVCLSegmentation.ui`` to the logic classes.

Thin on purpose: every decision that can be tested without a GUI lives in the logic modules; this file only
reads widgets into parameter objects, starts/cancels logic runs, and shows their signals (progress, log,
results, errors). Logic objects are injected through the constructor (real ones by default), so the panel
can be driven with other process runners.

Options that belong to the scene (nodes, presets, schedule) are kept in a ``parameterNodeWrapper`` bound to
the widgets through their ``SlicerParameterName`` property; machine-specific things (folders, the model
list, the last model) are kept in QSettings.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

import qt
import slicer

from .Backend import (
    DVCLModuleError,
    available_methods,
    available_presets,
    find_backend_dir,
    format_eta,
    resource_path,
)
from .EvaluationLogic import EvaluationLogic, EvaluationReport
from .InstallLogic import InstallLogic, device_message, parse_info
from .ModelRegistry import ModelRegistry
from .Parameter import (
    DEVICES,
    PROFILE_DEFAULTS,
    PROFILES,
    EvaluationParameters,
    SegmentationParameters,
    TrainingParameters,
)
from .Process import ProcessResult, ProgressInfo, default_process
from .SegmentationLogic import SegmentationLogic
from .TrainingLogic import TrainingLogic

try:  # Slicer >= 5.4; guarded so that a missing wrapper does not hide the panel's real error
    from typing import Annotated, Union

    from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
except ImportError:  # pragma: no cover - old Slicer
    parameterNodeWrapper = None

log = logging.getLogger(__name__)

MODULE_NAME = "DVCLSegmentation"
SETTINGS_PREFIX = "DVCLSegmentation/"
DATASET_JSON_CHOICE = "dataset.json"
PRESETS = available_presets()
METHODS = available_methods()
TRAIN_PRESETS = PRESETS + [DATASET_JSON_CHOICE]


def _default(choices, preferred: str) -> str:
    return preferred if preferred in choices else choices[0]


if parameterNodeWrapper is not None:

    @parameterNodeWrapper
    class DVCLSegmentationParameterNode:
        """What the panel saves with the scene (field names = ``SlicerParameterName`` in the .ui)."""

        input_volume: vtkMRMLScalarVolumeNode
        output_segmentation: vtkMRMLSegmentationNode
        segment_device: Annotated[str, Choice(list(DEVICES))] = "auto"
        tta: bool = False
        train_preset: Annotated[str, Choice(TRAIN_PRESETS)] = _default(TRAIN_PRESETS, "flare22")
        method: Annotated[str, Choice(METHODS)] = _default(METHODS, "dvcl")
        profile: Annotated[str, Choice(list(PROFILES))] = "paper"
        labeled_fraction: Annotated[float, WithinRange(0.01, 1.0)] = 0.1
        iterations: Annotated[int, WithinRange(1, 1000000)] = 20000
        batch_labeled: Annotated[int, WithinRange(1, 64)] = 4
        batch_unlabeled: Annotated[int, WithinRange(0, 64)] = 4
        patch_z: Annotated[int, WithinRange(8, 512)] = 64
        patch_y: Annotated[int, WithinRange(8, 512)] = 128
        patch_x: Annotated[int, WithinRange(8, 512)] = 128
        train_device: Annotated[str, Choice(list(DEVICES))] = "auto"
        eval_prediction: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
        eval_reference: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
        eval_volume: vtkMRMLScalarVolumeNode
        eval_preset: Annotated[str, Choice(PRESETS)] = _default(PRESETS, "flare22")


#: ctkPathLineEdit widget -> QSettings key (folders are per machine, not per scene)
PATH_SETTINGS = {
    "dataFolderEdit": "dataDir",
    "unlabeledFolderEdit": "unlabeledDir",
    "datasetJsonEdit": "datasetJson",
    "runFolderEdit": "runDir",
    "evalOutputFolderEdit": "evalOutDir",
}


def _settings_value(key: str, default: str = "") -> str:
    value = qt.QSettings().value(SETTINGS_PREFIX + key, default)
    return "" if value is None else str(value)


def _set_settings_value(key: str, value: str) -> None:
    qt.QSettings().setValue(SETTINGS_PREFIX + key, value)


class Widget(qt.QWidget):
    """The DVCLSegmentation panel (Segment / Train / Evaluate / Setup tabs and a shared log)."""

    def __init__(self, segmentation_logic: Optional[SegmentationLogic] = None,
                 training_logic: Optional[TrainingLogic] = None,
                 evaluation_logic: Optional[EvaluationLogic] = None,
                 install_logic: Optional[InstallLogic] = None,
                 show_dialogs: bool = True, parent: Any = None) -> None:
        super().__init__(parent)
        if parameterNodeWrapper is None:
            raise RuntimeError("DVCLSegmentation needs Slicer 5.4 or newer (slicer.parameterNodeWrapper)")
        self.segmentation_logic = segmentation_logic or SegmentationLogic()
        self.training_logic = training_logic or TrainingLogic()
        self.evaluation_logic = evaluation_logic or EvaluationLogic()
        self.install_logic = install_logic or InstallLogic(confirm=self._confirm)
        self.install_logic.log = self.append_log
        self.show_dialogs = show_dialogs
        self.models = ModelRegistry.from_json(_settings_value("models"))
        self._info_process = None
        self._parameter_node = None
        self._gui_tag = None
        self._scene_observers = []

        layout = qt.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        ui_widget = slicer.util.loadUI(str(resource_path("UI", f"{MODULE_NAME}.ui")))
        layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)

        self._connect_widgets()
        self._connect_logic()
        self._load_paths()
        self.refresh_models(_settings_value("lastModel"))
        self._set_parameter_node()
        self.ui.backendFolderLabel.setText(str(find_backend_dir() or "not found (set DVCL_BACKEND_DIR)"))
        self._scene_observers = [
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self._on_scene_start_close),
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndCloseEvent, self._on_scene_end_close),
        ]
        self._update_buttons()

    # -- setup ----------------------------------------------------------------------------------------
    def _connect_widgets(self) -> None:
        ui = self.ui
        ui.segmentButton.clicked.connect(self.on_segment)
        ui.cancelSegmentButton.clicked.connect(self.on_cancel_segment)
        ui.addModelButton.clicked.connect(self.on_add_model)
        ui.modelComboBox.currentIndexChanged.connect(self.on_model_changed)
        ui.startTrainingButton.clicked.connect(lambda: self.on_start_training(resume=False))
        ui.resumeTrainingButton.clicked.connect(lambda: self.on_start_training(resume=True))
        ui.stopTrainingButton.clicked.connect(self.on_stop_training)
        ui.showPlotButton.clicked.connect(self.on_show_plot)
        ui.presetComboBox.currentIndexChanged.connect(lambda *_: self._update_buttons())
        ui.profileComboBox.activated.connect(self.on_profile_chosen)  # user choice only, not scene loads
        ui.evaluateButton.clicked.connect(self.on_evaluate)
        ui.checkDependenciesButton.clicked.connect(self.on_check_dependencies)
        ui.installDependenciesButton.clicked.connect(self.on_install_dependencies)
        ui.checkDeviceButton.clicked.connect(self.on_check_device)
        for name, key in PATH_SETTINGS.items():
            getattr(ui, name).currentPathChanged.connect(lambda path, k=key: _set_settings_value(k, path))

    def _connect_logic(self) -> None:
        seg = self.segmentation_logic
        seg.progress.connect(lambda info: self._show_progress(self.ui.segmentProgressBar, info))
        seg.log.connect(self.append_log)
        seg.finished.connect(self.on_segmentation_finished)
        seg.error_occurred.connect(lambda message: self._on_run_error("Segmentation failed", message))
        seg.cancelled.connect(self.on_segmentation_cancelled)
        train = self.training_logic
        train.progress.connect(self.on_training_progress)
        train.metrics.connect(self.on_training_metrics)
        train.log.connect(self.append_log)
        train.model_exported.connect(self.on_model_exported)
        train.finished.connect(lambda *_: self._update_buttons())
        train.error_occurred.connect(lambda message: self._on_run_error("Training failed", message))
        ev = self.evaluation_logic
        ev.log.connect(self.append_log)
        ev.finished.connect(self.on_evaluation_finished)
        ev.error_occurred.connect(lambda message: self._on_run_error("Evaluation failed", message))
        ev.cancelled.connect(lambda: self._update_buttons())

    def _set_parameter_node(self) -> None:
        if self._gui_tag is not None and self._parameter_node is not None:
            self._parameter_node.disconnectGui(self._gui_tag)
        node = slicer.mrmlScene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:  # as ScriptedLoadableModuleLogic.getParameterNode does it
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(MODULE_NAME))
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = slicer.mrmlScene.AddNode(node)
        self._parameter_node = DVCLSegmentationParameterNode(node)
        if self._parameter_node.input_volume is None:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            scalar = [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")]
            self._parameter_node.input_volume = scalar[0] if scalar else None
        self._gui_tag = self._parameter_node.connectGui(self.ui)

    def _load_paths(self) -> None:
        for name, key in PATH_SETTINGS.items():
            getattr(self.ui, name).currentPath = _settings_value(key)

    def cleanup(self) -> None:
        """Called when the module is closed or reloaded: stop child processes and detach observers."""
        for logic in (self.segmentation_logic, self.evaluation_logic, self.training_logic):
            logic.cancel()
        for tag in self._scene_observers:
            slicer.mrmlScene.RemoveObserver(tag)
        self._scene_observers = []
        if self._parameter_node is not None and self._gui_tag is not None:
            self._parameter_node.disconnectGui(self._gui_tag)
            self._gui_tag = None

    def _on_scene_start_close(self, caller: Any, event: Any) -> None:
        # the volume being segmented is about to disappear; training does not depend on the scene
        self.segmentation_logic.cancel()
        self.evaluation_logic.cancel()

    def _on_scene_end_close(self, caller: Any, event: Any) -> None:
        self._set_parameter_node()

    # -- helpers --------------------------------------------------------------------------------------
    def append_log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(str(line))

    def _confirm(self, message: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(message) if self.show_dialogs else True

    def _report_error(self, title: str, message: str) -> None:
        self.append_log(f"ERROR: {title}: {message}")
        if self.show_dialogs:
            slicer.util.errorDisplay(f"{title}:\n{message}")

    def _on_run_error(self, title: str, message: str) -> None:
        self._report_error(title, message)
        self._update_buttons()

    @staticmethod
    def _show_progress(bar: Any, info: ProgressInfo) -> None:
        fraction = info.fraction
        if fraction is None:
            bar.setRange(0, 0)  # busy indicator
        else:
            bar.setRange(0, 100)
            bar.setValue(int(round(100 * fraction)))
        eta = format_eta(info.eta_s)
        bar.setFormat(f"{info.message or info.task} %p%" + (f"  (ETA {eta})" if eta else ""))

    def _update_buttons(self) -> None:
        ui = self.ui
        segmenting = self.segmentation_logic.running
        ui.segmentButton.setEnabled(not segmenting and ui.modelComboBox.count > 0)
        ui.cancelSegmentButton.setEnabled(segmenting)
        training = self.training_logic.running
        ui.startTrainingButton.setEnabled(not training)
        ui.resumeTrainingButton.setEnabled(not training)
        ui.stopTrainingButton.setEnabled(training)
        ui.showPlotButton.setEnabled(self.training_logic.curves is not None)
        ui.datasetJsonEdit.setEnabled(ui.presetComboBox.currentText == DATASET_JSON_CHOICE)
        ui.evaluateButton.setEnabled(not self.evaluation_logic.running)

    def _require_backend(self) -> bool:
        missing = self.install_logic.missing()
        if not missing:
            return True
        names = ", ".join(s.describe() for s in missing)
        self._report_error("Missing Python packages", f"{names}.\nInstall them in the Setup tab first.")
        self.ui.tabWidget.setCurrentWidget(self.ui.setupTab)
        return False

    # -- Segment tab ----------------------------------------------------------------------------------
    def refresh_models(self, select: str = "") -> None:
        combo = self.ui.modelComboBox
        was_blocked = combo.blockSignals(True)
        combo.clear()
        for info in self.models.models():
            combo.addItem(info.name, str(info.path))
            combo.setItemData(combo.count - 1, info.description or str(info.path), qt.Qt.ToolTipRole)
        index = combo.findData(select) if select else -1
        combo.setCurrentIndex(index if index >= 0 else 0)
        combo.blockSignals(was_blocked)
        self.on_model_changed()

    def current_model_dir(self) -> str:
        combo = self.ui.modelComboBox
        data = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else None
        return str(data) if data else ""

    def on_model_changed(self, *_: Any) -> None:
        folder = self.current_model_dir()
        info = next((m for m in self.models.models() if str(m.path) == folder), None)
        if info is None:
            self.ui.modelInfoLabel.setText("No model: add a model package folder (model.json + weights).")
        else:
            names = ", ".join(lab.name for lab in info.labels)
            self.ui.modelInfoLabel.setText(f"{info.description}\n{len(info.labels)} structures: {names}".strip())
            _set_settings_value("lastModel", folder)
        self._update_buttons()

    def on_add_model(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self, "Choose a model package folder (with model.json)")
        if not folder:
            return
        try:
            info = self.models.add(folder)
        except DVCLModuleError as exc:
            self._report_error("Not a model package", str(exc))
            return
        _set_settings_value("models", self.models.to_json())
        self.refresh_models(str(info.path))

    def on_segment(self) -> None:
        if not self._require_backend():
            return
        params = SegmentationParameters(model_dir=self.current_model_dir(),
                                        device=self._parameter_node.segment_device, tta=self._parameter_node.tta)
        self.ui.segmentProgressBar.setValue(0)
        try:
            self.segmentation_logic.start(self._parameter_node.input_volume, params,
                                          self._parameter_node.output_segmentation)
        except DVCLModuleError as exc:
            self._report_error("Cannot segment", str(exc))
        except Exception as exc:  # e.g. the backend could not be launched
            self._report_error("Cannot start dvcl", str(exc))
        self._update_buttons()

    def on_cancel_segment(self) -> None:
        self.segmentation_logic.cancel()

    def on_segmentation_finished(self, node: Any) -> None:
        self._parameter_node.output_segmentation = node
        self.ui.segmentStatusLabel.setText(f"Done: '{node.GetName()}'")
        self.ui.segmentProgressBar.setRange(0, 100)
        self.ui.segmentProgressBar.setValue(100)
        volume = self._parameter_node.input_volume
        if volume is not None and hasattr(slicer.util, "setSliceViewerLayers"):
            slicer.util.setSliceViewerLayers(background=volume)
        node.CreateClosedSurfaceRepresentation()
        self._update_buttons()

    def on_segmentation_cancelled(self) -> None:
        self.ui.segmentStatusLabel.setText("Cancelled; the scene was not changed")
        self.ui.segmentProgressBar.setValue(0)
        self._update_buttons()

    # -- Train tab ------------------------------------------------------------------------------------
    def training_parameters(self) -> TrainingParameters:
        p = self._parameter_node
        preset = p.train_preset
        if preset == DATASET_JSON_CHOICE:
            preset = self.ui.datasetJsonEdit.currentPath
        return TrainingParameters(
            data_dir=self.ui.dataFolderEdit.currentPath, unlabeled_dir=self.ui.unlabeledFolderEdit.currentPath,
            preset=preset, method=p.method, labeled_fraction=p.labeled_fraction, iterations=p.iterations,
            batch_labeled=p.batch_labeled, batch_unlabeled=p.batch_unlabeled,
            patch=(p.patch_z, p.patch_y, p.patch_x), run_dir=self.ui.runFolderEdit.currentPath,
            device=p.train_device, profile=p.profile)

    def on_profile_chosen(self, *_: Any) -> None:
        """Show the chosen profile's schedule; the user may still edit the numbers afterwards."""
        defaults = PROFILE_DEFAULTS.get(self.ui.profileComboBox.currentText)
        if defaults is None:
            return
        p = self._parameter_node
        p.iterations = defaults["iterations"]
        p.batch_labeled = defaults["batch_labeled"]
        p.batch_unlabeled = defaults["batch_unlabeled"]
        p.patch_z, p.patch_y, p.patch_x = defaults["patch"]

    def on_start_training(self, resume: bool = False) -> None:
        if not self._require_backend():
            return
        params = self.training_parameters()
        overwrite = False
        if not resume and params.run_exists():
            if not self._confirm(f"{params.run_dir} already holds a training run. Replace it?\n"
                                 "(Press Resume instead to continue it.)"):
                return
            overwrite = True
        try:
            self.training_logic.start(params, scene=slicer.mrmlScene, resume=resume, overwrite=overwrite)
        except DVCLModuleError as exc:
            self._report_error("Cannot train", str(exc))
        except Exception as exc:
            self._report_error("Cannot start dvcl", str(exc))
        self.ui.trainProgressBar.setValue(0)
        self._update_buttons()

    def on_stop_training(self) -> None:
        if self._confirm("Stop training? The last checkpoint is kept and the run can be resumed."):
            self.training_logic.cancel()

    def on_training_progress(self, info: ProgressInfo) -> None:
        self._show_progress(self.ui.trainProgressBar, info)
        eta = format_eta(info.eta_s)
        total = f"/{info.total}" if info.total else ""
        self.ui.trainStatusLabel.setText(f"Iteration {info.step}{total}" + (f", about {eta} left" if eta else ""))

    def on_training_metrics(self, event: dict) -> None:
        losses = ", ".join(f"{k} {float(v):.4g}" for k, v in (event.get("losses") or {}).items())
        dice = event.get("val_dice")
        text = f"it {event.get('iteration')}: {losses}" + (f" | val Dice {float(dice):.3f}" if dice is not None else "")
        self.append_log(text)
        self._update_buttons()

    def on_show_plot(self) -> None:
        curves = self.training_logic.curves
        if curves is None or curves.chart is None:
            return
        slicer.modules.plots.logic().ShowChartInLayout(curves.chart)

    def on_model_exported(self, info: Any) -> None:
        self.models.add(info.path)
        _set_settings_value("models", self.models.to_json())
        self.refresh_models(str(info.path))
        self.ui.trainStatusLabel.setText(f"Model '{info.name}' exported and added to the Segment tab")
        if self.show_dialogs:
            slicer.util.infoDisplay(f"Training finished. Model '{info.name}' is ready in the Segment tab:\n"
                                    f"{info.path}")

    # -- Evaluate tab ---------------------------------------------------------------------------------
    def on_evaluate(self) -> None:
        if not self._require_backend():
            return
        p = self._parameter_node
        params = EvaluationParameters(preset=p.eval_preset, out_dir=self.ui.evalOutputFolderEdit.currentPath)
        table = self.evaluation_logic.report.table_node if self.evaluation_logic.report else None
        if table is not None and table.GetScene() is None:
            table = None
        try:
            self.evaluation_logic.start(p.eval_prediction, p.eval_reference, params, slicer.mrmlScene,
                                        table_node=table, reference_volume=p.eval_volume)
        except DVCLModuleError as exc:
            self._report_error("Cannot evaluate", str(exc))
        except Exception as exc:
            self._report_error("Cannot start dvcl", str(exc))
        self._update_buttons()

    def on_evaluation_finished(self, report: EvaluationReport) -> None:
        self.ui.evaluationTableView.setMRMLTableNode(report.table_node)
        numbers = {k: v for k, v in report.summary.items()
                   if k.startswith("mean_") and not k.endswith("_sd") and isinstance(v, (int, float))}
        summary = ", ".join(f"{k[5:]} {v:.4g}" for k, v in numbers.items()) or json.dumps(report.summary)[:300]
        self.ui.evalSummaryLabel.setText(f"{summary}\nReport: {report.csv_path}")
        self._update_buttons()

    # -- Setup tab ------------------------------------------------------------------------------------
    def on_check_dependencies(self) -> None:
        statuses = self.install_logic.check()
        lines = [s.describe() for s in statuses]
        self.ui.dependencyStatusLabel.setText("\n".join(lines))
        self.append_log("; ".join(lines))

    def on_install_dependencies(self) -> None:
        try:
            with slicer.util.tryWithErrorDisplay("Installation failed", waitCursor=True):
                self.install_logic.install()
        finally:
            self.on_check_dependencies()

    def on_check_device(self) -> None:
        if not self._require_backend():
            return
        process = default_process()
        self._info_process = process
        self.ui.deviceInfoLabel.setText("Running dvcl info...")

        def done(result: ProcessResult) -> None:
            self._info_process = None
            if not result.ok:
                self.ui.deviceInfoLabel.setText(f"dvcl info failed: {result.error}")
                return
            try:
                self.ui.deviceInfoLabel.setText(device_message(parse_info(result.stdout)))
            except DVCLModuleError as exc:
                self.ui.deviceInfoLabel.setText(str(exc))

        process.finished.connect(done)
        try:
            process.start(InstallLogic.info_command())
        except Exception as exc:
            self._info_process = None
            self.ui.deviceInfoLabel.setText(f"Cannot start dvcl: {exc}")

