"""Evaluate prediction folders against references and write the paper-style report.

Outputs of :func:`write_report` (``dvcl evaluate --out DIR``):

* ``metrics.csv``: one row per case and structure (``dice_pct``, ``jaccard_pct``, ``hd95_mm``, ``assd_mm``,
  status, voxel counts);
* ``summary.json``: per-structure and overall means and SDs, per-case means, the NaN convention; keys carry
  their unit (``mean_dice_pct``, ``hd95_mm_mean``) and ``"units"`` says it again;
* ``report.md``: the table in the paper's layout (rows = runs/methods, columns = structures, then mean Dice
  +/- SD and mean Jaccard +/- SD, in %), and a per-case table;
* ``dice_boxplot.png`` and ``overlays/<case>.png`` (see :mod:`dvcl.evaluation.plots`).

One unit everywhere on disk and on screen: Dice and Jaccard in percent, distances in mm. In memory
(:class:`EvaluationResult`, :meth:`EvaluationResult.summary`, :func:`load_summary`) Dice and Jaccard are
fractions in [0, 1], as MONAI returns them; the conversion happens only where files and tables are written.

The label set comes from ``--preset`` or from what travels with the files (:mod:`dvcl.io.label_table`:
``.seg.nrrd`` segment names, the ``<case>.labels.json`` sidecar ``dvcl segment`` writes, a ``dataset.json``);
predictions and references that name one label value differently are refused, not scored.

:func:`aggregate_runs` turns several seeds per method into the paper's "mean +/- SD over seeds" rows
(METHOD.md section 4); the experiment harness calls it with per-seed results or their summary.json.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import SimpleITK as sitk

from dvcl.errors import ConfigError, DatasetError, LabelValueError, OutputExistsError
from dvcl.evaluation.groups import StructureGroup, apply_groups, check_groups
from dvcl.evaluation.metrics import (
    CONVENTION,
    CaseResult,
    MonaiMetrics,
    evaluate_case,
    nanmean,
    nanstd,
)
from dvcl.io.images import image_suffix, is_image_file, read_label, strip_suffix
from dvcl.io.label_table import LabelTable, conflicts, label_table
from dvcl.io.segmentation import read_segmentation
from dvcl.presets import Preset, get_preset
from dvcl.utils import progress
from dvcl.utils.atomic import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
METRICS = ("dice", "jaccard", "hd95", "assd")
#: the unit of each metric in files and tables (fractions in memory are multiplied by 100 for "pct")
UNITS = {"dice": "pct", "jaccard": "pct", "hd95": "mm", "assd": "mm"}
UNIT_NAMES = {"pct": "percent", "mm": "millimetres"}


@dataclass
class EvaluationResult:
    """Scores of one set of predictions (one run/seed) against its references."""

    labels: Dict[int, str]
    cases: List[CaseResult] = field(default_factory=list)
    name: str = "prediction"
    preset: str = ""

    @property
    def structures(self) -> List[str]:
        return [self.labels[k] for k in sorted(self.labels)]

    def per_structure(self, metric: str) -> Dict[str, List[float]]:
        """Structure -> its values over cases (NaN kept)."""
        out: Dict[str, List[float]] = {n: [] for n in self.structures}
        for c in self.cases:
            for s in c.scores:
                out[s.name].append(getattr(s, metric))
        return out

    def summary(self) -> dict:
        """Means/SDs over cases; the per-case mean comes first (mean over structures, then over cases)."""
        structures: Dict[str, dict] = {}
        for name in self.structures:
            entry: Dict[str, Any] = {}
            for m in METRICS:
                vals = self.per_structure(m)[name]
                entry[f"{m}_mean"] = nanmean(vals)
                entry[f"{m}_sd"] = nanstd(vals)
            statuses = [s.status for c in self.cases for s in c.scores if s.name == name]
            entry["n_evaluated"] = sum(st != "absent_both" for st in statuses)
            for st in ("ok", "absent_both", "missed", "false_positive"):
                entry[f"n_{st}"] = statuses.count(st)
            structures[name] = entry
        per_case = {c.case: {f"mean_{m}": c.mean(m) for m in METRICS} for c in self.cases}
        out: Dict[str, Any] = {
            "name": self.name,
            "preset": self.preset,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "num_cases": len(self.cases),
            "convention": CONVENTION,
            "sd": "sample standard deviation (ddof=1) over cases; null for fewer than two values",
        }
        for m in METRICS:
            vals = [per_case[c][f"mean_{m}"] for c in per_case]
            out[f"mean_{m}"] = nanmean(vals)
            out[f"mean_{m}_sd"] = nanstd(vals)
        out["structures"] = structures
        out["cases"] = per_case
        return out


# ------------------------------------------------------------------------------------------ input files
def match_cases(pred: PathLike, ref: PathLike) -> List[Tuple[str, Path, Path]]:
    """Pair predictions with references: two files, or two folders matched by case name.

    Raises:
        ConfigError: a file paired with a folder; two predictions for one case.
        DatasetError: missing paths, no common case, or references without a prediction.
    """
    pred, ref = Path(pred), Path(ref)
    for p in (pred, ref):
        if not p.exists():
            raise DatasetError(f"{p}: not found")
    if pred.is_file() and ref.is_file():
        return [(strip_suffix(ref), pred, ref)]
    if pred.is_file() != ref.is_file():
        raise ConfigError(f"{pred} and {ref}: give two files or two folders")
    preds = _by_case(pred)
    refs = _by_case(ref)
    if not refs:
        raise DatasetError(f"{ref}: folder holds no label files")
    missing = sorted(set(refs) - set(preds))
    if missing and len(missing) == len(refs):
        raise DatasetError(f"{pred}: no prediction matches a reference case of {ref} (e.g. '{missing[0]}')")
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(f"{pred}: no prediction for {len(missing)} reference case(s): {shown}")
    extra = sorted(set(preds) - set(refs))
    if extra:
        log.warning("%s: %d prediction(s) without reference ignored (e.g. %s)", pred, len(extra), extra[0])
    return [(c, preds[c], refs[c]) for c in sorted(refs)]


def _by_case(folder: Path) -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not is_image_file(f):
            continue
        case = strip_suffix(f)
        if case in out:
            raise ConfigError(f"{folder}: case '{case}' has two files ({out[case].name}, {f.name})")
        out[case] = f
    return out


def _read_prediction(path: Path) -> sitk.Image:
    return read_segmentation(path)[0]


def _read_reference(path: Path, preset: Optional[Preset]) -> sitk.Image:
    if preset is None:
        return read_segmentation(path)[0]
    return read_label(path, allowed_values=preset.allowed_raw_values, remap=preset.raw_values)


def _discover_labels(pairs: Sequence[Tuple[str, Path, Path]]) -> Dict[int, str]:
    """When no file says what its values mean: labels 1..max value found, named ``label_<i>``."""
    top = 0
    for _case, p, r in pairs:
        for path in (p, r):
            lab, _ = read_segmentation(path)
            top = max(top, int(sitk.GetArrayViewFromImage(lab).max()))
    if top == 0:
        raise DatasetError("predictions and references hold no structure at all (background only)")
    return {i: f"label_{i}" for i in range(1, top + 1)}


def _side_table(paths: Sequence[Path], side: str, carried_only: bool = False) -> Optional[LabelTable]:
    """One label table for all files of one side; files of one side that disagree are refused.

    ``carried_only``: ignore tables found next to the files (a dataset.json) rather than carried by them."""
    merged: Dict[int, str] = {}
    first: Optional[LabelTable] = None
    for path in paths:
        table = label_table(path)
        if table is None or (carried_only and table.nearby):
            continue
        clash = conflicts(merged, table.labels)
        if clash:
            k, (a, b) = next(iter(clash.items()))
            raise LabelValueError(f"the {side}s use different label tables: label {k} is '{a}' in {first.source} "
                                  f"but '{b}' in {table.source}")
        first = first or table
        merged.update(table.labels)
    return None if first is None else LabelTable(merged, first.source, first.preset)


def recorded_preset(predictions: Sequence[Path]) -> Optional[Preset]:
    """The built-in preset ``dvcl segment`` recorded next to the predictions (their sidecar), or None.

    With it the references are read as that preset's label maps (MM-WHS raw values remapped, values outside
    the label table refused), exactly as with ``--preset``."""
    from dvcl.io.label_table import read_label_sidecar
    from dvcl.presets import PRESETS

    for path in predictions:
        table = read_label_sidecar(path)
        if table is not None and table.preset.lower() in PRESETS:
            log.debug("label set: preset %r recorded by dvcl segment in %s", table.preset, table.source)
            return get_preset(table.preset)
    return None


def resolve_labels(pairs: Sequence[Tuple[str, Path, Path]], preset: Optional[Preset]) -> Dict[int, str]:
    """The label set to score: the preset's, else the names the files carry, else ``label_<i>``.

    Raises:
        LabelValueError: the predictions and the references (or either and the preset) call one label value
            by different names, i.e. they use different label tables.
    """
    pred = _side_table([p for _, p, _ in pairs], "prediction", carried_only=preset is not None)
    ref = _side_table([r for _, _, r in pairs], "reference", carried_only=preset is not None)
    if preset is not None:
        for side, table in (("prediction", pred), ("reference", ref)):
            clash = conflicts(preset.labels, table.labels) if table else {}
            if clash:
                k, (want, got) = next(iter(clash.items()))
                raise LabelValueError(f"{table.source}: the {side} calls label {k} '{got}' but preset "
                                      f"'{preset.name}' calls it '{want}'; the {side} uses another label table")
        return dict(preset.labels)
    if pred and ref:
        clash = conflicts(pred.labels, ref.labels)
        if clash:
            shown = "; ".join(f"label {k}: '{a}' vs '{b}'" for k, (a, b) in list(clash.items())[:3])
            raise LabelValueError(f"prediction ({pred.source}) and reference ({ref.source}) use different label "
                                  f"tables ({shown}{' ...' if len(clash) > 3 else ''}); score predictions of the "
                                  "reference's structures, or, if only the spelling differs, name the label set "
                                  "with --preset")
        return {**pred.labels, **ref.labels}
    if pred or ref:
        return dict((pred or ref).labels)
    return _discover_labels(pairs)


def evaluate_paths(
    pred: PathLike,
    ref: PathLike,
    preset: Optional[Union[str, Preset]] = None,
    name: Optional[str] = None,
    distances: bool = True,
    groups: Optional[Sequence[StructureGroup]] = None,
) -> EvaluationResult:
    """Evaluate a prediction file/folder against a reference file/folder (matched by case name).

    Args:
        preset: a preset name/``dataset.json`` or :class:`Preset` fixing the label set (and MMWHS raw-value
            remapping of the references); without one the labels are read from the files.
        name: the run's name in tables (default: the prediction path's name).
        distances: compute HD95/ASSD.
        groups: score these shared structures instead (:mod:`dvcl.evaluation.groups`: each side's stored values
            grouped, for a reference with another label set); excludes ``preset``.
    """
    pairs = match_cases(pred, ref)
    if groups:
        if preset is not None:
            raise ConfigError("--group scores the values stored in the files; it cannot be combined with --preset")
        labels, pre = check_groups(groups), None
    else:
        pre = get_preset(preset) if isinstance(preset, str) else preset
        if pre is None:
            pre = recorded_preset([p for _, p, _ in pairs])
        labels = resolve_labels(pairs, pre)
    default_name = strip_suffix(pred) if Path(pred).is_file() else Path(pred).name
    result = EvaluationResult(labels=labels, name=name or default_name, preset=pre.name if pre else "")
    metrics = MonaiMetrics()
    with progress.Progress("evaluate", total=len(pairs), desc="evaluate", unit="case") as bar:
        for case, p, r in pairs:
            reference = _read_reference(r, pre)
            prediction = _read_prediction(p)
            if groups:
                reference = apply_groups(reference, groups, "reference")
                prediction = apply_groups(prediction, groups, "prediction")
            result.cases.append(evaluate_case(prediction, reference, labels, case=case, pred_name=str(p),
                                              ref_name=str(r), distances=distances, metrics=metrics))
            bar.update(1, message=case)
    return result


# ---------------------------------------------------------------------------------------------- tables
def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100.0 * v:.2f}"


def _pm(mean: float, sd: float, scale: float = 100.0) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    if sd is None or math.isnan(sd):
        return f"{scale * mean:.2f}"
    return f"{scale * mean:.2f} ± {scale * sd:.2f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], structures: Sequence[str]) -> str:
    """The paper's layout: one row per run/method, Dice (%) per structure, mean Dice/Jaccard +/- SD (%),
    mean HD95 (mm) as an extra column.

    Each row is a mapping with ``name``, ``structures`` ({name: dice mean}), ``mean_dice``, ``mean_dice_sd``,
    ``mean_jaccard``, ``mean_jaccard_sd``, ``mean_hd95``, ``mean_hd95_sd`` (what :func:`aggregate_runs` and
    :func:`run_row` return).
    """
    header = ["Method", *structures, "Mean Dice", "Mean Jaccard", "Mean HD95 (mm)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":-:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [str(row["name"])]
        cells += [_pct(row["structures"].get(s, float("nan"))) for s in structures]
        cells += [_pm(row["mean_dice"], row.get("mean_dice_sd")), _pm(row["mean_jaccard"], row.get("mean_jaccard_sd")),
                  _pm(row.get("mean_hd95", float("nan")), row.get("mean_hd95_sd"), scale=1.0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_row(result: Union[EvaluationResult, Mapping[str, Any]], name: Optional[str] = None) -> dict:
    """One table row for a single run: structure means over cases, overall means +/- SD over cases."""
    summary = result.summary() if isinstance(result, EvaluationResult) else result
    row = {"name": name or summary.get("name", "prediction"),
           "structures": {s: v["dice_mean"] for s, v in summary["structures"].items()}}
    for m in ("dice", "jaccard", "hd95"):
        row[f"mean_{m}"] = summary[f"mean_{m}"]
        row[f"mean_{m}_sd"] = summary.get(f"mean_{m}_sd")
    return row


def aggregate_runs(results: Mapping[str, Sequence[Union[EvaluationResult, Mapping[str, Any]]]]) -> dict:
    """Mean +/- SD over seeds per method (METHOD.md section 4: 3 seeds, mean +/- SD).

    Args:
        results: method name -> one entry per seed: an :class:`EvaluationResult` or its ``summary()`` dict
            (e.g. loaded from a run's ``summary.json``).

    Returns:
        ``{"structures": [...], "sd": ..., "rows": [row, ...]}``; each row as :func:`markdown_table` expects,
        plus ``n_seeds`` and per-structure ``structures_sd``. A seed's value is its overall mean (mean over
        structures, then over cases); the SD is the sample SD over seeds (none for a single seed).
    """
    if not results:
        raise ConfigError("aggregate_runs needs at least one method")
    structures: List[str] = []
    rows = []
    for method, runs in results.items():
        if not runs:
            raise ConfigError(f"method '{method}' has no runs to aggregate")
        summaries = [r.summary() if isinstance(r, EvaluationResult) else dict(r) for r in runs]
        for s in summaries:
            for name in s["structures"]:
                if name not in structures:
                    structures.append(name)
        row: Dict[str, Any] = {"name": method, "n_seeds": len(summaries), "structures": {}, "structures_sd": {}}
        for name in structures:
            vals = [s["structures"][name]["dice_mean"] for s in summaries if name in s["structures"]]
            row["structures"][name] = nanmean(vals)
            row["structures_sd"][name] = nanstd(vals)
        for m in ("dice", "jaccard", "hd95", "assd"):
            vals = [_none_to_nan(s.get(f"mean_{m}")) for s in summaries]
            row[f"mean_{m}"] = nanmean(vals)
            row[f"mean_{m}_sd"] = nanstd(vals)
        rows.append(row)
    return {"structures": structures, "sd": "sample standard deviation (ddof=1) over seeds", "rows": rows}


def _none_to_nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


# ---------------------------------------------------------------------------------------------- writing
def unit_key(key: str) -> str:
    """A summary key with its unit: ``mean_dice`` -> ``mean_dice_pct``, ``hd95_mean`` -> ``hd95_mm_mean``."""
    parts = key.split("_")
    return "_".join(f"{p}_{UNITS[p]}" if p in UNITS else p for p in parts)


def _plain_key(key: str) -> str:
    parts = key.split("_")
    out = [p for i, p in enumerate(parts) if not (i and parts[i - 1] in UNITS and p == UNITS[parts[i - 1]])]
    return "_".join(out)


def _metric_of(key: str) -> Optional[str]:
    return next((p for p in key.split("_") if p in UNITS), None)


def _scale(metric: Optional[str]) -> float:
    return 100.0 if metric is not None and UNITS[metric] == "pct" else 1.0


def summary_for_file(summary: Mapping[str, Any]) -> dict:
    """The in-memory summary (fractions) as written to ``summary.json``: Dice/Jaccard in percent, keys with
    their unit, and a ``units`` entry."""
    def convert(obj: Any) -> Any:
        if isinstance(obj, Mapping):
            out = {}
            for k, v in obj.items():
                metric = _metric_of(k) if isinstance(v, (float, int, type(None))) and not isinstance(v, bool) else None
                if metric is not None and not k.startswith("n_"):
                    out[unit_key(k)] = None if v is None else float(v) * _scale(metric)
                else:
                    out[k] = convert(v)
            return out
        return obj

    out = convert(summary)
    out["units"] = {m: UNIT_NAMES[u] for m, u in UNITS.items()}
    return out


def summary_from_file(data: Mapping[str, Any]) -> dict:
    """Inverse of :func:`summary_for_file` (files written before units were named pass unchanged)."""
    if "units" not in data:
        return dict(data)

    def convert(obj: Any) -> Any:
        if isinstance(obj, Mapping):
            out = {}
            for k, v in obj.items():
                metric = _metric_of(k)
                if metric is not None and k != _plain_key(k) and not isinstance(v, (Mapping, list)):
                    out[_plain_key(k)] = None if v is None else float(v) / _scale(metric)
                else:
                    out[k] = convert(v)
            return out
        return obj

    out = convert({k: v for k, v in data.items() if k != "units"})
    return out


def case_rows(result: EvaluationResult) -> List[dict]:
    """One row per case and structure, in file units (Dice/Jaccard in percent)."""
    rows = []
    for c in result.cases:
        for s in c.scores:
            rows.append({"case": c.case, "label": s.label, "structure": s.name, "dice_pct": 100.0 * s.dice,
                         "jaccard_pct": 100.0 * s.jaccard, "hd95_mm": s.hd95, "assd_mm": s.assd, "status": s.status,
                         "pred_voxels": s.pred_voxels, "ref_voxels": s.ref_voxels})
    return rows


def metrics_csv(result: EvaluationResult) -> str:
    rows = case_rows(result)
    buf = io.StringIO()
    fields = ["case", "label", "structure", "dice_pct", "jaccard_pct", "hd95_mm", "assd_mm", "status",
              "pred_voxels", "ref_voxels"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else
                             "nan" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def report_markdown(result: EvaluationResult) -> str:
    summary = result.summary()
    lines = [f"# Evaluation: {result.name}", ""]
    if result.preset:
        lines.append(f"Preset: `{result.preset}`; {len(result.cases)} case(s).")
    else:
        lines.append(f"{len(result.cases)} case(s).")
    lines += ["", "Dice per structure and mean Dice / Jaccard in %, mean +/- SD over cases "
              "(mean over structures per case, then over cases); HD95 in mm.", ""]
    lines.append(markdown_table([run_row(summary, result.name)], result.structures))
    lines += ["", "## Per case", "", "| Case | Mean Dice | Mean Jaccard | Mean HD95 (mm) | Missed | False positive |",
              "|---|:-:|:-:|:-:|:-:|:-:|"]
    for c in result.cases:
        missed = ", ".join(s.name for s in c.scores if s.status == "missed") or "-"
        fp = ", ".join(s.name for s in c.scores if s.status == "false_positive") or "-"
        hd = c.mean("hd95")
        lines.append(f"| {c.case} | {_pct(c.mean('dice'))} | {_pct(c.mean('jaccard'))} | "
                     f"{'-' if math.isnan(hd) else f'{hd:.2f}'} | {missed} | {fp} |")
    absent = {n: v["n_absent_both"] for n, v in summary["structures"].items() if v["n_absent_both"]}
    if absent:
        lines += ["", "Structures absent from both prediction and reference (excluded): "
                  + ", ".join(f"{n} ({k} case(s))" for n, k in absent.items()) + "."]
    lines += ["", "## Convention", "", CONVENTION, ""]
    return "\n".join(lines)


def report_targets(out_dir: PathLike) -> Dict[str, Path]:
    """The files :func:`write_report` writes into ``out_dir`` (overlays aside)."""
    out_dir = Path(out_dir)
    return {"metrics": out_dir / "metrics.csv", "summary": out_dir / "summary.json",
            "report": out_dir / "report.md", "boxplot": out_dir / "dice_boxplot.png"}


def check_report_targets(out_dir: PathLike, overwrite: bool = False) -> Dict[str, Path]:
    """Refuse a report folder that cannot take the report, before anything is computed.

    Raises:
        OutputExistsError: a report file exists and ``overwrite`` is False.
        ConfigError: ``out_dir`` is a file, or a folder that cannot be created or written.
    """
    out_dir = Path(out_dir)
    targets = report_targets(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if not overwrite:
        for t in targets.values():
            if t.exists():
                raise OutputExistsError(f"{t}: exists (use --overwrite to replace it)")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{out_dir}: cannot write there ({existing} is not writable)")
    return targets


def write_report(
    result: EvaluationResult,
    out_dir: PathLike,
    overwrite: bool = False,
    images: Optional[Mapping[str, PathLike]] = None,
    predictions: Optional[Mapping[str, PathLike]] = None,
    references: Optional[Mapping[str, PathLike]] = None,
    max_overlays: int = 3,
    plots: bool = True,
) -> Dict[str, Path]:
    """Write metrics.csv, summary.json, report.md and the plots into ``out_dir``.

    Args:
        images / predictions / references: case -> file, for the overlay PNGs (CT optional).
        max_overlays: overlay PNGs for at most this many cases (sorted by case name).

    Returns:
        kind -> written path.
    """
    out_dir = Path(out_dir)
    targets = check_report_targets(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(targets["metrics"], metrics_csv(result))
    write_json_atomic(targets["summary"], summary_for_file(result.summary()), strict=True)  # NaN -> null
    write_text_atomic(targets["report"], report_markdown(result))
    written = dict(targets)
    if not plots:
        del written["boxplot"]
        return written
    from dvcl.evaluation.plots import dice_boxplot, overlay_png

    dice_boxplot(result, targets["boxplot"])
    if predictions and references:
        for case in sorted(predictions)[:max_overlays]:
            if case not in references:
                continue
            path = out_dir / "overlays" / f"{case}.png"
            img = images.get(case) if images else None
            overlay_png(predictions[case], references[case], path, result.labels, image=img,
                        colors=_colors(result), title=case)
            written[f"overlay:{case}"] = path
    return written


def _colors(result: EvaluationResult) -> Dict[int, Tuple[int, int, int]]:
    from dvcl.presets import default_color

    return {k: default_color(n, k) for k, n in result.labels.items()}


def load_summary(path: PathLike) -> dict:
    """Read a summary.json written by :func:`write_report` (NaN restored from null)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read evaluation summary ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not an evaluation summary (expected a JSON object)")
    return _null_to_nan(summary_from_file(data))


def _null_to_nan(obj: Any, key: str = "") -> Any:
    if obj is None and key.startswith(("mean_", "dice", "jaccard", "hd95", "assd")):
        return float("nan")
    if isinstance(obj, dict):
        return {k: _null_to_nan(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_null_to_nan(v, key) for v in obj]
    return obj


def find_images(images: Optional[PathLike], cases: Sequence[str]) -> Dict[str, Path]:
    """Case -> CT file for overlays: one file (single case) or a folder (``<case>`` or nnU-Net ``<case>_0000``)."""
    if images is None:
        return {}
    p = Path(images)
    if p.is_file():
        return {cases[0]: p} if len(cases) == 1 else {}
    if not p.is_dir():
        raise DatasetError(f"{p}: image file or folder not found")
    found: Dict[str, Path] = {}
    for f in p.iterdir():
        if not image_suffix(f):
            continue
        stem = strip_suffix(f)
        for key in (stem, stem[:-5] if stem.endswith("_0000") else None):
            if key in cases:
                found[key] = f
    return found
