"""`dvcl phantom`: write a data set of synthetic CT phantoms (simple layout + dataset.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write a synthetic CT data set (abdominal FLARE22 or cardiac MM-WHS phantoms)",
        description="Generate random but anatomically placed CT phantoms with ground-truth labels, in the simple "
        "layout (labeled/images, labeled/labels, unlabeled) with an nnU-Net style dataset.json. Case i depends "
        "only on the seed, so asking for more cases keeps the first ones.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="data set folder to write")
    p.add_argument("--kind", choices=("abdomen", "cardiac"), default="abdomen",
                   help="abdomen (13 FLARE22 organs) or cardiac (7 MM-WHS structures) (default: abdomen)")
    p.add_argument("--labeled", type=int, default=10, metavar="N", help="labeled cases (default 10)")
    p.add_argument("--unlabeled", type=int, default=10, metavar="M", help="unlabeled cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument("--raw-values", action="store_true",
                   help="cardiac only: store the raw MM-WHS label values 205..850 instead of 1..7")
    p.add_argument("--overwrite", action="store_true", help="replace existing phantom files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvcl.phantoms import write_phantom_dataset
    from dvcl.utils import progress

    total = max(args.labeled, 0) + max(args.unlabeled, 0)
    with progress.Progress("phantom", total=total, desc=f"{args.kind} phantoms", unit="case") as bar:
        result = write_phantom_dataset(args.out_dir, args.labeled, args.unlabeled, kind=args.kind, seed=args.seed,
                                       overwrite=args.overwrite, raw_values=args.raw_values,
                                       progress=lambda name: bar.update(message=name))
    return report_dataset("phantom", result)


def report_dataset(task: str, result: dict) -> int:
    """What a data-set writing command (``phantom``, ``synth``) tells its caller: the JSON events the Slicer module
    reads, or one summary line (case lists as counts) on a terminal."""
    from dvcl.utils import progress

    progress.emit("output", path=result["out_dir"], kind="dataset")
    progress.emit("done", task=task, seconds=result["seconds"])
    if progress.get_mode() != "json":
        print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in result.items()}))
    return 0
