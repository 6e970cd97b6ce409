"""First run: the lists come from the backend's torch-free catalogue, opening the panel imports neither torch
nor MONAI, and the first Segment click installs the backend and refreshes the panel in place.

The no-torch check runs in a fresh interpreter (``sys.modules`` of this test process already holds torch):
it imports the panel module and its tabs with a ``qt`` module made of PySide6 (the API of Slicer's PythonQt),
builds every tab on the real .ui with the real logic, fills every list, and reports ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from dvcl_slicer_helpers import ABDOMEN_IMAGE, MODULE_DIR, REPO, load_volume, require_slicer

from DVCLSegmentationLib import Catalog
from DVCLSegmentationLib.Backend import installed_models

CHILD_ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}


def test_catalogue_is_the_backends_own():
    from dvcl import presets, profiles
    from dvcl.methods import catalog

    assert Catalog.method_names() == catalog.method_names() and "dvcl" in Catalog.method_names()
    assert Catalog.method_display_name("dvcl") == catalog.display_name("dvcl")
    assert Catalog.preset_names() == presets.list_presets()
    assert Catalog.profile_names() == profiles.profile_names() and Catalog.default_profile() == "paper"
    assert Catalog.preset_labels("flare22")[1] == "liver"
    quick = Catalog.profile_defaults("quick", "flare22")
    assert quick == {"iterations": 300, "batch_labeled": 2, "batch_unlabeled": 2, "patch": (32, 64, 64)}
    flare = presets.get_preset("flare22")
    paper = Catalog.profile_defaults("paper", "flare22")  # the paper profile leaves the schedule to the preset
    assert paper == {"iterations": flare.iterations, "batch_labeled": flare.batch_labeled,
                     "batch_unlabeled": flare.batch_unlabeled, "patch": (64, 128, 128)}


def test_catalogue_from_the_bundled_source_before_installation():
    """Without site-packages (python -S: no dvcl, no numpy) the lists still come from the bundled backend."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(MODULE_DIR)!r})
        from DVCLSegmentationLib import Catalog
        out = {{"source": str(Catalog.dvcl_package_dir()), "methods": Catalog.method_names(),
               "presets": Catalog.preset_names(), "profiles": Catalog.profile_names(),
               "dvcl_left": "dvcl" in sys.modules, "numpy": "numpy" in sys.modules}}
        print(json.dumps(out))
    """)
    env = {**CHILD_ENV, "DVCL_BACKEND_DIR": str(REPO / "backend")}
    done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    from dvcl import presets, profiles
    from dvcl.methods import catalog

    assert out["methods"] == catalog.method_names() and out["presets"] == presets.list_presets()
    assert out["profiles"] == profiles.profile_names()
    assert out["source"] == str(REPO / "backend" / "dvcl")
    assert not out["dvcl_left"] and not out["numpy"]  # nothing registered for good, nothing heavy imported


PANEL_SCRIPT = textwrap.dedent("""
    import json, sys, types
    sys.path[:0] = [{module_dir!r}, {tests_dir!r}]
    from PySide6 import QtCore, QtGui, QtWidgets

    class _Qt(types.ModuleType):  # Slicer's PythonQt 'qt' module: QtCore, QtGui and QtWidgets in one
        def __getattr__(self, name):
            for part in (QtWidgets, QtGui, QtCore):
                if hasattr(part, name):
                    return getattr(part, name)
            raise AttributeError(name)

    sys.modules["qt"] = _Qt("qt")
    import slicer
    from DVCLSegmentationLib import Widget  # the panel module and, through it, every tab
    from DVCLSegmentationLib.AdaptLogic import AdaptLogic
    from DVCLSegmentationLib.AdaptSection import AdaptSection
    from DVCLSegmentationLib.EvaluateTab import EvaluateTab
    from DVCLSegmentationLib.EvaluationLogic import EvaluationLogic
    from DVCLSegmentationLib.InstallLogic import InstallLogic
    from DVCLSegmentationLib.ModelRegistry import ModelRegistry
    from DVCLSegmentationLib.SegmentationLogic import SegmentationLogic
    from DVCLSegmentationLib.SegmentTab import SegmentTab
    from DVCLSegmentationLib.SetupTab import SetupTab
    from DVCLSegmentationLib.TrainingLogic import TrainingLogic
    from DVCLSegmentationLib.TrainTab import TrainTab
    from DVCLSegmentationLib.TabBase import PanelHost
    from panel_helpers import Host, default_params, load_ui

    ui = load_ui()
    host = Host(slicer.vtkMRMLScene(), default_params())
    install = InstallLogic()
    setup = SetupTab(ui, host, install)
    models = ModelRegistry()
    tabs = [SegmentTab(ui, host, SegmentationLogic(), models, backend_ready=install.is_ready),
            TrainTab(ui, host, TrainingLogic()), AdaptSection(ui, host, AdaptLogic(), models),
            EvaluateTab(ui, host, EvaluationLogic()), setup]
    for tab in tabs:
        tab.refresh_catalogue()
        tab.update_buttons()
    setup.on_check_dependencies()
    print(json.dumps({{
        "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai")),
        "methods": ui.methodComboBox.count(), "models": ui.modelComboBox.count(),
        "adapt_models": ui.adaptModelComboBox.count(), "adapt_iterations": ui.adaptIterationsSpinBox.value(),
        "status": ui.dependencyStatusLabel.text(), "widget_module": Widget.__name__,
        "host_missing": [n for n in vars(PanelHost) if not n.startswith("_") and not hasattr(Widget.Widget, n)]}}))
""")


def test_opening_the_panel_imports_neither_torch_nor_monai():
    require_slicer()
    pytest.importorskip("PySide6")
    script = PANEL_SCRIPT.format(module_dir=str(MODULE_DIR), tests_dir=str(REPO / "tests" / "slicer_module"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert out["widget_module"] == "DVCLSegmentationLib.Widget"
    assert out["host_missing"] == []  # the panel implements everything the tabs ask of their host
    assert out["methods"] == len(Catalog.method_names()) and out["models"] == len(installed_models()) >= 1
    assert out["adapt_models"] == out["models"] and out["adapt_iterations"] == Catalog.adapt_default_iterations()
    assert "torch" in out["status"] and "dvcl 0.1.0: OK" in out["status"]


def test_first_segment_click_installs_and_refreshes_in_place(scene, tmp_path):
    """Before installation: no model and a message that says what to do; Segment offers the installation,
    runs it (pip through the injected runner: the real one downloads), and the model list fills in place."""
    pytest.importorskip("PySide6")
    from panel_helpers import Host, default_params, load_ui

    from DVCLSegmentationLib.InstallLogic import InstallLogic, installed_version
    from DVCLSegmentationLib.ModelRegistry import ModelRegistry
    from DVCLSegmentationLib.Process import SubprocessProcess
    from DVCLSegmentationLib.SegmentationLogic import SegmentationLogic
    from DVCLSegmentationLib.SegmentTab import NO_BACKEND_TEXT, SegmentTab
    from DVCLSegmentationLib.SetupTab import SetupTab

    state = {"installed": False}
    pip_calls = []

    def version_of(dist, import_name):  # the machine before/after `pip install dvcl`
        return installed_version(dist, import_name) if state["installed"] or dist != "dvcl" else None

    def pip(args):
        pip_calls.append(list(args))
        state["installed"] = True

    ui = load_ui()
    params = default_params(input_volume=load_volume(scene, ABDOMEN_IMAGE, "ct"))
    host = Host(scene, params)
    install = InstallLogic(pip_install=pip, confirm=host.confirm, version_of=version_of)
    refreshed = []
    setup = SetupTab(ui, host, install, on_installed=lambda: (Catalog.reload(), refreshed.append(True),
                                                              segment.refresh_catalogue()))
    host.setup_tab = setup
    logic = SegmentationLogic(SubprocessProcess, temp_root=str(tmp_path))
    segment = SegmentTab(ui, host, logic, ModelRegistry(installed=lambda: installed_models() if state["installed"]
                                                        else []), backend_ready=install.is_ready)
    segment.refresh_models()
    assert ui.modelComboBox.count() == 0 and ui.modelInfoLabel.text() == NO_BACKEND_TEXT
    assert ui.segmentButton.isEnabled()  # pressable: it is how the installation is offered

    host.answer = False  # declined: nothing installed, nothing started
    ui.segmentButton.click()
    assert "dvcl: missing" in host.confirms[-1] and pip_calls == [] and not logic.running
    host.answer = True
    ui.segmentButton.click()
    try:
        assert refreshed == [True]
        (command,) = pip_calls
        assert command[0] == "--no-deps" and command[-1] == str(REPO / "backend")
        assert ui.modelComboBox.count() == len(installed_models()) >= 1
        preferred = Catalog.preferred_model(installed_models())  # what `dvcl segment` uses without --model
        assert ui.modelComboBox.currentText() == preferred.name and "structures" in ui.modelInfoLabel.text()
        assert logic.running  # the click went on to segment with the freshly listed model
    finally:
        logic.cancel()
        logic.wait(60)
