"""Seconds and peak memory of `dvcl segment`, split into reading, preprocessing, network, restore, writing.

Cases: the real abdomen CT (tests/data, 122 x 101 x 112 at 3 mm) and a synthetic 512 x 512 x 300 CT
(0.78 x 0.78 x 1.0 mm, body ellipse with a spine, written to NIfTI first so that reading is real). Runs
the same API as the CLI (``read_image`` -> ``segment_image`` -> ``write_segmentation``) with the paper's
window 64x160x160 / stride 32x80x80, Gaussian blending, softmax mean of A and B.

Model: ``--model DIR``, else the shipped demo model if it exists, else two random-weight U-Nets of the
default size (channels 16..256, 14 classes): timings do not depend on the weights.

Memory: RSS of this process sampled every 10 ms (peak during each stage, and its rise over the RSS at the
stage's start); on CUDA also ``torch.cuda.max_memory_allocated`` per stage.

    python benchmarks/bench_segment.py                  # CPU, and CUDA too when a GPU is present
    python benchmarks/bench_segment.py --device cpu --cases abdomen --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
ABDOMEN = ROOT / "tests" / "data" / "abdomen_ct_3mm" / "image.nii.gz"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


class StageMeter:
    """Per-stage wall time and peak RSS (a sampling thread), plus peak CUDA memory when on a GPU."""

    def __init__(self, device) -> None:
        self.device = device
        self.rows: Dict[str, Dict[str, float]] = {}
        self.stage: Optional[str] = None
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, rss_mb())

    def start(self, stage: str) -> None:
        self.finish()
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.stage = stage
        self._t0 = time.perf_counter()
        self._rss0 = rss_mb()
        self._peak = self._rss0

    def finish(self) -> None:
        if self.stage is None:
            return
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        peak = max(self._peak, rss_mb())
        row = {"seconds": time.perf_counter() - self._t0, "peak_rss_mb": peak, "rss_rise_mb": peak - self._rss0}
        if self.device.type == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.rows[self.stage] = row
        self.stage = None

    def close(self) -> None:
        self.finish()
        self._stop.set()
        self._thread.join()


def synthetic_ct(path: Path, size=(512, 512, 300), spacing=(0.78, 0.78, 1.0)) -> Path:
    """An abdomen-like CT in HU: air, a fat-rimmed soft-tissue ellipse, a bony spine, noise."""
    x, y, z = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:y, 0:x]
    body = ((xx - x / 2) / (0.42 * x)) ** 2 + ((yy - y / 2) / (0.32 * y)) ** 2
    spine = (xx - x / 2) ** 2 + (yy - 0.7 * y) ** 2 < (0.05 * x) ** 2
    sl = np.full((y, x), -1000, np.int16)
    sl[body < 1.0] = -100
    sl[body < 0.85] = 40
    sl[spine] = 700
    vol = np.repeat(sl[None], z, axis=0)
    vol += rng.normal(0, 20, vol.shape).astype(np.int16)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(spacing)
    img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def default_package(tmp: Path):
    """The demo model when shipped, else random default-size A+B U-Nets with FLARE22 labels."""
    import torch

    from dvcl.inference.model_package import default_model_dir, save_model_package
    from dvcl.networks import NetworkConfig, build_network
    from dvcl.presets import get_preset

    demo = default_model_dir()
    if (demo / "model.json").is_file():
        return demo, "demo model (trained)"
    cfg = NetworkConfig(num_classes=14)
    torch.manual_seed(0)
    nets = {"A": build_network(cfg), "B": build_network(cfg)}
    out = save_model_package(nets, cfg, get_preset("flare22").labels, tmp / "random_default", name="random",
                             preset="flare22")
    return out, f"random weights, default U-Net channels {list(cfg.channels)}, 14 classes"


def run_case(name: str, path: Path, package, device, args, tmp: Path) -> dict:
    from dvcl.inference import segment_image
    from dvcl.inference.predictor import count_windows
    from dvcl.io.images import read_image
    from dvcl.io.segmentation import write_segmentation
    from dvcl.preprocessing.pipeline import target_grid

    meter = StageMeter(device)
    rss_start = rss_mb()
    meter.start("reading")
    image = read_image(path)
    label = segment_image(image, package, device, tta=args.tta, restore=args.restore, name=name,
                          on_stage=meter.start, sw_batch_size=args.sw_batch_size)
    meter.start("writing")
    write_segmentation(label, tmp / f"{name}_{device.type}.seg.nrrd", package.segments, overwrite=True)
    meter.close()
    oriented = sitk.DICOMOrient(image, package.preprocessing.orientation)
    grid = tuple(reversed(target_grid(oriented, package.preprocessing.spacing).size))
    return {
        "case": name, "device": str(device), "input_xyz": list(image.GetSize()),
        "spacing_xyz": [round(s, 3) for s in image.GetSpacing()], "network_grid_zyx": list(grid),
        "windows": count_windows(grid, package.roi, package.stride), "models": package.model_names,
        "tta": args.tta, "restore": args.restore, "rss_at_start_mb": round(rss_start, 1),
        "stages": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in meter.rows.items()},
        "total_s": round(sum(v["seconds"] for v in meter.rows.values()), 2),
    }


def print_table(results: List[dict]) -> None:
    gpu = any("peak_gpu_mb" in s for r in results for s in r["stages"].values())
    head = f"{'case':<10} {'device':<7} {'stage':<14} {'seconds':>8} {'peak RSS MB':>12} {'RSS rise MB':>12}"
    print(head + (f" {'peak GPU MB':>12}" if gpu else ""))
    for r in results:
        for stage, s in r["stages"].items():
            line = (f"{r['case']:<10} {r['device']:<7} {stage:<14} {s['seconds']:>8.2f} {s['peak_rss_mb']:>12.0f} "
                    f"{s['rss_rise_mb']:>12.0f}")
            print(line + (f" {s.get('peak_gpu_mb', 0):>12.0f}" if gpu else ""))
        print(f"{r['case']:<10} {r['device']:<7} {'total':<14} {r['total_s']:>8.2f}   (grid z,y,x "
              f"{r['network_grid_zyx']}, {r['windows']} windows x {len(r['models'])} models)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="all", help="cpu, cuda, or all (CPU, plus CUDA when present)")
    ap.add_argument("--cases", default="abdomen,synthetic", help="comma list of abdomen, synthetic")
    ap.add_argument("--model", default=None, help="model package folder (default: demo or random weights)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--restore", choices=("probabilities", "label"), default="probabilities")
    ap.add_argument("--sw-batch-size", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    import torch

    from dvcl.inference import load_model_package

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        pkg_dir, what = (Path(args.model), "given model") if args.model else default_package(tmp)
        package = load_model_package(pkg_dir)
        print(f"model: {package.name} ({what}); torch {torch.__version__}, {torch.get_num_threads()} CPU "
              f"thread(s), {os.cpu_count()} cores" + (f", GPU {torch.cuda.get_device_name(0)}"
                                                       if torch.cuda.is_available() else ", no GPU"))
        inputs = {"abdomen": ABDOMEN}
        if "synthetic" in args.cases:
            t0 = time.perf_counter()
            inputs["synthetic"] = synthetic_ct(tmp / "synthetic_512x512x300.nii.gz")
            print(f"(synthetic CT written in {time.perf_counter() - t0:.1f} s; not counted)")
        results = []
        for dev_name in devices[args.device]:
            device = torch.device(dev_name)
            for case in args.cases.split(","):
                res = run_case(case, inputs[case], package, device, args, tmp)
                results.append(res)
                print(json.dumps(res), flush=True)
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
