"""``dvcl export``: turn a training run directory into a model package."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="package a trained run as a model folder for `dvcl segment` and Slicer",
        description="Write model.json + weights.safetensors (the models averaged at inference, their network "
        "config, labels with colors, preprocessing and sliding-window settings) from a run directory.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `dvcl train`")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model package folder to write")
    p.add_argument("--name", default=None, help="model name (default: the run directory's name)")
    p.add_argument("--description", default=None, help="one-line description stored in model.json")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="best (best validation Dice) or last; default: best, or last with a message when the run "
                   "has not validated yet (a short or stopped run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dvcl.inference.model_package import export_model
    from dvcl.utils import progress
    from dvcl.utils.atomic import check_writable

    ckpts = [Path(args.run_dir) / "checkpoints" / f"{c}.safetensors" for c in (args.checkpoint or "best", "last")]
    size = max((c.stat().st_size for c in ckpts if c.is_file()), default=0)
    check_writable(args.output, size, what="model package")

    out = export_model(args.run_dir, args.output, name=args.name, checkpoint=args.checkpoint or "auto",
                       description=args.description, overwrite=args.overwrite)
    progress.emit("output", path=str(out.resolve()), kind="model")
    if progress.get_mode() != "json":
        print(out)
    return 0
