"""What the four tab classes share: the host (panel) they report to, and Qt access that works in both Qts.

:class:`TrainingRunTab` is what the Train tab and its "Adapt a model to your scans" section share: the buttons,
status line and progress bar of a training run that Stop saves and Force stop ends.

Each tab (``SegmentTab``, ``TrainTab``, ``EvaluateTab``, ``SetupTab``) binds the widgets of its page of
``DVCLSegmentation.ui`` to its logic. None imports ``qt`` or Slicer's GUI: what needs the application (message
boxes, file dialogs, slice views, settings) goes through the :class:`PanelHost` the panel implements, so the
tabs run with the real .ui loaded by PySide6 in tests, with the real logic and MRML scene.

Qt properties are attributes in Slicer's PythonQt (``combo.currentText``) and methods in PySide6
(``combo.currentText()``): :func:`prop` reads both.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Iterable, NamedTuple, Optional

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

from .Backend import DVCLModuleError, format_eta
from .Process import ProgressInfo
from .Task import STOPPING, TrainingRunTask


def prop(widget: Any, name: str) -> Any:
    """A Qt property's value: an attribute under PythonQt, a getter method under PySide6."""
    value = getattr(widget, name)
    return value() if callable(value) else value


def set_items(combo: Any, items: Iterable[str], select: str = "") -> None:
    """Replace a combo box's items without emitting change signals; select ``select`` (else the first)."""
    was_blocked = combo.blockSignals(True)
    try:
        combo.clear()
        for item in items:
            combo.addItem(str(item))
        index = combo.findText(select) if select else -1
        combo.setCurrentIndex(index if index >= 0 else 0)
    finally:
        combo.blockSignals(was_blocked)


def show_progress(bar: Any, info: ProgressInfo) -> None:
    """A progress bar for one ``progress`` event: percent and ETA, or a busy bar when the total is unknown."""
    fraction = info.fraction
    if fraction is None:
        bar.setRange(0, 0)
    else:
        bar.setRange(0, 100)
        bar.setValue(int(round(100 * fraction)))
    eta = format_eta(info.eta_s)
    bar.setFormat(f"{info.message or info.task} %p%" + (f"  (ETA {eta})" if eta else ""))


#: what the progress events' tasks of a training run are called in its status line (else the event's message)
RUN_TASK_NAMES = {"prepare": "Preparing the scans", "train": "Iteration", "export": "Exporting the model"}


def progress_status(info: ProgressInfo, name: str = "Iteration") -> str:
    """The status line of a long run: ``Iteration 120/1000, about 5 min left``."""
    eta = format_eta(info.eta_s)
    total = f"/{info.total}" if info.total else ""
    return f"{name} {info.step}{total}" + (f", about {eta} left" if eta else "")


def stopped_status(step: Optional[int]) -> str:
    """The status line after Stop: where the run stopped and how to continue it."""
    where = f" at iteration {step}" if step is not None else ""
    return f"Stopped{where}; press Resume to continue from the last checkpoint"


class PanelHost(Protocol):
    """What the tabs ask of the panel (``Widget``; a PySide6 host in the tests).

    Attributes:
        params: the scene's parameter node wrapper (nodes, devices, numbers bound to widgets).
        scene: the MRML scene.
    """

    params: Any
    scene: Any

    def append_log(self, line: str) -> None: ...

    def confirm(self, message: str) -> bool: ...

    def report_error(self, title: str, message: str) -> None: ...

    def inform(self, message: str) -> None: ...

    def settings_value(self, key: str, default: str = "") -> str: ...

    def set_settings_value(self, key: str, value: str) -> None: ...

    def show_tab(self, name: str) -> None: ...

    def ensure_backend(self, training: bool = False) -> bool: ...

    def device_info(self) -> Optional[dict]: ...

    def choose_folder(self, title: str) -> str: ...

    def show_segmentation(self, volume: Any, segmentation: Any, overlay: Any = None) -> None: ...

    def show_chart(self, chart: Any) -> None: ...

    def model_added(self, info: Any) -> None: ...


class Tab:
    """Base of the tab classes: the widgets (``ui``) and the host; subclasses connect and refresh."""

    def __init__(self, ui: Any, host: PanelHost) -> None:
        self.ui = ui
        self.host = host

    def refresh_catalogue(self) -> None:
        """Re-read the backend's lists (after an installation); default: nothing to refresh."""

    def update_buttons(self) -> None:
        """Enable what can be pressed now."""

    def cleanup(self) -> None:
        """The panel closes: stop what runs."""


class RunWidgets(NamedTuple):
    """Attribute names in ``ui`` of a training run's widgets."""

    status: str
    progress: str
    stop: str
    force_stop: str


class TrainingRunTab(Tab):
    """Binds the widgets of one training run (``dvcl train``, ``dvcl adapt``) to its :class:`TrainingRunTask`.

    Start (:meth:`_start`) says "Starting..."/"Resuming..." or why it could not; Stop asks the run to save and
    stop, Force stop (after a confirmation) ends it now; the status line follows the run's progress, its stop and
    its end; the model it made is handed to the host. Subclasses name their widgets and words, connect their own
    start buttons, and enable them in :meth:`update_start_buttons`.
    """

    widgets: ClassVar[RunWidgets]
    #: what Force stop ends, in its confirmation ("the training process")
    run_name: ClassVar[str]
    #: message box titles: the logic refused the settings; the run failed
    refused_title: ClassVar[str]
    failed_title: ClassVar[str]
    #: the status line when the run's model was added to the Segment tab (``{name}``: the model's)
    exported_status: ClassVar[str]
    #: progress task -> its name in the status line
    task_names: ClassVar[Dict[str, str]] = RUN_TASK_NAMES

    def __init__(self, ui: Any, host: PanelHost, logic: TrainingRunTask) -> None:
        super().__init__(ui, host)
        self.logic = logic
        getattr(ui, self.widgets.stop).clicked.connect(lambda *_: self.on_stop())
        getattr(ui, self.widgets.force_stop).clicked.connect(lambda *_: self.on_force_stop())
        logic.progress.connect(self.on_progress)
        logic.log.connect(host.append_log)
        logic.stopping.connect(self.on_stopping)
        logic.model_exported.connect(self.on_model_exported)
        logic.cancelled.connect(self.on_stopped)
        logic.finished.connect(lambda *_: self.update_buttons())
        logic.error_occurred.connect(self.on_error)

    @property
    def status_label(self) -> Any:
        return getattr(self.ui, self.widgets.status)

    @property
    def progress_bar(self) -> Any:
        return getattr(self.ui, self.widgets.progress)

    def _start(self, start: Callable[[], None], resume: bool) -> None:
        """Run ``start`` (the logic's start and what goes with it); report what stopped it."""
        try:
            start()
            self.status_label.setText("Resuming..." if resume else "Starting...")
        except DVCLModuleError as exc:
            self.host.report_error(self.refused_title, str(exc))
        except Exception as exc:  # e.g. the backend could not be launched
            self.host.report_error("Cannot start dvcl", str(exc))
        self.progress_bar.setValue(0)
        self.update_buttons()

    def on_stop(self) -> None:
        self.logic.stop()

    def on_force_stop(self) -> None:
        if self.host.confirm(f"Force stop ends {self.run_name} now: the iterations since the last saved checkpoint "
                             "are lost (Stop saves first). Force stop?"):
            self.logic.force_stop()

    def on_stopping(self) -> None:
        self.status_label.setText(self.logic.stop_message)
        self.update_buttons()

    def on_stopped(self) -> None:
        self.status_label.setText(stopped_status(self.logic.stopped_iteration()))
        self.update_buttons()

    def on_error(self, message: str) -> None:
        self.status_label.setText("Failed: " + message)
        self.host.report_error(self.failed_title, message)
        self.update_buttons()

    def on_progress(self, info: ProgressInfo) -> None:
        show_progress(self.progress_bar, info)
        if self.logic.state == STOPPING:
            return
        self.status_label.setText(progress_status(info, self.task_names.get(info.task, info.message or info.task)))

    def on_model_exported(self, info: Any) -> None:
        self.host.model_added(info)
        self.status_label.setText(self.exported_status.format(name=info.name))

    def update_buttons(self) -> None:
        ui, logic = self.ui, self.logic
        running = logic.running
        self.update_start_buttons(running)
        getattr(ui, self.widgets.stop).setEnabled(running and logic.state != STOPPING)
        getattr(ui, self.widgets.force_stop).setEnabled(running)

    def update_start_buttons(self, running: bool) -> None:
        """Enable (and name) the start buttons and what else depends on the run."""

    def cleanup(self) -> None:
        self.logic.stop()
