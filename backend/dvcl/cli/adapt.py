"""`dvcl adapt`: fine-tune an installed model semi-supervised (DVCL) on a site's own unlabeled scans."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from dvcl import adapt as a
    from dvcl.profiles import PROFILES

    q = PROFILES[a.PROFILE]
    schedule = (f"the {a.PROFILE} profile's patch {'x'.join(map(str, q['patch']))}, batch "
                f"{q['batch_labeled']}+{q['batch_unlabeled']} and {q['optimizer']} with the model's network and "
                "window, "
                f"{a.DEFAULT_ITERATIONS} iterations at lr {a.DEFAULT_LR:g} unless given")

    p = sub.add_parser(
        "adapt",
        help="adapt a model to your own unlabeled scans (semi-supervised fine-tuning, writes a new model)",
        description=f"Starts both U-Nets from MODEL's weights and trains {a.METHOD.upper()} on labeled data of the "
        "model's label set plus your unlabeled scans, preprocessed exactly as the model expects, then writes a new "
        f"model package whose card records the source model (name, sha256), the scans and the schedule: "
        f"{a.TRANSDUCTIVE_LINE}. Schedule: {schedule}. Re-running the same command continues where it stopped; "
        "other settings are refused (--overwrite starts over).",
    )
    p.add_argument("--model", required=True, help="model folder or installed model name (see `dvcl info`)")
    p.add_argument("--unlabeled", type=Path, required=True,
                   help="folder of your unlabeled scans (NIfTI, NRRD, MHA/MHD files or DICOM series folders)")
    p.add_argument("-o", "--out", type=Path, required=True, help="folder of the adapted model package to write")
    p.add_argument("--labeled", type=Path, default=None,
                   help="labeled data in the model's label set (nnU-Net or simple layout, as `dvcl prepare` reads; "
                   "split 8:2 into training and validation); required for now: synthetic labeled data is a later "
                   "step")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"training iterations (default {a.DEFAULT_ITERATIONS})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"AdamW learning rate (default {a.DEFAULT_LR:g}: a tenth of the {a.PROFILE} profile's, so the "
                   "model's knowledge is kept)")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument("--checkpoint", choices=("last", "best", "auto"), default=a.DEFAULT_CHECKPOINT,
                   help=f"checkpoint to export (default {a.DEFAULT_CHECKPOINT}: 'best' is chosen on labeled "
                   "validation cases, not on your scans, so it favours the least adapted state)")
    p.add_argument("--name", default=None, help="name of the new model (default: the --out folder name)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help=f"cache and training run (default: OUT{a.WORK_SUFFIX} next to --out); kept for resuming")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=None, help="parallel processes of the preparation "
                   "(default: all cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training option (patch, batch_labeled, lambda_c ...), as `dvcl train --set`; "
                   "repeatable")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out and start the adaptation over (its work folder too)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from dvcl.adapt import DEFAULT_ITERATIONS, DEFAULT_LR, adapt_model
    from dvcl.errors import ConfigError
    from dvcl.inference.model_package import read_model_json
    from dvcl.utils import progress

    options = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        options[key.strip()] = value.strip()
    out = adapt_model(args.model, args.unlabeled, args.out, labeled=args.labeled,
                      iterations=args.iterations if args.iterations is not None else DEFAULT_ITERATIONS,
                      lr=args.lr if args.lr is not None else DEFAULT_LR, device=args.device, seed=args.seed,
                      work_dir=args.work_dir, checkpoint=args.checkpoint, name=args.name, options=options,
                      workers=args.workers, overwrite=args.overwrite, argv=["dvcl", *sys.argv[1:]])
    card = read_model_json(out)["card"]
    progress.emit("done", task="adapt", model=str(out.resolve()))
    if progress.get_mode() != "json":
        print(json.dumps({"model": str(out.resolve()), "adapted_from": card["adapted_from"]["name"],
                          "unlabeled_scans": card["adaptation"]["unlabeled_scans"]["count"],
                          "iterations": card["adaptation"]["iterations"], "note": card["transductive"]}))
    return 0
