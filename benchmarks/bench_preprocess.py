"""Time and peak memory of the paper's preprocessing (and its inverse) on the real abdomen CT and on a
512 x 512 x 300 synthetic CT. Each case runs in a fresh process so peak RSS is its own.

    python benchmarks/bench_preprocess.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(kind: str) -> None:
    import numpy as np
    import SimpleITK as sitk

    from dvcl.io.images import read_image, read_label
    from dvcl.preprocessing import preprocess_image, preprocess_label, restore_label
    from dvcl.presets import get_preset

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    dice = {}
    if kind == "abdomen":
        img = read_image(ROOT / "tests/data/abdomen_ct_3mm/image.nii.gz")
        lab = read_label(ROOT / "tests/data/abdomen_ct_3mm/label_flare22.nii.gz", img,
                         get_preset("flare22").allowed_raw_values)
    else:
        rng = np.random.default_rng(0)
        arr = rng.normal(0, 300, (300, 512, 512)).astype(np.int16)
        arr[:, :40] = -1000
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.78, 0.78, 1.0))
        img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        lab_arr = np.zeros(arr.shape, np.uint8)
        lab_arr[100:200, 150:350, 150:350] = 1
        lab = sitk.GetImageFromArray(lab_arr)
        lab.CopyInformation(img)
        del arr, lab_arr
    t1 = time.perf_counter()
    out, rec = preprocess_image(img)
    seg = preprocess_label(lab, rec)
    t2 = time.perf_counter()
    back = restore_label(seg, rec)
    t3 = time.perf_counter()
    a, b = sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(back)
    for c in [int(v) for v in np.unique(a) if v]:
        dice[c] = round(float(2 * np.logical_and(a == c, b == c).sum() / ((a == c).sum() + (b == c).sum())), 4)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "case": kind, "input_size_xyz": list(img.GetSize()), "network_grid_xyz": list(rec.resampled.size),
        "load_s": round(t1 - t0, 2), "preprocess_image+label_s": round(t2 - t1, 2), "inverse_s": round(t3 - t2, 2),
        "peak_rss_mb": round(peak / 1024, 1), "rss_before_mb": round(base / 1024, 1),
        "round_trip_dice": dice, "geometry_equal": back.GetSize() == lab.GetSize() and
        back.GetDirection() == lab.GetDirection() and back.GetOrigin() == lab.GetOrigin(),
    }))


def main() -> None:
    if len(sys.argv) > 1:
        _child(sys.argv[1])
        return
    for kind in ("abdomen", "synthetic512"):
        res = subprocess.run([sys.executable, __file__, kind], capture_output=True, text=True, check=True)
        print(res.stdout.strip())


if __name__ == "__main__":
    main()
