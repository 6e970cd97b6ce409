"""Training from the GUI's logic: real ``dvcl train`` on phantoms, Stop, Resume, export, model registration.

The schedule is cut to a few iterations of a tiny network (``--profile quick`` plus ``--set`` overrides) so
the whole Start -> Stop -> Resume -> export cycle runs on a CPU; what is checked is the plumbing: the CLI
accepts the Train tab's arguments, metrics reach the live plot, Stop keeps a resumable run, and the exported
model package appears in the Segment tab's model list.
"""

from __future__ import annotations

import time

import pytest
from dvcl_slicer_helpers import require_cli, require_slicer

slicer = require_slicer()

from DVCLSegmentationLib.ModelRegistry import ModelRegistry  # noqa: E402
from DVCLSegmentationLib.Parameter import ParameterError, TrainingParameters  # noqa: E402
from DVCLSegmentationLib.Process import SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.TrainingLogic import TrainingLogic  # noqa: E402

pytestmark = pytest.mark.slow

TINY = ("network.channels=[4,8]", "log_every=1", "val_cases=1", "val_overlap=0", "val_every=100")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    require_cli("train")
    require_cli("export")
    from dvcl.phantoms import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 3, 1)
    return root


def _record(logic):
    rec = {"metrics": [], "progress": [], "errors": [], "cancelled": [], "exported": [], "finished": []}
    logic.metrics.connect(rec["metrics"].append)
    logic.progress.connect(rec["progress"].append)
    logic.error_occurred.connect(rec["errors"].append)
    logic.cancelled.connect(lambda: rec["cancelled"].append(True))
    logic.model_exported.connect(rec["exported"].append)
    logic.finished.connect(rec["finished"].append)
    return rec


def test_start_stop_resume_export_register(scene, phantoms, tmp_path):
    run_dir = tmp_path / "run"
    params = TrainingParameters(data_dir=str(phantoms), preset="flare22", method="dvcl", labeled_fraction=1.0,
                                iterations=4, batch_labeled=1, batch_unlabeled=1, patch=(16, 32, 32),
                                run_dir=str(run_dir), device="cpu", profile="quick", settings=TINY, workers=0)
    logic = TrainingLogic(SubprocessProcess)
    rec = _record(logic)

    # Start, then Stop after the first logged iteration
    logic.start(params, scene=scene)
    process = logic._process
    deadline = time.monotonic() + 300
    while not rec["metrics"]:
        process.poll()
        time.sleep(0.05)
        assert time.monotonic() < deadline and process.running, rec["errors"]
    logic.cancel()
    assert logic.wait(120) is None
    assert rec["cancelled"] == [True] and rec["errors"] == [] and rec["exported"] == []
    assert not logic.running and (run_dir / "config.yaml").is_file()
    rows_after_stop = len(logic.curves.column("iteration"))
    assert rows_after_stop >= 1

    # a new Start into the same folder must be explicit (the CLI refuses to overwrite a run)
    assert params.run_exists()

    # Resume continues the run, then the model is exported and announced
    logic.start(params, scene=scene, resume=True)
    info = logic.wait(300)
    assert rec["errors"] == [], rec["errors"]
    assert info is not None and rec["exported"] == [info] and rec["finished"][-1] == info
    assert info.path == (run_dir / "model").resolve()
    assert [lab.name for lab in info.labels][:3] == ["liver", "right kidney", "spleen"]
    assert len(info.labels) == 13

    # the live plot received every logged iteration (the resumed ones appended to the same table)
    iterations = logic.curves.column("iteration")
    assert iterations == sorted(iterations) and iterations[-1] == 4.0 and len(iterations) > rows_after_stop
    assert set(logic.curves.series) >= {"val_dice", "sup", "loss"}
    assert len(logic.curves.column("val_dice")) >= 1  # validation at the last iteration
    assert scene.GetNodesByClass("vtkMRMLPlotChartNode").GetNumberOfItems() == 1

    # the Segment tab's list now offers the trained model
    registry = ModelRegistry(installed=lambda: [])
    registry.add(info.path)
    assert [m.path for m in ModelRegistry.from_json(registry.to_json(), installed=lambda: []).models()] == [info.path]


def test_resume_without_a_run_is_refused(tmp_path):
    params = TrainingParameters(run_dir=str(tmp_path / "empty"))
    with pytest.raises(ParameterError, match="nothing to resume"):
        TrainingLogic(SubprocessProcess).start(params, resume=True)
