"""The protocol's diagnosis count: how many reference voxels of the gallbladder, duodenum and right adrenal gland of
the real abdomen CT a prediction calls liver, and its 12-organ mean Dice (the reference lacks the oesophagus).

    python called_liver.py NAME=PRED.nii.gz [NAME=PRED.nii.gz ...]
"""
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REF = Path(__file__).resolve().parents[4] / "tests" / "data" / "abdomen_ct_3mm" / "label_flare22.nii.gz"
NEIGHBOURS = {"gallbladder": 9, "duodenum": 12, "right adrenal gland": 7}
PRESENT = [c for c in range(1, 14) if c != 10]

ref = sitk.GetArrayFromImage(sitk.ReadImage(str(REF)))
print("| run | " + " / ".join(NEIGHBOURS) + " called liver | sum | 12-organ mean Dice |")
print("|---|---|---|---|")
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(path))
    counts = [int(((ref == c) & (pred == 1)).sum()) for c in NEIGHBOURS.values()]
    dice = [200.0 * ((ref == c) & (pred == c)).sum() / max((ref == c).sum() + (pred == c).sum(), 1) for c in PRESENT]
    print(f"| {name} | {' / '.join(map(str, counts))} | {sum(counts)} | {np.mean(dice):.2f} |")
