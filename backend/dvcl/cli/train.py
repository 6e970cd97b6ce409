"""`dvcl train`: train a method (DVCL by default) on a prepared cache or a raw data set.

Examples::

    dvcl train --preset flare22 --data cache/flare22 --labeled-fraction 0.1 --method dvcl --seed 0 --out runs/f10
    dvcl train --data phantoms/ --profile quick --method cps --out runs/quick      # raw data: prepared first
    dvcl train --resume runs/f10                                                 # continue after a stop
    torchrun --nproc_per_node 4 -m dvcl.cli.main train --data cache/flare22 --out runs/ddp   # multi-GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from dvcl.methods.catalog import help_list
from dvcl.presets import list_presets
from dvcl.profiles import DEFAULT_PROFILE, default_text, profile_names
from dvcl.profiles import help_text as profiles_help

#: flags that change the schedule, refused with --resume (the resumed run continues the same schedule)
_SCHEDULE_FLAGS = ("preset", "labeled_fraction", "labeled_count", "method", "seed", "iterations", "batch_labeled",
                   "batch_unlabeled", "patch", "lr", "val_every", "profile", "config", "set", "data")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a segmentation model (DVCL co-training or a baseline)",
        description="Train on a prepared cache (or a raw data set, prepared first). Writes RUN_DIR/config.yaml, "
        "environment.json, metrics.csv, tb/, checkpoints/{best,last}.safetensors, last_state.pt and run.json. "
        "Ctrl-C saves the last checkpoint; --resume RUN_DIR continues exactly where it stopped.",
    )
    p.add_argument("--data", type=Path, help="prepared cache (dvcl prepare) or a raw data folder")
    p.add_argument("--unlabeled", type=Path, default=None, help="raw data only: extra folder of unlabeled scans")
    p.add_argument("--cache", type=Path, default=None,
                   help="raw data only: where to write the cache (default: RUN_DIR/cache)")
    p.add_argument("--preset", default=None, help=f"{', '.join(list_presets())} or a dataset.json "
                   "(default: the cache's preset)")
    p.add_argument("--out", type=Path, help="run directory to write")
    p.add_argument("--method", default=None, help=f"training method: {help_list()}")
    p.add_argument("--labeled-fraction", type=float, default=None, help="fraction of training cases used with "
                   "labels (default 0.1)")
    p.add_argument("--labeled-count", type=int, default=None, metavar="N",
                   help="number of training cases used with labels, instead of --labeled-fraction (the paper's "
                   "MM-WHS 10%% split is 2 of 12, which the mmwhs preset gives by itself)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--profile", choices=profile_names(), default=None,
                   help=f"what the run is sized for (default {DEFAULT_PROFILE}): {profiles_help()}. Flags and "
                   "--set override single values")
    p.add_argument("--config", type=Path, default=None, help="start from a config.yaml instead of preset+profile")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"optimizer steps; each takes one labeled and one unlabeled batch of patches, and the LR "
                   f"decays (poly 0.9) to 0 at the last one (default: {default_text('iterations')})")
    p.add_argument("--batch-labeled", type=int, default=None,
                   help=f"labeled patches per step (default: {default_text('batch_labeled')})")
    p.add_argument("--batch-unlabeled", type=int, default=None,
                   help=f"unlabeled patches per step; 0 for none; labeled-only methods ignore it (default: "
                   f"{default_text('batch_unlabeled')})")
    p.add_argument("--patch", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                   help=f"training crop in voxels of the prepared cache, z y x, each divisible by the U-Net's "
                   f"down-sampling (default: {default_text('patch')})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"initial learning rate (default: {default_text('lr')}; optimizer: "
                   f"{default_text('optimizer')})")
    p.add_argument("--val-every", type=int, default=None,
                   help=f"validate and checkpoint every N iterations, 0 = at the end only (default: "
                   f"{default_text('val_every')})")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes per stream")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option: a method parameter (lambda_c=0), network.X, or any config field; "
                   "repeatable")
    p.add_argument("--resume", nargs="?", type=Path, const=Path(""), default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The resolved TrainConfig of a new run: defaults < preset < profile < --config < flags < --set, every layer
    through :func:`dvcl.training.config.apply_options` (see :mod:`dvcl.profiles`)."""
    from dvcl.data.cache import Cache
    from dvcl.errors import ConfigError
    from dvcl.training.config import TrainConfig, apply_options, apply_preset_schedule, apply_profile, set_option

    if args.config is not None:
        cfg = TrainConfig.load(args.config)
        if args.profile:
            apply_profile(cfg, args.profile)
    else:
        cfg = TrainConfig()
        apply_preset_schedule(cfg, Cache(args.data).preset)
        apply_profile(cfg, args.profile or "paper")
    cfg.data = str(Path(args.data).resolve())
    if args.preset:
        cfg.preset = args.preset
    flags = {field: getattr(args, flag) for flag, field in (
        ("method", "method"), ("labeled_fraction", "labeled_fraction"), ("labeled_count", "labeled_count"),
        ("seed", "seed"),
        ("iterations", "iterations"), ("batch_labeled", "batch_labeled"), ("batch_unlabeled", "batch_unlabeled"),
        ("patch", "patch"), ("lr", "lr"), ("val_every", "val_every"), ("workers", "num_workers"))}
    apply_options(cfg, {k: v for k, v in flags.items() if v is not None})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        set_option(cfg, key.strip(), value.strip())
    cfg.device = args.device
    cfg.__post_init__()
    return cfg


def _resolve_data(args: argparse.Namespace, out: Path) -> None:
    """Point ``args.data`` at a cache, preparing a raw data set first (into --cache or RUN_DIR/cache)."""
    from dvcl.data.cache import Cache, prepare_dataset
    from dvcl.errors import ConfigError
    from dvcl.training.distributed import launched_by_torchrun

    if args.data is None:
        raise ConfigError("--data is required (a prepared cache or a raw data folder)")
    if not args.data.exists():
        raise ConfigError(f"{args.data}: data folder not found")
    if Cache.is_cache(args.data):
        Cache(args.data).verify()  # a truncated or missing array: one line now, not a traceback mid-run
        return
    if launched_by_torchrun():
        raise ConfigError(f"{args.data}: not a prepared cache; run `dvcl prepare` before multi-process training")
    cache_dir = args.cache or (out / "cache")
    cache, _ = prepare_dataset(args.data, cache_dir, preset=args.preset, unlabeled=args.unlabeled)
    args.data = cache.root


def run(args: argparse.Namespace) -> int:
    import time

    from dvcl.errors import ConfigError
    from dvcl.training.config import TrainConfig
    from dvcl.training.trainer import train
    from dvcl.utils import progress
    from dvcl.utils.atomic import check_writable
    from dvcl.utils.runlock import claim_folder

    main_rank = int(os.environ.get("RANK", "0")) == 0
    if not main_rank:
        progress.set_mode("none")  # one progress stream per run: rank 0's
    t0 = time.monotonic()
    resume = args.resume is not None
    if resume:
        run_dir = args.resume if str(args.resume) not in ("", ".") or args.out is None else args.out
        if str(run_dir) in ("", "."):
            raise ConfigError("--resume needs the run directory (--resume RUN_DIR or --out RUN_DIR --resume)")
        given = [f"--{f.replace('_', '-')}" for f in _SCHEDULE_FLAGS if getattr(args, f, None) not in (None, [])]
        if given:
            raise ConfigError(f"--resume continues the run's own schedule (its config.yaml) and never changes it "
                              f"midway; drop {', '.join(given)}, or start over with another --out (or --out "
                              f"{run_dir} --overwrite)")
        cfg_path = Path(run_dir) / "config.yaml"
        if not cfg_path.is_file():
            raise ConfigError(f"{run_dir}: no config.yaml, not a training run to resume")
        cfg = TrainConfig.load(cfg_path)
        if args.workers is not None:
            cfg.num_workers = args.workers
    else:
        if args.out is None:
            raise ConfigError("--out RUN_DIR is required")
        run_dir = args.out
        _resolve_data(args, run_dir)
        cfg = build_config(args)
    with contextlib.ExitStack() as stack:
        if main_rank:  # one claim per run: rank 0's (torchrun ranks share the folder by design)
            stack.enter_context(claim_folder(Path(run_dir)))
            check_writable(run_dir, 64 * 2**20, what="run folder")  # checkpoints, logs, TensorBoard events
        result = train(cfg, run_dir, device=args.device, resume=resume, overwrite=args.overwrite,
                       argv=_argv(sys.argv))
    summary = {
        "run_dir": str(Path(result.run_dir).resolve()),
        "status": result.status,
        "iteration": result.iteration,
        "best_val_dice": result.best_val_dice,
        "best_iteration": result.best_iteration,
        "seconds": round(result.seconds, 1),
    }
    progress.emit("output", path=summary["run_dir"], kind="run")
    progress.emit("done", task="train", seconds=round(time.monotonic() - t0, 1))
    if progress.get_mode() != "json" and main_rank:
        print(json.dumps(summary))
    return 0


def _argv(argv: Optional[List[str]]) -> List[str]:
    return list(argv or [])
