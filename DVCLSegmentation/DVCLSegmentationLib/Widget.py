"""The module's panel: loads ``Resources/UI/DVCLSegmentation.ui``, builds one object per tab and hosts them.

Thin on purpose: each tab's bindings live in its own file (``SegmentTab``, ``TrainTab`` with ``AdaptSection``,
``EvaluateTab``, ``SetupTab``) and every decision that can be tested without a GUI lives in the logic modules. This
file is the :class:`~DVCLSegmentationLib.TabBase.PanelHost` the tabs talk to: dialogs, settings, slice views, the
shared log, and the refresh of every list after an installation.

Options that belong to the scene (nodes, devices, numbers, check boxes) are kept in a
``parameterNodeWrapper`` bound to the widgets through their ``SlicerParameterName`` property; the lists that
come from the backend's catalogue (methods, presets, profiles) are filled by the tabs and refreshed in place;
machine-specific things (folders, the model list, the last choices) are kept in QSettings.

Nothing here imports torch or MONAI: the lists come from the catalogue files (``Catalog.py``) and the models
from their folders (tests/slicer_module/test_first_run.py checks ``sys.modules``).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import qt
import slicer

from . import Catalog
from .AdaptLogic import AdaptLogic
from .AdaptSection import AdaptSection
from .Backend import find_backend_dir, resource_path
from .EvaluateTab import EvaluateTab
from .EvaluationLogic import EvaluationLogic
from .InstallLogic import InstallLogic
from .ModelRegistry import ModelRegistry
from .Parameter import DEVICES
from .SegmentationLogic import SegmentationLogic
from .SegmentTab import SegmentTab
from .SetupTab import SetupTab
from .TrainingLogic import TrainingLogic
from .TrainTab import TrainTab

try:  # Slicer >= 5.4; guarded so that a missing wrapper does not hide the panel's real error
    from typing import Annotated, Union

    from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
except ImportError:  # pragma: no cover - old Slicer, or outside Slicer
    parameterNodeWrapper = None

log = logging.getLogger(__name__)

MODULE_NAME = "DVCLSegmentation"
SETTINGS_PREFIX = "DVCLSegmentation/"

if parameterNodeWrapper is not None:

    @parameterNodeWrapper
    class DVCLSegmentationParameterNode:
        """What the panel saves with the scene (field names = ``SlicerParameterName`` in the .ui)."""

        input_volume: vtkMRMLScalarVolumeNode
        output_segmentation: vtkMRMLSegmentationNode
        segment_device: Annotated[str, Choice(list(DEVICES))] = "auto"
        tta: bool = False
        fast: bool = False
        uncertainty: bool = False
        show_3d: bool = True
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


#: ctkPathLineEdit widget -> QSettings key (folders are per machine, not per scene)
PATH_SETTINGS = {
    "dataFolderEdit": "dataDir",
    "unlabeledFolderEdit": "unlabeledDir",
    "datasetJsonEdit": "datasetJson",
    "runFolderEdit": "runDir",
    "evalOutputFolderEdit": "evalOutDir",
    "adaptLabeledFolderEdit": "adaptLabeledDir",
    "adaptUnlabeledFolderEdit": "adaptUnlabeledDir",
    "adaptOutputFolderEdit": "adaptOutDir",
}


class Widget(qt.QWidget):
    """The DVCLSegmentation panel (Segment / Train / Evaluate / Setup tabs and a shared log)."""

    def __init__(self, segmentation_logic: Optional[SegmentationLogic] = None,
                 training_logic: Optional[TrainingLogic] = None,
                 evaluation_logic: Optional[EvaluationLogic] = None,
                 install_logic: Optional[InstallLogic] = None,
                 adapt_logic: Optional[AdaptLogic] = None,
                 show_dialogs: bool = True, parent: Any = None) -> None:
        super().__init__(parent)
        if parameterNodeWrapper is None:
            raise RuntimeError("DVCLSegmentation needs Slicer 5.4 or newer (slicer.parameterNodeWrapper)")
        self.show_dialogs = show_dialogs
        self.params = None
        self._gui_tag = None
        self._scene_observers = []

        layout = qt.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        ui_widget = slicer.util.loadUI(str(resource_path("UI", f"{MODULE_NAME}.ui")))
        layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        for name, key in PATH_SETTINGS.items():
            getattr(self.ui, name).currentPath = self.settings_value(key)
            getattr(self.ui, name).currentPathChanged.connect(lambda path, k=key: self.set_settings_value(k, path))

        install = install_logic or InstallLogic(confirm=self.confirm)
        install.log = self.append_log
        models = ModelRegistry.from_json(self.settings_value("models"))
        self.setup_tab = SetupTab(self.ui, self, install, on_installed=self.refresh_after_install)
        self.segment_tab = SegmentTab(self.ui, self, segmentation_logic or SegmentationLogic(), models,
                                      backend_ready=install.is_ready)
        self.train_tab = TrainTab(self.ui, self, training_logic or TrainingLogic())
        # the Train tab's "Adapt a model to your scans" section: the Segment tab's models, kept in step with it
        self.adapt_section = AdaptSection(self.ui, self, adapt_logic or AdaptLogic(), models)
        self.segment_tab.models_changed.connect(self.adapt_section.refresh_models)
        self.evaluate_tab = EvaluateTab(self.ui, self, evaluation_logic or EvaluationLogic())
        self.tabs = [self.segment_tab, self.train_tab, self.adapt_section, self.evaluate_tab, self.setup_tab]

        self._set_parameter_node()
        for tab in self.tabs:
            tab.refresh_catalogue()
        self.ui.backendFolderLabel.setText(str(find_backend_dir() or "not found (set DVCL_BACKEND_DIR)"))
        self._scene_observers = [
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self._on_scene_start_close),
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndCloseEvent, self._on_scene_end_close),
        ]
        for tab in self.tabs:
            tab.update_buttons()

    # -- PanelHost ------------------------------------------------------------------------------------
    @property
    def scene(self) -> Any:
        return slicer.mrmlScene

    def append_log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(str(line))

    def confirm(self, message: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(message) if self.show_dialogs else True

    def report_error(self, title: str, message: str) -> None:
        self.append_log(f"ERROR: {title}: {message}")
        if self.show_dialogs:
            slicer.util.errorDisplay(f"{title}:\n{message}")

    def inform(self, message: str) -> None:
        self.append_log(message)
        if self.show_dialogs:
            slicer.util.infoDisplay(message)

    def settings_value(self, key: str, default: str = "") -> str:
        value = qt.QSettings().value(SETTINGS_PREFIX + key, default)
        return "" if value is None else str(value)

    def set_settings_value(self, key: str, value: str) -> None:
        qt.QSettings().setValue(SETTINGS_PREFIX + key, value)

    def show_tab(self, name: str) -> None:
        self.ui.tabWidget.setCurrentWidget(getattr(self.ui, name))

    def ensure_backend(self, training: bool = False) -> bool:
        ready = False
        with slicer.util.tryWithErrorDisplay("Installation failed", waitCursor=True):
            ready = self.setup_tab.ensure(training)
        if not ready:
            self.show_tab("setupTab")
        return ready

    def device_info(self) -> Optional[dict]:
        return self.setup_tab.device_info()

    def choose_folder(self, title: str) -> str:
        return str(qt.QFileDialog.getExistingDirectory(self, title) or "")

    def show_segmentation(self, volume: Any, segmentation: Any, overlay: Any = None) -> None:
        if volume is not None:
            if overlay is not None:
                slicer.util.setSliceViewerLayers(background=volume, foreground=overlay, foregroundOpacity=0.5)
            else:
                slicer.util.setSliceViewerLayers(background=volume)

    def show_chart(self, chart: Any) -> None:
        slicer.modules.plots.logic().ShowChartInLayout(chart)

    def model_added(self, info: Any) -> None:
        self.segment_tab.add_model_package(info)
        self.inform(f"Model '{info.name}' is ready in the Segment tab:\n{info.path}")

    def refresh_after_install(self) -> None:
        """The backend was (re)installed: re-read the catalogue and the models, no restart needed."""
        Catalog.reload()
        for tab in self.tabs:
            tab.refresh_catalogue()
            tab.update_buttons()
        self.append_log("Backend ready: model, method and preset lists refreshed")

    # -- scene ----------------------------------------------------------------------------------------
    def _set_parameter_node(self) -> None:
        if self._gui_tag is not None and self.params is not None:
            self.params.disconnectGui(self._gui_tag)
        node = slicer.mrmlScene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:  # as ScriptedLoadableModuleLogic.getParameterNode does it
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(MODULE_NAME))
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = slicer.mrmlScene.AddNode(node)
        self.params = DVCLSegmentationParameterNode(node)
        if self.params.input_volume is None:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            scalar = [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")]
            self.params.input_volume = scalar[0] if scalar else None
        self._gui_tag = self.params.connectGui(self.ui)

    def cleanup(self) -> None:
        """Called when the module is closed or reloaded: stop child processes and detach observers."""
        for tab in self.tabs:
            tab.cleanup()
        for tag in self._scene_observers:
            slicer.mrmlScene.RemoveObserver(tag)
        self._scene_observers = []
        if self.params is not None and self._gui_tag is not None:
            self.params.disconnectGui(self._gui_tag)
            self._gui_tag = None

    def _on_scene_start_close(self, caller: Any, event: Any) -> None:
        # the volume being segmented is about to disappear; training does not depend on the scene
        self.segment_tab.cleanup()
        self.evaluate_tab.cleanup()

    def _on_scene_end_close(self, caller: Any, event: Any) -> None:
        self._set_parameter_node()
