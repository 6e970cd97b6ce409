"""Site adaptation from the GUI: ``dvcl adapt`` fine-tunes a model on the user's unlabeled scans into a new model.

One child process does everything (prepare the scans with the model's preprocessing, DVCL training from the
model's weights, export with a model card); the logic forwards its progress and log, and on success reads the
new package and announces it through ``model_exported`` so the Segment tab lists it.

Stop during training writes the run's stop-request file (``<work>/run/STOP``, see
:meth:`AdaptParameters.stop_file`): the trainer saves its checkpoint at the next iteration boundary and exits,
and pressing Start again with the same settings resumes (``dvcl adapt`` continues its own work folder). Before
training has started (preparing the scans) there is no checkpoint to wait for and nothing polls the file, so
Stop ends the process tree (the prepared cases are kept and reused). Force stop kills the tree at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from .Backend import DVCLModuleError, ModelInfo, dvcl_command, read_model_info
from .Parameter import AdaptParameters
from .Process import ProcessProtocol, ProcessResult, ProgressInfo, default_process
from .Signal import Signal
from .Task import STOPPING_MESSAGE, BackendTask

IDLE, ADAPTING, STOPPING = "idle", "adapting", "stopping"
#: the trainer's progress task: from its first event on, the run has a checkpoint to save on Stop
TRAIN_TASK = "train"
STOPPING_PREPARE_MESSAGE = "Stopping: ending the preparation (the scans prepared so far are kept)"
STOPPED_MESSAGE = "press Start (Resume) with the same settings to continue from the last checkpoint"


class AdaptLogic(BackendTask):
    """Runs one ``dvcl adapt`` at a time.

    Signals:
        progress(ProgressInfo), log(str), metrics(dict)   forwarded from ``dvcl adapt``
        model_exported(ModelInfo)                         the adapted model is ready to segment with
        finished(ModelInfo | None)                        the run is over (None: stopped or failed)
        stopping()                                        Stop was pressed
        error_occurred(str), cancelled()
    """

    force_stop_message = "Force stop: ending the adaptation now; it resumes from its last saved checkpoint"

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        super().__init__(process_factory)
        self.metrics = Signal("metrics")
        self.model_exported = Signal("model_exported")
        self.stopping = Signal("stopping")
        self.state = IDLE
        self.params: Optional[AdaptParameters] = None
        self.training = False
        self.last_progress: Optional[ProgressInfo] = None
        #: what the last Stop is doing (shown by the panel while the run ends)
        self.stop_message = STOPPING_MESSAGE

    @property
    def running(self) -> bool:
        return self.state != IDLE

    def start(self, params: AdaptParameters, overwrite: bool = False) -> None:
        """Start (or, with the settings of a stopped run, resume) ``dvcl adapt``; returns at once.

        Args:
            overwrite: replace an existing output and start over (ask the user first).
        """
        if self.running:
            raise DVCLModuleError("an adaptation is already running: stop it first")
        args = dvcl_command(params.cli_args(overwrite=overwrite))
        resume = params.resumable() and not overwrite
        self.params = params
        self._remove_stop_file()  # a leftover request must not stop the new run
        self.training = False
        self.last_progress = None
        process = self._new_process(self._on_finished, self._on_progress)
        process.started.connect(self._on_started)
        process.metrics.connect(self._on_metrics)
        self.state = ADAPTING
        self.log.emit(("Resuming" if resume else "Starting") + f" the adaptation of {params.model_dir} into "
                      f"{params.out_dir}")
        try:
            process.start(args)
        except BaseException:
            self.state = IDLE
            self._process = None
            raise

    def stop_file(self) -> Optional[Path]:
        return self.params.stop_file() if self.params is not None else None

    def stop(self) -> None:
        """Ask the run to save and stop at the next iteration boundary; ``cancelled`` follows when it has."""
        if self.state != ADAPTING or self._process is None:
            return
        if not self.training:  # preparing: nothing polls the stop file and there is no checkpoint to wait for
            self.state = STOPPING
            self.stop_message = STOPPING_PREPARE_MESSAGE
            self.log.emit(self.stop_message)
            self.stopping.emit()
            self._process.cancel()
            return
        self._request_stop()
        self.state = STOPPING
        self.stop_message = STOPPING_MESSAGE
        self.log.emit(self.stop_message)
        self.stopping.emit()

    def cancel(self) -> None:
        """Same as :meth:`stop` (the module calls it when it closes): a run is never thrown away silently."""
        self.stop()

    def _on_started(self, task: str, total: Optional[int] = None) -> None:
        if task == TRAIN_TASK:
            self.training = True

    def _on_progress(self, info: ProgressInfo) -> None:
        if info.task == TRAIN_TASK:
            self.training = True
        self.last_progress = info
        self.progress.emit(info)

    def _on_metrics(self, event: dict) -> None:
        self.training = True
        self.metrics.emit(event)

    def wait(self, timeout: Optional[float] = None) -> Optional[ModelInfo]:
        """Block until the run is over (scripts/tests); returns the adapted model or None."""
        process = self._process
        if process is not None:
            process.wait(timeout)
        if self.state != IDLE or self.params is None:
            return None
        try:
            return read_model_info(self.params.out_path())
        except DVCLModuleError:
            return None

    def _on_finished(self, result: ProcessResult) -> None:
        self._process = None
        self._remove_stop_file()
        self.state = IDLE
        if result.cancelled:
            info = self.last_progress
            where = f" at iteration {info.step}" if info is not None and info.task == TRAIN_TASK else ""
            self.log.emit(f"Adaptation stopped{where}; {STOPPED_MESSAGE}")
            self.cancelled.emit()
            self.finished.emit(None)
            return
        if not result.ok:
            self.error_occurred.emit(result.error or "adaptation failed")
            self.finished.emit(None)
            return
        try:
            info = read_model_info(self.params.out_path())
        except DVCLModuleError as exc:
            self.error_occurred.emit(f"the adaptation ended but its model cannot be read: {exc}")
            self.finished.emit(None)
            return
        self.log.emit(f"Adapted model '{info.name}' ready: {info.path} (scores on the scans used for the adaptation "
                      "are transductive)")
        self.model_exported.emit(info)
        self.finished.emit(info)
