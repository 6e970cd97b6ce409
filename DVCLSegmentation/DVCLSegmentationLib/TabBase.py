"""What the four tab classes share: the host (panel) they report to, and Qt access that works in both Qts.

Each tab (``SegmentTab``, ``TrainTab``, ``EvaluateTab``, ``SetupTab``) binds the widgets of its page of
``DVCLSegmentation.ui`` to its logic. None imports ``qt`` or Slicer's GUI: what needs the application (message
boxes, file dialogs, slice views, settings) goes through the :class:`PanelHost` the panel implements, so the
tabs run with the real .ui loaded by PySide6 in tests, with the real logic and MRML scene.

Qt properties are attributes in Slicer's PythonQt (``combo.currentText``) and methods in PySide6
(``combo.currentText()``): :func:`prop` reads both.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

from .Backend import format_eta
from .Process import ProgressInfo


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
