"""Where a model's errors on the real abdomen CT go, per organ: reference and predicted volume, Dice, and what the
reference voxels were called (the organ, background, another organ). The protocol's diagnosis and its reported
volumes come from this script.

    python organ_errors.py NAME=PRED.nii.gz [NAME=PRED.nii.gz ...] [--reference LABEL.nii.gz] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[4]
NAMES = ["background", "liver", "right kidney", "spleen", "pancreas", "aorta", "inferior vena cava",
         "right adrenal gland", "left adrenal gland", "gallbladder", "esophagus", "stomach", "duodenum", "left kidney"]


def organ_errors(pred_path: Path, ref_path: Path) -> dict:
    ref_img = sitk.ReadImage(str(ref_path))
    pred_img = sitk.ReadImage(str(pred_path))
    if pred_img.GetSize() != ref_img.GetSize():
        raise SystemExit(f"{pred_path}: grid {pred_img.GetSize()} differs from the reference {ref_img.GetSize()}")
    ref, pred = sitk.GetArrayFromImage(ref_img), sitk.GetArrayFromImage(pred_img)
    ml = float(np.prod(ref_img.GetSpacing())) / 1000.0
    out = {}
    for c in range(1, len(NAMES)):
        r, p = ref == c, pred == c
        if not r.any():
            continue
        called = np.bincount(pred[r].ravel(), minlength=len(NAMES))
        other = int(called.sum() - called[c] - called[0])
        out[NAMES[c]] = {"reference_ml": round(float(r.sum()) * ml, 1), "predicted_ml": round(float(p.sum()) * ml, 1),
                         "dice": round(2.0 * float((r & p).sum()) / float(r.sum() + p.sum()), 3),
                         "called_organ": round(float(called[c]) / r.sum(), 3),
                         "called_background": round(float(called[0]) / r.sum(), 3),
                         "called_other_organ": round(other / float(r.sum()), 3)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", nargs="+", metavar="NAME=PRED")
    p.add_argument("--reference", type=Path, default=ROOT / "tests/data/abdomen_ct_3mm/label_flare22.nii.gz")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = {}
    for item in args.predictions:
        name, _, path = item.partition("=")
        results[name] = organ_errors(Path(path), args.reference)
    organs = list(next(iter(results.values())))
    print("| organ | reference ml | " + " | ".join(f"{n}: predicted ml / Dice / called background" for n in results)
          + " |")
    print("|---|---|" + "---|" * len(results))
    for organ in organs:
        cells = [f"{r[organ]['predicted_ml']:.0f} / {100 * r[organ]['dice']:.1f} / "
                 f"{100 * r[organ]['called_background']:.0f} %" for r in results.values()]
        print(f"| {organ} | {next(iter(results.values()))[organ]['reference_ml']:.0f} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
