"""``dvcl evaluate``: Dice, Jaccard and HD95 of predictions against reference label maps."""

from __future__ import annotations

import argparse

from dvcl.presets import list_presets


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score predictions against reference labels (Dice, Jaccard, HD95) and write a report",
        description="Per case and structure Dice, Jaccard, HD95 and ASSD (MONAI metrics, mm from the image "
        "spacing). PRED and GT are two files or two folders matched by case name. Structure names come from "
        "--preset or from the files (.seg.nrrd segment names, the <case>.labels.json that `dvcl segment` "
        "writes, a dataset.json next to the folder); predictions and references that name a label "
        "differently are refused, as are non-integer (probability) maps. A structure absent from both is "
        "excluded; absent from one scores Dice 0 with HD95 undefined. Dice and Jaccard are in percent in "
        "every output (metrics.csv columns dice_pct, jaccard_pct), distances in mm.",
    )
    p.add_argument("pred", metavar="PRED", help="predicted label map (file or folder; .nii.gz, .seg.nrrd, ...)")
    p.add_argument("gt", metavar="GT", help="reference label map (file or folder)")
    p.add_argument("--preset", default=None, metavar="P",
                   help=f"label set: {', '.join(list_presets())} or a dataset.json (default: read from the files)")
    p.add_argument("--group", action="append", default=None, metavar="NAME=PRED:REF",
                   help="score a structure shared by label sets that differ, from the values stored in the files, "
                   "e.g. 'heart=1,2,3,4,5:2' (MM-WHS chambers and myocardium against a whole-heart label); "
                   "repeat for more; only the groups are scored (not with --preset)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write metrics.csv, summary.json, report.md and PNG plots here (default: print the "
                   "table only)")
    p.add_argument("--name", default=None, help="row name in the table (default: PRED's name)")
    p.add_argument("--images", default=None, metavar="CT",
                   help="CT file or folder (case name or <case>_0000) drawn under the overlays")
    p.add_argument("--max-overlays", type=int, default=3, help="overlay PNGs for at most N cases (default 3)")
    p.add_argument("--no-distances", action="store_true", help="skip HD95/ASSD (Dice and Jaccard only; faster)")
    p.add_argument("--no-plots", action="store_true", help="do not draw PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bar and no log lines (same as `dvcl -q evaluate`); the table is still printed")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import time

    from dvcl.evaluation.report import (
        check_report_targets,
        evaluate_paths,
        find_images,
        markdown_table,
        match_cases,
        run_row,
        write_report,
    )
    from dvcl.utils import progress

    start = time.monotonic()
    if args.out:  # a report that cannot be written is refused before minutes of computing
        check_report_targets(args.out, overwrite=args.overwrite)
    from dvcl.evaluation.groups import parse_group

    groups = [parse_group(g) for g in args.group or []]
    result = evaluate_paths(args.pred, args.gt, preset=args.preset, name=args.name,
                            distances=not args.no_distances, groups=groups or None)
    if args.out:
        pairs = match_cases(args.pred, args.gt)
        cases = [c for c, _, _ in pairs]
        written = write_report(
            result, args.out, overwrite=args.overwrite, images=find_images(args.images, cases),
            predictions={c: p for c, p, _ in pairs}, references={c: r for c, _, r in pairs},
            max_overlays=0 if groups else args.max_overlays, plots=not args.no_plots,  # overlays show stored values
        )
        for kind, path in written.items():
            progress.emit("output", path=str(path.resolve()), kind=kind.split(":")[0])
    progress.emit("done", task="evaluate", seconds=round(time.monotonic() - start, 2))
    if progress.get_mode() != "json":
        print(markdown_table([run_row(result)], result.structures), end="")
        print("Dice and Jaccard in %: mean over structures per case, then over cases (+/- SD over cases); "
              "HD95 in mm.")
    return 0
