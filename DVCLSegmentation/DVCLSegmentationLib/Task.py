"""What every logic that drives one ``dvcl`` process at a time shares (segmentation, training, evaluation).

The signals the widget listens to, the process factory (Qt in Slicer, subprocess in tests), "is one running",
launching a process with its progress and log forwarded, and cancelling it. Each logic adds its own inputs,
outputs and follow-up steps.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Optional

from .Process import ProcessProtocol, ProcessResult, ProgressInfo, default_process
from .Signal import Signal

#: what Stop says while a training run (``dvcl train``, ``dvcl adapt``) finishes its iteration and saves
STOPPING_MESSAGE = "Stopping: saving a checkpoint at the end of the current iteration (Force stop ends it now)"


class BackendTask:
    """Base of the logic classes. Signals: progress(ProgressInfo), log(str), finished, error_occurred(str),
    cancelled()."""

    #: logged when the user cancels (None: nothing)
    cancel_message: ClassVar[Optional[str]] = None

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        self.progress = Signal("progress")
        self.log = Signal("log")
        self.finished = Signal("finished")
        self.error_occurred = Signal("error_occurred")
        self.cancelled = Signal("cancelled")
        self._process_factory = process_factory
        self._process: Optional[ProcessProtocol] = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def _new_process(self, on_finished: Callable[[ProcessResult], None],
                     on_progress: Optional[Callable[[ProgressInfo], None]] = None) -> ProcessProtocol:
        """A fresh process with progress and log forwarded, held as the running one (not started yet)."""
        process = self._process_factory()
        process.progress.connect(on_progress or self.progress.emit)
        process.log.connect(self.log.emit)
        process.finished.connect(on_finished)
        self._process = process
        return process

    def cancel(self) -> None:
        """Stop the running process tree (SIGTERM, then kill); ``cancelled`` is emitted when it has ended."""
        if self._process is not None:
            if self.cancel_message:
                self.log.emit(self.cancel_message)
            self._process.cancel()
