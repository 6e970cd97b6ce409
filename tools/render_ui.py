"""Render DVCLSegmentation.ui offscreen to a PNG (docs/screenshot_ui.png) without Slicer.

Slicer's custom widgets (qMRMLNodeComboBox, ctkPathLineEdit, ctkCollapsibleButton, qMRMLTableView, qMRMLWidget)
do not exist in plain Qt, so the .ui XML is rewritten first: each one becomes a plain Qt widget that looks like
it (a combo box, an editable combo box with a browse button, a group box, a table). Then the form is loaded
with PySide6's QUiLoader on the ``offscreen`` platform, filled with example entries, and every tab is grabbed
and placed side by side in one image.

Usage::

    python tools/render_ui.py [--ui DVCLSegmentation/Resources/UI/DVCLSegmentation.ui] [-o docs/screenshot_ui.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

from dvcl.methods.catalog import method_names
from dvcl.presets import list_presets
from dvcl.profiles import profile_names

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_UI = ROOT / "DVCLSegmentation" / "Resources" / "UI" / "DVCLSegmentation.ui"
DEFAULT_OUT = ROOT / "docs" / "screenshot_ui.png"

#: what each Slicer class is drawn as
LOOK_ALIKES = {
    "qMRMLWidget": "QWidget",
    "qMRMLNodeComboBox": "QComboBox",
    "qMRMLTableView": "QTableWidget",
    "ctkCollapsibleButton": "QGroupBox",
    "ctkPathLineEdit": "QWidget",  # rebuilt below as an editable combo box + browse button
}
#: properties of the custom classes that plain Qt widgets do not have
CUSTOM_PROPERTIES = {"nodeTypes", "showChildNodeTypes", "noneEnabled", "addEnabled", "removeEnabled",
                     "renameEnabled", "noneDisplay", "filters", "nameFilters", "collapsed"}

#: example entries shown in the picture (what a user sees after loading the test CT)
EXAMPLE_ITEMS: Dict[str, List[str]] = {
    "inputVolumeSelector": ["abdomen_ct_3mm"],
    "outputSegmentationSelector": ["Create new segmentation"],
    "modelComboBox": ["phantom_demo"],
    "segmentDeviceComboBox": ["auto", "cuda", "cpu"],
    "trainDeviceComboBox": ["auto", "cuda", "cpu"],
    "presetComboBox": list_presets() + ["dataset.json"],
    "evalPresetComboBox": list_presets(),
    "methodComboBox": method_names(),
    "profileComboBox": profile_names(),
    "predictionSelector": ["abdomen_ct_3mm segmentation"],
    "referenceSelector": ["label_flare22"],
    "evalVolumeSelector": ["abdomen_ct_3mm"],
}
EXAMPLE_PATHS = {
    "dataFolderEdit": "~/data/flare22_subset",
    "unlabeledFolderEdit": "~/data/flare22_unlabeled",
    "datasetJsonEdit": "",
    "runFolderEdit": "~/dvcl_runs/flare22_dvcl_10pct",
    "evalOutputFolderEdit": "~/dvcl_runs/evaluation",
}


def _prop(parent: ET.Element, name: str, kind: str, value: str) -> None:
    p = ET.SubElement(parent, "property", {"name": name})
    ET.SubElement(p, kind).text = value


def qt_only_ui(ui_xml: str) -> bytes:
    """The .ui text with every Slicer/CTK class replaced by a plain Qt look-alike."""
    root = ET.fromstring(ui_xml)
    for widget in root.iter("widget"):
        cls = widget.get("class", "")
        if cls not in LOOK_ALIKES:
            continue
        props = {p.get("name"): p for p in widget.findall("property")}
        for name, p in props.items():
            if name in CUSTOM_PROPERTIES or p.get("stdset") == "0":
                widget.remove(p)
        if cls == "ctkCollapsibleButton" and "text" in props:
            props["text"].set("name", "title")
        if cls == "ctkPathLineEdit":
            name = widget.get("name")
            for p in widget.findall("property"):
                if p.get("name") != "toolTip":
                    widget.remove(p)
            layout = ET.SubElement(widget, "layout", {"class": "QHBoxLayout", "name": f"{name}Layout"})
            for side in ("leftMargin", "topMargin", "rightMargin", "bottomMargin"):
                _prop(layout, side, "number", "0")
            _prop(layout, "spacing", "number", "2")
            edit = ET.SubElement(ET.SubElement(layout, "item"), "widget",
                                 {"class": "QComboBox", "name": f"{name}_path"})
            _prop(edit, "editable", "bool", "true")
            edit_policy = ET.SubElement(edit, "property", {"name": "sizePolicy"})
            sp = ET.SubElement(edit_policy, "sizepolicy", {"hsizetype": "Expanding", "vsizetype": "Fixed"})
            ET.SubElement(sp, "horstretch").text = "1"
            ET.SubElement(sp, "verstretch").text = "0"
            browse = ET.SubElement(ET.SubElement(layout, "item"), "widget",
                                   {"class": "QToolButton", "name": f"{name}_browse"})
            _prop(browse, "text", "string", "...")
        widget.set("class", LOOK_ALIKES[cls])
    for tag in ("customwidgets", "connections"):
        for element in root.findall(tag):
            root.remove(element)
    return ET.tostring(root, encoding="utf-8")


def _ensure_font(app) -> None:
    """Offscreen Qt may find no system font; matplotlib ships DejaVu Sans, a safe fallback."""
    from PySide6 import QtGui

    if QtGui.QFontDatabase.families():
        return
    try:
        import matplotlib

        font_dir = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
        for name in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"):
            QtGui.QFontDatabase.addApplicationFont(str(font_dir / name))
        app.setFont(QtGui.QFont("DejaVu Sans", 9))
    except ImportError:
        pass


def load_form(ui_path: Path = DEFAULT_UI):
    """(QApplication, top widget) with look-alikes and example content filled in."""
    from PySide6 import QtCore, QtUiTools, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    _ensure_font(app)
    app.setStyle("Fusion")
    data = QtCore.QByteArray(qt_only_ui(ui_path.read_text(encoding="utf-8")))
    buffer = QtCore.QBuffer(data)
    buffer.open(QtCore.QIODevice.ReadOnly)
    form = QtUiTools.QUiLoader().load(buffer)
    if form is None:
        raise RuntimeError(f"QUiLoader could not load {ui_path}")
    for name, items in EXAMPLE_ITEMS.items():
        combo = form.findChild(QtWidgets.QComboBox, name)
        if combo is not None and combo.count() == 0:
            combo.addItems(items)
    for name, text in EXAMPLE_PATHS.items():
        combo = form.findChild(QtWidgets.QComboBox, f"{name}_path")
        if combo is not None:
            combo.setEditText(text)
    info = form.findChild(QtWidgets.QLabel, "modelInfoLabel")
    if info is not None:
        info.setText("Demo model for the synthetic phantoms.\n13 structures: liver, right kidney, spleen, "
                     "pancreas, aorta, inferior vena cava, right adrenal gland, left adrenal gland, gallbladder, "
                     "esophagus, stomach, duodenum, left kidney")
    table = form.findChild(QtWidgets.QTableWidget, "evaluationTableView")
    if table is not None:
        table.setColumnCount(4)
        table.setHorizontalHeaderLabels(["structure", "dice", "jaccard", "hd95"])
    dataset_json = form.findChild(QtWidgets.QWidget, "datasetJsonEdit")
    if dataset_json is not None:  # enabled only for the "dataset.json" preset, as the module does
        dataset_json.setEnabled(False)
    backend = form.findChild(QtWidgets.QLabel, "backendFolderLabel")
    if backend is not None:
        backend.setText("<extension>/DVCLSegmentationBackend")
    return app, form


def render(ui_path: Path = DEFAULT_UI, out_path: Optional[Path] = DEFAULT_OUT, width: int = 430, height: int = 820):
    """Grab every tab and place them side by side; returns the QImage (and saves it when out_path is set)."""
    from PySide6 import QtCore, QtGui, QtWidgets

    app, form = load_form(ui_path)
    form.resize(width, height)
    tabs = form.findChild(QtWidgets.QTabWidget, "tabWidget")
    pictures = []
    for index in range(tabs.count()):
        tabs.setCurrentIndex(index)
        form.show()
        app.processEvents()
        pictures.append(form.grab())
    tabs.setCurrentIndex(0)
    gap = 12
    canvas = QtGui.QImage(len(pictures) * (width + gap) + gap, height + 2 * gap, QtGui.QImage.Format_RGB32)
    canvas.fill(QtGui.QColor(200, 200, 200))
    painter = QtGui.QPainter(canvas)
    for i, picture in enumerate(pictures):
        painter.drawPixmap(QtCore.QPoint(gap + i * (width + gap), gap), picture)
    painter.end()
    form.close()
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not canvas.save(str(out_path)):
            raise RuntimeError(f"could not write {out_path}")
    return canvas


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui", type=Path, default=DEFAULT_UI, help="the .ui file")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    args = parser.parse_args(argv)
    image = render(args.ui, args.out)
    print(f"{args.out}: {image.width()}x{image.height()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
