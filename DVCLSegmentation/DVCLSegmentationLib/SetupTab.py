"""The Setup tab: what is installed, installing it (also offered on the first Segment/Train/Evaluate), the GPU.

After an installation the panel refreshes its catalogue-backed lists and the model list in place
(``on_installed``): no restart. The ``dvcl info`` report (GPU name and memory) is kept for the Train tab's
GPU-memory check; it runs in a child process, never importing torch into Slicer.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .Backend import DVCLModuleError
from .InstallLogic import InstallError, InstallLogic, device_message, parse_info
from .Process import ProcessProtocol, ProcessResult, default_process
from .TabBase import PanelHost, Tab


class SetupTab(Tab):
    """Binds the Setup page to an :class:`InstallLogic`.

    Args:
        on_installed: called after a successful installation (the panel refreshes every list).
        process_factory: runs ``dvcl info``.
    """

    def __init__(self, ui: Any, host: PanelHost, install_logic: InstallLogic,
                 on_installed: Callable[[], None] = lambda: None,
                 process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        super().__init__(ui, host)
        self.install_logic = install_logic
        self.on_installed = on_installed
        self._process_factory = process_factory
        self._info_process: Optional[ProcessProtocol] = None
        self.info: Optional[dict] = None
        ui.checkDependenciesButton.clicked.connect(self.on_check_dependencies)
        ui.installDependenciesButton.clicked.connect(lambda *_: self.install(training=True))
        ui.checkDeviceButton.clicked.connect(self.on_check_device)

    def on_check_dependencies(self) -> None:
        lines = [s.describe() for s in self.install_logic.check()]
        self.ui.dependencyStatusLabel.setText("\n".join(lines))
        self.host.append_log("; ".join(lines))

    def install(self, training: bool = False) -> bool:
        """Install what is missing (after the confirmation InstallLogic asks); True when ready afterwards."""
        try:
            self.install_logic.install(training)
        except InstallError as exc:
            self.host.report_error("Installation failed", str(exc))
            return False
        except Exception as exc:  # pip failed: keep its message
            self.host.report_error("Installation failed", f"{type(exc).__name__}: {exc}")
            return False
        finally:
            self.on_check_dependencies()
        self.on_installed()
        return True

    def ensure(self, training: bool = False) -> bool:
        """True when the backend is ready; otherwise offer to install it now (first run)."""
        if self.install_logic.is_ready(training):
            return True
        self.host.append_log("The DVCL backend is not installed (or not this extension's version): installing")
        return self.install(training)

    def on_check_device(self) -> None:
        if not self.ensure(False):
            return
        process = self._process_factory()
        self._info_process = process
        self.ui.deviceInfoLabel.setText("Running dvcl info...")
        process.finished.connect(self._on_info)
        try:
            process.start(InstallLogic.info_command())
        except Exception as exc:
            self._info_process = None
            self.ui.deviceInfoLabel.setText(f"Cannot start dvcl: {exc}")

    def _on_info(self, result: ProcessResult) -> None:
        self._info_process = None
        if not result.ok:
            self.ui.deviceInfoLabel.setText(f"dvcl info failed: {result.error}")
            return
        try:
            self.info = parse_info(result.stdout)
            self.ui.deviceInfoLabel.setText(device_message(self.info))
        except DVCLModuleError as exc:
            self.ui.deviceInfoLabel.setText(str(exc))

    def device_info(self, timeout: float = 120.0) -> Optional[dict]:
        """The ``dvcl info`` report, run now (blocking, seconds) when Check device was not pressed yet."""
        if self.info is None and self.install_logic.is_ready():
            process = self._process_factory()
            process.finished.connect(self._on_info)
            try:
                process.start(InstallLogic.info_command())
                process.wait(timeout)
            except Exception as exc:
                self.host.append_log(f"dvcl info failed: {exc}")
        return self.info

    def cleanup(self) -> None:
        if self._info_process is not None:
            self._info_process.cancel()
