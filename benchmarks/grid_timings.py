"""Per-run figures of a `dvcl experiment` folder: seconds per iteration, wall time, best validation Dice and test
mean Dice, one line per run (a markdown table), to size a grid before running it in full.

    python benchmarks/grid_timings.py runs/phantom_f10/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dvcl.evaluation.report import load_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="the --out folder of `dvcl experiment`")
    args = ap.parse_args()
    print("| run | status | iterations | s/it | train s | best val Dice | test mean Dice |")
    print("|---|---|---|---|---|---|---|")
    for run_json in sorted(args.grid.glob("*/run.json")):
        info = json.loads(run_json.read_text())
        summary_path = run_json.parent / "evaluation" / "summary.json"
        test = load_summary(summary_path)["mean_dice"] if summary_path.is_file() else None  # a fraction
        t = info.get("timings", {})
        best = info.get("best_val_dice")
        print(f"| {run_json.parent.name} | {info.get('status')} | {info.get('iteration')} | {t.get('s_per_it', '')} | "
              f"{t.get('elapsed_s', '')} | {'' if best is None else f'{best:.4f}'} | "
              f"{'' if test is None else f'{test:.4f}'} |")


if __name__ == "__main__":
    main()
