"""Validation-Dice curves of every run of `dvcl experiment` folders, one panel per method, one line per run.

    python benchmarks/grid_curves.py GRID -o curves.png                 # lines: seeds
    python benchmarks/grid_curves.py DEFAULT OPTION1 OPTION2 -o c.png   # lines: folder and seed (an option study)

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
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Curve = List[Tuple[int, float]]


def read_curves(grids: Sequence[Path]) -> Dict[str, Dict[str, Curve]]:
    """{method: {line label: [(iteration, validation Dice), ...]}} for every run folder under ``grids``; a line
    is ``seed N``, or ``FOLDER, seed N`` when several grids are given."""
    curves: Dict[str, Dict[str, Curve]] = {}
    for grid in grids:
        for metrics in sorted(grid.glob("*/metrics.csv")):
            info = json.loads((metrics.parent / "run.json").read_text(encoding="utf-8"))
            with metrics.open(newline="", encoding="utf-8") as f:
                points = [(int(r["iteration"]), float(r["val_dice"])) for r in csv.DictReader(f)
                          if r.get("val_dice")]
            if points:
                label = f"seed {int(info['seed'])}" if len(grids) == 1 else f"{grid.name}, seed {int(info['seed'])}"
                curves.setdefault(info["method"], {})[label] = points
    return curves


def late_rise(points: Curve) -> Optional[float]:
    """Validation Dice at the end minus at the last point at or before 75 % of the run (None for one point)."""
    if len(points) < 2:
        return None
    end_it, end = points[-1]
    before = [v for it, v in points if it <= 0.75 * end_it]
    return end - (before[-1] if before else points[0][1])


def plot(curves: Dict[str, Dict[str, Curve]], out: Path, title: str) -> Path:
    methods = list(curves)
    fig, axes = plt.subplots(1, len(methods), figsize=(max(6.0, 3.2 * len(methods)), 3.6), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        for label, points in curves[method].items():
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", ms=3, label=label)
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
    ap.add_argument("grids", type=Path, nargs="+",
                    help="folders written by `dvcl experiment` (or holding its run folders)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="validation Dice during training")
    args = ap.parse_args(argv)
    curves = read_curves(args.grids)
    if not curves:
        raise SystemExit(f"no run with validation points under {', '.join(map(str, args.grids))}")
    print("method | run | last iteration | last val Dice | rise over the last quarter | best val Dice (iteration)")
    for method, lines in curves.items():
        for label, points in lines.items():
            rise = late_rise(points)
            best = max(points, key=lambda p: p[1])
            print(f"{method} | {label} | {points[-1][0]} | {100 * points[-1][1]:.1f} | "
                  f"{'' if rise is None else f'{100 * rise:+.1f}'} | {100 * best[1]:.1f} ({best[0]})")
    print(plot(curves, args.out, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
