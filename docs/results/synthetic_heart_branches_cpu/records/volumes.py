"""Volumes and overlap of the grouped MM-WHS prediction on the chest CTA (as the pilot's table): PRED [PRED ...]."""
import sys
import numpy as np
import SimpleITK as sitk

REF = "/work/runheart/tests/data/chest_cta_1p5mm/label.nii.gz"
GROUPS = {"heart": ((1, 2, 3, 4, 5), 2), "aorta": ((6,), 1), "pulmonary artery": ((7,), 3)}
ref_img = sitk.ReadImage(REF)
ref = sitk.GetArrayFromImage(ref_img)
ml = np.prod(ref_img.GetSpacing()) / 1000.0
for path in sys.argv[1:]:
    pred_img = sitk.Resample(sitk.ReadImage(path), ref_img, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    pred = sitk.GetArrayFromImage(pred_img)
    print(path)
    for name, (ids, rid) in GROUPS.items():
        p, r = np.isin(pred, ids), ref == rid
        inter = (p & r).sum()
        pts = lambda m: np.array([ref_img.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]]) for idx in [np.round(np.argwhere(m).mean(0)).astype(int)]])[0] if m.any() else None  # noqa: E731
        cp, cr = pts(p), pts(r)
        dist = float(np.linalg.norm(cp - cr)) if cp is not None else float("nan")
        print(f"  {name}: dice {200 * inter / max(p.sum() + r.sum(), 1):.1f}  pred {p.sum() * ml:.0f} ml / ref {r.sum() * ml:.0f} ml"
              f"  inside {100 * inter / max(p.sum(), 1):.1f} %  covered {100 * inter / max(r.sum(), 1):.1f} %  centroid {dist:.1f} mm")
