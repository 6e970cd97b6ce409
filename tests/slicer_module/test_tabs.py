"""The panel's Segment, Train and Evaluate flows, driven through the real .ui (PySide6, offscreen).

Each tab object binds the real widgets of DVCLSegmentation.ui to the real logic and a real MRML scene
(slicer-core); buttons are clicked, labels and enabled states are read back. Segment and Train run the
backend stand-in of panel_helpers.py (a real child process that follows the protocol and the file
contracts, including --uncertainty, which the backend does not have yet); Evaluate runs the real
``dvcl evaluate``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from dvcl_slicer_helpers import ABDOMEN_IMAGE, ABDOMEN_LABEL, load_volume, require_cli, require_slicer
from panel_helpers import Host, default_params, load_ui, write_backend_stand_in

slicer = require_slicer()
pytest.importorskip("PySide6")

from DVCLSegmentationLib import Catalog  # noqa: E402
from DVCLSegmentationLib.EvaluateTab import EvaluateTab  # noqa: E402
from DVCLSegmentationLib.EvaluationLogic import EvaluationLogic  # noqa: E402
from DVCLSegmentationLib.ModelRegistry import ModelRegistry  # noqa: E402
from DVCLSegmentationLib.Process import SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.SceneBridge import table_to_rows  # noqa: E402
from DVCLSegmentationLib.SegmentationLogic import SegmentationLogic  # noqa: E402
from DVCLSegmentationLib.SegmentTab import SegmentTab  # noqa: E402
from DVCLSegmentationLib.TrainingLogic import STOPPING_MESSAGE, TrainingLogic  # noqa: E402
from DVCLSegmentationLib.TrainTab import TrainTab, gpu_memory_warning  # noqa: E402

FLARE22 = ["liver", "right kidney", "spleen", "pancreas", "aorta", "inferior vena cava", "right adrenal gland",
           "left adrenal gland", "gallbladder", "esophagus", "stomach", "duodenum", "left kidney"]
CLOSED_SURFACE = "Closed surface"


def _model_folder(folder, **meta):
    folder.mkdir(parents=True)
    labels = {str(i + 1): {"name": n, "color": [200, 100, 50]} for i, n in enumerate(FLARE22)}
    (folder / "model.json").write_text(json.dumps({"format": "dvcl-model/1", "name": "stand_in",
                                                   "description": "stand-in", "labels": labels, **meta}))
    (folder / "weights.safetensors").write_bytes(b"x")
    return folder


def _calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_segment_flow(scene, tmp_path, monkeypatch):
    calls = write_backend_stand_in(tmp_path / "backend", monkeypatch)
    ui = load_ui()
    first = load_volume(scene, ABDOMEN_IMAGE, "first CT")
    second = load_volume(scene, ABDOMEN_IMAGE, "second CT")
    params = default_params(input_volume=first, uncertainty=True, show_3d=False)
    host = Host(scene, params)
    logic = SegmentationLogic(SubprocessProcess, temp_root=str(tmp_path))
    tab = SegmentTab(ui, host, logic, ModelRegistry([str(_model_folder(tmp_path / "model"))], installed=list))
    tab.refresh_models()
    assert ui.modelComboBox.count() == 1 and "13 structures: liver" in ui.modelInfoLabel.text()

    ui.segmentButton.click()
    assert logic.running and ui.cancelSegmentButton.isEnabled() and not ui.segmentButton.isEnabled()
    logic.wait(60)
    assert host.errors == []
    node1 = params.output_segmentation
    assert node1.GetSegmentation().GetNumberOfSegments() == 13
    assert ui.segmentStatusLabel.text() == f"Done: '{node1.GetName()}'" and ui.segmentButton.isEnabled()
    assert not node1.GetSegmentation().ContainsRepresentation(CLOSED_SURFACE)  # Show 3D off
    argv = _calls(calls)[-1]
    assert "--uncertainty" in argv and "--fast" not in argv and argv[argv.index("--device") + 1] == "cpu"
    # the uncertainty maps are shown over the CT and averaged per structure next to the volumes
    overlay = logic.uncertainty_nodes["disagreement"]
    assert host.shown[-1] == ("segmentation", first, node1, overlay)
    rows = {r["structure"]: r for r in table_to_rows(ui.volumesTableView.setMRMLTableNode.node)}
    assert rows["liver"]["mean_disagreement"] == pytest.approx(0.5) and rows["spleen"]["mean_disagreement"] == 0
    assert rows["liver"]["mean_entropy"] == pytest.approx(0.25) and rows["liver"]["voxels"] == 41692
    assert np.isnan(rows["esophagus"]["mean_entropy"])  # absent from the result

    # a second volume gets its own node: the first volume's result is kept as it was
    params.input_volume, params.fast, params.show_3d, params.uncertainty = second, True, True, False
    ui.segmentButton.click()
    logic.wait(60)
    node2 = params.output_segmentation
    assert node2 is not node1 and node1.GetSegmentation().GetNumberOfSegments() == 13
    assert node2.GetSegmentation().ContainsRepresentation(CLOSED_SURFACE)  # Show 3D on
    assert "--fast" in _calls(calls)[-1]
    ui.show3DCheckBox.setChecked(True)
    ui.show3DCheckBox.setChecked(False)  # toggled afterwards: the surfaces go at once
    assert not node2.GetSegmentation().ContainsRepresentation(CLOSED_SURFACE)
    ui.show3DCheckBox.setChecked(True)
    assert node2.GetSegmentation().ContainsRepresentation(CLOSED_SURFACE)

    # back to the first volume (the second one's node still selected): its own node is updated in place
    params.input_volume = first
    ui.segmentButton.click()
    logic.wait(60)
    assert params.output_segmentation is node1
    assert len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")) == 2
    assert [n.GetName() for n in slicer.util.getNodesByClass("vtkMRMLTableNode")] == ["first CT volumes",
                                                                                   "second CT volumes"]


def test_segment_tab_preselects_the_model_dvcl_segment_would_use(scene, tmp_path):
    """No model chosen before: the tab selects what ``dvcl segment`` uses without --model (the backend's
    model_choice rule: standard mode, best measured real-CT Dice); a remembered choice wins over it."""
    from dvcl.model_choice import best_model_index, ranking_entry

    folders = [_model_folder(tmp_path / name, name=name, preset="flare22", mode=mode,
                             card={"real_ct": {"mean_dice": score}} if score is not None else {})
               for name, mode, score in (("a_unmeasured", "standard", None), ("b_fast", "fast", 0.9),
                                         ("c_better", "standard", 0.6), ("d_worse", "standard", 0.1))]
    metas = [json.loads((f / "model.json").read_text()) for f in folders]
    assert best_model_index([ranking_entry(m, False) for m in metas]) == 2  # the backend's choice
    host = Host(scene, default_params())
    tab = SegmentTab(load_ui(), host, SegmentationLogic(SubprocessProcess, temp_root=str(tmp_path)),
                     ModelRegistry([str(f) for f in folders], installed=list))
    tab.refresh_models()
    assert tab.ui.modelComboBox.currentText() == "c_better"
    tab.refresh_models(str(folders[3].resolve()))
    assert tab.ui.modelComboBox.currentText() == "d_worse"


def test_train_flow_profile_gpu_check_stop_and_force_stop(scene, tmp_path, monkeypatch):
    write_backend_stand_in(tmp_path / "backend", monkeypatch)
    ui = load_ui()
    params = default_params()
    host = Host(scene, params)
    logic = TrainingLogic(SubprocessProcess)
    tab = TrainTab(ui, host, logic)
    tab.refresh_catalogue()
    assert [ui.methodComboBox.itemText(i) for i in range(ui.methodComboBox.count())] == Catalog.method_names()
    assert ui.profileComboBox.currentText() == Catalog.default_profile() == "paper"
    assert ui.presetComboBox.currentText() == "flare22"

    ui.profileComboBox.setCurrentText("quick")
    tab.on_profile_chosen()
    assert (params.iterations, params.batch_labeled, params.patch_x) == (300, 2, 64)
    ui.profileComboBox.setCurrentText("paper")
    tab.on_profile_chosen()
    assert (params.iterations, params.batch_labeled, params.patch_x) == (20000, 4, 128)  # the preset's schedule

    (tmp_path / "data").mkdir()
    ui.dataFolderEdit.currentPath = str(tmp_path / "data")
    ui.runFolderEdit.currentPath = str(tmp_path / "run")
    # the paper profile on an 8 GB card: warned before anything starts; declining starts nothing
    host.info = {"devices": {"cuda": True, "gpus": [{"name": "GeForce RTX 3070", "memory_gb": 7.8}]}}
    params.train_device = "cuda"
    host.answer = False
    ui.startTrainingButton.click()
    assert "about 11 GiB" in host.confirms[-1] and "7.8 GB" in host.confirms[-1] and not logic.running

    host.answer = True
    ui.startTrainingButton.click()
    assert logic.running and ui.stopTrainingButton.isEnabled() and not ui.startTrainingButton.isEnabled()
    deadline = time.monotonic() + 60
    while not logic.curves.column("iteration"):
        logic._process.poll()
        time.sleep(0.02)
        assert time.monotonic() < deadline
    ui.stopTrainingButton.click()
    assert ui.trainStatusLabel.text() == STOPPING_MESSAGE
    assert not ui.stopTrainingButton.isEnabled() and ui.forceStopTrainingButton.isEnabled()
    logic.wait(60)
    assert ui.trainStatusLabel.text().startswith("Stopped at iteration ")
    assert ui.startTrainingButton.isEnabled() and ui.resumeTrainingButton.isEnabled()
    assert not ui.forceStopTrainingButton.isEnabled() and host.errors == []

    # Resume, then Force stop: the stand-in ignores nothing but never finishes; the tree is killed at once
    ui.resumeTrainingButton.click()
    assert logic.running
    t0 = time.monotonic()
    ui.forceStopTrainingButton.click()
    assert "iterations since the last saved checkpoint are lost" in host.confirms[-1]
    logic.wait(30)
    assert time.monotonic() - t0 < 10 and not logic.running


def test_gpu_memory_warning():
    big = {"devices": {"cuda": True, "gpus": [{"name": "H100", "memory_gb": 79.1}]}}
    assert gpu_memory_warning(big, "cuda") is None and gpu_memory_warning(None, "auto") is None
    two = {"devices": {"cuda": True, "gpus": [{"name": "A", "memory_gb": 80}, {"name": "B", "memory_gb": 11.0}]}}
    assert gpu_memory_warning(two, "cuda:0") is None and "B has 11.0 GB" in gpu_memory_warning(two, "cuda:1")
    assert "No CUDA GPU" in gpu_memory_warning({"devices": {"cuda": False, "gpus": []}})
    assert "on the CPU" in gpu_memory_warning(big, "cpu")


@pytest.mark.slow
def test_evaluate_flow_without_a_report_folder(scene, tmp_path):
    require_cli("evaluate")
    ui = load_ui()
    volume = load_volume(scene, ABDOMEN_IMAGE, "ct")
    prediction = load_volume(scene, ABDOMEN_LABEL, "prediction", labelmap=True)
    reference = load_volume(scene, ABDOMEN_LABEL, "reference", labelmap=True)
    params = default_params(eval_prediction=prediction, eval_reference=reference, eval_volume=volume)
    host = Host(scene, params)
    logic = EvaluationLogic(SubprocessProcess, temp_root=str(tmp_path))
    tab = EvaluateTab(ui, host, logic)
    tab.refresh_catalogue()
    ui.evalPresetComboBox.setCurrentText("flare22")
    assert ui.evalOutputFolderEdit.currentPath == ""
    ui.evaluateButton.click()
    assert not ui.evaluateButton.isEnabled()
    report = logic.wait(180)
    assert host.errors == [], host.errors
    assert ui.evaluationTableView.setMRMLTableNode.node is report.table_node
    rows = table_to_rows(report.table_node)
    dice = {r["structure"]: r["dice_pct"] for r in rows if r.get("status") == "ok"}
    assert len(dice) == 12 and all(v == pytest.approx(100.0) for v in dice.values())  # esophagus is absent
    assert f"Report: {report.csv_path}" in ui.evalSummaryLabel.text()
    assert str(report.csv_path).startswith(str(tmp_path)) and ui.evaluateButton.isEnabled()


@pytest.mark.slow
def test_setup_flow_dependencies_and_device(scene):
    require_cli("info")
    torch = pytest.importorskip("torch")
    from DVCLSegmentationLib.InstallLogic import InstallLogic
    from DVCLSegmentationLib.SetupTab import SetupTab

    ui = load_ui()
    host = Host(scene, default_params())
    tab = SetupTab(ui, host, InstallLogic(), process_factory=SubprocessProcess)
    ui.checkDependenciesButton.click()
    assert f"torch {torch.__version__}: OK" in ui.dependencyStatusLabel.text()
    assert "dvcl 0.1.0: OK" in ui.dependencyStatusLabel.text()
    ui.checkDeviceButton.click()
    assert ui.deviceInfoLabel.text() == "Running dvcl info..."
    tab._info_process.wait(120)
    assert tab.info["torch"] == torch.__version__
    assert ui.deviceInfoLabel.text().startswith("GPU available" if torch.cuda.is_available() else "No CUDA GPU")
    assert tab.device_info() is tab.info  # kept for the Train tab's GPU-memory check, not asked again
