"""Evaluation: Dice/Jaccard/HD95/ASSD with MONAI metrics, paper-style reports, plots.

Importing this package does not import torch or matplotlib; the metric and plot functions do when run.
"""

from dvcl.evaluation.metrics import CONVENTION, CaseResult, StructureScore, evaluate_case
from dvcl.evaluation.report import (
    EvaluationResult,
    aggregate_runs,
    evaluate_paths,
    load_summary,
    markdown_table,
    match_cases,
    run_row,
    write_report,
)

__all__ = [
    "CONVENTION",
    "CaseResult",
    "EvaluationResult",
    "StructureScore",
    "aggregate_runs",
    "evaluate_case",
    "evaluate_paths",
    "load_summary",
    "markdown_table",
    "match_cases",
    "run_row",
    "write_report",
]
