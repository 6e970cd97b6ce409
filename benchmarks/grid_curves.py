"""Validation-Dice curves of every run of a `dvcl experiment` folder, one panel per method, one line per seed.

    python benchmarks/grid_curves.py GRID -o curves.png

Why: a table gives the best checkpoint of each run; whether a run was still rising when its budget ended (so the
row is a schedule's number, not the method's) shows only in the curve. Reads each run's ``metrics.csv`` (rows with
a ``val_dice``) and ``run.json`` (method, seed); prints, per run, the last validation Dice and its rise over the
last quarter of the run, the figure people look at first.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Curve = List[Tuple[int, float]]


def read_curves(grid: Path) -> Dict[str, Dict[int, Curve]]:
    """{method: {seed: [(iteration, validation Dice), ...]}} for every run folder under ``grid``."""
    curves: Dict[str, Dict[int, Curve]] = {}
    for metrics in sorted(grid.glob("*/metrics.csv")):
        info = json.loads((metrics.parent / "run.json").read_text(encoding="utf-8"))
        with metrics.open(newline="", encoding="utf-8") as f:
            points = [(int(r["iteration"]), float(r["val_dice"])) for r in csv.DictReader(f) if r.get("val_dice")]
        if points:
            curves.setdefault(info["method"], {})[int(info["seed"])] = points
    return curves


def late_rise(points: Curve) -> Optional[float]:
    """Validation Dice at the end minus at the last point at or before 75 % of the run (None for one point)."""
    if len(points) < 2:
        return None
    end_it, end = points[-1]
    before = [v for it, v in points if it <= 0.75 * end_it]
    return end - (before[-1] if before else points[0][1])


def plot(curves: Dict[str, Dict[int, Curve]], out: Path, title: str) -> Path:
    methods = list(curves)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.0), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        for seed, points in sorted(curves[method].items()):
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", ms=3, label=f"seed {seed}")
        ax.set_title(method)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation mean Dice (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path, help="folder written by `dvcl experiment` (or one holding its run folders)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="validation Dice during training")
    args = ap.parse_args(argv)
    curves = read_curves(args.grid)
    if not curves:
        raise SystemExit(f"no run with validation points under {args.grid}")
    print("method  seed  last_iteration  last_val_dice  rise_over_last_quarter")
    for method, seeds in curves.items():
        for seed, points in sorted(seeds.items()):
            rise = late_rise(points)
            print(f"{method}  {seed}  {points[-1][0]}  {100 * points[-1][1]:.1f}  "
                  f"{'' if rise is None else f'{100 * rise:+.1f}'}")
    print(plot(curves, args.out, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
