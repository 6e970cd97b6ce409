"""`dvcl demo`: the whole chain on synthetic phantoms, nothing downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

from dvcl.profiles import help_text as profiles_help
from dvcl.profiles import profile_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo: phantom CTs -> DVCL training -> segmentation -> Dice/Jaccard table",
        description="Writes synthetic CT phantoms, prepares them, trains DVCL semi-supervised (quick CPU profile), "
        "exports the model, segments the held-out phantoms and prints the Dice/Jaccard table. Re-running "
        "continues where it stopped.",
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    p.add_argument("--kind", choices=("abdomen", "cardiac"), default=None, help="phantom kind (default abdomen)")
    p.add_argument("--method", default=None, help="training method (default dvcl; see `dvcl info`)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (default 200)")
    p.add_argument("--labeled", type=int, default=None, help="labeled phantoms, split 6:2:2 (default 10)")
    p.add_argument("--unlabeled", type=int, default=None, help="extra unlabeled phantoms (default 12)")
    p.add_argument("--profile", choices=profile_names(), default=None,
                   help=f"training profile (default quick): {profiles_help()}")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from dvcl.demo import default_config, run_demo
    from dvcl.utils import progress

    cfg = default_config(out=args.out, kind=args.kind, method=args.method, iterations=args.iterations,
                         labeled=args.labeled, unlabeled=args.unlabeled, profile=args.profile,
                         device=args.device, seed=args.seed)
    result = run_demo(cfg)
    progress.emit("output", path=result["report"], kind="report")
    progress.emit("done", task="demo", **{k: v for k, v in result.items() if k != "report"})
    if progress.get_mode() != "json":
        print(Path(result["report"]).read_text())
        print(json.dumps(result, indent=2))
    return 0
