"""One table from rows of several ``dvcl experiment`` grids: ablations and option studies.

Why this exists: an ablation is the same method trained with one setting changed (``--set dvcl:beta=0``), and
``dvcl experiment`` names run folders by method, fraction and seed, so each variant lives in its own grid
folder. A reviewer wants the variants side by side with the paired differences against the full method
(same seeds, same test cases), the same statistics as a grid's own table. This module picks one row
(method and inference model) from each grid, renames it, and writes that table; it reads only evaluations
that already exist (the test split is not read again), and warns in the table, as a grid's own table does, when
a row's grid was tuned on the test split or one of its runs' test split was read more than once.

Each row also shows its runs' best validation Dice (``run.json``), the number an option study may choose by;
the row with the highest mean is named as the validation choice, so the test columns are read, never used to
pick.

Rows are only comparable when they share the data cache, the profile, the iteration count, the labeled split
and the device (a CUDA run and a CPU run of one seed are different runs); a row whose grid differs in any of
these is refused (:class:`~dvcl.errors.ConfigError`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from dvcl.errors import ConfigError
from dvcl.utils.atomic import write_text_atomic

log = logging.getLogger(__name__)

#: grid settings that must be equal for two rows to be compared (keys of ``experiment.json``)
SAME_IN_EVERY_GRID = ("data", "profile", "iterations", "fractions", "labeled_count", "device")


@dataclass(frozen=True)
class RowSpec:
    """One row of the comparison: ``label`` is what the table calls it.

    Attributes:
        label: row name in the table (e.g. ``"CPS + HqCL"``).
        grid: a ``dvcl experiment`` output folder (with ``experiment.json``).
        method: the method whose runs make the row.
        inference_model: ``A+B``, ``A``, ``student``, ``teacher``, ``net`` (as in the grid's table).
    """

    label: str
    grid: Path
    method: str
    inference_model: str


def parse_row(text: str) -> RowSpec:
    """``"LABEL=GRID:METHOD:MODEL"`` -> :class:`RowSpec`.

    The label ends at the first ``=`` (so it cannot hold one); GRID may contain ``:`` (split from the right).
    """
    label, sep, rest = text.partition("=")
    parts = rest.rsplit(":", 2)
    if not sep or not label.strip() or len(parts) != 3 or not all(p.strip() for p in parts):
        raise ConfigError(f"--row '{text}': expected LABEL=GRID:METHOD:MODEL, e.g. 'CPS=runs/grid:cps:A+B'")
    return RowSpec(label.strip(), Path(parts[0]), parts[1].strip(), parts[2].strip())


def _grid_info(grid: Path) -> Dict[str, Any]:
    path = grid / "experiment.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{grid}: not a dvcl experiment folder ({path}: {exc})") from exc


def _options_of(info: Dict[str, Any], method: str) -> List[str]:
    """The ``--set`` options of a grid that reach ``method`` (unscoped ones and ``method:`` ones), as KEY=VALUE."""
    from dvcl.experiment import parse_option

    keep = []
    for item in info.get("options") or []:
        scope, key, value = parse_option(str(item))
        if scope is None or scope == method.lower():
            keep.append(f"{key}={value}")
    return keep


def best_validation(grid: Path, run_names: Sequence[str]) -> Dict[int, Tuple[float, Optional[int]]]:
    """{seed: (best validation Dice, its iteration)} of the named runs of ``grid`` that recorded one."""
    out: Dict[int, Tuple[float, Optional[int]]] = {}
    for name in run_names:
        try:
            info = json.loads((grid / name / "run.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("best_val_dice") is not None and info.get("seed") is not None:
            it = info.get("best_iteration")
            out[int(info["seed"])] = (float(info["best_val_dice"]), None if it is None else int(it))
    return out


def collect_rows(specs: Sequence[RowSpec]) -> Tuple[dict, List[int], Dict[str, List[str]], List[str], List[str]]:
    """Aggregated rows (``aggregate_tables`` rows renamed to the labels), the seeds, each row's options, the
    labels of rows whose grid declares its settings tuned on the test split, and the evaluations (``GRID/RUN/
    evaluation*``) of the rows' runs whose test split was read more than once.

    Raises:
        ConfigError: a grid is missing or differs from the first in :data:`SAME_IN_EVERY_GRID`, a row has no
            evaluated run, or two rows share a label.
    """
    from dvcl.experiment import aggregate_tables, plan_grid, test_rereads

    if len({s.label for s in specs}) != len(specs):
        raise ConfigError("every --row needs its own label")
    first: Optional[Dict[str, Any]] = None
    rows, seeds, options, tuned_on_test, reread = [], [], {}, [], []
    for spec in specs:
        info = _grid_info(spec.grid)
        if first is None:
            first = info
        diff = [k for k in SAME_IN_EVERY_GRID if info.get(k) != first.get(k)]
        if diff:
            raise ConfigError(f"{spec.grid}: differs from {specs[0].grid} in {', '.join(diff)}; rows of "
                              "different benchmarks cannot be compared")
        runs = plan_grid(info["methods"], info["fractions"], info["seeds"], info.get("labeled_count"))
        tables, _ = aggregate_tables(spec.grid, runs, info["methods"])
        found = [row for agg in tables.values() for row in agg["rows"]
                 if row["method"] == spec.method and row["inference_model"] == spec.inference_model]
        if not found:
            have = sorted({f"{row['method']}:{row['inference_model']}" for agg in tables.values()
                           for row in agg["rows"]})
            raise ConfigError(f"{spec.grid}: no evaluated runs of {spec.method} [{spec.inference_model}]; "
                              f"it has {', '.join(have) or 'no evaluated runs'}")
        row = dict(found[0])
        row["name"] = spec.label
        row["method"] = spec.label  # the reference is chosen by label
        mine = [r for r in runs if r.method == spec.method]
        row["validation"] = best_validation(spec.grid, [r.name for r in mine])
        rows.append(row)
        seeds += [s for s in row["seeds"] if s not in seeds]
        options[spec.label] = _options_of(info, spec.method)
        if (info.get("selection") or {}).get("hyperparameters_tuned_on") == "test":
            tuned_on_test.append(spec.label)
        reread += [f"{spec.grid.name}/{name}" for name in test_rereads(spec.grid, mine)
                   if f"{spec.grid.name}/{name}" not in reread]
    return {"rows": rows}, sorted(seeds), options, tuned_on_test, reread


def validation_lines(rows: Sequence[dict], seeds: Sequence[int]) -> List[str]:
    """Markdown: each row's best validation Dice per seed (its iteration) and mean, and which row the validation
    split chooses (highest mean over the seeds every row has; none when a row lacks one)."""
    lines = ["Best validation Dice (%) per seed (iteration): what a choice between the rows may use; the test "
             "split below is read, not used to choose.", "",
             "| Row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|---|" + ":-:|" * (len(seeds) + 1)]
    common = [s for s in seeds if all(s in row["validation"] for row in rows)]
    means: Dict[str, float] = {}
    for row in rows:
        val = row["validation"]
        cells = ["" if s not in val else f"{100 * val[s][0]:.1f} ({val[s][1]})" for s in seeds]
        if common:
            means[row["name"]] = sum(val[s][0] for s in common) / len(common)
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " | "
                     + (f"{100 * means[row['name']]:.1f}" if row["name"] in means else "") + " |")
    if means and len(rows) > 1:
        best = max(means, key=means.get)
        lines += ["", f"Validation choice (highest mean over seed{'s' if len(common) > 1 else ''} "
                  f"{', '.join(str(s) for s in common)}): **{best}**."]
    return lines + [""]


def write_comparison(specs: Sequence[RowSpec], out_md: Path, reference: Optional[str] = None,
                     title: str = "Comparison", bootstrap: int = 10000) -> Dict[str, Path]:
    """Write the table (markdown) and a CSV next to it (``<stem>.csv``: one row per label and seed).

    ``reference`` is a row label (default: the first row); the paired differences are reference minus row.
    """
    from dvcl.evaluation import markdown_table
    from dvcl.experiment import seed_and_paired_lines

    if not specs:
        raise ConfigError("a comparison needs at least one --row")
    agg, seeds, options, tuned_on_test, reread = collect_rows(specs)
    labels = [s.label for s in specs]
    reference = reference or labels[0]
    if reference not in labels:
        raise ConfigError(f"--reference '{reference}' is not one of the rows ({', '.join(labels)})")
    structures = list(agg["rows"][0]["structures"])
    lines = [f"# {title}", ""]
    if tuned_on_test:
        lines += [f"> **WARNING: NOT A VALID COMPARISON.** The settings of {', '.join(tuned_on_test)} were tuned "
                  "on the test split (--tuned-on test).", ""]
    if reread:
        lines += [f"> **WARNING: NOT A VALID COMPARISON.** The test split was read more than once for "
                  f"{', '.join(reread)}; its numbers are biased upwards.", ""]
    lines += ["Rows picked from finished `dvcl experiment` grids (no test split read again); test split, mean ± "
              "sample SD over seeds, each seed's value its mean over structures and test cases.", "",
              "| Row | Grid | Method [model] | Settings (`--set`) |", "|---|---|---|---|"]
    for s in specs:
        lines.append(f"| {s.label} | `{s.grid.name}` | {s.method} [{s.inference_model}] | "
                     f"{', '.join(f'`{o}`' for o in options[s.label]) or 'defaults'} |")
    lines += [""] + validation_lines(agg["rows"], seeds)
    lines += ["", markdown_table(agg["rows"], structures).rstrip(), ""]
    lines += seed_and_paired_lines(agg, seeds, reference, bootstrap)
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_md, "\n".join(lines))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "grid", "method", "inference_model", "settings", "seed", "mean_dice", "best_val_dice",
                "best_iteration"])
    for s, row in zip(specs, agg["rows"]):
        for seed, value in zip(row["seeds"], row["seed_values"]):
            val, it = row["validation"].get(seed, (None, None))
            w.writerow([s.label, s.grid.name, s.method, s.inference_model, ";".join(options[s.label]), seed,
                        "" if value is None else f"{float(value):.6f}", "" if val is None else f"{val:.6f}",
                        "" if it is None else it])
    out_csv = out_md.with_suffix(".csv")
    write_text_atomic(out_csv, buf.getvalue())
    log.info("comparison of %d rows written to %s", len(specs), out_md)
    return {"markdown": out_md, "csv": out_csv}
