"""What every logic that drives one ``dvcl`` process at a time shares (segmentation, training, evaluation).

The signals the widget listens to, the process factory (Qt in Slicer, subprocess in tests), "is one running",
launching a process with its progress and log forwarded, and cancelling it. Each logic adds its own inputs,
outputs and follow-up steps.
"""

from __future__ import annotations

from pathlib import Path
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

    # -- training runs: stop at an iteration boundary through the trainer's stop-request file ------------------
    #: logged by :meth:`force_stop`
    force_stop_message: ClassVar[str] = "Force stop: ending the run now; it resumes from its last saved checkpoint"

    def stop_file(self) -> Optional[Path]:
        """The stop-request file the running trainer polls (``RUN_DIR/STOP``); None: this task has none."""
        return None

    def _remove_stop_file(self) -> None:
        """A leftover request must not stop the next run."""
        path = self.stop_file()
        if path is not None:
            try:
                path.unlink()
            except OSError:
                pass

    def _request_stop(self) -> None:
        """Write the stop-request file: the trainer saves at the next iteration boundary and exits. A file, not a
        signal, because inside Slicer the child is the launcher, which forwards none; SIGTERM only as the fallback."""
        path = self.stop_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("stop requested by the DVCLSegmentation module\n", encoding="utf-8")
        except OSError as exc:  # e.g. a read-only run folder: fall back to the signal
            self.log.emit(f"cannot write {path} ({exc}); sending SIGTERM instead")
            self._process.cancel(grace_s=None)

    def force_stop(self) -> None:
        """Kill the process tree now; the iterations since the last checkpoint are lost."""
        if self._process is not None:
            self.log.emit(self.force_stop_message)
            self._process.cancel(grace_s=0.0)
