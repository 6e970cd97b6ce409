"""The .ui file against the code that uses it, loaded offscreen with PySide6's QUiLoader.

Every ``ui.<name>`` the Widget touches must exist in the .ui with the class its role needs; every widget bound
to the parameter node (``SlicerParameterName``) must match a field of the ``parameterNodeWrapper`` class with
a compatible type. QUiLoader builds unknown Slicer/CTK classes as plain QWidgets, so for those the class is
checked in the XML (and its <customwidget> declaration) instead of on the loaded object.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import xml.etree.ElementTree as ET

import pytest
from dvcl_slicer_helpers import MODULE_DIR, REPO

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is needed to load the .ui file")
from PySide6 import QtCore, QtUiTools  # noqa: E402

UI_FILE = MODULE_DIR / "Resources" / "UI" / "DVCLSegmentation.ui"
WIDGET_SOURCE = MODULE_DIR / "DVCLSegmentationLib" / "Widget.py"
#: the panel and the one file per tab that binds the widgets of its page
PANEL_SOURCES = [WIDGET_SOURCE] + [MODULE_DIR / "DVCLSegmentationLib" / f"{tab}Tab.py"
                                   for tab in ("Segment", "Train", "Evaluate", "Setup")]
PANEL_SOURCES.append(MODULE_DIR / "DVCLSegmentationLib" / "AdaptSection.py")  # the Train tab's adaptation section
CUSTOM = {"qMRMLNodeComboBox", "qMRMLTableView", "qMRMLWidget", "ctkPathLineEdit", "ctkCollapsibleButton"}

#: naming convention of the module -> the classes a widget with that name may have (first match wins)
ROLES = [
    ("CollapsibleButton", {"ctkCollapsibleButton"}),
    ("Button", {"QPushButton"}),
    ("ComboBox", {"QComboBox"}),
    ("Selector", {"qMRMLNodeComboBox"}),
    ("SpinBox", {"QSpinBox", "QDoubleSpinBox"}),
    ("TextEdit", {"QPlainTextEdit"}),
    ("Edit", {"ctkPathLineEdit"}),
    ("CheckBox", {"QCheckBox"}),
    ("ProgressBar", {"QProgressBar"}),
    ("TableView", {"qMRMLTableView"}),
    ("Label", {"QLabel"}),
    ("tabWidget", {"QTabWidget"}),
    ("Tab", {"QWidget"}),
]


def expected_classes(name: str):
    for suffix, classes in ROLES:
        if name.endswith(suffix):
            return classes
    raise AssertionError(f"widget name '{name}' follows no naming convention of the module")


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture(scope="module")
def xml_widgets():
    root = ET.parse(UI_FILE).getroot()
    widgets = {}
    for w in root.iter("widget"):
        name = w.get("name")
        assert name not in widgets, f"duplicate widget name {name}"
        widgets[name] = w
    declared = {cw.findtext("class") for cw in root.iter("customwidget")}
    return widgets, declared


@pytest.fixture(scope="module")
def loaded(app):
    loader = QtUiTools.QUiLoader()
    file = QtCore.QFile(str(UI_FILE))
    assert file.open(QtCore.QIODevice.ReadOnly)
    form = loader.load(file)
    file.close()
    assert form is not None, loader.errorString()
    return form


def names_used_by_widget_code():
    names = set()
    for path in PANEL_SOURCES:
        names |= set(re.findall(r"\bui\.(\w+)", path.read_text()))
    tree = ast.parse(WIDGET_SOURCE.read_text())
    for node in ast.walk(tree):  # widgets reached through getattr(ui, name) from a table
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PATH_SETTINGS" for t in node.targets):
            names |= {k.value for k in node.value.keys}
    names -= {"setCurrentWidget"}
    return names


def parameter_fields():
    """name -> annotation source of the parameterNodeWrapper class in Widget.py."""
    tree = ast.parse(WIDGET_SOURCE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {item.target.id: ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in Widget.py")


def test_every_widget_the_code_uses_exists_with_the_right_class(loaded, xml_widgets):
    widgets, declared = xml_widgets
    used = names_used_by_widget_code()
    assert len(used) > 30  # the regex really found the bindings
    for name in sorted(used):
        assert name in widgets, f"the panel uses ui.{name}, which the .ui does not define"
        xml_class = widgets[name].get("class")
        assert xml_class in expected_classes(name), f"{name} is a {xml_class}, expected {expected_classes(name)}"
        if xml_class in CUSTOM:
            assert xml_class in declared, f"{xml_class} used by {name} has no <customwidget> declaration"
        else:
            obj = loaded.findChild(QtWidgets.QWidget, name)
            assert obj is not None and isinstance(obj, getattr(QtWidgets, xml_class)), name


def test_tabs_are_segment_train_evaluate_setup(loaded):
    tabs = loaded.findChild(QtWidgets.QTabWidget, "tabWidget")
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["Segment", "Train", "Evaluate", "Setup"]


PARAMETER_WIDGET = {"bool": "QCheckBox", "int": "QSpinBox", "float": "QDoubleSpinBox", "str": "QComboBox"}


def test_parameter_node_bindings_match_the_wrapper_fields(xml_widgets):
    widgets, _ = xml_widgets
    fields = parameter_fields()
    bound = {}
    for w in widgets.values():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = w
    assert set(bound) == set(fields), f"unbound fields {set(fields) - set(bound)}, unknown {set(bound) - set(fields)}"
    for field, annotation in fields.items():
        w = bound[field]
        node_types = re.findall(r"vtkMRML\w+", annotation)
        if node_types:
            assert w.get("class") == "qMRMLNodeComboBox", field
            ui_types = [s.text for p in w.findall("property") if p.get("name") == "nodeTypes"
                        for s in p.iter("string")]
            assert ui_types == node_types, f"{field}: .ui nodeTypes {ui_types} vs annotation {node_types}"
        else:
            base = re.sub(r"^Annotated\[(\w+),.*$", r"\1", annotation)
            assert w.get("class") == PARAMETER_WIDGET[base], f"{field}: {annotation} bound to {w.get('class')}"


def test_cmake_installs_every_module_file():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    listed = set(re.findall(r"^\s+(\S+\.(?:py|ui|png|json))\s*$", cmake, re.M))
    listed = {entry.replace("${MODULE_NAME}", "DVCLSegmentation") for entry in listed}
    assert on_disk - {"CMakeLists.txt"} == listed


def test_screenshot_renders_every_tab(tmp_path, app):
    spec = importlib.util.spec_from_file_location("render_ui", REPO / "tools" / "render_ui.py")
    render_ui = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_ui)
    image = render_ui.render(UI_FILE, tmp_path / "shot.png", width=400, height=700)
    assert (tmp_path / "shot.png").is_file()
    assert image.width() == 4 * (400 + 12) + 12 and image.height() == 700 + 24
    # each panel has content: many distinct colors, not a blank rectangle
    for i in range(4):
        x0 = 12 + i * 412
        colors = {image.pixel(x, y) for x in range(x0, x0 + 400, 7) for y in range(12, 300, 5)}
        assert len(colors) > 10, f"tab {i} looks empty"
