"""Validation Dice against iteration for every run of a `dvcl experiment` grid, one PNG.

The benchmark is sized and its checkpoints chosen on the validation split, so these curves are what a reader
checks first: does fully supervised reach 80 %, how far below is labeled-only, do the co-training methods
converge within the budget? Reads only ``RUN/metrics.csv`` (never a test result).

    .venv/bin/python tools/validation_curves.py GRID_DIR -o docs/results/ssl_benchmark_cpu/validation_curves.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List, Tuple


def read_curve(metrics: Path) -> Tuple[List[int], List[float]]:
    """(iterations, validation Dice in %) of the rows that validated."""
    its, dice = [], []
    with metrics.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            value = (row.get("val_dice") or "").strip()
            if value:
                its.append(int(float(row["iteration"])))
                dice.append(100.0 * float(value))
    return its, dice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="the experiment's --out folder (one sub-folder per run)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="Validation Dice (4 validation phantoms), 10 % labeled")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: Dict[str, Tuple[List[int], List[float]]] = {}
    for metrics in sorted(args.grid.glob("*/metrics.csv")):
        its, dice = read_curve(metrics)
        if its:
            curves[metrics.parent.name] = (its, dice)
    if not curves:
        raise SystemExit(f"{args.grid}: no run with validation rows (RUN/metrics.csv)")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, (its, dice) in curves.items():
        ax.plot(its, dice, marker="o", markersize=3, label=f"{name} (best {max(dice):.1f})")
    ax.axhline(80, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation mean Dice (%)")
    ax.set_ylim(0, 100)
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
