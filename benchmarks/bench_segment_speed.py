"""Segmentation speed side by side (issue 17): today's behaviour, the new defaults and the fast mode, then
the inference engines, interleaved in one run so that their ratios hold on a loaded machine.

Part 1, end to end (``--cases big``): a 512 x 512 x 300 CT made from the real abdomen CT in tests/data
(linear upsampling to 0.715 mm in-plane and 1.12 mm slices, padded with air to 512 x 512; real anatomy, so
agreement on the organs means something), segmented with the default model by a real ``dvcl segment``
process per run. Variants:

* ``today``: torch, one window per call, the exact probability restore, and MONAI imported (today's
  predictor imported ``monai.inferers`` and the network MONAI's blocks, which loads all of MONAI):
  ``--engine torch --sw-batch-size 1 --restore <exact>``.
* ``default``: no options.
* ``fast``: ``--fast`` (the lower-resolution model), when this dvcl has it.

Printed per variant (median over ``--rounds``, each round runs every variant once, order rotated):
end-to-end seconds (process start to exit), network-stage seconds (from the CLI's log line), their ratio,
the speed-up over ``today``, and voxel / foreground agreement of the label map with ``today``'s
(foreground: voxels that either labels as an organ).

Part 2, engines (``--cases engines``): the network stage alone on the real abdomen CT (preprocessed once),
torch batch 1 / batch 4, ONNX Runtime and OpenVINO (batch 4, and batch 1 for reference): seconds, speed-up
over torch batch 1, voxel / foreground agreement of the argmax with torch batch 1 (fp32).

    python benchmarks/bench_segment_speed.py                      # both parts, 3 rounds
    python benchmarks/bench_segment_speed.py --cases engines --rounds 5
    python benchmarks/bench_segment_speed.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
ABDOMEN = ROOT / "tests" / "data" / "abdomen_ct_3mm" / "image.nii.gz"
BIG_SIZE = (512, 512, 300)


# ------------------------------------------------------------------------------------------ inputs
def big_ct(path: Path) -> Path:
    """The abdomen CT upsampled to 512 x 512 x 300 (x, y, z): linear, isotropic in-plane, air padding."""
    img = sitk.ReadImage(str(ABDOMEN))
    size, spacing = img.GetSize(), img.GetSpacing()
    extent = [n * s for n, s in zip(size, spacing)]
    inplane = max(extent[0], extent[1]) / BIG_SIZE[0]
    new_spacing = (inplane, inplane, extent[2] / BIG_SIZE[2])
    origin = list(img.GetOrigin())
    direction = np.array(img.GetDirection()).reshape(3, 3)
    # centre the field of view on the axis that needs padding
    for ax in range(2):
        pad_mm = BIG_SIZE[ax] * inplane - extent[ax]
        origin = list(np.array(origin) - direction[:, ax] * pad_mm / 2)
    out = sitk.Resample(img, BIG_SIZE, sitk.Transform(), sitk.sitkLinear, origin, new_spacing, img.GetDirection(),
                        -1024.0, sitk.sitkInt16)
    sitk.WriteImage(out, str(path), useCompression=True)
    return path


def agreement(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    """Voxel agreement and foreground agreement (over voxels that either map labels as an organ)."""
    same = a == b
    fg = (a > 0) | (b > 0)
    return float(same.mean()), float(same[fg].mean()) if fg.any() else 1.0


# ------------------------------------------------------------------------------------------ part 1
def cli_options() -> Tuple[Optional[str], bool, bool]:
    """The exact (reference) restore mode, whether ``--fast`` exists and whether ``--model`` is optional,
    read from ``dvcl segment --help``."""
    help_text = subprocess.run([sys.executable, "-m", "dvcl", "segment", "--help"], capture_output=True,
                               text=True, env=_env()).stdout
    m = re.search(r"--restore \{([^}]*)\}", help_text)
    choices = m.group(1).split(",") if m else ["probabilities"]
    exact = next((c for c in choices if any(k in c for k in ("legacy", "exact", "reference"))), None)
    if exact is None and "probabilities" in choices:
        exact = "probabilities"
    return exact, "--fast" in help_text, re.search(r"\[(--model|-m) M\]", help_text) is not None


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "backend") + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_cli(variant: str, src: Path, out: Path, model: Optional[str], options: List[str],
            import_monai: bool) -> Dict[str, float]:
    """One ``dvcl segment`` process; returns end-to-end and network seconds."""
    args = ["-v", "--progress", "none", "segment", str(src), "-o", str(out), "--overwrite"]
    if model:
        args += ["--model", model]
    args += options
    code = ("import monai\n" if import_monai else "") + (
        "import sys\nfrom dvcl.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=_env())
    e2e = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{variant}: dvcl segment failed:\n{res.stderr[-3000:]}")
    m = re.search(r"network ([0-9.]+)s", res.stderr)
    if not m:
        raise RuntimeError(f"{variant}: no network time in the log:\n{res.stderr[-2000:]}")
    stages = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([0-9.]+)s", res.stderr.splitlines()[-1]))
    return {"e2e": e2e, "network": float(m.group(1)), **{f"stage_{k}": v for k, v in stages.items()}}


def part_big(rounds: int, tmp: Path, model: Optional[str]) -> dict:
    src = big_ct(tmp / "abdomen_512x512x300.nii.gz")
    exact, has_fast, model_optional = cli_options()
    if model is None and not model_optional:
        model = "phantom_demo"  # this dvcl has no default model: the shipped one
    variants = {"today": (["--engine", "torch", "--sw-batch-size", "1", "--restore", exact], True),
                "default": ([], False)}
    if has_fast:
        variants["fast"] = (["--fast"], False)
    print(f"\n== end to end: 512x512x300 CT ({src.stat().st_size / 2**20:.0f} MiB nii.gz), model "
          f"{model or 'default'}, {rounds} round(s), variants: "
          + "; ".join(f"{k}: {' '.join(v[0]) or '(no options)'}{' +import monai' if v[1] else ''}"
                      for k, v in variants.items()), flush=True)
    # a first default run exports/caches the ONNX graph and records the engine check (not timed)
    run_cli("warm-up", src, tmp / "warm.nii.gz", model, [], False)
    if has_fast:
        try:
            run_cli("warm-up", src, tmp / "warm.nii.gz", None, ["--fast"], False)
        except RuntimeError as exc:  # e.g. no fast model installed
            print(f"  (--fast left out: {str(exc).strip().splitlines()[-1]})")
            del variants["fast"]
    times: Dict[str, List[Dict[str, float]]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            opts, monai = variants[name]
            t = run_cli(name, src, tmp / f"{name}.nii.gz", None if name == "fast" else model, opts, monai)
            times[name].append(t)
            print(f"  round {r + 1} {name:<8} e2e {t['e2e']:7.1f} s  network {t['network']:7.1f} s", flush=True)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "today.nii.gz")))
    rows = {}
    for name in names:
        e2e = statistics.median(t["e2e"] for t in times[name])
        net = statistics.median(t["network"] for t in times[name])
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / f"{name}.nii.gz")))
        vox, fg = agreement(lab, ref)
        stages = {k[6:]: round(statistics.median(t.get(k, 0.0) for t in times[name]), 2)
                  for k in times[name][0] if k.startswith("stage_")}
        rows[name] = {"e2e_s": round(e2e, 2), "network_s": round(net, 2), "e2e_over_network": round(e2e / net, 2),
                      "voxel_agreement": vox, "foreground_agreement": fg, "stages_s": stages,
                      "runs": times[name]}
    base = rows["today"]["e2e_s"]
    print(f"\n{'variant':<9} {'e2e s':>8} {'network s':>10} {'e2e/net':>8} {'speed-up':>9} {'voxel agr':>10} "
          f"{'fg agr':>8}  stages (median s)")
    for name, r in rows.items():
        r["speedup_vs_today"] = round(base / r["e2e_s"], 2)
        print(f"{name:<9} {r['e2e_s']:>8.1f} {r['network_s']:>10.1f} {r['e2e_over_network']:>8.2f} "
              f"{r['speedup_vs_today']:>8.2f}x {100 * r['voxel_agreement']:>9.3f}% "
              f"{100 * r['foreground_agreement']:>7.2f}%  {r['stages_s']}")
    if "fast" in rows:
        print(f"fast vs default: {rows['default']['e2e_s'] / rows['fast']['e2e_s']:.2f}x end to end")
    return {"input": str(src.name), "size_xyz": list(BIG_SIZE), "restore_today": exact, "variants": rows}


# ------------------------------------------------------------------------------------------ part 2
def part_engines(rounds: int, model: Optional[str]) -> dict:
    import torch

    from dvcl.inference import engines
    from dvcl.inference.model_package import default_model_dir, load_model_package
    from dvcl.inference.predictor import Predictor, count_windows
    from dvcl.io.images import read_image
    from dvcl.preprocessing.pipeline import preprocess_image

    pkg = load_model_package(model or default_model_dir())
    arr, _ = preprocess_image(read_image(ABDOMEN), pkg.preprocessing)
    configs = [("torch", 1), ("torch", 4)]
    for name in ("onnxruntime", "openvino"):
        if engines.engine_installed(name):
            configs += [(name, 4), (name, 1)]
    print(f"\n== engines: network stage on the real abdomen CT, model {pkg.name}, grid {arr.shape}, "
          f"{count_windows(arr.shape, pkg.roi, pkg.stride)} windows x {len(pkg.model_names)} model(s), "
          f"{torch.get_num_threads()} thread(s), {rounds} round(s)", flush=True)
    predictors = {}
    for name, bs in configs:
        p = Predictor(pkg, "cpu", sw_batch_size=bs, engine=name)
        p.predict(arr)  # warm-up: export/compile, first-use check
        predictors[(name, bs)] = p
    secs: Dict[Tuple[str, int], List[float]] = {c: [] for c in configs}
    labels = {}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in order:
            t0 = time.perf_counter()
            probs = predictors[c].predict(arr)
            secs[c].append(time.perf_counter() - t0)
            labels[c] = probs.argmax(0).numpy().astype(np.uint8)
        print(f"  round {r + 1}: " + ", ".join(f"{n} bs{b} {secs[(n, b)][-1]:.1f} s" for n, b in configs), flush=True)
    ref = labels[("torch", 1)]
    base = statistics.median(secs[("torch", 1)])
    rows = []
    print(f"\n{'engine':<12} {'batch':>5} {'seconds':>8} {'speed-up':>9} {'voxel agr':>10} {'fg agr':>8}")
    for c in configs:
        s = statistics.median(secs[c])
        vox, fg = agreement(labels[c], ref)
        rows.append({"engine": c[0], "batch": c[1], "seconds": round(s, 2), "speedup": round(base / s, 2),
                     "voxel_agreement": vox, "foreground_agreement": fg, "runs": secs[c]})
        print(f"{c[0]:<12} {c[1]:>5} {s:>8.2f} {base / s:>8.2f}x {100 * vox:>9.4f}% {100 * fg:>7.3f}%")
    return {"model": pkg.name, "grid_zyx": list(arr.shape), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="big,engines", help="comma list of: big, engines")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default=None, help="model package folder or name (default: the CLI's default)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    from dvcl.utils.threads import configure_threads

    threads = configure_threads("segment")
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPU(s), load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"{threads} thread(s) here; the CLI runs choose their own (dvcl.utils.threads)")
    results: dict = {"cpus": os.cpu_count(), "loadavg_start": load}
    with tempfile.TemporaryDirectory(prefix="dvcl-bench-speed-") as tmpdir:
        if "big" in args.cases:
            results["big"] = part_big(args.rounds, Path(tmpdir), args.model)
        if "engines" in args.cases:
            results["engines"] = part_engines(args.rounds, args.model)
    results["loadavg_end"] = os.getloadavg()
    print(f"load average at the end {results['loadavg_end'][0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
