"""Semi-supervised training from the GUI: ``dvcl train`` then ``dvcl export``, with a live plot.

Training takes hours to days, so it runs in a child process like everything else; the logic turns its
``metrics`` events into plot rows (``SceneBridge.TrainingCurves``) and its ``progress`` events into a
progress bar and an ETA.

Stop writes the run's stop-request file (``RUN_DIR/STOP``, polled by the trainer every iteration) and waits,
however long the current iteration takes (86 s for a paper-profile iteration on a CPU): the trainer saves
``checkpoints/last_state.pt`` at the iteration boundary and exits, and Resume continues from there. A file,
not a signal, because inside Slicer the child is the ``PythonSlicer`` launcher, which forwards no signal.
Force stop kills the process tree at once and loses the iterations since the last checkpoint.

When training ends normally the run is exported to a model package (``RUN_DIR/model``) and announced
through ``model_exported`` so the Segment tab can list it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from .Backend import dvcl_command
from .Parameter import STOP_FILE, TrainingParameters
from .Process import ProcessProtocol, ProcessResult, default_process
from .SceneBridge import TrainingCurves
from .Task import IDLE, STOPPING, STOPPING_MESSAGE, BackendTask, TrainingRunTask

log = logging.getLogger(__name__)

TRAINING, EXPORTING = "training", "exporting"
__all__ = ["EXPORTING", "IDLE", "STOP_FILE", "STOPPING", "STOPPING_MESSAGE", "TRAINING", "TrainingLogic"]


class TrainingLogic(TrainingRunTask):
    """Runs one training (or resume) and the export that follows it.

    Signals:
        progress(ProgressInfo), log(str), metrics(dict)   forwarded from ``dvcl train``
        model_exported(ModelInfo)                         the trained model is ready to segment with
        finished(ModelInfo | None)                        the whole job is over (None: not exported)
        stopping()                                        Stop was pressed; the run is saving its checkpoint
        error_occurred(str), cancelled()
    """

    busy_message = "a training run is already in progress: stop it first"

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        super().__init__(process_factory)
        self.curves: Optional[TrainingCurves] = None
        self.params: Optional[TrainingParameters] = None
        self.export_on_finish = True

    @staticmethod
    def model_dir(params: TrainingParameters) -> Path:
        return Path(params.run_dir).expanduser() / "model"

    def model_path(self) -> Optional[Path]:
        return self.model_dir(self.params) if self.params is not None else None

    def start(self, params: TrainingParameters, scene: Any = None, resume: bool = False,
              export: bool = True, overwrite: bool = False) -> None:
        """Start ``dvcl train`` (``--resume`` continues ``RUN_DIR``); returns at once.

        Args:
            scene: where the plot nodes go (None: no plot, e.g. headless runs).
            overwrite: replace a run that already exists in ``run_dir`` (ask the user first).
        """
        self._check_idle()
        args = dvcl_command(params.cli_args(resume=resume, overwrite=overwrite))
        self.export_on_finish = export
        curves = self.curves
        if scene is not None:
            if self.curves is None or self.curves.scene is not scene or not resume:
                self.curves = TrainingCurves(scene, name=f"DVCL {params.method} {Path(params.run_dir).name}")

        def keep_plot() -> None:  # the run that did not start has no plot: the last one stays on show
            self.curves = curves

        self._start_run(params, args, TRAINING, ("Resuming" if resume else "Starting") + f" training in "
                        f"{params.run_dir}", self._on_train_finished, keep_plot)

    def stop_file(self) -> Optional[Path]:
        return Path(self.params.run_dir).expanduser() / STOP_FILE if self.params is not None else None

    def stop(self) -> None:
        """Ask the run to save and stop at the next iteration boundary; ``cancelled`` follows when it has.

        Nothing is killed and there is no time limit: the checkpoint is worth the wait. During the export
        that follows training, Stop cancels the export (the run itself is complete).
        """
        if self.state == EXPORTING:
            BackendTask.cancel(self)  # kill the export: training itself is complete
            return
        if self.state != TRAINING or self._process is None:
            return
        self._stop_at_iteration()

    def _on_metrics(self, event: dict) -> None:
        if self.curves is not None:
            self.curves.add(event)
        super()._on_metrics(event)

    def _on_train_finished(self, result: ProcessResult) -> None:
        if not self._run_ended(result, "Training stopped; press Resume to continue from the last checkpoint",
                               "training failed"):
            return
        if not self.export_on_finish or self.params is None:
            self.state = IDLE
            self.finished.emit(None)
            return
        self.start_export(self.params)

    def start_export(self, params: TrainingParameters) -> None:
        """Run ``dvcl export RUN_DIR -o RUN_DIR/model`` (also usable on its own for a finished run).

        Called from the training's finished handler, so a failure to start is reported through ``error_occurred``
        and ``finished(None)``, not raised."""
        self.params = params
        target = self.model_dir(params)
        process = self._new_process(self._on_export_finished, self._on_progress)
        self.state = EXPORTING
        self.log.emit(f"Exporting the trained model to {target}")
        try:
            with self._starting(self._to_idle):
                process.start(dvcl_command(["export", params.run_dir, "-o", str(target)]))
        except Exception as exc:
            self.error_occurred.emit(f"could not start the export: {exc}")
            self.finished.emit(None)

    def _on_export_finished(self, result: ProcessResult) -> None:
        if not self._run_ended(result, None, "", error_prefix="export failed: "):
            return
        self._publish_model("", lambda info: f"Model '{info.name}' ready: {info.path}")
