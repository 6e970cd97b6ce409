"""Measure a shipped model and write its model card: ``card`` in model.json and a readable MODEL_CARD.md.

MODEL_CARD.md is rendered by :func:`dvcl.model_card.card_markdown`, the renderer ``dvcl adapt`` uses too; the
facts already in the card that this tool does not measure (an adapted model's provenance, a labeled-data
generator) are kept.

Measures Dice per structure on the real scan of the model's preset in tests/data (:data:`REAL_SCANS`: the abdomen
CT for FLARE22 models, the chest CT angiography for MM-WHS models, whose whole-heart reference is compared with the
chambers grouped; evaluation only: no shipped model is trained on them; their reference labels are
TotalSegmentator predictions, not manual ground truth) and on held-out phantoms (seeds the training phantoms never
used), plus the seconds per case on this machine. ``dvcl segment`` without ``--model`` ranks the installed models
of a preset by the card's real-CT mean Dice.

    .venv/bin/python tools/model_card.py backend/dvcl/models/phantom_demo --rebuild tools/train_demo_model.sh \
        --training "10 synthetic abdominal CT phantoms (dvcl phantom --seed 100), all labeled"
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


class RealScan(NamedTuple):
    """The real scan a preset's models are measured on, and how its reference meets the model's labels."""

    folder: str
    label_file: str
    case: str
    structures: str
    """what the model segments, for the intended-use text"""
    groups: Tuple[str, ...] = ()
    """``dvcl evaluate --group`` specs when the reference is in another label set (else the preset's labels)"""


#: One real scan per preset, from tests/data/real_scans.json (which benchmarks/synthetic_model.sh reads too).
REAL_SCANS = {preset: RealScan(**{**entry, "groups": tuple(entry["groups"])})
              for preset, entry in json.loads((DATA / "real_scans.json").read_text()).items()
              if not preset.startswith("_")}
PHANTOM_SEEDS = (987654, 987655, 987656)
INTENDED_USE = ("Research and demonstration of the dvcl pipeline (and of the Slicer module) only. Trained on synthetic "
                "phantoms: it does not segment patient scans reliably. Not a medical device; not for clinical use.")
#: A model trained to segment real CT (``--real-ct``): what it is for, and the floors it claims on the real abdomen CT
#: (issue 13; ``tests/test_shipped_models_real_ct.py`` holds every shipped model that claims them to them).
REAL_CT_INTENDED_USE = ("Research and demonstration only: one-click {structures} of CT, trained on "
                        "domain-randomised synthetic CT alone (no patient data). Check every result; not a medical "
                        "device; not for clinical use.")
#: The floors are FLARE22's (issue 13); other presets claim none.
REAL_CT_FLOORS = {"liver": 0.80, "spleen": 0.70, "right kidney": 0.70, "left kidney": 0.70, "aorta": 0.70,
                  "mean": 0.55}


def dice_per_organ(pred: np.ndarray, ref: np.ndarray, labels: Dict[int, str]) -> Dict[str, float]:
    """Dice of every structure present in the reference, rounded for the card."""
    from dvcl.evaluation.metrics import dice_per_structure

    return {name: round(value, 4) for name, value in dice_per_structure(pred, ref, labels).items()}


def real_scan(preset: str) -> RealScan:
    """The real scan of ``preset`` (:data:`REAL_SCANS`)."""
    if preset not in REAL_SCANS:
        raise SystemExit(f"no real scan to measure a '{preset}' model on (known: {', '.join(REAL_SCANS)})")
    return REAL_SCANS[preset]


def real_ct_dice(package, device: str = "cpu") -> Tuple[Dict[str, float], float]:
    """Dice per structure of ``package`` (a loaded model) on its preset's real scan, and the seconds it took.

    The shipped-model test calls this too, so the card and the check measure the same way."""
    from dvcl.inference.segment import segment_image
    from dvcl.io.images import read_image

    scan = real_scan(package.preset)
    image = read_image(DATA / scan.folder / "image.nii.gz")
    t0 = time.perf_counter()
    pred = segment_image(image, package, device=device)
    seconds = time.perf_counter() - t0
    return score_on_real_scan(pred, package.preset, package.labels), seconds


def score_on_real_scan(pred: sitk.Image, preset: str, labels: Dict[int, str]) -> Dict[str, float]:
    """Dice per structure of a prediction (the model's label values, on the scan's grid) against the reference of
    ``preset``'s real scan: per model label, or per group when the reference is in another label set."""
    from dvcl.evaluation.groups import apply_groups, check_groups, parse_group
    from dvcl.io.images import read_label
    from dvcl.presets import get_preset

    scan = real_scan(preset)
    ref_path = DATA / scan.folder / scan.label_file
    if scan.groups:
        groups = [parse_group(g) for g in scan.groups]
        labels = check_groups(groups)
        ref = read_label(ref_path, pred)
        pred, ref = apply_groups(pred, groups, "prediction"), apply_groups(ref, groups, "reference")
    else:
        ref = read_label(ref_path, pred, get_preset(preset).allowed_raw_values)
    return dice_per_organ(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(ref), labels)


def measure(model_dir: Path) -> dict:
    from dvcl.inference.model_package import load_model_package
    from dvcl.inference.segment import segment_image
    from dvcl.phantoms import make_abdominal_phantom, make_cardiac_phantom

    package = load_model_package(model_dir, device="cpu")
    scan = real_scan(package.preset)
    real, real_seconds = real_ct_dice(package)
    make_phantom = make_cardiac_phantom if package.preset == "mmwhs" else make_abdominal_phantom
    phantom_dice: List[Dict[str, float]] = []
    for seed in PHANTOM_SEEDS:
        img, lab = make_phantom(seed=seed)
        p = segment_image(img, package, device="cpu")
        phantom_dice.append(dice_per_organ(sitk.GetArrayFromImage(p), sitk.GetArrayFromImage(lab), package.labels))
    organs = sorted({k for d in phantom_dice for k in d}, key=lambda n: list(package.labels.values()).index(n))
    ph_mean = {n: round(float(np.mean([d[n] for d in phantom_dice if n in d])), 4) for n in organs}
    return {
        "real_ct": {
            "case": scan.case,
            "dice": real, "mean_dice": round(float(np.mean(list(real.values()))), 4), "organs": len(real),
            "seconds_cpu": round(real_seconds, 1),
        },
        "phantoms": {"seeds": list(PHANTOM_SEEDS), "dice": ph_mean,
                     "mean_dice": round(float(np.mean([np.mean(list(d.values())) for d in phantom_dice])), 4)},
    }


def new_card(training: str, rebuild: str, argv: List[str], real_ct: bool = False, preset: str = "flare22") -> dict:
    """What this tool says about a model besides the measurements."""
    use = REAL_CT_INTENDED_USE.format(structures=real_scan(preset).structures) if real_ct else INTENDED_USE
    return {"training_data": training, "intended_use": use,
            "date": datetime.date.today().isoformat(), "rebuild": rebuild,
            "measure": "python tools/model_card.py " + " ".join(shlex.quote(a) for a in argv)}


def below_floors(real_ct: dict, floors: Dict[str, float]) -> Dict[str, float]:
    """The organs (and ``mean``) of a real-CT measurement under ``floors``, with their measured Dice."""
    measured = dict(real_ct["dice"], mean=real_ct["mean_dice"])
    return {k: measured.get(k, 0.0) for k, v in floors.items() if measured.get(k, 0.0) < v}


def floor_card_entries(real_ct: dict, floors: Dict[str, float]) -> dict:
    """The card's floor entries for a real-CT measurement: ``real_ct_floors``, the floors it reaches (claimed, so
    the shipped-model test holds them: a later change cannot lose them silently), and ``real_ct_below_floors``,
    the floors it misses with the measured values. Either may be absent."""
    low = below_floors(real_ct, floors)
    entries: dict = {}
    reached = {k: v for k, v in floors.items() if k not in low}
    if reached:
        entries["real_ct_floors"] = reached
    if low:
        entries["real_ct_below_floors"] = {"floors": dict(floors), "below": low}
    return entries


def merged_card(old: object, new: dict) -> dict:
    """The card after a measurement: the new facts over the old card, so what others wrote into it stays (an
    adapted model's provenance and transductive note, ``labeled_data_generator`` for ``dvcl adapt``)."""
    card = dict(old) if isinstance(old, dict) else {}
    card.update(new)
    return card


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--rebuild", required=True, help="the command that rebuilds the package")
    ap.add_argument("--training", required=True, help="what it was trained on")
    ap.add_argument("--mode", choices=("standard", "fast"), default=None,
                    help="also set model.json's mode (fast: the model `dvcl segment --fast` picks)")
    ap.add_argument("--real-ct", action="store_true",
                    help="a model for real CT: its intended use, and for FLARE22 models the issue-13 floors on the "
                         "real abdomen CT it reaches (claimed) and misses (named)")
    ap.add_argument("--generator", default=None,
                    help="card.labeled_data_generator: the synthetic data `dvcl adapt` uses with this model")
    args = ap.parse_args(argv)

    from dvcl.model_card import write_model_card

    meta = json.loads((args.model_dir / "model.json").read_text())
    preset = str(meta.get("preset", "flare22"))
    card = new_card(args.training, args.rebuild, argv if argv is not None else sys.argv[1:], args.real_ct, preset)
    card.update(measure(args.model_dir))
    floor_claims = {}
    if args.real_ct and preset == "flare22":
        floor_claims = floor_card_entries(card["real_ct"], REAL_CT_FLOORS)
        if "real_ct_below_floors" in floor_claims:
            print(f"below the real-CT floors {REAL_CT_FLOORS}: {floor_claims['real_ct_below_floors']['below']}",
                  file=sys.stderr)
    if args.generator:
        card["labeled_data_generator"] = args.generator
    meta["card"] = merged_card(meta.get("card"), card)
    if args.real_ct:  # a new measurement replaces the old claims, whichever way they went
        for key in ("real_ct_floors", "real_ct_below_floors"):
            meta["card"].pop(key, None)
        meta["card"].update(floor_claims)
    if args.mode:
        meta["mode"] = args.mode
    write_model_card(args.model_dir, meta)
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
