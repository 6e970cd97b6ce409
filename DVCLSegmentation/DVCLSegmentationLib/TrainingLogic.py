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

from .Backend import DVCLModuleError, ModelInfo, dvcl_command, read_model_info
from .Parameter import STOP_FILE, TrainingParameters
from .Process import ProcessProtocol, ProcessResult, ProgressInfo, default_process
from .SceneBridge import TrainingCurves
from .Signal import Signal
from .Task import STOPPING_MESSAGE, BackendTask

log = logging.getLogger(__name__)

IDLE, TRAINING, STOPPING, EXPORTING = "idle", "training", "stopping", "exporting"


class TrainingLogic(BackendTask):
    """Runs one training (or resume) and the export that follows it.

    Signals:
        progress(ProgressInfo), log(str), metrics(dict)   forwarded from ``dvcl train``
        model_exported(ModelInfo)                         the trained model is ready to segment with
        finished(ModelInfo | None)                        the whole job is over (None: not exported)
        stopping()                                        Stop was pressed; the run is saving its checkpoint
        error_occurred(str), cancelled()
    """

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process) -> None:
        super().__init__(process_factory)
        self.metrics = Signal("metrics")
        self.model_exported = Signal("model_exported")
        self.stopping = Signal("stopping")
        self.state = IDLE
        self.curves: Optional[TrainingCurves] = None
        self.params: Optional[TrainingParameters] = None
        self.export_on_finish = True
        self.last_progress: Optional[ProgressInfo] = None

    @property
    def running(self) -> bool:
        return self.state != IDLE

    @staticmethod
    def model_dir(params: TrainingParameters) -> Path:
        return Path(params.run_dir).expanduser() / "model"

    def start(self, params: TrainingParameters, scene: Any = None, resume: bool = False,
              export: bool = True, overwrite: bool = False) -> None:
        """Start ``dvcl train`` (``--resume`` continues ``RUN_DIR``); returns at once.

        Args:
            scene: where the plot nodes go (None: no plot, e.g. headless runs).
            overwrite: replace a run that already exists in ``run_dir`` (ask the user first).
        """
        if self.running:
            raise DVCLModuleError("a training run is already in progress: stop it first")
        args = dvcl_command(params.cli_args(resume=resume, overwrite=overwrite))
        self.params = params
        self._remove_stop_file()  # a leftover request must not stop the new run
        self.export_on_finish = export
        if scene is not None:
            if self.curves is None or self.curves.scene is not scene or not resume:
                self.curves = TrainingCurves(scene, name=f"DVCL {params.method} {Path(params.run_dir).name}")
        process = self._new_process(self._on_train_finished, self._on_progress)
        process.metrics.connect(self._on_metrics)
        self.state = TRAINING
        self.log.emit(("Resuming" if resume else "Starting") + f" training in {params.run_dir}")
        try:
            process.start(args)
        except BaseException:
            self.state = IDLE
            self._process = None
            raise

    def stop_file(self) -> Optional[Path]:
        return Path(self.params.run_dir).expanduser() / STOP_FILE if self.params is not None else None

    def stop(self) -> None:
        """Ask the run to save and stop at the next iteration boundary; ``cancelled`` follows when it has.

        Nothing is killed and there is no time limit: the checkpoint is worth the wait. During the export
        that follows training, Stop cancels the export (the run itself is complete).
        """
        if self.state == EXPORTING:
            super().cancel()
            return
        if self.state != TRAINING or self._process is None:
            return
        self._request_stop()
        self.state = STOPPING
        self.log.emit(STOPPING_MESSAGE)
        self.stopping.emit()

    def cancel(self) -> None:
        """Same as :meth:`stop` (the module calls it when it closes): a run is never thrown away silently."""
        self.stop()

    def _on_progress(self, info: ProgressInfo) -> None:
        self.last_progress = info
        self.progress.emit(info)

    def _on_metrics(self, event: dict) -> None:
        if self.curves is not None:
            self.curves.add(event)
        self.metrics.emit(event)

    def wait(self, timeout: Optional[float] = None) -> Optional[ModelInfo]:
        """Block until training and export are over (scripts/tests); returns the exported model or None."""
        result = None
        while self._process is not None:
            process = self._process
            process.wait(timeout)
            if self._process is process:  # finished handler did not start a follow-up
                break
        if self.state == IDLE and self.params is not None:
            try:
                result = read_model_info(self.model_dir(self.params))
            except DVCLModuleError:
                result = None
        return result

    def _on_train_finished(self, result: ProcessResult) -> None:
        self._process = None
        self._remove_stop_file()
        if result.cancelled:
            self.state = IDLE
            self.log.emit("Training stopped; press Resume to continue from the last checkpoint")
            self.cancelled.emit()
            self.finished.emit(None)
            return
        if not result.ok:
            self.state = IDLE
            self.error_occurred.emit(result.error or "training failed")
            self.finished.emit(None)
            return
        if not self.export_on_finish or self.params is None:
            self.state = IDLE
            self.finished.emit(None)
            return
        self.start_export(self.params)

    def start_export(self, params: TrainingParameters) -> None:
        """Run ``dvcl export RUN_DIR -o RUN_DIR/model`` (also usable on its own for a finished run)."""
        self.params = params
        target = self.model_dir(params)
        process = self._new_process(self._on_export_finished, self._on_progress)
        self.state = EXPORTING
        self.log.emit(f"Exporting the trained model to {target}")
        try:
            process.start(dvcl_command(["export", params.run_dir, "-o", str(target)]))
        except BaseException as exc:
            self.state = IDLE
            self._process = None
            self.error_occurred.emit(f"could not start the export: {exc}")
            self.finished.emit(None)

    def _on_export_finished(self, result: ProcessResult) -> None:
        self._process = None
        self.state = IDLE
        if result.cancelled:
            self.cancelled.emit()
            self.finished.emit(None)
            return
        if not result.ok:
            self.error_occurred.emit(f"export failed: {result.error}")
            self.finished.emit(None)
            return
        try:
            info = read_model_info(self.model_dir(self.params))
        except DVCLModuleError as exc:
            self.error_occurred.emit(str(exc))
            self.finished.emit(None)
            return
        self.log.emit(f"Model '{info.name}' ready: {info.path}")
        self.model_exported.emit(info)
        self.finished.emit(info)
