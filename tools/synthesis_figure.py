"""Rebuild docs/synthesis.png: axial slices of synthetic cases (different phases and resolutions) next to an
axial slice of the real abdomen CT in tests/data (shown for comparison only; nothing is tuned on it), and
docs/synthesis_pelvis.png: coronal and pelvic axial slices of synthetic abdomen + pelvis cases, and
docs/synthesis_cardiac.png: synthetic cardiac cases, one per contrast timing, next to the real chest CT angiography
of tests/data (for comparison only), and docs/synthesis_fat_planes.png: one case without and with ``--fat-planes``.

    .venv/bin/python tools/synthesis_figure.py [--out docs/synthesis.png] [--pelvis-out docs/synthesis_pelvis.png]
        [--cardiac-out docs/synthesis_cardiac.png] [--fat-planes-out docs/synthesis_fat_planes.png]
        [--only axial|pelvis|cardiac|fat_planes]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from dvcl.synthesis import SynthesisConfig, synthesize  # noqa: E402
from dvcl.synthesis.priors import T  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "abdomen_ct_3mm" / "image.nii.gz"
#: (seed, forced phase): seeds chosen only so that the panels show different spacings
CASES = ((1, "native"), (2, "arterial"), (3, "portal"), (4, "delayed"), (5, None))
WINDOW = (-160.0, 240.0)  # abdominal window (level 40, width 400)
#: (seed, forced phase, caudal end: 0 mid-pelvis .. 1 below the symphysis) of the pelvis figure
PELVIS_CASES = ((1, "portal", 1.0), (2, "delayed", 0.5), (6, "native", 0.0))
REAL_CTA = ROOT / "tests" / "data" / "chest_cta_1p5mm" / "image.nii.gz"
#: (seed, forced timing) of the cardiac figure; the last panel outlines the labels of the first case
CARDIAC_CASES = ((1, "arterial"), (2, "pulmonary"), (3, "venous"), (4, "native"))
CARDIAC_WINDOW = (-250.0, 650.0)  # a CT angiography window (level 200, width 900)


def cardiac_figure(out: Path) -> None:
    """Axial slices through the four chambers of synthetic cardiac cases (one per timing), the first case's
    MM-WHS labels outlined, and the real chest CTA of tests/data."""
    panels = []
    for seed, phase in CARDIAC_CASES:
        t0 = time.perf_counter()
        case = synthesize(seed, SynthesisConfig(fov=False), phase=phase, kind="cardiac")
        arr = sitk.GetArrayFromImage(case.image).astype(np.float32)
        lab = sitk.GetArrayFromImage(case.label)
        k = int(np.argmax(np.stack([(lab == c).sum(axis=(1, 2)) > 0 for c in (2, 3, 4, 5)]).sum(0) * 1e9
                          + (lab > 0).sum(axis=(1, 2))))
        sx, sy, sz = case.image.GetSpacing()
        panels.append((arr[k], lab[k] if not panels else None, sy / sx,
                       f"synthetic heart #{seed}: {case.info['phase']}\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm, "
                       f"{time.perf_counter() - t0:.0f} s"))
    first = panels[0]
    panels[0] = (first[0], None, first[2], first[3])
    panels.append((first[0], first[1], first[2], "the same slice, MM-WHS labels outlined\n(LV, myocardium, RV, LA, "
                   "RA, aorta, PA)"))
    real = sitk.DICOMOrient(sitk.ReadImage(str(REAL_CTA)), "LPS")
    arr = sitk.GetArrayFromImage(real).astype(np.float32)
    sx, sy, sz = real.GetSpacing()
    k = int(np.argmax((arr > 150).sum(axis=(1, 2))))
    panels.append((arr[k], None, sy / sx, f"REAL chest CTA (tests/data, not used)\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm"))
    panel_grid(panels, CARDIAC_WINDOW, "dvcl synth --kind cardiac: synthetic cardiac CT per contrast timing (window "
               "-250..650 HU) vs a real chest CTA", out)


#: (seed, forced phase) of the fat-planes figure, and the organs it outlines (FLARE22 id: name)
FAT_PLANES_CASE = (3, "native")
FAT_PLANES_OUTLINED = {1: "liver", 4: "pancreas", 7: "R adrenal", 9: "gallbladder", 12: "duodenum"}


def fat_planes_figure(out: Path) -> None:
    """One adult-size case without and with ``fat_planes`` (same seed: twins), axial slices through the
    gallbladder's lower half and through the right adrenal gland, liver and its neighbours outlined."""
    from dataclasses import replace

    base = SynthesisConfig(organ_sizes="adult", fov=False)
    seed, phase = FAT_PLANES_CASE
    cases = [synthesize(seed, replace(base, fat_planes=on), phase=phase) for on in (False, True)]
    lab0 = sitk.GetArrayFromImage(cases[0].label)
    gb_z = np.nonzero((lab0 == 9).any(axis=(1, 2)))[0]
    adr_z = np.nonzero((lab0 == 7).any(axis=(1, 2)))[0]
    slices = [("gallbladder, lower half", int(gb_z[len(gb_z) // 4]) if gb_z.size else lab0.shape[0] // 2),
              ("right adrenal gland", int(adr_z[len(adr_z) // 2]) if adr_z.size else lab0.shape[0] // 2)]
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    sx, sy, sz = cases[0].image.GetSpacing()
    near = np.isin(lab0, list(FAT_PLANES_OUTLINED))
    crops = []
    for _, k in slices:  # the outlined organs' box in that slice, 15 mm around it
        rows, cols = np.nonzero(near[k])
        pad = int(15 / sx)
        crops.append((slice(max(rows.min() - pad, 0), rows.max() + pad),
                      slice(max(cols.min() - pad, 0), cols.max() + pad)))
    for col, case in enumerate(cases):
        arr = sitk.GetArrayFromImage(case.image).astype(np.float32)
        lab = sitk.GetArrayFromImage(case.label)
        for row, (where, k) in enumerate(slices):
            ax, box = axes[row, col], crops[row]
            ax.imshow(arr[k][box], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sy / sx,
                      interpolation="bilinear")
            for i, cid in enumerate(FAT_PLANES_OUTLINED):
                if (lab[k][box] == cid).any():
                    ax.contour(lab[k][box] == cid, levels=[0.5], colors=[plt.get_cmap("tab10")(i)], linewidths=0.9)
            ax.set_title(f"{'with' if col else 'without'} --fat-planes: {where}", fontsize=9)
            ax.axis("off")
    handles = [plt.Line2D([], [], color=plt.get_cmap("tab10")(i), label=n) for i, n in
               enumerate(FAT_PLANES_OUTLINED.values())]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8.5)
    fig.suptitle(f"dvcl synth case #{seed} ({phase}, adult sizes, {sx:.2f} x {sy:.2f} x {sz:.1f} mm) without and "
                 "with fat planes (window -160..240 HU)", fontsize=9.5)
    save(fig, out, rect=(0, 0.04, 1, 1))


def panel_grid(panels, window, suptitle: str, out: Path) -> None:
    """Six axial panels in a 2 x 3 grid: (slice, label slice to outline or None, aspect, title) each."""
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.4))
    for ax, (sl, lab, aspect, title) in zip(axes.ravel(), panels):
        ax.imshow(sl, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="bilinear")
        if lab is not None:
            ax.contour(lab, levels=np.arange(0.5, 8), cmap="tab10", linewidths=0.8)
        ax.set_title(title, fontsize=8.5)
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=10)
    save(fig, out)


def save(fig, out: Path, rect=None) -> None:
    """Lay out (within ``rect``, room left for a legend), write and log one figure."""
    fig.tight_layout(rect=rect)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    logging.info("wrote %s (%.0f KB)", out, out.stat().st_size / 1024)


def pelvis_figure(out: Path) -> None:
    """Coronal slice (through the bladder) of three abdomen + pelvis cases above an axial slice through each
    case's bladder; rigid (no affine/elastic) so the slices are straight."""
    fig, axes = plt.subplots(2, len(PELVIS_CASES), figsize=(3.6 * len(PELVIS_CASES), 8.2),
                             gridspec_kw={"height_ratios": [1.5, 1]})
    for col, (seed, phase, bottom) in enumerate(PELVIS_CASES):
        t0 = time.perf_counter()
        cfg = SynthesisConfig(pelvis_p=1.0, pelvis_bottom=(bottom, bottom), fov=False)
        case = synthesize(seed, cfg, phase=phase)
        arr = sitk.GetArrayFromImage(case.image).astype(np.float32)
        sx, sy, sz = case.image.GetSpacing()
        bladder = case.tissue == T["urine"]
        k, j, _ = (int(v) for v in np.round(np.argwhere(bladder).mean(axis=0))) if bladder.any() else (
            arr.shape[0] // 5, arr.shape[1] // 2, 0)
        ax = axes[0, col]
        ax.imshow(arr[::-1, j, :], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sz / sx,
                  interpolation="bilinear")
        ax.set_title(f"synthetic #{seed}: {case.info['phase']}, coronal\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm, "
                     f"{time.perf_counter() - t0:.0f} s", fontsize=8.5)
        ax.axis("off")
        ax = axes[1, col]
        ax.imshow(arr[k], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=sy / sx, interpolation="bilinear")
        ax.set_title(f"axial through the bladder ({case.info.get('pelvic_organ', '')})", fontsize=8.5)
        ax.axis("off")
    fig.suptitle("dvcl synth with the pelvis (window -160..240 HU): bladder, pelvic bones, rectum, iliac vessels, "
                 "all label 0", fontsize=9.5)
    save(fig, out)


def axial(image: sitk.Image, label: sitk.Image | None = None) -> np.ndarray:
    """The axial slice (LPS display: patient's right on the left, anterior up) through the most labelled
    organs (or the middle slice), resampled to square pixels."""
    image = sitk.DICOMOrient(image, "LPS")
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    if label is not None:
        lab = sitk.GetArrayFromImage(sitk.DICOMOrient(label, "LPS"))
        k = int(np.argmax(((lab == 1) | (lab == 2) | (lab == 3) | (lab == 13)).sum(axis=(1, 2))))
    else:
        k = arr.shape[0] // 2
    sx, sy = image.GetSpacing()[:2]
    return arr[k], sy / sx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "synthesis.png")
    parser.add_argument("--pelvis-out", type=Path, default=ROOT / "docs" / "synthesis_pelvis.png")
    parser.add_argument("--cardiac-out", type=Path, default=ROOT / "docs" / "synthesis_cardiac.png")
    parser.add_argument("--fat-planes-out", type=Path, default=ROOT / "docs" / "synthesis_fat_planes.png")
    parser.add_argument("--only", choices=("axial", "pelvis", "cardiac", "fat_planes"),
                        help="write one of the four figures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.only in (None, "cardiac"):
        cardiac_figure(args.cardiac_out)
    if args.only in (None, "pelvis"):
        pelvis_figure(args.pelvis_out)
    if args.only in (None, "fat_planes"):
        fat_planes_figure(args.fat_planes_out)
    if args.only in ("pelvis", "cardiac", "fat_planes"):
        return 0
    panels = []
    for seed, phase in CASES:
        t0 = time.perf_counter()
        case = synthesize(seed, phase=phase)
        sl, aspect = axial(case.image, case.label)
        sx, sy, sz = case.image.GetSpacing()
        panels.append((sl, None, aspect, f"synthetic #{seed}: {case.info['phase']}\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm, "
                       f"{time.perf_counter() - t0:.0f} s"))
    real = sitk.ReadImage(str(REAL))
    sl, aspect = axial(real)
    sx, sy, sz = real.GetSpacing()
    panels.append((sl, None, aspect, f"REAL CT (tests/data, not used)\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm"))
    panel_grid(panels, WINDOW, "dvcl synth: domain-randomised synthetic CT (window -160..240 HU) vs a real "
               "abdominal CT", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
