"""``dvcl postprocess``: choose a model's largest-component post-processing on validation cases (nnU-Net's)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "postprocess",
        help="choose, on validation cases, the structures whose largest connected component alone is kept",
        description="Segment the images of IMAGES (or the validation split of --data CACHE) with MODEL, compare "
        "each structure's Dice against the references in LABELS (matched by case name) with and without keeping "
        "only its largest connected component, and write the model with the structures for which that raised "
        "the mean Dice (model.json 'postprocessing'); `dvcl segment` then applies it. Use validation cases, never "
        "the cases you report on.",
    )
    p.add_argument("model", metavar="MODEL", help="model package folder or installed model name")
    p.add_argument("images", metavar="IMAGES", nargs="?", default=None,
                   help="folder of validation images (or one image file)")
    p.add_argument("labels", metavar="LABELS", nargs="?", default=None,
                   help="folder of their reference label maps (or one file)")
    p.add_argument("--data", default=None, metavar="CACHE",
                   help="instead of IMAGES and LABELS: the validation split of a prepared cache (the model's own "
                   "training cache: its original files)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="model package to write (the MODEL folder itself: only its model.json is replaced)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--engine", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                   help="what runs the network (as dvcl segment; default: auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package at MODEL_DIR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    from dvcl.errors import ConfigError
    from dvcl.evaluation.report import match_cases
    from dvcl.inference.model_package import load_model_package, resolve_model
    from dvcl.inference.postprocessing import cache_cases, choose_largest_component, write_postprocessed_package
    from dvcl.utils import progress

    if (args.data is None) == (args.images is None or args.labels is None):
        raise ConfigError("give IMAGES and LABELS, or --data CACHE (not both)")
    model_dir = resolve_model(args.model)
    preset = None
    if args.data is not None:
        cases, preset = cache_cases(args.data, "val")
    else:
        cases = match_cases(args.images, args.labels)
    package = load_model_package(model_dir, lazy=True)
    with progress.Progress("postprocess", total=len(cases), desc="postprocess", unit="case") as bar:
        post = choose_largest_component(package, cases, device=args.device, engine=args.engine,
                                        on_case=lambda name: bar.update(1, message=name), preset=preset)
    out = write_postprocessed_package(model_dir, args.output, post, overwrite=args.overwrite)
    progress.emit("output", path=str(out.resolve()), kind="model")
    if progress.get_mode() != "json":
        names = package.labels
        chosen = ", ".join(names[k] for k in post["largest_component"]) or "none"
        print(json.dumps({"output": str(out), "largest_component": chosen,
                          "dice_without": post["dice_without"], "dice_with": post["dice_with"]}, indent=1))
    return 0
