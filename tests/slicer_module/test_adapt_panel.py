"""Site adaptation from the Train tab: ``AdaptParameters``, ``AdaptLogic`` and the "Adapt a model to your scans"
section, driven through the real .ui (PySide6, offscreen) and the backend stand-in of panel_helpers.py.

The stand-in's ``adapt`` follows the real command's contract where the panel depends on it: progress events for
the preparation and the training, ``WORK/run/STOP`` polled every iteration (exit 130 after "saving"), a rerun of
the same command continuing from the saved iteration, a model package written to ``-o`` on success, and a
one-line ``dvcl: error:`` for an empty scans folder. The real command's argument parser checks the argument list.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest
from dvcl_slicer_helpers import require_slicer
from panel_helpers import Host, default_params, load_ui, write_backend_stand_in

slicer = require_slicer()

from DVCLSegmentationLib import Catalog  # noqa: E402
from DVCLSegmentationLib.AdaptLogic import (  # noqa: E402
    ADAPTING,
    IDLE,
    STOPPING,
    STOPPING_PREPARE_MESSAGE,
    AdaptLogic,
)
from DVCLSegmentationLib.Backend import DVCLModuleError  # noqa: E402
from DVCLSegmentationLib.ModelRegistry import ModelRegistry  # noqa: E402
from DVCLSegmentationLib.Parameter import (  # noqa: E402
    ADAPT_WORK_SUFFIX,
    STOP_FILE,
    AdaptParameters,
    ParameterError,
)
from DVCLSegmentationLib.Process import SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.Task import STOPPING_MESSAGE  # noqa: E402


def _model(folder: Path, name: str = "source") -> Path:
    folder.mkdir(parents=True)
    labels = {"1": {"name": "liver", "color": [200, 100, 50]}, "2": {"name": "spleen", "color": [50, 100, 200]}}
    (folder / "model.json").write_text(json.dumps({"format": "dvcl-model/1", "name": name, "labels": labels}))
    (folder / "weights.safetensors").write_bytes(b"x")
    return folder


def _inputs(root: Path, scans: int = 2) -> AdaptParameters:
    """A model, a labeled folder and an unlabeled folder with ``scans`` files; the output is not made."""
    model = _model(root / "models" / "source")
    (root / "labeled").mkdir()
    (root / "scans").mkdir()
    for i in range(scans):
        (root / "scans" / f"site_{i}.nii.gz").write_bytes(b"")
    return AdaptParameters(model_dir=str(model), labeled_dir=str(root / "labeled"),
                           unlabeled_dir=str(root / "scans"), out_dir=str(root / "out" / "site_model"),
                           iterations=5, device="cpu")


def _calls(log: Path):
    return [json.loads(line) for line in log.read_text().splitlines()]


def _record(logic: AdaptLogic) -> dict:
    rec = {k: [] for k in ("progress", "metrics", "errors", "cancelled", "exported", "finished", "stopping", "log")}
    logic.log.connect(rec["log"].append)
    logic.progress.connect(rec["progress"].append)
    logic.metrics.connect(rec["metrics"].append)
    logic.error_occurred.connect(rec["errors"].append)
    logic.cancelled.connect(lambda: rec["cancelled"].append(True))
    logic.model_exported.connect(rec["exported"].append)
    logic.finished.connect(rec["finished"].append)
    logic.stopping.connect(lambda: rec["stopping"].append(True))
    return rec


def _poll_until(logic: AdaptLogic, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert logic._process is not None, "the run ended before the condition was met"
        logic._process.poll()
        time.sleep(0.02)
        assert time.monotonic() < deadline


# ------------------------------------------------------------------------------------------------- parameters
def test_cli_args_are_the_dvcl_adapt_command_line(tmp_path):
    p = _inputs(tmp_path)
    base = ["adapt", "--model", p.model_dir, "--unlabeled", p.unlabeled_dir, "--labeled", p.labeled_dir,
            "-o", p.out_dir]
    assert p.cli_args() == base + ["--iterations", "5", "--device", "cpu"]
    p.iterations = None  # the backend's default: no flag, so the rerun of a default run stays the same command
    assert p.cli_args() == base + ["--device", "cpu"]
    p.work_dir = str(tmp_path / "work")
    p.device = "cuda:1"
    assert p.cli_args() == base + ["--device", "cuda:1", "--work-dir", p.work_dir]
    (Path(p.out_dir) / "old").mkdir(parents=True)
    assert p.cli_args(overwrite=True)[-1] == "--overwrite"


def test_a_model_with_a_synthetic_data_generator_needs_no_labeled_folder(tmp_path):
    p = _inputs(tmp_path)
    p.labeled_dir = ""
    with pytest.raises(ParameterError, match="names no generator of synthetic labeled data"):
        p.validate()
    meta_path = Path(p.model_dir) / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["card"] = {"labeled_data_generator": "synthetic_abdomen"}
    meta_path.write_text(json.dumps(meta))
    args = p.cli_args()
    assert "--labeled" not in args and args[:5] == ["adapt", "--model", p.model_dir, "--unlabeled", p.unlabeled_dir]


def test_cli_args_are_accepted_by_the_real_parser(tmp_path):
    adapt_cli = pytest.importorskip("dvcl.cli.adapt", reason="the backend has no dvcl adapt")
    parser = argparse.ArgumentParser()
    adapt_cli.add_parser(parser.add_subparsers(dest="command"))
    p = _inputs(tmp_path)
    p.work_dir = str(tmp_path / "work")
    args = parser.parse_args(p.cli_args())
    assert (args.model, args.unlabeled, args.labeled, args.out) == (p.model_dir, Path(p.unlabeled_dir),
                                                                    Path(p.labeled_dir), Path(p.out_dir))
    assert (args.iterations, args.device, args.work_dir, args.overwrite) == (5, "cpu", Path(p.work_dir), False)


def test_work_folder_stop_file_and_defaults_match_the_backend(tmp_path):
    adapt = pytest.importorskip("dvcl.adapt", reason="the backend has no dvcl adapt")
    from dvcl.training import trainer

    assert ADAPT_WORK_SUFFIX == adapt.WORK_SUFFIX and STOP_FILE == trainer.STOP_FILE
    assert Catalog.adapt_default_iterations() == adapt.DEFAULT_ITERATIONS
    p = AdaptParameters(out_dir=str(tmp_path / "out" / "site_model"))
    assert p.stop_file() == tmp_path / "out" / f"site_model{adapt.WORK_SUFFIX}" / "run" / STOP_FILE
    p.out_dir += "/"  # a trailing separator from a path edit does not change the folder
    assert p.stop_file() == tmp_path / "out" / f"site_model{adapt.WORK_SUFFIX}" / "run" / STOP_FILE
    p.work_dir = str(tmp_path / "w")
    assert p.stop_file() == tmp_path / "w" / "run" / STOP_FILE


@pytest.mark.parametrize("change, message", [
    (dict(model_dir=""), "choose the model to adapt"),
    (dict(model_dir="{root}/nothing"), "model folder not found"),
    (dict(model_dir="{root}/labeled"), "model.json is missing"),
    (dict(labeled_dir=""), "choose the labeled data folder"),
    (dict(labeled_dir="{root}/nothing"), "labeled data folder not found"),
    (dict(unlabeled_dir=""), "choose the folder of your unlabeled scans"),
    (dict(unlabeled_dir="{root}/nothing"), "unlabeled scans folder not found"),
    (dict(out_dir=""), "choose an output folder"),
    (dict(out_dir="{root}/models/source/adapted"), "must not lie inside the model folder"),
    (dict(out_dir="{root}/models"), "must not lie inside the model folder"),  # the output would hold the model
    (dict(out_dir="{root}/scans/adapted"), "inside the unlabeled scans folder"),
    (dict(iterations=0), "iterations must be at least 1"),
    (dict(device="gpu"), "unknown device 'gpu'"),
])
def test_validate_refuses_with_a_clear_message(tmp_path, change, message):
    p = _inputs(tmp_path)
    for key, value in change.items():
        setattr(p, key, value.format(root=tmp_path) if isinstance(value, str) else value)
    with pytest.raises(ParameterError, match=message):
        p.validate()
    with pytest.raises(ParameterError, match=message):
        p.cli_args()


def test_existing_output_needs_overwrite_and_resume_is_detected(tmp_path):
    p = _inputs(tmp_path)
    out = Path(p.out_dir)
    out.mkdir(parents=True)
    p.validate()  # an empty folder is fine (the backend writes into it)
    assert not p.output_exists() and not p.resumable()
    (out / "model.json").write_text("{}")
    assert p.output_exists()
    with pytest.raises(ParameterError, match="already exists: confirm to replace it"):
        p.validate()
    p.validate(overwrite=True)
    (out / "model.json").unlink()
    work = out.parent / f"{out.name}{ADAPT_WORK_SUFFIX}"
    work.mkdir()
    (work / "adapt.json").write_text("{}")
    assert p.resumable()  # a stopped adaptation: Start continues it
    (out / "model.json").write_text("{}")
    assert not p.resumable()  # finished: it has written its model


# ------------------------------------------------------------------------------------------------- the logic
def test_start_progress_model_exported(tmp_path, monkeypatch):
    calls = write_backend_stand_in(tmp_path / "backend", monkeypatch)
    p = _inputs(tmp_path, scans=3)
    expected = p.cli_args()
    logic = AdaptLogic(SubprocessProcess)
    rec = _record(logic)
    logic.start(p)
    assert logic.running and logic.state == ADAPTING
    with pytest.raises(DVCLModuleError, match="already running"):
        logic.start(p)
    info = logic.wait(60)
    assert rec["errors"] == [] and logic.state == IDLE and not logic.running
    assert info is not None and rec["exported"] == [info] and rec["finished"] == [info]
    assert info.path == Path(p.out_dir).resolve() and [lab.name for lab in info.labels] == ["liver", "spleen"]
    assert _calls(calls) == [expected]
    tasks = [(i.task, i.step) for i in rec["progress"]]
    assert tasks[:3] == [("prepare", 1), ("prepare", 2), ("prepare", 3)] and tasks[-1] == ("train", 5)
    assert [m["iteration"] for m in rec["metrics"]] == [1, 2, 3, 4, 5]


def test_stop_writes_the_stop_file_and_start_again_resumes(tmp_path, monkeypatch):
    calls = write_backend_stand_in(tmp_path / "backend", monkeypatch)
    monkeypatch.setenv("DVCL_STAND_IN_ITERATION_S", "0.2")
    p = _inputs(tmp_path)
    p.iterations = 30
    expected = p.cli_args()
    logic = AdaptLogic(SubprocessProcess)
    rec = _record(logic)
    logic.start(p)
    process = logic._process
    results = []
    process.finished.connect(results.append)
    _poll_until(logic, lambda: any(i.task == "train" for i in rec["progress"]))
    logic.stop()
    assert p.stop_file().is_file() and p.stop_file() == Path(f"{p.out_dir}{ADAPT_WORK_SUFFIX}") / "run" / "STOP"
    assert logic.state == STOPPING and logic.running and rec["stopping"] == [True]
    assert logic.stop_message == STOPPING_MESSAGE and logic.stop_message.startswith("Stopping: saving a checkpoint")
    assert logic.wait(60) is None
    (result,) = results
    assert result.exit_code == 130  # the run ended by itself after "saving", nothing was killed
    assert logic.state == IDLE and not logic.running and rec["cancelled"] == [True] and rec["errors"] == []
    assert rec["exported"] == [] and not p.stop_file().exists()
    stopped_at = max(i.step for i in rec["progress"] if i.task == "train")
    assert stopped_at < 30 and p.resumable()
    assert any(line.startswith(f"Adaptation stopped at iteration {stopped_at}") for line in rec["log"])

    # Start again with the same settings: the same command (no --overwrite); the backend continues the run
    monkeypatch.setenv("DVCL_STAND_IN_ITERATION_S", "0.01")
    rec["progress"].clear()
    logic.start(p)
    info = logic.wait(60)
    assert info is not None and rec["exported"] == [info] and rec["errors"] == []
    first, second = _calls(calls)
    assert first == second == expected and "--overwrite" not in second
    assert min(i.step for i in rec["progress"] if i.task == "train") == stopped_at + 1


def test_stop_while_preparing_ends_the_process(tmp_path, monkeypatch):
    calls = write_backend_stand_in(tmp_path / "backend", monkeypatch)
    p = _inputs(tmp_path, scans=100)
    monkeypatch.setenv("DVCL_STAND_IN_PREPARE_S", "0.05")
    logic = AdaptLogic(SubprocessProcess)
    rec = _record(logic)
    logic.start(p)
    _poll_until(logic, lambda: bool(rec["progress"]))
    assert not logic.training
    t0 = time.monotonic()
    logic.stop()
    assert logic.stop_message == STOPPING_PREPARE_MESSAGE and not p.stop_file().exists()  # nothing polls it yet
    logic.wait(30)
    assert time.monotonic() - t0 < 10 and logic.state == IDLE
    assert rec["cancelled"] == [True] and rec["errors"] == [] and rec["exported"] == [] and len(_calls(calls)) == 1


def test_force_stop_kills_the_process_tree(tmp_path, monkeypatch):
    write_backend_stand_in(tmp_path / "backend", monkeypatch)
    monkeypatch.setenv("DVCL_STAND_IN_ITERATION_S", "5")  # each "iteration" outlasts any patience
    monkeypatch.setenv("DVCL_STAND_IN_IGNORE_SIGTERM", "1")  # a terminate request alone would not end it
    p = _inputs(tmp_path)
    logic = AdaptLogic(SubprocessProcess)
    rec = _record(logic)
    logic.start(p)
    process = logic._process
    _poll_until(logic, lambda: logic.training)
    t0 = time.monotonic()
    try:
        logic.force_stop()
        logic.wait(30)
        assert time.monotonic() - t0 < 4 and not process.running and logic.state == IDLE
    finally:
        process.cancel(grace_s=0.0)  # a failing test leaves no process behind
    assert rec["cancelled"] == [True] and rec["exported"] == []


# ------------------------------------------------------------------------------------------------- the panel
class _PanelHost(Host):
    """The test host, with the panel's model_added: the new model goes to the Segment tab's list."""

    segment_tab = None

    def model_added(self, info) -> None:
        super().model_added(info)
        self.segment_tab.add_model_package(info)


def _panel(scene, tmp_path, registry):
    from DVCLSegmentationLib.AdaptSection import AdaptSection
    from DVCLSegmentationLib.SegmentationLogic import SegmentationLogic
    from DVCLSegmentationLib.SegmentTab import SegmentTab

    pytest.importorskip("PySide6")
    ui = load_ui()
    host = _PanelHost(scene, default_params(train_device="cpu"))
    segment = SegmentTab(ui, host, SegmentationLogic(SubprocessProcess, temp_root=str(tmp_path)), registry)
    host.segment_tab = segment
    logic = AdaptLogic(SubprocessProcess)
    section = AdaptSection(ui, host, logic, registry)
    segment.models_changed.connect(section.refresh_models)  # as Widget.py wires them
    for tab in (segment, section):
        tab.refresh_catalogue()
    return ui, host, segment, section, logic


def _fill(ui, p: AdaptParameters, iterations: int) -> None:
    index = ui.adaptModelComboBox.findData(str(Path(p.model_dir).resolve()))
    assert index >= 0
    ui.adaptModelComboBox.setCurrentIndex(index)
    ui.adaptLabeledFolderEdit.currentPath = p.labeled_dir
    ui.adaptUnlabeledFolderEdit.currentPath = p.unlabeled_dir
    ui.adaptOutputFolderEdit.currentPath = p.out_dir
    ui.adaptIterationsSpinBox.setValue(iterations)


def _items(combo):
    return [combo.itemText(i) for i in range(combo.count())]


def test_tab_start_runs_the_command_and_lists_the_adapted_model(scene, tmp_path, monkeypatch):
    calls = write_backend_stand_in(tmp_path / "backend", monkeypatch)
    p = _inputs(tmp_path)
    other = _model(tmp_path / "models" / "other", name="other")
    registry = ModelRegistry([str(other), p.model_dir], installed=list)
    ui, host, segment, section, logic = _panel(scene, tmp_path, registry)
    assert _items(ui.adaptModelComboBox) == _items(ui.modelComboBox) == ["other", "source"]
    assert ui.adaptIterationsSpinBox.value() == Catalog.adapt_default_iterations()
    assert ui.startAdaptButton.text() == "Start" and not ui.stopAdaptButton.isEnabled()
    assert "new model" in ui.adaptExplanationLabel.text() and "transductive" in ui.adaptExplanationLabel.text()

    _fill(ui, p, iterations=4)
    p.iterations = 4
    expected = p.cli_args()
    ui.startAdaptButton.click()
    assert logic.running and not ui.startAdaptButton.isEnabled() and ui.stopAdaptButton.isEnabled()
    assert ui.forceStopAdaptButton.isEnabled() and host.errors == []
    info = logic.wait(60)
    assert host.errors == [] and info is not None
    assert _calls(calls) == [expected]  # the widgets' values, the Train tab's device
    # the adapted model is in the Segment tab's list, selected, remembered; the adaptation lists it too
    assert host.added == [info] and segment.current_model_dir() == str(info.path)
    assert _items(ui.modelComboBox) == _items(ui.adaptModelComboBox) == ["other", "source", "site_model"]
    assert json.loads(host.settings["models"])[-1] == str(info.path)
    assert "added to the Segment tab" in ui.adaptStatusLabel.text() and "transductive" in ui.adaptStatusLabel.text()
    assert ui.adaptProgressBar.value() == 100 and ui.startAdaptButton.isEnabled()

    # Start again into the finished output: asked first; declining starts nothing, accepting starts over
    host.answer = False
    ui.startAdaptButton.click()
    assert "already exists. Replace it" in host.confirms[-1] and not logic.running and len(_calls(calls)) == 1
    host.answer = True
    ui.startAdaptButton.click()
    logic.wait(60)
    assert _calls(calls)[-1] == expected + ["--overwrite"] and host.errors == []


def test_tab_stop_resume_and_errors(scene, tmp_path, monkeypatch):
    calls = write_backend_stand_in(tmp_path / "backend", monkeypatch)
    monkeypatch.setenv("DVCL_STAND_IN_ITERATION_S", "0.2")
    p = _inputs(tmp_path)
    ui, host, segment, section, logic = _panel(scene, tmp_path, ModelRegistry([p.model_dir], installed=list))

    # a missing folder: refused before anything starts, reported through the host
    _fill(ui, p, iterations=50)
    ui.adaptLabeledFolderEdit.currentPath = ""
    ui.startAdaptButton.click()
    assert host.errors[-1][0] == "Cannot adapt" and "labeled data folder" in host.errors[-1][1]
    assert not logic.running and calls.read_text() == ""

    # Stop: the status says a checkpoint is being saved; the button then offers Resume
    ui.adaptLabeledFolderEdit.currentPath = p.labeled_dir
    ui.startAdaptButton.click()
    _poll_until(logic, lambda: logic.training)
    ui.stopAdaptButton.click()
    assert ui.adaptStatusLabel.text() == STOPPING_MESSAGE
    assert not ui.stopAdaptButton.isEnabled() and ui.forceStopAdaptButton.isEnabled()
    assert p.stop_file().is_file()
    logic.wait(60)
    assert ui.adaptStatusLabel.text().startswith("Stopped at iteration ") and host.errors[1:] == []
    assert ui.startAdaptButton.isEnabled() and ui.startAdaptButton.text() == "Resume"
    monkeypatch.setenv("DVCL_STAND_IN_ITERATION_S", "0.01")
    ui.startAdaptButton.click()
    assert ui.adaptStatusLabel.text() == "Resuming..."
    logic.wait(60)
    first, second = _calls(calls)
    assert first == second and host.errors[1:] == [] and ui.startAdaptButton.text() == "Start"

    # the backend refuses (an empty scans folder): its one-line message reaches the user
    empty = tmp_path / "empty"
    empty.mkdir()
    ui.adaptUnlabeledFolderEdit.currentPath = str(empty)
    ui.adaptOutputFolderEdit.currentPath = str(tmp_path / "out2")
    ui.startAdaptButton.click()
    logic.wait(60)
    title, message = host.errors[-1]
    assert title == "Adaptation failed" and "no scan found" in message
    assert ui.adaptStatusLabel.text().startswith("Failed: ") and not logic.running
