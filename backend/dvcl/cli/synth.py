"""`dvcl synth`: write a data set of domain-randomised synthetic CT for `dvcl prepare`: abdomen (FLARE22 labels) or
heart (MM-WHS labels)."""

from __future__ import annotations

import argparse
from pathlib import Path

#: switch -> what turning it off keeps constant (help texts; the switch list itself is dvcl.synthesis.config's,
#: repeated here because that module must not be imported by `dvcl --help`; tests/test_synthesis.py checks both)
SWITCH_HELP = {
    "elastic": "smooth random deformation of the anatomy",
    "affine": "random size, rotation and position",
    "absence": "randomly missing organs (gallbladder, a kidney, spleen; abdomen only)",
    "phase": "random contrast phase (off: portal venous)",
    "texture": "per-tissue texture",
    "noise": "image noise",
    "bias": "low-frequency intensity non-uniformity",
    "blur": "point-spread function and slice profile",
    "streaks": "beam-hardening streaks and metal (pedicle screws; sternotomy wires in the heart)",
    "resolution": "random spacing and slice thickness (off: 0.8 x 0.8 x 2.5 mm)",
    "fov": "truncated fields of view",
    "arms": "arms beside the body",
    "table": "patient table",
    "pelvis": "pelvis below the abdomen (off: the abdomen stops near the iliac crests; abdomen only)",
    "lesions": "hypodense liver lesion in about a quarter of the cases (labelled liver; abdomen only)",
}

#: choices of --organ-sizes (dvcl.synthesis.config.ORGAN_SIZES, repeated for the same reason; the test checks)
ORGAN_SIZES = ("phantom", "adult")
#: --fatty-pancreas without a value (dvcl.synthesis.priors.FATTY_PANCREAS_PREVALENCE, repeated for the same reason;
#: the test checks)
FATTY_PANCREAS_PREVALENCE = 0.33


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write domain-randomised synthetic CT with labels (abdomen: FLARE22, heart: MM-WHS) for training "
        "without real labels",
        description="Generate SynthSeg-style synthetic CT: phantom anatomy with elastic deformation and "
        "organ absence, per-tissue HU drawn from literature ranges for a random contrast phase, texture, noise, "
        "bias, blur, streaks, random spacing (0.6-1 mm in-plane, 0.6-5 mm slices) and field of view. Writes the "
        "simple layout with a dataset.json that `dvcl prepare` reads. Case i depends only on the seed, the kind and "
        "the switches. See docs/synthesis.md.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="data set folder to write")
    p.add_argument("--count", type=int, default=10, metavar="N", help="number of cases (default 10)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="parallel processes (default 1)")
    p.add_argument("--kind", choices=("abdomen", "cardiac"), default="abdomen",
                   help="abdominal CT with FLARE22 labels (default) or cardiac CT angiography with the 7 MM-WHS "
                   "structures (contrast timings: coronary CTA, pulmonary CTA, venous, none)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (or add cases to a finished one): keeps the cases already "
                   "written, generates the rest; refused unless the other arguments are the same as before")
    p.add_argument("--organ-sizes", choices=ORGAN_SIZES, default=ORGAN_SIZES[0],
                   help="abdomen: the phantom's organ sizes (default) or adult CT volumes for liver, spleen, kidneys "
                   "and gallbladder (drawn per case; every other draw of a case stays the same)")
    p.add_argument("--fatty-pancreas", type=float, nargs="?", const=FATTY_PANCREAS_PREVALENCE, default=0.0,
                   metavar="P",
                   help="abdomen: a fatty pancreas (fat between the lobules, 10-60 %% of the organ) in a fraction P "
                   f"of the cases (without P: {FATTY_PANCREAS_PREVALENCE}, the adult prevalence in the literature; "
                   "default 0: never); every other draw of a case stays the same")
    p.add_argument("--fat-planes", action="store_true",
                   help="abdomen: fat, not liver, around the pancreas, duodenum, adrenal glands and the lower half of "
                   "the gallbladder, as in a patient (a margin of a few millimetres drawn per organ, see "
                   "docs/synthesis.md; every other draw of a case stays the same)")
    g = p.add_argument_group("randomisations (each on by default; --no-X turns one off)")
    for name, text in SWITCH_HELP.items():
        g.add_argument(f"--no-{name}", dest=f"no_{name}", action="store_true", help=f"no {text}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvcl.cli.phantom import report_dataset
    from dvcl.synthesis import SynthesisConfig, write_synthetic_dataset
    from dvcl.utils import progress

    off = [name for name in SWITCH_HELP if getattr(args, f"no_{name}")]
    config = SynthesisConfig(organ_sizes=args.organ_sizes, fatty_pancreas_p=args.fatty_pancreas,
                             fat_planes=args.fat_planes).without(*off)
    with progress.Progress("synth", total=max(args.count, 0), desc="synthetic CT", unit="case") as bar:
        result = write_synthetic_dataset(args.out_dir, args.count, seed=args.seed, config=config,
                                         overwrite=args.overwrite, workers=args.workers,
                                         progress=lambda name: bar.update(message=name), kind=args.kind,
                                         resume=args.resume)
    return report_dataset("synth", result)
