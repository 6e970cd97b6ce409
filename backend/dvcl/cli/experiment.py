"""`dvcl experiment`: train, segment and evaluate a grid of methods x labeled fractions x seeds, then write
the paper-style comparison table (see :mod:`dvcl.experiment`).

Examples::

    dvcl experiment --data cache/flare22 --methods supervised,mean_teacher,uamt,cps,u2pl,dvcl,fully \\
        --fractions 0.1,0.5 --seeds 0,1,2 --out runs/flare22_table
    dvcl experiment --data phantoms/ --methods dvcl,cps --fractions 0.1 --seeds 0,1,2 --profile quick \\
        --out runs/phantom_quick                     # raw data: prepared into OUT/cache first
    dvcl experiment ... --out runs/flare22_table     # the same command again resumes / skips finished runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List

from dvcl.methods.catalog import method_names
from dvcl.presets import list_presets
from dvcl.profiles import DEFAULT_PROFILE, default_text, profile_names
from dvcl.profiles import help_text as profiles_help


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run a comparison grid (methods x labeled fractions x seeds) and write the paper's table",
        description="Each run trains into OUT/<method>_f<fraction>_s<seed>/, then segments the cache's test "
        "split with its best checkpoint and evaluates it. Seeds are aggregated (mean +/- SD) into "
        "OUT/results.md, results.csv, runs.csv and results.png. Re-running the command skips finished runs and "
        "resumes interrupted ones. 'fully' is supervised training on every training label.",
    )
    p.add_argument("--data", type=Path, required=True, help="prepared cache (dvcl prepare) or a raw data folder")
    p.add_argument("--preset", default=None, help=f"{', '.join(list_presets())} or a dataset.json (raw data: "
                   "the label table; cache: must match the cache's preset)")
    p.add_argument("--unlabeled", type=Path, default=None, help="raw data only: extra folder of unlabeled scans")
    p.add_argument("--methods", required=True, help="comma-separated method names (tables list them in this "
                   f"order): {','.join(method_names())}")
    p.add_argument("--fractions", default="0.1", help="comma-separated labeled fractions (default 0.1)")
    p.add_argument("--labeled-count", type=int, default=None, metavar="N",
                   help="labeled training cases of every run instead of --fractions (the paper's MM-WHS 10%% split "
                   "is 2 of 12, which the mmwhs preset gives for --fractions 0.1 by itself)")
    p.add_argument("--tuned-on", choices=("none", "validation", "test"), default="none",
                   help="how the --set values were chosen: none (given up front, default), validation, or test "
                   "(every table is then marked as not a valid comparison)")
    p.add_argument("--reference", default=None, help="method the paired differences are taken against "
                   "(default: dvcl when in the grid, else the first method)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--out", type=Path, required=True, help="folder for the runs and the tables")
    p.add_argument("--profile", choices=profile_names(), default=DEFAULT_PROFILE,
                   help=f"what every run is sized for (default {DEFAULT_PROFILE}): {profiles_help()}")
    p.add_argument("--iterations", type=int, default=None, help="override the profile's iteration count "
                   f"(default: {default_text('iterations')})")
    p.add_argument("--set", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                   help="override an option for every run (a config field, network.X or a method parameter), or "
                   "for one method's runs with METHOD:KEY=VALUE (e.g. u2pl:bank_size=10000); repeatable")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes per stream")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at the same time, each in its own process "
                   "sharing the device (default 1); on a large GPU the quick profile's runs go several at once")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation for the test segmentation")
    p.add_argument("--keep-going", action="store_true", help="log a failed run and continue with the others")
    p.add_argument("--overwrite", action="store_true", help="delete this grid's run folders in OUT and start over")
    p.add_argument("--tables-only", action="store_true", help="only rewrite results.md/csv, runs.csv and the plot "
                   "from the runs already finished and evaluated in OUT (trains and evaluates nothing)")
    p.set_defaults(func=run)


def _split(text: str, kind: type, what: str) -> List:
    from dvcl.errors import ConfigError

    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    try:
        return [kind(t) for t in items]
    except ValueError as exc:
        raise ConfigError(f"--{what}: cannot read '{text}' as a comma-separated list of {kind.__name__}") from exc


def run(args: argparse.Namespace) -> int:
    from dvcl.data.cache import Cache, prepare_dataset
    from dvcl.errors import ConfigError
    from dvcl.experiment import ExperimentConfig, parse_option, plan_grid, run_experiment
    from dvcl.utils import progress

    methods = [m.lower() for m in _split(args.methods, str, "methods")]
    fractions = _split(args.fractions, float, "fractions")
    seeds = _split(args.seeds, int, "seeds")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    plan_grid(methods, fractions, seeds, args.labeled_count)  # bad names/fractions fail before any preparation
    for item in args.set:
        parse_option(item)
    if not args.data.exists():
        raise ConfigError(f"{args.data}: data folder not found")
    data = args.data
    if not Cache.is_cache(data):
        cache, _ = prepare_dataset(data, args.out / "cache", preset=args.preset, unlabeled=args.unlabeled,
                                   workers=args.workers)
        data = cache.root
    elif args.preset:
        name = Cache(data).preset.name
        if name.lower() != str(args.preset).lower():
            raise ConfigError(f"{data}: the cache was prepared with preset '{name}', not '{args.preset}'")
    exp = ExperimentConfig(data=Path(data), out=args.out, methods=methods, fractions=fractions, seeds=seeds,
                           profile=args.profile, iterations=args.iterations, options=list(args.set),
                           device=args.device, num_workers=args.workers, keep_going=args.keep_going, tta=args.tta,
                           overwrite=args.overwrite, jobs=args.jobs, labeled_count=args.labeled_count,
                           tuned_on=args.tuned_on, reference=args.reference, tables_only=args.tables_only)
    result = run_experiment(exp)
    for kind, path in result.outputs.items():
        progress.emit("output", path=str(Path(path).resolve()), kind=kind)
    progress.emit("done", task="experiment", seconds=round(result.seconds, 1))
    if progress.get_mode() != "json":
        print(json.dumps({"out": str(result.out.resolve()), "runs": len(result.runs), "trained": len(result.trained),
                          "evaluated": len(result.evaluated), "skipped": len(result.skipped),
                          "failed": sorted(result.failed), "table": str(result.outputs["markdown"].resolve()),
                          "seconds": round(result.seconds, 1)}))
    return 1 if result.failed else 0
