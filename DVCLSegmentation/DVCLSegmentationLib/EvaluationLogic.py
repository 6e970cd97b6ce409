"""Compare a segmentation with a reference through ``dvcl evaluate`` and show the report as a table node.

Prediction and reference may be files or nodes. Segmentation nodes are written as label images whose values
are the preset's label ids (from the segment's ``DVCL.LabelValue`` tag, else by structure name), so the
backend computes exactly what it would for files. The per-structure CSV becomes a ``vtkMRMLTableNode`` whose
cells are the CSV's numbers; the summary JSON is returned as a dict.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from .Backend import DVCLModuleError, dvcl_command
from .Catalog import preset_labels
from .Parameter import EvaluationParameters
from .Process import ProcessProtocol, ProcessResult, default_process
from .SceneBridge import (
    SceneInputError,
    export_labelmap_volume,
    export_segmentation_labelmap,
    segment_label_values,
    table_from_csv,
)
from .Task import BackendTask

log = logging.getLogger(__name__)

Source = Union[str, Path, Any]  # a file path or an MRML node


@dataclass
class EvaluationReport:
    """What an evaluation produced: the table node, the CSV/JSON files and the parsed summary."""

    table_node: Any
    csv_path: Path
    summary_path: Optional[Path]
    summary: Dict[str, Any]


class EvaluationLogic(BackendTask):
    """Runs ``dvcl evaluate`` and loads its per-structure CSV into a table node.

    Signals: progress(ProgressInfo), log(str), finished(EvaluationReport), error_occurred(str), cancelled().
    """

    def __init__(self, process_factory: Callable[[], ProcessProtocol] = default_process,
                 temp_root: Optional[str] = None) -> None:
        super().__init__(process_factory)
        self._temp_root = temp_root
        self._state: Dict[str, Any] = {}
        self.report: Optional[EvaluationReport] = None

    def _to_file(self, source: Source, role: str, preset: str, workdir: Path, reference_volume=None) -> Path:
        if source is None:
            raise SceneInputError(f"no {role} selected")
        if isinstance(source, (str, Path)):
            path = Path(source).expanduser()
            if not path.exists():
                raise SceneInputError(f"{role} file not found: {path}")
            return path
        if source.IsA("vtkMRMLSegmentationNode"):
            names = {name: value for value, name in preset_labels(preset).items()}
            pairs = segment_label_values(source, names)
            return export_segmentation_labelmap(source, workdir / f"{role}.nii.gz", pairs, reference_volume)
        if source.IsA("vtkMRMLLabelMapVolumeNode"):
            return export_labelmap_volume(source, workdir / f"{role}.nii.gz")
        raise SceneInputError(f"{role} '{source.GetName()}' must be a segmentation or a label map volume, "
                              f"not a {source.GetClassName()}")

    def start(self, prediction: Source, reference: Source, params: EvaluationParameters, scene,
              table_node=None, reference_volume=None) -> None:
        """Export node inputs, then start ``dvcl evaluate``; returns at once.

        Args:
            scene: where the table node is created (when ``table_node`` is None).
            reference_volume: grid for exporting segmentation nodes (default: each one's reference geometry).
        """
        if self.running:
            raise DVCLModuleError("an evaluation is already running")
        params.validate()
        workdir = Path(tempfile.mkdtemp(prefix="dvcl-evaluate-", dir=self._temp_root))
        made: List[Path] = [workdir]  # temporary folders of this start, removed when it fails

        def undo() -> None:
            self._state = {}
            for folder in made:
                shutil.rmtree(folder, ignore_errors=True)

        with self._starting(undo):
            pred_path = self._to_file(prediction, "prediction", params.preset, workdir, reference_volume)
            ref_path = self._to_file(reference, "reference", params.preset, workdir, reference_volume)
            temp_out = None
            if params.out_dir.strip():
                out_dir = Path(params.out_dir).expanduser()
                if not out_dir.exists():
                    made.append(out_dir)
            else:  # no report folder chosen: the table is the result; the files live in a folder of their own
                out_dir = temp_out = Path(tempfile.mkdtemp(prefix="dvcl-report-", dir=self._temp_root))
                made.append(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            run_params = EvaluationParameters(preset=params.preset, out_dir=str(out_dir), plots=params.plots,
                                              distances=params.distances)
            process = self._new_process(self._on_finished)
            self._state = {"workdir": workdir, "scene": scene, "table_node": table_node, "out_dir": out_dir,
                           "temp_out": temp_out}
            self.report = None
            process.start(dvcl_command(run_params.cli_args(pred_path, ref_path)))

    def wait(self, timeout: Optional[float] = None) -> Optional[EvaluationReport]:
        if self._process is not None:
            self._process.wait(timeout)
        return self.report

    @staticmethod
    def find_outputs(result: ProcessResult, out_dir: Path):
        """The per-structure CSV and the summary JSON.

        From the ``output`` events (kinds ``metrics`` and ``summary``), else by suffix among the announced
        files, else the newest ``*.csv`` / ``*.json`` in ``out_dir``.
        """
        csv_path = summary_path = None
        announced = [(Path(path), kind) for path, kind in result.outputs if Path(path).is_file()]
        for p, kind in announced:
            if kind == "metrics":
                csv_path = p
            elif kind == "summary":
                summary_path = p
        for p, _kind in announced:
            if csv_path is None and p.suffix.lower() == ".csv":
                csv_path = p
            if summary_path is None and p.suffix.lower() == ".json":
                summary_path = p
        if csv_path is None:
            found = sorted(out_dir.glob("*.csv"), key=lambda p: p.stat().st_mtime)
            csv_path = found[-1] if found else None
        if summary_path is None:
            found = sorted(out_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
            summary_path = found[-1] if found else None
        return csv_path, summary_path

    def _on_finished(self, result: ProcessResult) -> None:
        state = self._state
        self._process = None  # not running any more: slots of the signals below see an idle logic
        try:
            if result.cancelled:
                self.cancelled.emit()
                return
            if not result.ok:
                self.error_occurred.emit(result.error or "evaluation failed")
                return
            csv_path, summary_path = self.find_outputs(result, state["out_dir"])
            if csv_path is None:
                raise SceneInputError(f"dvcl evaluate wrote no CSV report in {state['out_dir']}")
            summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path else {}
            table = table_from_csv(csv_path, state["scene"], state["table_node"])
            self.report = EvaluationReport(table, csv_path, summary_path, summary)
            self.finished.emit(self.report)
        except DVCLModuleError as exc:
            self.error_occurred.emit(str(exc))
        except Exception as exc:
            log.exception("loading the evaluation report failed")
            self.error_occurred.emit(f"loading the evaluation report failed: {exc}")
        finally:
            self._process = None
            if state.get("workdir"):
                shutil.rmtree(state["workdir"], ignore_errors=True)
            if state.get("temp_out") and self.report is None:  # a report folder of our own with no report in it
                shutil.rmtree(state["temp_out"], ignore_errors=True)
            self._state = {}
