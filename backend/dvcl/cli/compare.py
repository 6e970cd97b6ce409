"""`dvcl compare`: one table from rows of several finished `dvcl experiment` grids (ablations, option studies)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="one table (with paired differences) from rows of several experiment grids",
                       description="Picks one row (method and inference model) from each finished `dvcl "
                       "experiment` grid and writes them as one table with per-seed values and paired differences "
                       "against a reference row. Reads existing evaluations only: no test split is read again.")
    p.add_argument("--row", action="append", required=True, metavar="LABEL=GRID:METHOD:MODEL",
                   help="a row: its label (no '='), the grid folder, the method and the inference model (A+B, A, "
                   "student, teacher, net); repeat for each row, in table order")
    p.add_argument("--reference", default=None, help="label of the row the differences are taken against "
                   "(default: the first row)")
    p.add_argument("--title", default="Comparison", help="the table's heading")
    p.add_argument("-o", "--out", type=Path, required=True, help="markdown file to write (a .csv goes beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvcl.grid_comparison import parse_row, write_comparison

    specs = [parse_row(text) for text in args.row]
    paths = write_comparison(specs, args.out, reference=args.reference, title=args.title)
    print(json.dumps({k: str(Path(v).resolve()) for k, v in paths.items()}))
    return 0
