"""One-click segmentation: volume node -> ``dvcl segment`` in a child process -> segmentation node.

The logic validates everything it can before starting (volume has voxels, model package is complete,
options are valid), so bad input fails at once with a clear message and leaves the scene untouched. The
result is imported only after the process succeeded; a cancelled or failed run creates no node and leaves
an existing output node as it was. Temporary files live in a private folder that is always removed.

Besides the segmentation, every run fills a per-structure volumes table (one table node per input volume);
with ``uncertainty`` the entropy and A/B disagreement maps of ``dvcl segment --uncertainty`` are loaded as
volumes over the CT (one pair of nodes per input volume, refilled by a re-run) and their mean per structure
becomes columns of that table.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .Backend import DVCLModuleError, ModelInfo, dvcl_command, read_model_info
from .Parameter import SegmentationParameters
from .Process import ProcessProtocol, ProcessResult, default_process
from .SceneBridge import (
    UNCERTAINTY_QUANTITIES,
    SceneInputError,
    export_volume,
    import_segmentation_file,
    load_uncertainty_volume,
    require_volume,
    structure_statistics,
    table_from_rows,
    uncertainty_quantity,
)
from .Task import BackendTask

log = logging.getLogger(__name__)


@dataclass
class _Job:
    volume_node: Any
    segmentation_node: Any
    model: ModelInfo
    workdir: Path
    output_path: Path
    save_to: Optional[Path] = None
    params: Optional[SegmentationParameters] = None


#: attribute of the input volume -> ID of the node made for it (reused by the next run on that volume)
RESULT_ATTRIBUTES = {"segmentation": "DVCL.SegmentationID", "volumes": "DVCL.VolumesTableID",
                     "entropy": "DVCL.EntropyVolumeID", "disagreement": "DVCL.DisagreementVolumeID"}


def attached_result(volume_node, key: str = "segmentation"):
    """The node the last run made for ``volume_node`` (``segmentation``, ``volumes``, ``entropy``, ...) or None."""
    return _attached_node(volume_node, key)


def _attached_node(volume_node, key: str):
    node_id = volume_node.GetAttribute(RESULT_ATTRIBUTES[key])
    scene = volume_node.GetScene()
    return scene.GetNodeByID(node_id) if node_id and scene is not None else None


class SegmentationLogic(BackendTask):
    """Runs ``dvcl segment`` for a volume node and imports the result.

    Signals:
        progress(ProgressInfo), log(str)       forwarded from the process
        finished(segmentation_node)            the result is in the scene
        error_occurred(str)                    the run failed (nothing was changed in the scene)
        cancelled()                            the user stopped the run (nothing was changed)

    Args:
        process_factory: returns a fresh :class:`ProcessProtocol` per run (Qt in Slicer, subprocess in tests).
        temp_root: parent folder for the per-run temporary folder (default: the system temp folder).
    """

    cancel_message = "Cancelling segmentation..."

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process,
                 temp_root: Optional[str] = None) -> None:
        super().__init__(process_factory)
        self._temp_root = temp_root
        self._job: Optional[_Job] = None
        self.result_node = None
        self.last_result: Optional[ProcessResult] = None
        #: nodes of the last successful run: quantity -> uncertainty volume, and the volumes table
        self.uncertainty_nodes: Dict[str, Any] = {}
        self.volumes_table = None

    @property
    def process(self) -> Optional[ProcessProtocol]:
        return self._process

    def start(self, volume_node, params: SegmentationParameters, segmentation_node=None,
              save_to: Optional[str] = None) -> None:
        """Validate, export the volume and start ``dvcl segment``; returns at once.

        Args:
            segmentation_node: node to update (None: a new node is created when the run succeeds).
            save_to: also keep the label file the backend wrote at this path (e.g. for a report).

        Raises:
            DVCLModuleError (SceneInputError, ModelPackageError, ParameterError): bad input, nothing started.
            ProcessStartError: the backend could not be launched.
        """
        if self.running:
            raise DVCLModuleError("a segmentation is already running: wait for it or cancel it first")
        require_volume(volume_node)
        if segmentation_node is not None and not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise SceneInputError(f"output '{segmentation_node.GetName()}' is not a segmentation node")
        params.validate()
        model = read_model_info(params.model_dir)

        workdir = Path(tempfile.mkdtemp(prefix="dvcl-segment-", dir=self._temp_root))
        with self._starting(lambda: shutil.rmtree(workdir, ignore_errors=True), self._forget_job):
            input_path = export_volume(volume_node, workdir / "input.nrrd")
            output_path = workdir / f"segmentation.{params.output_format}"
            args = dvcl_command(params.cli_args(input_path, output_path))
            process = self._new_process(self._on_finished)
            self._job = _Job(volume_node, segmentation_node, model, workdir, output_path,
                             Path(save_to).expanduser() if save_to else None, params)
            self.result_node = None
            self.uncertainty_nodes = {}
            self.volumes_table = None
            self.log.emit(f"Segmenting '{volume_node.GetName()}' with model '{model.name}'")
            process.start(args)

    def _forget_job(self) -> None:
        self._job = None

    def wait(self, timeout: Optional[float] = None):
        """Block until the run has ended and been imported; returns the segmentation node or None."""
        if self._process is not None:
            self._process.wait(timeout)
        return self.result_node

    def _on_finished(self, result: ProcessResult) -> None:
        job = self._job
        self.last_result = result
        self._process = None  # not running any more: slots of the signals below see an idle logic
        try:
            if job is None:
                return
            if result.cancelled:
                self.log.emit("Segmentation cancelled")
                self.cancelled.emit()
                return
            if not result.ok:
                self.error_occurred.emit(result.error or "segmentation failed")
                return
            if job.volume_node.GetScene() is None:
                self.error_occurred.emit("the input volume was removed from the scene while it was segmented")
                return
            output = self._result_path(job, result)
            if job.save_to is not None:
                job.save_to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(output, job.save_to)
            node = import_segmentation_file(output, job.model.labels, job.volume_node, job.segmentation_node,
                                            model_name=job.model.name)
            self.result_node = node
            job.volume_node.SetAttribute(RESULT_ATTRIBUTES["segmentation"], node.GetID())
            self._import_extras(job, result, output)
            self.log.emit(f"Segmentation '{node.GetName()}' updated ({len(job.model.labels)} structures, "
                          f"{result.seconds:.1f} s)")
            self.finished.emit(node)
        except DVCLModuleError as exc:
            self.error_occurred.emit(str(exc))
        except Exception as exc:  # keep the GUI alive, but say what went wrong
            log.exception("importing the segmentation failed")
            self.error_occurred.emit(f"importing the segmentation failed: {exc}")
        finally:
            self._process = None
            self._job = None
            if job is not None:
                shutil.rmtree(job.workdir, ignore_errors=True)

    def _import_extras(self, job: _Job, result: ProcessResult, output: Path) -> None:
        """Uncertainty maps (when asked for) and the per-structure volumes table of this run."""
        volume = job.volume_node
        maps: Dict[str, Path] = {}
        if job.params is not None and job.params.uncertainty:
            maps = self._uncertainty_paths(result, output)
            missing = [q for q in UNCERTAINTY_QUANTITIES if q not in maps]
            if missing:
                raise SceneInputError(f"dvcl segment wrote no {' and '.join(missing)} map next to {output.name} "
                                      "(a backend with --uncertainty is needed)")
            for quantity, path in maps.items():
                node = load_uncertainty_volume(path, volume, quantity, _attached_node(volume, quantity))
                volume.SetAttribute(RESULT_ATTRIBUTES[quantity], node.GetID())
                self.uncertainty_nodes[quantity] = node
        rows = structure_statistics(output, job.model.labels, maps)
        table = table_from_rows(rows, volume.GetScene(), _attached_node(volume, "volumes"),
                                name=f"{volume.GetName()} volumes")
        volume.SetAttribute(RESULT_ATTRIBUTES["volumes"], table.GetID())
        self.volumes_table = table

    @staticmethod
    def _uncertainty_paths(result: ProcessResult, output: Path) -> Dict[str, Path]:
        """quantity -> file: from the ``output`` events of kind ``uncertainty``, else next to the label file."""
        found: Dict[str, Path] = {}
        for path, kind in result.outputs:
            quantity = uncertainty_quantity(path)
            if kind == "uncertainty" and quantity and Path(path).is_file():
                found[quantity] = Path(path)
        stem = output.name
        for suffix in (".seg.nrrd", ".nii.gz", ".nrrd", ".nii"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        for quantity in UNCERTAINTY_QUANTITIES:
            candidate = output.with_name(f"{stem}_{quantity}.nii.gz")
            if quantity not in found and candidate.is_file():
                found[quantity] = candidate
        return found

    @staticmethod
    def _result_path(job: _Job, result: ProcessResult) -> Path:
        """The file the CLI announced (``output`` event), else the path it was asked to write."""
        for path, kind in reversed(result.outputs):
            if path and kind in ("segmentation", "") and Path(path).is_file():
                return Path(path)
        if job.output_path.is_file():
            return job.output_path
        candidates = sorted(p for p in job.workdir.glob("segmentation*") if p.is_file())
        if candidates:
            return candidates[0]
        raise SceneInputError(f"dvcl finished but wrote no segmentation in {job.workdir}")


def segment_volume(volume_node, params: SegmentationParameters, segmentation_node=None,
                   timeout: Optional[float] = None, process_factory: Callable[[], ProcessProtocol] = default_process):
    """Blocking convenience for scripts and the self-test: returns the segmentation node or raises."""
    logic = SegmentationLogic(process_factory)
    errors = []
    logic.error_occurred.connect(errors.append)
    logic.start(volume_node, params, segmentation_node)
    node = logic.wait(timeout)
    if errors:
        raise DVCLModuleError(errors[0])
    if node is None:
        raise DVCLModuleError("segmentation was cancelled")
    return node
