"""Picture of a model's segmentation of a CT next to the reference: axial, coronal and sagittal slices.

    python tools/real_ct_figure.py IMAGE REFERENCE PREDICTION -o OUT.png [--title TEXT]

Used for docs/results (issue 13: what a synthetic-trained model finds on the real abdomen CT of tests/data). The
slices go through the centre of the reference's largest structure (the liver on an abdomen), so the same slices
are shown for every model. Window -160..240 HU (soft tissue).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402


def _slices(volume: np.ndarray, centre) -> list:
    z, y, x = centre
    return [volume[z], volume[:, y, :][::-1], volume[:, :, x][::-1]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("reference")
    ap.add_argument("prediction")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)

    image = sitk.DICOMOrient(sitk.ReadImage(args.image), "LPS")
    ref = sitk.DICOMOrient(sitk.ReadImage(args.reference), "LPS")
    pred = sitk.DICOMOrient(sitk.ReadImage(args.prediction), "LPS")
    img, r, p = (sitk.GetArrayFromImage(v) for v in (image, ref, pred))
    sz, sy, sx = image.GetSpacing()[::-1]
    counts = np.bincount(r.ravel())
    largest = int(np.argmax(counts[1:]) + 1) if counts.size > 1 else 0
    centre = [int(round(c.mean())) for c in np.nonzero(r == largest)] if largest else [s // 2 for s in r.shape]
    aspects = [sy / sx, sz / sx, sz / sy]
    cmap = plt.get_cmap("tab20", 20)
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for row, (labels, name) in enumerate(((r, "reference"), (p, "prediction"))):
        for col, (im, lab, aspect, view) in enumerate(zip(_slices(img, centre), _slices(labels, centre), aspects,
                                                          ("axial", "coronal", "sagittal"))):
            ax = axes[row, col]
            ax.imshow(np.clip(im, -160, 240), cmap="gray", aspect=aspect, interpolation="nearest")
            masked = np.ma.masked_where(lab == 0, lab)
            ax.imshow(masked, cmap=cmap, vmin=0, vmax=19, alpha=0.45, aspect=aspect, interpolation="nearest")
            ax.set_title(f"{name}, {view}", fontsize=9)
            ax.axis("off")
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=70)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
