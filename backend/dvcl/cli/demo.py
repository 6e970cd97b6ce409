"""`dvcl demo`: the whole chain on synthetic phantoms, nothing downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from dvcl.demo import BUSY_MINUTES, EXPECTED_MINUTES, DemoConfig
    from dvcl.profiles import help_text as profiles_help
    from dvcl.profiles import profile_names

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: phantom CTs -> DVCL training -> segmentation -> Dice/Jaccard table "
        f"(about {EXPECTED_MINUTES} min on 2 idle CPU cores)",
        description=f"Writes {d.labeled + d.unlabeled} synthetic CT phantoms, prepares them at "
        f"{'x'.join(f'{s:g}' for s in d.spacing)} mm (twice the paper's spacing, so the CPU-sized patch sees "
        f"most of the abdomen), trains DVCL semi-supervised ({d.profile} profile, {d.iterations} iterations, "
        "the first half supervised-only), exports the model, segments the held-out phantoms and prints the "
        f"Dice/Jaccard table; about {EXPECTED_MINUTES} minutes on an idle 2-core CPU, up to {BUSY_MINUTES} on a "
        "busy one. Re-running continues where it "
        "stopped; a rerun with other settings is refused (use --overwrite to start over).",
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    p.add_argument("--kind", choices=("abdomen", "cardiac"), default=None, help=f"phantom kind (default {d.kind})")
    p.add_argument("--method", default=None, help=f"training method (default {d.method}; see `dvcl info`)")
    p.add_argument("--iterations", type=int, default=None, help=f"training iterations (default {d.iterations})")
    p.add_argument("--labeled", type=int, default=None,
                   help=f"labeled phantoms, split 6:2:2 into train/validation/test (default {d.labeled})")
    p.add_argument("--unlabeled", type=int, default=None, help=f"extra unlabeled phantoms (default {d.unlabeled})")
    p.add_argument("--profile", choices=profile_names(), default=None,
                   help=f"training profile (default {d.profile}): {profiles_help()}")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=None, help=f"phantom, split and training seed (default {d.seed})")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: remove the demo's earlier outputs in --out (phantoms, cache, run, model, "
                   "segmentations, evaluation) first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from dvcl.demo import check_same_settings, default_config, describe, run_demo
    from dvcl.utils import progress

    cfg = default_config(out=args.out, kind=args.kind, method=args.method, iterations=args.iterations,
                         labeled=args.labeled, unlabeled=args.unlabeled, profile=args.profile,
                         device=args.device, seed=args.seed)
    if not args.overwrite:
        check_same_settings(cfg)  # refused before the first line promises anything
    line = describe(cfg)
    progress.emit("message", task="demo", message=line)
    if progress.get_mode() != "json" and not getattr(args, "quiet", False):
        print(line, file=sys.stderr, flush=True)
    result = run_demo(cfg, overwrite=args.overwrite)
    progress.emit("output", path=result["report"], kind="report")
    progress.emit("done", task="demo", **{k: v for k, v in result.items() if k != "report"})
    if progress.get_mode() != "json":
        print(Path(result["report"]).read_text())
        print(json.dumps(result, indent=2))
    return 0
