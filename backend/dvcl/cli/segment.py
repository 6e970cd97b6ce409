"""``dvcl segment``: segment CT files or DICOM folders with a model package."""

from __future__ import annotations

import argparse
import time

from dvcl.io.segmentation import SEGMENTATION_FORMATS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "segment",
        help="segment CT volumes (files or DICOM folders) with a trained model",
        description="Segment CT volumes with a model package: the paper's preprocessing, sliding-window "
        "inference (window 64x160x160, stride 32x80x80, Gaussian blending), softmax mean of models A and B, "
        "result in the input's original geometry.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (NIfTI, NRRD, MHA), DICOM series folders, or folders of image files")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (one input, e.g. out.seg.nrrd) or folder (one <case>.<format> per input)")
    p.add_argument("--model", "-m", required=True, metavar="M",
                   help="model package folder, or the name of an installed model (e.g. phantom_demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over flips (8x slower)")
    p.add_argument("--format", dest="fmt", choices=SEGMENTATION_FORMATS, default=None,
                   help="output format for folder outputs (default: nii.gz; seg.nrrd opens in Slicer with "
                   "names and colors)")
    p.add_argument("--volumes", choices=("csv", "json"), default=None,
                   help="also write per-structure volumes in ml")
    p.add_argument("--models", dest="model_subset", default=None, metavar="A[,B]",
                   help="which of the package's models to average (e.g. 'A' for A only; default: all)")
    p.add_argument("--restore", choices=("probabilities", "label"), default="probabilities",
                   help="how predictions return to the original grid: resample probabilities (smooth, default) "
                   "or labels (faster)")
    p.add_argument("--sw-batch-size", type=int, default=1, help="windows per network call (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dvcl.errors import ConfigError
    from dvcl.inference.segment import segment_files
    from dvcl.utils import progress

    if args.sw_batch_size < 1:
        raise ConfigError(f"--sw-batch-size must be >= 1, got {args.sw_batch_size}")
    subset = [m.strip() for m in args.model_subset.split(",") if m.strip()] if args.model_subset else None
    start = time.monotonic()
    results = segment_files(
        args.inputs, args.output, args.model, device=args.device, tta=args.tta, fmt=args.fmt,
        volumes=args.volumes, overwrite=args.overwrite, models=subset, restore=args.restore,
        sw_batch_size=args.sw_batch_size,
    )
    progress.emit("done", task="segment", seconds=round(time.monotonic() - start, 2))
    if progress.get_mode() != "json":
        for r in results:
            print(r.output)
    return 0
