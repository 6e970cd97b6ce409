"""A backend that cannot be started: every logic undoes its start in one way (``BackendTask._starting``).

``DVCL_PYTHON`` names a program that does not exist, so the real :class:`SubprocessProcess` raises
:class:`ProcessStartError` exactly as it does for a missing or broken Python. For each of the four logics the start
must then leave nothing behind: the error reaches the caller, the logic is idle (a second start is not refused as
"already running"), its temporary folders are gone, a stop request written meanwhile is removed, the dropped process
has no slot of the logic connected, and no ``finished``/``error_occurred``/``cancelled`` was emitted (the caller
reports the exception). The training export, started from a finished handler, reports instead of raising. The
Train tab and its Adapt section show the failure and enable Start again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dvcl_slicer_helpers import ABDOMEN_LABEL, require_slicer
from panel_helpers import Host, default_params, load_ui

slicer = require_slicer()

from DVCLSegmentationLib.AdaptLogic import AdaptLogic  # noqa: E402
from DVCLSegmentationLib.EvaluationLogic import EvaluationLogic  # noqa: E402
from DVCLSegmentationLib.Parameter import (  # noqa: E402
    STOP_FILE,
    AdaptParameters,
    EvaluationParameters,
    SegmentationParameters,
    TrainingParameters,
)
from DVCLSegmentationLib.Process import ProcessStartError, SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.SceneBridge import TrainingCurves  # noqa: E402
from DVCLSegmentationLib.SegmentationLogic import SegmentationLogic  # noqa: E402
from DVCLSegmentationLib.Task import IDLE, PROCESS_SIGNALS  # noqa: E402
from DVCLSegmentationLib.TrainingLogic import TrainingLogic  # noqa: E402

MISSING = "/nonexistent/dvcl-python"


@pytest.fixture(autouse=True)
def _backend_cannot_start(monkeypatch):
    monkeypatch.setenv("DVCL_PYTHON", MISSING)


class Processes:
    """The process factory of a logic: real runners that fail to start, kept for inspection.

    ``stop_file``: written by ``start`` before it fails (a stop request that arrived while starting).
    """

    def __init__(self, stop_file=None) -> None:
        self.made = []
        self.stop_file = stop_file

    def __call__(self):
        processes = self

        class Runner(SubprocessProcess):
            def start(self, args, env=None, cwd=None):
                if processes.stop_file is not None:
                    path = processes.stop_file()
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("stop\n")
                super().start(args, env, cwd)

        runner = Runner()
        self.made.append(runner)
        return runner


def _record(logic) -> dict:
    rec = {name: [] for name in ("finished", "error_occurred", "cancelled", "log")}
    for name, calls in rec.items():
        getattr(logic, name).connect(lambda *a, calls=calls: calls.append(a))
    return rec


def _assert_undone(logic, processes: Processes, rec: dict) -> None:
    assert not logic.running and logic._process is None
    (process,) = processes.made
    assert not process.running
    assert all(len(getattr(process, name)) == 0 for name in PROCESS_SIGNALS)  # nothing of it reaches the logic
    assert rec["finished"] == rec["error_occurred"] == rec["cancelled"] == []


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    labels = {"1": {"name": "liver", "color": [200, 100, 50]}}
    (folder / "model.json").write_text(json.dumps({"format": "dvcl-model/1", "name": folder.name, "labels": labels}))
    (folder / "weights.safetensors").write_bytes(b"x")
    return folder


def _training_params(tmp_path) -> TrainingParameters:
    (tmp_path / "data").mkdir(exist_ok=True)
    return TrainingParameters(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), device="cpu",
                              profile="quick")


def _adapt_params(tmp_path) -> AdaptParameters:
    (tmp_path / "labeled").mkdir()
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "site.nii.gz").write_bytes(b"")
    return AdaptParameters(model_dir=str(_model(tmp_path / "source")), labeled_dir=str(tmp_path / "labeled"),
                           unlabeled_dir=str(tmp_path / "scans"), out_dir=str(tmp_path / "out" / "site"),
                           iterations=3, device="cpu")


# ------------------------------------------------------------------------------------------------- the logics
def test_training_start_failure_is_undone(scene, tmp_path):
    params = _training_params(tmp_path)
    logic = TrainingLogic()
    processes = Processes(stop_file=logic.stop_file)
    logic._process_factory = processes
    shown = TrainingCurves(scene, name="last run")
    logic.curves = shown
    rec = _record(logic)
    with pytest.raises(ProcessStartError, match="cannot start '/nonexistent/dvcl-python'"):
        logic.start(params, scene=scene)
    _assert_undone(logic, processes, rec)
    assert logic.state == IDLE and not (Path(params.run_dir) / STOP_FILE).exists()
    assert logic.curves is shown  # the last run's plot stays on show
    assert logic.wait(1) is None
    with pytest.raises(ProcessStartError):  # not "already in progress"
        logic.start(params, scene=scene)


def test_training_export_start_failure_is_reported(tmp_path):
    logic = TrainingLogic(Processes())
    rec = _record(logic)
    logic.start_export(_training_params(tmp_path))  # from the training's finished handler: reported, not raised
    assert logic.state == IDLE and not logic.running and logic._process is None
    assert rec["finished"] == [(None,)] and len(rec["error_occurred"]) == 1
    assert rec["error_occurred"][0][0].startswith("could not start the export: cannot start")


def test_adaptation_start_failure_is_undone(tmp_path):
    params = _adapt_params(tmp_path)
    processes = Processes(stop_file=params.stop_file)
    logic = AdaptLogic(processes)
    rec = _record(logic)
    with pytest.raises(ProcessStartError, match="cannot start"):
        logic.start(params)
    _assert_undone(logic, processes, rec)
    assert logic.state == IDLE and not params.stop_file().exists() and not logic.training
    assert logic.wait(1) is None
    with pytest.raises(ProcessStartError):  # not "already running"
        logic.start(params)


def _with_temp_root(logic_class, tmp_path):
    """A logic whose temporary folders go to a folder of their own (``temp``), with its processes and records."""
    temp = tmp_path / "temp"
    temp.mkdir()
    processes = Processes()
    logic = logic_class(processes, temp_root=str(temp))
    return logic, processes, _record(logic), temp


def test_segmentation_start_failure_is_undone(scene, abdomen_volume, tmp_path):
    logic, processes, rec, temp = _with_temp_root(SegmentationLogic, tmp_path)
    before = scene.GetNumberOfNodes()
    with pytest.raises(ProcessStartError, match="cannot start"):
        logic.start(abdomen_volume, SegmentationParameters(model_dir=str(_model(tmp_path / "model")), device="cpu"))
    _assert_undone(logic, processes, rec)
    assert os.listdir(temp) == [] and logic._job is None  # the exported volume's folder is gone
    assert scene.GetNumberOfNodes() == before


@pytest.mark.parametrize("report_folder", ["chosen", "temporary"])
def test_evaluation_start_failure_is_undone(scene, tmp_path, report_folder):
    logic, processes, rec, temp = _with_temp_root(EvaluationLogic, tmp_path)
    out_dir = str(tmp_path / "report") if report_folder == "chosen" else ""
    with pytest.raises(ProcessStartError, match="cannot start"):
        logic.start(str(ABDOMEN_LABEL), str(ABDOMEN_LABEL), EvaluationParameters("flare22", out_dir), scene)
    _assert_undone(logic, processes, rec)
    assert os.listdir(temp) == [] and logic._state == {}  # work folder and the report folder made for it are gone
    assert not (tmp_path / "report").exists()  # a report folder that this start made is removed too


# ------------------------------------------------------------------------------------------------- the panel
def test_train_tab_and_adapt_section_report_a_failed_start(scene, tmp_path):
    from DVCLSegmentationLib.AdaptSection import AdaptSection
    from DVCLSegmentationLib.ModelRegistry import ModelRegistry
    from DVCLSegmentationLib.TrainTab import TrainTab

    pytest.importorskip("PySide6")
    ui = load_ui()
    host = Host(scene, default_params(train_device="cpu"))
    train = TrainTab(ui, host, TrainingLogic(Processes()))
    params = _adapt_params(tmp_path)
    adapt = AdaptSection(ui, host, AdaptLogic(Processes()), ModelRegistry([params.model_dir], installed=list))
    for tab in (train, adapt):
        tab.refresh_catalogue()
    ui.profileComboBox.setCurrentText("quick")
    (tmp_path / "data").mkdir()
    ui.dataFolderEdit.currentPath = str(tmp_path / "data")
    ui.runFolderEdit.currentPath = str(tmp_path / "run")
    ui.startTrainingButton.click()
    ui.adaptLabeledFolderEdit.currentPath = params.labeled_dir
    ui.adaptUnlabeledFolderEdit.currentPath = params.unlabeled_dir
    ui.adaptOutputFolderEdit.currentPath = params.out_dir
    ui.startAdaptButton.click()
    assert [title for title, _ in host.errors] == ["Cannot start dvcl", "Cannot start dvcl"], host.errors
    assert all("cannot start '/nonexistent/dvcl-python'" in message for _, message in host.errors)
    assert ui.startTrainingButton.isEnabled() and ui.resumeTrainingButton.isEnabled()
    assert ui.startAdaptButton.isEnabled()
    assert not any(button.isEnabled() for button in (ui.stopTrainingButton, ui.forceStopTrainingButton,
                                                     ui.stopAdaptButton, ui.forceStopAdaptButton))
    assert ui.trainStatusLabel.text() != "Starting..." and ui.adaptStatusLabel.text() != "Starting..."
