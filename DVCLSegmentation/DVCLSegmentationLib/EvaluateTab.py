"""The Evaluate tab: Dice, Jaccard and HD95 per structure of a segmentation against a reference.

The report folder is optional: without one the report goes to a temporary folder and the table in the tab
is the result (the CSV path is still shown).
"""

from __future__ import annotations

import json
from typing import Any

from . import Catalog
from .Backend import DVCLModuleError
from .EvaluationLogic import EvaluationLogic, EvaluationReport
from .Parameter import EvaluationParameters
from .TabBase import PanelHost, Tab, prop, set_items


class EvaluateTab(Tab):
    """Binds the Evaluate page to an :class:`EvaluationLogic`."""

    def __init__(self, ui: Any, host: PanelHost, logic: EvaluationLogic) -> None:
        super().__init__(ui, host)
        self.logic = logic
        ui.evaluateButton.clicked.connect(self.on_evaluate)
        logic.log.connect(host.append_log)
        logic.finished.connect(self.on_finished)
        logic.error_occurred.connect(self.on_error)
        logic.cancelled.connect(lambda: self.update_buttons())

    def refresh_catalogue(self) -> None:
        try:
            presets = Catalog.preset_names()
        except DVCLModuleError as exc:
            self.host.append_log(f"Preset list unavailable: {exc}")
            return
        combo = self.ui.evalPresetComboBox
        set_items(combo, presets, prop(combo, "currentText") or self.host.settings_value("evalPreset", "flare22"))

    def parameters(self) -> EvaluationParameters:
        return EvaluationParameters(preset=prop(self.ui.evalPresetComboBox, "currentText"),
                                    out_dir=prop(self.ui.evalOutputFolderEdit, "currentPath") or "")

    def on_evaluate(self) -> None:
        host = self.host
        if not host.ensure_backend(False):
            return
        p = host.params
        table = self.logic.report.table_node if self.logic.report else None
        if table is not None and table.GetScene() is None:
            table = None
        try:
            params = self.parameters()
            self.logic.start(p.eval_prediction, p.eval_reference, params, host.scene, table_node=table,
                             reference_volume=p.eval_volume)
            host.set_settings_value("evalPreset", params.preset)
            self.ui.evalSummaryLabel.setText("Evaluating...")
        except DVCLModuleError as exc:
            host.report_error("Cannot evaluate", str(exc))
        except Exception as exc:
            host.report_error("Cannot start dvcl", str(exc))
        self.update_buttons()

    def on_finished(self, report: EvaluationReport) -> None:
        self.ui.evaluationTableView.setMRMLTableNode(report.table_node)
        numbers = {k: v for k, v in report.summary.items()
                   if k.startswith("mean_") and not k.endswith("_sd") and isinstance(v, (int, float))}
        summary = ", ".join(f"{k[5:]} {v:.4g}" for k, v in numbers.items()) or json.dumps(report.summary)[:300]
        self.ui.evalSummaryLabel.setText(f"{summary}\nReport: {report.csv_path}")
        self.update_buttons()

    def on_error(self, message: str) -> None:
        self.ui.evalSummaryLabel.setText("Failed: " + message)
        self.host.report_error("Evaluation failed", message)
        self.update_buttons()

    def update_buttons(self) -> None:
        self.ui.evaluateButton.setEnabled(not self.logic.running)

    def cleanup(self) -> None:
        self.logic.cancel()
