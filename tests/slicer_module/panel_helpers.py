"""The real .ui loaded offscreen with PySide6, a PanelHost for the tabs, and a backend stand-in process.

Slicer's own widgets (qMRMLNodeComboBox, ctkPathLineEdit, qMRMLTableView) do not exist outside Slicer:
QUiLoader builds them as plain QWidgets. The tabs read node choices from the parameter object (the
parameterNodeWrapper in Slicer, a namespace here), folders through ``currentPath`` and show tables through
``setMRMLTableNode``: the placeholders get those two attributes, everything else is the real widget.

The backend stand-in (``write_backend_stand_in``) is a real child process started the way the module starts
``dvcl`` (``$DVCL_PYTHON -m dvcl.cli.main --progress json ...``); it speaks the progress protocol and writes
files that follow the contracts (``dvcl segment``'s label file on the input grid and, with --uncertainty, the
entropy and disagreement maps of contract 5; ``dvcl train`` that polls RUN_DIR/STOP each "iteration"; ``dvcl adapt``
that prepares, trains (polling WORK/run/STOP, resuming from WORK/run/iteration) and writes a model package).
It stands in where the real backend would make a test slow (a network) or does not exist yet (--uncertainty).
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from dvcl_slicer_helpers import ABDOMEN_LABEL, MODULE_DIR

UI_FILE = MODULE_DIR / "Resources" / "UI" / "DVCLSegmentation.ui"
_APP: List[Any] = []


def qt_app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    _APP.append(app)
    return app


class _TableViewStandIn:
    def __init__(self) -> None:
        self.node = None

    def __call__(self, node) -> None:
        self.node = node


def load_ui() -> SimpleNamespace:
    """Every named widget of the .ui as an attribute (like ``slicer.util.childWidgetVariables``)."""
    qt_app()
    from PySide6 import QtCore, QtUiTools, QtWidgets

    loader = QtUiTools.QUiLoader()
    file = QtCore.QFile(str(UI_FILE))
    assert file.open(QtCore.QIODevice.ReadOnly)
    form = loader.load(file)
    file.close()
    widgets = {w.objectName(): w for w in form.findChildren(QtWidgets.QWidget) if w.objectName()}
    ui = SimpleNamespace(form=form, **widgets)
    for name in ("dataFolderEdit", "unlabeledFolderEdit", "datasetJsonEdit", "runFolderEdit", "evalOutputFolderEdit",
                 "adaptLabeledFolderEdit", "adaptUnlabeledFolderEdit", "adaptOutputFolderEdit"):
        getattr(ui, name).currentPath = ""
    for name in ("volumesTableView", "evaluationTableView"):
        view = getattr(ui, name)
        view.setMRMLTableNode = _TableViewStandIn()
    return ui


def default_params(**changes) -> SimpleNamespace:
    """The parameter node's fields with the defaults of Widget.py's parameterNodeWrapper."""
    values = dict(input_volume=None, output_segmentation=None, segment_device="cpu", tta=False, fast=False,
                  uncertainty=False, show_3d=True, labeled_fraction=0.1, iterations=20000, batch_labeled=4,
                  batch_unlabeled=4, patch_z=64, patch_y=128, patch_x=128, train_device="auto",
                  eval_prediction=None, eval_reference=None, eval_volume=None)
    values.update(changes)
    return SimpleNamespace(**values)


class Host:
    """A PanelHost that records what the panel would show (dialogs answer ``answer``)."""

    def __init__(self, scene, params: SimpleNamespace) -> None:
        self.scene = scene
        self.params = params
        self.log: List[str] = []
        self.errors: List[tuple] = []
        self.confirms: List[str] = []
        self.answer = True
        self.settings: Dict[str, str] = {}
        self.shown: List[tuple] = []
        self.info: Optional[dict] = None
        self.folder = ""
        self.setup_tab = None
        self.added: List[Any] = []

    def append_log(self, line: str) -> None:
        self.log.append(str(line))

    def confirm(self, message: str) -> bool:
        self.confirms.append(message)
        return self.answer

    def report_error(self, title: str, message: str) -> None:
        self.errors.append((title, message))

    def inform(self, message: str) -> None:
        self.log.append(message)

    def settings_value(self, key: str, default: str = "") -> str:
        return self.settings.get(key, default)

    def set_settings_value(self, key: str, value: str) -> None:
        self.settings[key] = value

    def show_tab(self, name: str) -> None:
        self.shown.append(("tab", name))

    def ensure_backend(self, training: bool = False) -> bool:
        return True if self.setup_tab is None else self.setup_tab.ensure(training)

    def device_info(self) -> Optional[dict]:
        return self.info

    def choose_folder(self, title: str) -> str:
        return self.folder

    def show_segmentation(self, volume, segmentation, overlay=None) -> None:
        self.shown.append(("segmentation", volume, segmentation, overlay))

    def show_chart(self, chart) -> None:
        self.shown.append(("chart", chart))

    def model_added(self, info) -> None:
        self.added.append(info)


STAND_IN = textwrap.dedent('''
    """dvcl stand-in: speaks the progress protocol and writes contract files (see panel_helpers.py)."""
    import json, os, shutil, sys, time
    import numpy as np
    import SimpleITK as sitk

    LABEL = {label!r}

    def ev(**kw):
        sys.stdout.write(json.dumps(kw) + "\\n"); sys.stdout.flush()

    argv = sys.argv[sys.argv.index("json") + 1:]
    command = argv[0]
    with open(os.environ["DVCL_STAND_IN_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\\n")
    if command == "segment":
        out = argv[argv.index("-o") + 1]
        ev(event="start", task="segment", total=2)
        label = sitk.ReadImage(LABEL)
        ref = sitk.ReadImage(argv[1])
        label.CopyInformation(ref)
        sitk.WriteImage(label, out)
        ev(event="progress", task="segment", step=1, total=2, message="network")
        ev(event="output", path=out, kind="segmentation")
        if "--uncertainty" in argv:
            arr = sitk.GetArrayFromImage(label)
            stem = out[: -len(".nii.gz")]
            maps = {{"entropy": np.where(arr > 0, 0.25, 0.0), "disagreement": np.where(arr == 1, 0.5, 0.0)}}
            for quantity, values in maps.items():
                image = sitk.GetImageFromArray(values.astype(np.float32))
                image.CopyInformation(ref)
                path = f"{{stem}}_{{quantity}}.nii.gz"
                sitk.WriteImage(image, path)
                ev(event="output", path=path, kind="uncertainty", quantity=quantity)
        ev(event="progress", task="segment", step=2, total=2, message="done")
        sys.exit(0)
    if command == "train":
        run = argv[argv.index("--resume") + 1] if "--resume" in argv else argv[argv.index("--out") + 1]
        os.makedirs(run, exist_ok=True)
        open(os.path.join(run, "config.yaml"), "w").write("method: dvcl\\n")
        ev(event="start", task="train", total=1000)
        for it in range(1, 1000):
            time.sleep(0.1)
            ev(event="progress", task="train", step=it, total=1000)
            ev(event="metrics", iteration=it, losses={{"sup": 1.0 / it}}, lr=0.1, val_dice=None)
            if os.path.exists(os.path.join(run, "STOP")):
                time.sleep(0.5)  # "saving the checkpoint"
                os.remove(os.path.join(run, "STOP"))
                sys.exit(130)
        sys.exit(0)
    if command == "adapt":
        if os.environ.get("DVCL_STAND_IN_IGNORE_SIGTERM"):  # like the PythonSlicer launcher: only a kill ends it
            import signal
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        def opt(name, default=None):
            return argv[argv.index(name) + 1] if name in argv else default
        out, unlabeled = opt("-o"), opt("--unlabeled")
        work = opt("--work-dir", out.rstrip("/") + ".adapt-work")
        run = os.path.join(work, "run")
        iterations = int(opt("--iterations", "300"))
        scans = sorted(f for f in os.listdir(unlabeled) if not f.startswith("."))
        if not scans:
            sys.stderr.write(f"dvcl: error: {{unlabeled}}: no scan found (NIfTI, NRRD, MHA/MHD or DICOM folders)\\n")
            sys.exit(2)
        if os.path.isdir(out) and os.listdir(out) and "--overwrite" not in argv:
            sys.stderr.write(f"dvcl: error: {{out}}: exists (use --overwrite to replace it)\\n")
            sys.exit(2)
        if "--overwrite" in argv:
            shutil.rmtree(work, ignore_errors=True)
        os.makedirs(run, exist_ok=True)
        open(os.path.join(work, "adapt.json"), "w").write(json.dumps({{"argv": argv}}))
        ev(event="start", task="prepare", total=len(scans))
        for i, _ in enumerate(scans, 1):
            time.sleep(float(os.environ.get("DVCL_STAND_IN_PREPARE_S", "0")))
            ev(event="progress", task="prepare", step=i, total=len(scans), message="preprocessing")
        state = os.path.join(run, "iteration")
        first = int(open(state).read()) + 1 if os.path.exists(state) else 1
        ev(event="start", task="train", total=iterations)
        for it in range(first, iterations + 1):
            time.sleep(float(os.environ.get("DVCL_STAND_IN_ITERATION_S", "0.05")))
            ev(event="progress", task="train", step=it, total=iterations)
            ev(event="metrics", iteration=it, losses={{"sup": 1.0 / it}}, lr=0.1, val_dice=None)
            open(state, "w").write(str(it))
            if os.path.exists(os.path.join(run, "STOP")):
                time.sleep(0.3)  # "saving the checkpoint"
                os.remove(os.path.join(run, "STOP"))
                sys.exit(130)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        labels = {{"1": {{"name": "liver", "color": [200, 100, 50]}},
                  "2": {{"name": "spleen", "color": [50, 100, 200]}}}}
        name = os.path.basename(out.rstrip("/"))
        json.dump({{"format": "dvcl-model/1", "name": name, "description": "adapted (stand-in)", "labels": labels,
                   "card": {{"transductive": "scores on these scans are transductive"}}}},
                  open(os.path.join(out, "model.json"), "w"))
        open(os.path.join(out, "weights.safetensors"), "wb").write(b"x")
        ev(event="done", task="adapt", model=os.path.abspath(out))
        sys.exit(0)
    sys.stderr.write(f"dvcl: error: the stand-in has no '{{command}}'\\n")
    sys.exit(2)
''')


def write_backend_stand_in(folder: Path, monkeypatch) -> Path:
    """An executable stand-in for ``$DVCL_PYTHON -m dvcl.cli.main``; returns the file its calls are logged to."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "dvcl_stand_in"
    script.write_text(f"#!{sys.executable}\n" + STAND_IN.format(label=str(ABDOMEN_LABEL)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = folder / "calls.jsonl"
    log.write_text("")
    monkeypatch.setenv("DVCL_PYTHON", str(script))
    monkeypatch.setenv("DVCL_STAND_IN_LOG", str(log))
    return log
