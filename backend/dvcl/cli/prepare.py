"""`dvcl prepare`: preprocess a data set into the training cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dvcl.presets import list_presets


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="preprocess a data set (nnU-Net or simple layout) into a training cache",
        description="Reorient, clip, resample and normalise every case as the paper does, in parallel; "
        "up-to-date cases are skipped. Writes splits.json (seeded 6:2:2).",
    )
    p.add_argument("data", type=Path, help="data folder: nnU-Net v2 (dataset.json + imagesTr/labelsTr) or "
                   "simple layout (labeled/ [+ unlabeled/]) or a labeled folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="cache folder to write")
    p.add_argument("--unlabeled", type=Path, default=None, help="extra folder of unlabeled scans")
    p.add_argument("--preset", default=None, help=f"{', '.join(list_presets())} or a dataset.json "
                   "(default: the data set's dataset.json)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help=f"resampling spacing in mm (default: the paper's {_paper_spacing()}); training patches "
                   "are voxels of this grid, so coarser spacings let a small patch see more anatomy and train faster "
                   "on a CPU, but deviate from the paper")
    p.add_argument("--no-ct-check", "--force", dest="no_ct_check", action="store_true",
                   help="accept intensities that do not look like CT HU")
    p.add_argument("--accept-nonuniform", action="store_true",
                   help="DICOM series with missing, unevenly spaced or tilted slices: resample onto a uniform grid "
                   "(with a warning) instead of refusing them")
    p.set_defaults(func=run)


def _paper_spacing() -> str:
    from dvcl.preprocessing.pipeline import PreprocessConfig

    return " ".join(f"{v:g}" for v in PreprocessConfig().spacing)


def run(args: argparse.Namespace) -> int:
    from dvcl.data.cache import prepare_dataset
    from dvcl.errors import ConfigError
    from dvcl.preprocessing import PreprocessConfig
    from dvcl.utils import progress

    pcfg = None
    if args.spacing is not None:
        if min(args.spacing) <= 0:
            raise ConfigError(f"--spacing must be positive, got {args.spacing}")
        pcfg = PreprocessConfig(spacing=tuple(args.spacing))

    cache, counts = prepare_dataset(args.data, args.out, preset=args.preset, unlabeled=args.unlabeled,
                                    workers=args.workers, seed=args.seed, check_ct=not args.no_ct_check,
                                    cfg=pcfg, accept_nonuniform=args.accept_nonuniform)
    summary = {"cache": str(cache.root.resolve()), **counts, "labeled": len(cache.labeled_ids),
               "unlabeled": len(cache.unlabeled_ids),
               "split": {k: len(v) for k, v in cache.splits.items() if isinstance(v, list) and k != "ratios"}}
    progress.emit("output", path=summary["cache"], kind="cache")
    progress.emit("done", task="prepare", **counts)
    if progress.get_mode() != "json":
        print(json.dumps(summary))
    return 0
