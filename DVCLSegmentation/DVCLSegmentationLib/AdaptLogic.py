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

from .Backend import dvcl_command
from .Parameter import AdaptParameters
from .Process import ProcessProtocol, ProcessResult, ProgressInfo, default_process
from .Task import IDLE, STOPPING, TRAIN_TASK, TrainingRunTask

ADAPTING = "adapting"
__all__ = ["ADAPTING", "IDLE", "STOPPING", "STOPPED_MESSAGE", "STOPPING_PREPARE_MESSAGE", "TRAIN_TASK", "AdaptLogic"]
STOPPING_PREPARE_MESSAGE = "Stopping: ending the preparation (the scans prepared so far are kept)"
STOPPED_MESSAGE = "press Start (Resume) with the same settings to continue from the last checkpoint"


class AdaptLogic(TrainingRunTask):
    """Runs one ``dvcl adapt`` at a time.

    Signals:
        progress(ProgressInfo), log(str), metrics(dict)   forwarded from ``dvcl adapt``
        model_exported(ModelInfo)                         the adapted model is ready to segment with
        finished(ModelInfo | None)                        the run is over (None: stopped or failed)
        stopping()                                        Stop was pressed
        error_occurred(str), cancelled()
    """

    busy_message = "an adaptation is already running: stop it first"
    force_stop_message = "Force stop: ending the adaptation now; it resumes from its last saved checkpoint"

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        super().__init__(process_factory)
        self.params: Optional[AdaptParameters] = None
        #: the run has reached training (before: preparing the scans, nothing to save on Stop)
        self.training = False

    def model_path(self) -> Optional[Path]:
        return self.params.out_path() if self.params is not None else None

    def start(self, params: AdaptParameters, overwrite: bool = False) -> None:
        """Start (or, with the settings of a stopped run, resume) ``dvcl adapt``; returns at once.

        Args:
            overwrite: replace an existing output and start over (ask the user first).
        """
        self._check_idle()
        args = dvcl_command(params.cli_args(overwrite=overwrite))
        resume = params.resumable() and not overwrite
        self.training = False
        self._start_run(params, args, ADAPTING, ("Resuming" if resume else "Starting") + f" the adaptation of "
                        f"{params.model_dir} into {params.out_dir}", self._on_finished)

    def stop_file(self) -> Optional[Path]:
        return self.params.stop_file() if self.params is not None else None

    def stop(self) -> None:
        """Ask the run to save and stop at the next iteration boundary; ``cancelled`` follows when it has."""
        if self.state != ADAPTING or self._process is None:
            return
        if not self.training:  # preparing: nothing polls the stop file and there is no checkpoint to wait for
            self._announce_stopping(STOPPING_PREPARE_MESSAGE)
            self._process.cancel()
            return
        self._stop_at_iteration()

    def _on_started(self, task: str, total: Optional[int] = None) -> None:
        if task == TRAIN_TASK:
            self.training = True

    def _on_progress(self, info: ProgressInfo) -> None:
        if info.task == TRAIN_TASK:
            self.training = True
        super()._on_progress(info)

    def _on_metrics(self, event: dict) -> None:
        self.training = True
        super()._on_metrics(event)

    def _on_finished(self, result: ProcessResult) -> None:
        step = self.stopped_iteration()
        where = f" at iteration {step}" if step is not None else ""
        if self._run_ended(result, f"Adaptation stopped{where}; {STOPPED_MESSAGE}", "adaptation failed"):
            self._publish_model("the adaptation ended but its model cannot be read: ", lambda info: (
                f"Adapted model '{info.name}' ready: {info.path} (scores on the scans used for the adaptation "
                "are transductive)"))
