"""``dvcl ensemble``: several model packages of one kind as one package that averages them."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ensemble",
        help="average several model packages (e.g. seeds of one recipe) as one model",
        description="Write one model package whose networks are those of MODEL ... (packages or installed model "
        "names), averaged at inference like the A+B models of co-training. The members must share preset, labels, "
        "preprocessing, network, window and mode; inference costs one network pass per model.",
    )
    p.add_argument("members", nargs="+", metavar="MODEL", help="model package folders or installed model names")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model package folder to write")
    p.add_argument("--name", default=None, help="model name (default: the output folder's name)")
    p.add_argument("--description", default="", help="one-line description stored in model.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dvcl.inference.model_package import ensemble_packages
    from dvcl.utils import progress

    out = ensemble_packages(args.members, args.output, name=args.name,
                            description=args.description, overwrite=args.overwrite)
    progress.emit("output", path=str(out.resolve()), kind="model")
    if progress.get_mode() != "json":
        print(out)
    return 0
