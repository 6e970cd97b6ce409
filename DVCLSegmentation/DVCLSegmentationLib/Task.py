"""What every logic that drives one ``dvcl`` process at a time shares (segmentation, training, evaluation).

The signals the widget listens to, the process factory (Qt in Slicer, subprocess in tests), "is one running",
launching a process with its progress and log forwarded, undoing a start that failed (:meth:`BackendTask._starting`),
and cancelling it. Each logic adds its own inputs, outputs and follow-up steps. :class:`TrainingRunTask` adds what
the two training runs (``dvcl train``, ``dvcl adapt``) share: Stop at an iteration boundary, metrics, the model the
run made.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Optional

from .Backend import DVCLModuleError, ModelInfo, read_model_info
from .Process import ProcessProtocol, ProcessResult, ProgressInfo, default_process
from .Signal import Signal

log = logging.getLogger(__name__)

#: the signals of a process (:class:`ProcessProtocol`) that a logic connects to
PROCESS_SIGNALS = ("started", "progress", "log", "metrics", "output", "error_occurred", "finished")

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

    @contextlib.contextmanager
    def _starting(self, *undo: Callable[[], Any]) -> Iterator[None]:
        """Around everything a start sets up, up to and including ``process.start(...)``.

        When anything in it raises (bad input found while exporting, the backend cannot be launched), the start is
        undone before the exception goes on to the caller: the process made by :meth:`_new_process` is dropped and
        its signals disconnected (nothing of it can reach the logic any more), a stop-request file is removed (it
        must not stop the next run), and each of ``undo`` runs (temporary folders, state flags), in order, even if
        one of them fails. Nothing is emitted: the caller gets the exception.
        """
        try:
            yield
        except BaseException:
            self._discard_process()
            self._remove_stop_file()
            for step in undo:
                try:
                    step()
                except Exception:  # the start's own error is the one to report
                    log.exception("undoing a failed start: %r failed", step)
            raise

    def _discard_process(self) -> None:
        process, self._process = self._process, None
        for name in PROCESS_SIGNALS if process is not None else ():
            signal = getattr(process, name, None)
            if signal is not None:
                signal.disconnect()

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


#: states of a training run's logic besides the logic's own (``"training"``, ``"adapting"``, ``"exporting"``)
IDLE, STOPPING = "idle", "stopping"
#: the trainer's progress task: its steps are iterations (``dvcl adapt`` first has a ``prepare`` task)
TRAIN_TASK = "train"


class TrainingRunTask(BackendTask):
    """What the logics of the two training runs share (``dvcl train`` + export, ``dvcl adapt``).

    One run at a time, in a ``state`` (``IDLE`` when none runs); ``params`` are the last run's. Stop writes the
    run's stop-request file and waits for the checkpoint (:meth:`_stop_at_iteration`); the run's end is turned into
    ``cancelled``/``error_occurred`` and ``finished`` (:meth:`_run_ended`), its model into ``model_exported``
    (:meth:`_publish_model`).

    Signals (besides :class:`BackendTask`'s):
        metrics(dict)                  forwarded from the run
        model_exported(ModelInfo)      the run's model is ready to segment with
        stopping()                     Stop was pressed (``stop_message`` says what happens now)
        finished(ModelInfo | None)     the whole job is over (None: no model)
    """

    #: refusal of a second start while one runs
    busy_message: ClassVar[str] = "a run is already in progress: stop it first"

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        super().__init__(process_factory)
        self.metrics = Signal("metrics")
        self.model_exported = Signal("model_exported")
        self.stopping = Signal("stopping")
        self.state = IDLE
        self.params: Any = None
        self.last_progress: Optional[ProgressInfo] = None
        #: what the last Stop is doing (shown by the panel while the run ends)
        self.stop_message = STOPPING_MESSAGE

    @property
    def running(self) -> bool:
        return self.state != IDLE

    def model_path(self) -> Optional[Path]:
        """Where the run's model package is written (``params``'); None before the first start."""
        return None

    def stopped_iteration(self) -> Optional[int]:
        """The last iteration the trainer reported (where a stopped run stopped); None before training began."""
        info = self.last_progress
        return info.step if info is not None and info.task == TRAIN_TASK else None

    def _check_idle(self) -> None:
        if self.running:
            raise DVCLModuleError(self.busy_message)

    def _start_run(self, params: Any, args: Any, state: str, message: str,
                   on_finished: Callable[[ProcessResult], None], *undo: Callable[[], Any]) -> None:
        """Start the run's process in ``state``; returns at once. A stop request left by an earlier run is removed
        first, progress (``last_progress``) and metrics are forwarded. When the process cannot start, the logic is
        idle again, ``undo`` has run and the exception is raised (:meth:`BackendTask._starting`)."""
        self.params = params
        self._remove_stop_file()  # a leftover request must not stop the new run
        self.last_progress = None
        process = self._new_process(on_finished, self._on_progress)
        process.started.connect(self._on_started)
        process.metrics.connect(self._on_metrics)
        self.state = state
        self.log.emit(message)
        with self._starting(self._to_idle, *undo):
            process.start(args)

    def _to_idle(self) -> None:
        self.state = IDLE

    def _stop_at_iteration(self) -> None:
        """Ask the run to save and stop at the next iteration boundary (its stop-request file)."""
        self._request_stop()
        self._announce_stopping(STOPPING_MESSAGE)

    def _announce_stopping(self, message: str) -> None:
        self.state = STOPPING
        self.stop_message = message
        self.log.emit(message)
        self.stopping.emit()

    def cancel(self) -> None:
        """Same as ``stop`` (the module calls it when it closes): a run is never thrown away silently."""
        self.stop()

    def stop(self) -> None:  # pragma: no cover - each run says what its Stop does
        raise NotImplementedError

    def _on_started(self, task: str, total: Optional[int] = None) -> None:
        """A ``start`` event of the run's process (a stage begins)."""

    def _on_progress(self, info: ProgressInfo) -> None:
        self.last_progress = info
        self.progress.emit(info)

    def _on_metrics(self, event: dict) -> None:
        self.metrics.emit(event)

    def _run_ended(self, result: ProcessResult, stopped_message: Optional[str], failure: str,
                   error_prefix: str = "") -> bool:
        """The run's process has ended: True when it succeeded (the caller goes on, still in its state); else the
        logic is idle and ``cancelled`` (after logging ``stopped_message``, if any) or ``error_occurred``
        (``error_prefix`` + the process's error, else ``failure``) and ``finished(None)`` have been emitted."""
        self._process = None
        self._remove_stop_file()
        if result.ok:
            return True
        self.state = IDLE
        if result.cancelled:
            if stopped_message:
                self.log.emit(stopped_message)
            self.cancelled.emit()
        else:
            self.error_occurred.emit(error_prefix + (result.error or failure))
        self.finished.emit(None)
        return False

    def _publish_model(self, unreadable: str, ready: Callable[[ModelInfo], str]) -> None:
        """The run's model package is written: read it, then ``model_exported`` and ``finished`` with it (or
        ``error_occurred`` starting with ``unreadable`` and ``finished(None)`` when it cannot be read)."""
        self.state = IDLE
        try:
            info = read_model_info(self.model_path())
        except DVCLModuleError as exc:
            self.error_occurred.emit(f"{unreadable}{exc}")
            self.finished.emit(None)
            return
        self.log.emit(ready(info))
        self.model_exported.emit(info)
        self.finished.emit(info)

    def wait(self, timeout: Optional[float] = None) -> Optional[ModelInfo]:
        """Block until the run and what follows it are over (scripts/tests); returns its model or None."""
        while self._process is not None:
            process = self._process
            process.wait(timeout)
            if self._process is process:  # the finished handler did not start a follow-up
                break
        if self.state != IDLE or self.params is None:
            return None
        try:
            return read_model_info(self.model_path())
        except DVCLModuleError:
            return None
