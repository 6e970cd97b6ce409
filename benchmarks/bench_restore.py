"""Seconds and agreement of the three ways back to the original grid (``dvcl segment --restore``).

Cases: the real abdomen CT of tests/data (122 x 101 x 112, 3 mm) and the same scan upsampled to 512 x 512 x 300
(0.71 x 0.59 x 1.11 mm, linear), whose network-grid probabilities come from the shipped default model
(``--model`` to choose another). For each restore mode: wall and CPU seconds (the median of ``--repeats``
runs; CPU seconds are the honest figure on a shared machine) and agreement with ``probabilities-exact`` (the
old per-class resampling): all voxels, and foreground voxels (either side not background).

    python benchmarks/bench_restore.py                 # both cases, 3 repeats
    python benchmarks/bench_restore.py --cases big --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
ABDOMEN = ROOT / "tests" / "data" / "abdomen_ct_3mm" / "image.nii.gz"


def upsampled(path: Path, size=(512, 512, 300)) -> sitk.Image:
    img = sitk.ReadImage(str(path))
    extent = [(n - 1) * s for n, s in zip(img.GetSize(), img.GetSpacing())]
    spacing = [e / (m - 1) for e, m in zip(extent, size)]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing, img.GetDirection(),
                         -1024, sitk.sitkInt16)


def timed(fn, repeats: int):
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="abdomen,big", help="comma list of abdomen, big (512 x 512 x 300)")
    ap.add_argument("--model", default=None, help="model package (default: the installed default model)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from dvcl.inference.model_package import default_model, load_model_package
    from dvcl.inference.predictor import Predictor
    from dvcl.preprocessing.pipeline import preprocess_image, restore_label, restore_probabilities
    from dvcl.preprocessing.restore import restore_argmax

    package = load_model_package(args.model or default_model(), device="cpu")
    print(f"model {package.name}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    cases = {"abdomen": lambda: sitk.ReadImage(str(ABDOMEN)), "big": lambda: upsampled(ABDOMEN)}
    for name in args.cases.split(","):
        image = cases[name]()
        arr, record = preprocess_image(image, package.preprocessing)
        probs = Predictor(package, "cpu").predict(arr).numpy()
        modes = {
            "probabilities-exact": lambda p=probs, r=record: restore_probabilities(p, r),
            "probabilities": lambda p=probs, r=record: restore_argmax(p, r),
            "label": lambda p=probs, r=record: restore_label(p.argmax(0).astype(np.uint8), r),
        }
        print(f"\n{name}: input {image.GetSize()} (x, y, z), network grid {arr.shape} (z, y, x), "
              f"{probs.shape[0]} classes")
        print(f"{'restore':<22}{'wall s':>9}{'CPU s':>9}{'voxel agree %':>15}{'fg agree %':>12}")
        ref = None
        for mode, fn in modes.items():
            out, wall, cpu = timed(fn, args.repeats if mode != "probabilities-exact" else 1)
            a = sitk.GetArrayFromImage(out)
            if ref is None:
                ref = a
            fg = (ref > 0) | (a > 0)
            print(f"{mode:<22}{wall:>9.2f}{cpu:>9.2f}{100 * (a == ref).mean():>15.4f}"
                  f"{100 * (a[fg] == ref[fg]).mean():>12.3f}")


if __name__ == "__main__":
    main()
