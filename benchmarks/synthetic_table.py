"""One table of the synthetic-data models of `benchmarks/synthetic_model.sh`: Dice per structure on the real CT
for every variant in WORK (everything randomised, each randomisation switched off once, other counts), with
the difference to the reference variant and the best Dice on the *synthetic* validation split (what chose
each checkpoint). The randomisation study of issue 13 is this table.

    python benchmarks/synthetic_table.py WORK -o docs/results/synthetic_ablation.md [--reference all]

Reads WORK/<variant>/real_ct/summary.json (written by `dvcl evaluate` once per finished model) and
WORK/<variant>/run/run.json; trains, evaluates and changes nothing. Variants without a real-CT report are
listed as missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional


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


def build_table(work: Path, reference: str = "all") -> str:
    """The markdown table of every variant folder in ``work`` (see the module docstring)."""
    from dvcl.evaluation.report import load_summary, run_row

    variants = sorted(p for p in work.iterdir() if p.is_dir())
    rows: Dict[str, dict] = {}
    missing: List[str] = []
    for v in variants:
        summary = v / "real_ct" / "summary.json"
        if summary.is_file():
            rows[v.name] = run_row(load_summary(summary), name=v.name)
            rows[v.name]["best_val"] = _best_val(v / "run" / "run.json")
        else:
            missing.append(v.name)
    if not rows:
        raise SystemExit(f"{work}: no variant has a real-CT report (<variant>/real_ct/summary.json)")
    structures = list(next(iter(rows.values()))["structures"])
    ref = rows.get(reference)
    order = ([reference] if ref else []) + [n for n in rows if n != reference]
    head = ["variant", *structures, "mean Dice", f"minus {reference}" if ref else "", "synthetic val. (best)"]
    lines = ["| " + " | ".join(h for h in head if h) + " |", "|" + "---|" * len([h for h in head if h])]
    for name in order:
        row = rows[name]
        cells = [name, *(_fmt(row["structures"].get(s)) for s in structures), _fmt(row["mean_dice"])]
        if ref:
            cells.append("" if name == reference else _fmt(row["mean_dice"] - ref["mean_dice"], signed=True))
        cells.append(_fmt(row["best_val"]))
        lines.append("| " + " | ".join(cells) + " |")
    out = ["Dice in % on the real CT (one scan, read once per finished model); 'synthetic val.' is the best mean",
           "Dice on the synthetic validation split, which chose each checkpoint.", "", *lines]
    if missing:
        out += ["", f"No real-CT report yet: {', '.join(missing)}."]
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="the WORK folder of benchmarks/synthetic_model.sh (one folder per variant)")
    ap.add_argument("-o", "--out", type=Path, help="markdown file to write (default: print)")
    ap.add_argument("--reference", default="all", help="the variant the others are compared with (default: all)")
    args = ap.parse_args(argv)
    table = build_table(args.work, args.reference)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
