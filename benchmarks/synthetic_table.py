"""One table of the synthetic-data models of `benchmarks/synthetic_model.sh`: Dice per structure on the real CT
for every variant in WORK (everything randomised, each randomisation switched off once, other counts), with
the difference to the reference variant and the best Dice on the *synthetic* validation split (what chose
each checkpoint), and the mean over the organs the real scan holds next to `dvcl evaluate`'s mean (issue 13's
floor leaves out a structure only the model paints). The randomisation study of issue 13 is this table.

    python benchmarks/synthetic_table.py WORK -o docs/results/synthetic_ablation.md [--reference all]
        [--replicate WORK_SEED1/all [--replicate WORK_SEED2/all ...]] [--plot differences.png]

Reads WORK/<variant>/real_ct/summary.json (written by `dvcl evaluate` once per finished model) and
WORK/<variant>/run/run.json; trains, evaluates and changes nothing. Variants without a real-CT report are
listed as missing. ``--replicate`` (repeatable) adds the reference recipe run with another seed (data and
training) as a row of its own, named after its WORK folder: the replicates' differences to the reference are the
seed spread that a single variant's difference must exceed to mean anything. ``--plot`` draws every variant's
per-structure difference to the reference as a heatmap (people compare 14 x 13 differences faster by colour than
by reading them).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def _best_val(run_json: Path) -> Optional[float]:
    try:
        value = json.loads(run_json.read_text(encoding="utf-8")).get("best_val_dice")
    except (OSError, json.JSONDecodeError):
        return None
    return None if value is None else float(value)


def _fmt(v: Optional[float], signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def mean_over_reference_organs(summary: dict) -> Optional[float]:
    """Mean Dice over the structures the reference holds (issue 13's "mean over the present organs").

    `dvcl evaluate`'s mean also counts a structure that only the prediction has (a false positive) as Dice 0,
    so on one real scan the two means differ whenever a model paints an organ the scan lacks. A structure
    counts here when some case's reference has it and no case has it only in the prediction; None when none
    does."""
    values = [v["dice_mean"] for v in summary["structures"].values()
              if v.get("n_ok", 0) + v.get("n_missed", 0) > 0 and v.get("n_false_positive", 0) == 0]
    return statistics.mean(values) if values else None


def collect(work: Path, replicates: Sequence[Path] = ()) -> Tuple[Dict[str, dict], List[str]]:
    """Every variant folder's real-CT row (plus ``best_val``), and the variants without a report yet.

    Each replicate is the row ``"<its folder name> (<its WORK folder's name>)"``, flagged ``replicate``."""
    from dvcl.evaluation.report import load_summary, run_row

    folders = [(p.name, p) for p in sorted(work.iterdir()) if p.is_dir()]
    for rep in replicates:
        folders.append((f"{rep.name} ({rep.parent.name})", rep))
    rows: Dict[str, dict] = {}
    missing: List[str] = []
    for name, v in folders:
        summary = v / "real_ct" / "summary.json"
        if summary.is_file():
            loaded = load_summary(summary)
            rows[name] = run_row(loaded, name=name)
            rows[name]["mean_present"] = mean_over_reference_organs(loaded)
            rows[name]["best_val"] = _best_val(v / "run" / "run.json")
            rows[name]["replicate"] = v.parent != work
        else:
            missing.append(name)
    if not rows:
        raise SystemExit(f"{work}: no variant has a real-CT report (<variant>/real_ct/summary.json)")
    return rows, missing


def _order(rows: Dict[str, dict], reference: str) -> List[str]:
    """The reference first, its replicates next, then the variants by name."""
    replicas = [n for n in rows if rows[n].get("replicate")]
    rest = [n for n in rows if n != reference and n not in replicas]
    return ([reference] if reference in rows else []) + replicas + rest


def build_table(work: Path, reference: str = "all", replicates: Sequence[Path] = ()) -> str:
    """The markdown table of every variant folder in ``work`` (see the module docstring)."""
    rows, missing = collect(work, replicates)
    structures = list(next(iter(rows.values()))["structures"])
    ref = rows.get(reference)
    order = _order(rows, reference)
    head = ["variant", *structures, "mean Dice", "mean, organs in the reference", f"minus {reference}" if ref else "",
            "synthetic val. (best)"]
    lines = ["| " + " | ".join(h for h in head if h) + " |", "|" + "---|" * len([h for h in head if h])]
    for name in order:
        row = rows[name]
        cells = [name, *(_fmt(row["structures"].get(s)) for s in structures), _fmt(row["mean_dice"]),
                 _fmt(row["mean_present"])]
        if ref:
            cells.append("" if name == reference else _fmt(row["mean_dice"] - ref["mean_dice"], signed=True))
        cells.append(_fmt(row["best_val"]))
        lines.append("| " + " | ".join(cells) + " |")
    out = ["Dice in % on the real CT (one scan, read once per finished model); 'synthetic val.' is the best mean",
           "Dice on the synthetic validation split, which chose each checkpoint. 'mean Dice' is `dvcl evaluate`'s",
           "(a structure the reference lacks but the model paints counts as 0); 'mean, organs in the reference'",
           "leaves such structures out (issue 13's floor). The difference to the reference is in 'mean Dice'.",
           "", *lines]
    spread = [n for n in order if rows[n].get("replicate")]
    if ref and spread:
        seeds = [ref["mean_dice"]] + [rows[n]["mean_dice"] for n in spread]
        d = max(abs(rows[n]["mean_dice"] - ref["mean_dice"]) for n in spread)
        mean, sd = statistics.mean(seeds), statistics.stdev(seeds)
        out += ["", f"Seed spread: the replicates differ from {reference} by up to {100 * d:.1f} points in the mean "
                f"({len(seeds)} seeds of the reference: {100 * mean:.1f} +- {100 * sd:.1f}); a variant's difference "
                f"within +-{100 * d:.1f} is not told from a seed change."]
    if missing:
        out += ["", f"No real-CT report yet: {', '.join(missing)}."]
    return "\n".join(out) + "\n"


def difference_matrix(rows: Dict[str, dict], reference: str) -> Tuple[List[str], List[str], object]:
    """(variant names, columns = structures + "mean", (variants, columns) array of Dice differences in points)."""
    import numpy as np

    if reference not in rows:
        raise SystemExit(f"the reference variant '{reference}' has no real-CT report")
    ref = rows[reference]
    cols = [*ref["structures"], "mean"]
    names = [n for n in _order(rows, reference) if n != reference]

    def value(row: dict, col: str) -> float:
        v = row["mean_dice"] if col == "mean" else row["structures"].get(col)
        return float("nan") if v is None else float(v)

    diff = np.array([[100 * (value(rows[n], c) - value(ref, c)) for c in cols] for n in names], dtype=float)
    return names, cols, diff.reshape(len(names), len(cols))  # (0, C) when there is no variant


def plot_differences(work: Path, out: Path, reference: str = "all", replicates: Sequence[Path] = ()) -> Path:
    """Heatmap of (variant - reference) Dice per structure and for the mean, in points; written to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, _ = collect(work, replicates)
    names, cols, diff = difference_matrix(rows, reference)
    if not names:
        raise SystemExit(f"{work}: no variant besides '{reference}' to compare")
    lim = max(5.0, float(np.nanmax(np.abs(diff)))) if np.isfinite(diff).any() else 5.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 1.2 + 0.42 * len(names)))
    im = ax.imshow(diff, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(diff.shape[0]):
        for j in range(diff.shape[1]):
            if np.isfinite(diff[i, j]):
                ax.text(j, i, f"{diff[i, j]:+.0f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(diff[i, j]) > 0.6 * lim else "black")
    ax.set_xticks(range(len(cols)), [c.replace("_", " ") for c in cols], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.axvline(len(cols) - 1.5, color="k", lw=1)
    ax.set_title(f"real-CT Dice minus '{reference}' (points); blue: the variant is better", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="the WORK folder of benchmarks/synthetic_model.sh (one folder per variant)")
    ap.add_argument("-o", "--out", type=Path, help="markdown file to write (default: print)")
    ap.add_argument("--reference", default="all", help="the variant the others are compared with (default: all)")
    ap.add_argument("--replicate", type=Path, action="append", default=[],
                    help="the reference recipe's folder from a run with another seed (repeatable)")
    ap.add_argument("--plot", type=Path, help="also draw the differences to the reference as a heatmap (PNG)")
    args = ap.parse_args(argv)
    table = build_table(args.work, args.reference, args.replicate)
    if args.plot:
        plot_differences(args.work, args.plot, args.reference, args.replicate)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
