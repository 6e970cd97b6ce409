"""Training from the GUI's logic: real ``dvcl train`` on phantoms, Stop, Resume, export, model registration.

The schedule is cut to a few iterations of a tiny network (``--profile quick`` plus ``--set`` overrides) so
the whole Start -> Stop -> Resume -> export cycle runs on a CPU; what is checked is the plumbing: the CLI
accepts the Train tab's arguments, metrics reach the live plot, Stop during a slow iteration (longer than
any kill grace: the trainer's ``DVCL_TEST_SLOW_ITERATION_S`` hook sleeps inside each iteration of the real
run) leaves a checkpoint that Resume continues from, and the exported model package appears in the Segment
tab's model list.
"""

from __future__ import annotations

import csv
import json
import stat
import sys
import time

import pytest
from dvcl_slicer_helpers import require_cli, require_slicer

slicer = require_slicer()

from DVCLSegmentationLib.ModelRegistry import ModelRegistry  # noqa: E402
from DVCLSegmentationLib.Parameter import ParameterError, TrainingParameters  # noqa: E402
from DVCLSegmentationLib.Process import DEFAULT_KILL_GRACE_S, SubprocessProcess  # noqa: E402
from DVCLSegmentationLib.TrainingLogic import STOP_FILE, STOPPING, TrainingLogic  # noqa: E402

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
    rec = {"metrics": [], "progress": [], "errors": [], "cancelled": [], "exported": [], "finished": [],
           "stopping": []}
    logic.stopping.connect(lambda: rec["stopping"].append(True))
    logic.metrics.connect(rec["metrics"].append)
    logic.progress.connect(rec["progress"].append)
    logic.error_occurred.connect(rec["errors"].append)
    logic.cancelled.connect(lambda: rec["cancelled"].append(True))
    logic.model_exported.connect(rec["exported"].append)
    logic.finished.connect(rec["finished"].append)
    return rec


def test_stop_file_name_matches_the_trainer():
    from dvcl.training import trainer

    assert trainer.STOP_FILE == STOP_FILE


LAUNCHER = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like PythonSlicer (CTKAppLauncher): no signal is forwarded
sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))
"""


def test_start_stop_resume_export_register(scene, phantoms, tmp_path, monkeypatch):
    """The whole cycle through a launcher stand-in, as inside Slicer: Stop must not rely on signals."""
    from dvcl.training.checkpoint import load_state
    from dvcl.training.trainer import SLOW_ITERATION_ENV

    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f"#!{sys.executable}\n{LAUNCHER}")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("DVCL_PYTHON", str(launcher))

    slow_s = DEFAULT_KILL_GRACE_S + 1.0  # one iteration outlasts the old 5 s SIGTERM -> SIGKILL grace
    monkeypatch.setenv(SLOW_ITERATION_ENV, str(slow_s))
    run_dir = tmp_path / "run"
    params = TrainingParameters(data_dir=str(phantoms), preset="flare22", method="dvcl", labeled_fraction=1.0,
                                iterations=4, batch_labeled=1, batch_unlabeled=1, patch=(16, 32, 32),
                                run_dir=str(run_dir), device="cpu", profile="quick", settings=TINY, workers=0)
    logic = TrainingLogic(SubprocessProcess)
    rec = _record(logic)

    # Start, then Stop during the second (slow) iteration
    logic.start(params, scene=scene)
    process = logic._process
    results = []
    process.finished.connect(results.append)
    deadline = time.monotonic() + 300
    while not rec["metrics"]:
        process.poll()
        time.sleep(0.05)
        assert time.monotonic() < deadline and process.running, rec["errors"]
    t0 = time.monotonic()
    logic.stop()
    assert logic.state == STOPPING and logic.running and rec["stopping"] == [True]
    assert (run_dir / STOP_FILE).is_file()
    assert logic.wait(300) is None
    waited = time.monotonic() - t0
    assert rec["cancelled"] == [True] and rec["errors"] == [] and rec["exported"] == []
    (result,) = results
    assert result.exit_code == 130, result  # the trainer exited by itself after saving, nothing was killed
    assert process.pid is not None and not process.running
    assert waited > 1.0  # the iteration in progress was allowed to finish
    assert not logic.running and (run_dir / "config.yaml").is_file()
    assert not (run_dir / STOP_FILE).exists()  # consumed: it must not stop the resumed run
    stopped_at = load_state(run_dir / "checkpoints" / "last_state.pt")["iteration"]
    assert 2 <= stopped_at < 4
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    rows_after_stop = len(logic.curves.column("iteration"))
    assert rows_after_stop >= 1
    monkeypatch.delenv(SLOW_ITERATION_ENV)

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

    # the resumed run went on from the checkpoint: every iteration logged once, none repeated
    rows = [int(r["iteration"]) for r in csv.DictReader((run_dir / "metrics.csv").open())]
    assert rows == [1, 2, 3, 4]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"

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
