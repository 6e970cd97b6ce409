"""``dvcl segment``: segment CT files or DICOM folders with a model package."""

from __future__ import annotations

import argparse
import time

from dvcl.io.segmentation import SEGMENTATION_FORMATS
from dvcl.profiles import window_text


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "segment",
        help="segment CT volumes (files or DICOM folders) with a trained model",
        description="Segment CT volumes with a model package: the package's preprocessing, sliding-window "
        "inference with the window stored in the package (the one its run validated with; by training profile: "
        f"{window_text()}), Gaussian blending, softmax mean of the package's models (A and B for co-trained "
        "methods), result in the input's original geometry. `dvcl info` lists each installed model's window.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (NIfTI, NRRD, MHA), DICOM series folders, or folders of image files")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (one input, e.g. out.seg.nrrd) or folder (one <case>.<format> per input)")
    p.add_argument("--model", "-m", default=None, metavar="M",
                   help="model package folder, or the name of an installed model (e.g. phantom_demo); default: the "
                   "best installed model for --preset (`dvcl info` lists them)")
    p.add_argument("--fast", action="store_true",
                   help="use the installed fast model for the preset (of --model when given) instead: coarser grid, "
                   "e.g. synthetic_abdomen_fast at 4x4x6 mm, several times faster, small structures suffer")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="without --model: whose label set to segment (default: flare22)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write <case>_entropy.nii.gz (normalised entropy of the mean probabilities) and "
                   "<case>_disagreement.nii.gz (0.5 * sum |p_A - p_B|, zeros for one-model packages), both in "
                   "[0, 1] on the input's grid, and their per-structure means in the --volumes table")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: also average over flipped copies, along the axes the model was "
                   "trained to be flipped along (up to 8x slower); models trained without flips, such as the "
                   "synthetic-CT ones, have none")
    p.add_argument("--format", dest="fmt", choices=SEGMENTATION_FORMATS, default=None,
                   help="output format for folder outputs (default: nii.gz; seg.nrrd opens in Slicer with "
                   "names and colors)")
    p.add_argument("--volumes", choices=("csv", "json"), default=None,
                   help="also write per-structure volumes in ml")
    p.add_argument("--models", dest="model_subset", default=None, metavar="A[,B]",
                   help="which of the package's models to average (e.g. 'A' for A only; default: all)")
    # the same names as dvcl.inference.segment.RESTORE_MODES (not imported here: `dvcl --help` stays light)
    p.add_argument("--restore", choices=("probabilities", "probabilities-exact", "label"), default="probabilities",
                   help="how predictions return to the original grid: argmax of the linearly interpolated "
                   "probabilities (smooth, default; computed at organ borders only), probabilities-exact (the same "
                   "by resampling every class everywhere: the slow reference) or label (nearest neighbour, blocky)")
    p.add_argument("--sw-batch-size", type=int, default=None,
                   help="windows per network call (default: chosen from the device and network, 4 on a CPU)")
    p.add_argument("--engine", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="what runs the network: auto (the fastest installed engine that agrees with torch on "
                   ">= 99.9 %% of voxels; torch on CUDA), torch, onnxruntime or openvino (a missing one "
                   "falls back to torch) (default: auto)")
    p.add_argument("--no-postprocessing", dest="postprocess", action="store_false",
                   help="skip the model's post-processing (keeping only the largest connected component of the "
                   "structures for which that raised Dice on validation; model.json 'postprocessing' lists them)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--accept-nonuniform", action="store_true",
                   help="DICOM series with missing, unevenly spaced or tilted slices: resample onto a uniform grid "
                   "(with a warning) instead of refusing them")
    p.add_argument("--force", action="store_true",
                   help="segment images whose intensities do not look like CT Hounsfield units (else exit 2)")
    p.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                   help="memory budget per case in GiB: the work is split (one window per call, label restore) "
                   "to fit, or refused before it starts")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from dvcl.errors import ConfigError
    from dvcl.inference.segment import segment_files
    from dvcl.utils import progress

    if args.sw_batch_size is not None and args.sw_batch_size < 1:
        raise ConfigError(f"--sw-batch-size must be >= 1, got {args.sw_batch_size}")
    subset = [m.strip() for m in args.model_subset.split(",") if m.strip()] if args.model_subset else None
    start = time.monotonic()
    results = segment_files(
        args.inputs, args.output, args.model, device=args.device, tta=args.tta, fmt=args.fmt,
        volumes=args.volumes, overwrite=args.overwrite, models=subset, restore=args.restore,
        sw_batch_size=args.sw_batch_size, engine=args.engine, accept_nonuniform=args.accept_nonuniform,
        force=args.force, max_memory=args.max_memory, fast=args.fast, preset=args.preset,
        uncertainty=args.uncertainty, postprocess=args.postprocess,
    )
    progress.emit("done", task="segment", seconds=round(time.monotonic() - start, 2))
    if progress.get_mode() != "json":
        for r in results:
            print(r.output)
    return 0
