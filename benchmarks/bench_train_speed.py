"""Seconds per training iteration and peak memory at the paper's setting (DVCL, batch 4+4, patch 64x128x128).

Times exactly what the Trainer does per iteration after the data arrive (forward of both models on the labeled
and unlabeled patches, the method's loss, backward, SGD step, ``after_step``; AMP on CUDA), on random
patches, so the number is compute only. Data loading runs in worker processes in parallel with this.

    python benchmarks/bench_train_speed.py                       # CPU (and CUDA if present), 2 timed iterations
    python benchmarks/bench_train_speed.py --device cuda --iterations 10 --method cps
    python benchmarks/bench_train_speed.py --patch 32 64 64 --channels 8 16 32 64 --batch 2 2   # quick profile

Peak memory: process RSS (``resource.ru_maxrss``; includes the Python/torch baseline) and, on CUDA,
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Dict, List

from dvcl.networks.config import CHANNELS_LAST_CHOICES


def bench(device_name: str, method: str, batch: List[int], patch: List[int], channels: List[int], iterations: int,
          warmup: int, amp: bool, num_classes: int, threads: int, channels_last: str = "auto") -> Dict:
    import torch

    from dvcl.methods import get_method_class
    from dvcl.networks import NetworkConfig
    from dvcl.networks.memory_format import batch_to_channels_last, channels_last_enabled, to_channels_last
    from dvcl.training.config import TrainConfig
    from dvcl.utils.device import select_device

    if threads:
        torch.set_num_threads(threads)
    device = select_device(device_name, strict=True)
    cfg = TrainConfig(method=method, batch_labeled=batch[0], batch_unlabeled=batch[1], patch=tuple(patch),
                      iterations=20000, network=NetworkConfig(channels=tuple(channels), num_classes=num_classes),
                      channels_last=channels_last)
    cfg.validate()
    torch.manual_seed(0)
    cls = get_method_class(method)
    m = cls(cfg, num_classes, device)
    m.setup()
    cl = channels_last_enabled(cfg.channels_last, device)  # as the Trainer does (auto: on for the CPU)
    if cl:
        to_channels_last(m.models)
    params = list(m.trainable_parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    amp_dtype = None
    if amp and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def batch_of(n: int, labeled: bool):
        x = torch.randn(n, 1, *patch, device=device)
        out = {"image": x, "case": [f"c{i}" for i in range(n)]}
        if labeled:
            # blobs of every class so that each class has voxels (as in a real multi-organ patch)
            lab = torch.randint(0, num_classes, (n, 1, patch[0] // 8, patch[1] // 8, patch[2] // 8), device=device)
            out["label"] = torch.nn.functional.interpolate(lab.float(), size=tuple(patch), mode="nearest").long()
        return batch_to_channels_last(out) if cl else out

    bl = batch_of(batch[0], True)
    bu = batch_of(batch[1], False) if cls.uses_unlabeled else None
    times = []
    terms = {}
    for i in range(warmup + iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        m.train()
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else torch.autocast("cpu", enabled=False)
        with ctx:
            loss, terms = m.compute_loss(bl, bu, 5000 + i)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        m.after_step(5000 + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
        print(f"  [{device}] iteration {i + 1}/{warmup + iterations}: {dt:.2f} s{' (warm-up)' if i < warmup else ''}",
              file=sys.stderr, flush=True)
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "method": method,
        "batch": f"{batch[0]}+{batch[1]}",
        "patch": "x".join(map(str, patch)),
        "channels": list(channels),
        "memory_format": "channels-last" if cl else "contiguous",
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "s_per_iteration": round(sum(times) / len(times), 3),
        "s_min": round(min(times), 3),
        "timed_iterations": len(times),
        "peak_rss_gib": round(rss_gib, 2),
        "loss_terms": sorted(terms),
    }
    if device.type == "cuda":
        result["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["hours_for_20k_iterations"] = round(result["s_per_iteration"] * 20000 / 3600, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="all", help="cpu, cuda, or all (cpu, plus cuda when present)")
    ap.add_argument("--method", default="dvcl")
    ap.add_argument("--batch", type=int, nargs=2, default=[4, 4], metavar=("LABELED", "UNLABELED"))
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 128, 128], metavar=("Z", "Y", "X"))
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--iterations", type=int, default=2, help="timed iterations (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--classes", type=int, default=14, help="classes incl. background (FLARE22: 14)")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST_CHOICES,
                    help="memory format, as TrainConfig.channels_last (auto: channels-last on the CPU)")
    args = ap.parse_args()

    import torch

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if args.device == "all" and not torch.cuda.is_available():
        devices = ["cpu"]
    for dev in devices:
        res = bench(dev, args.method, args.batch, args.patch, args.channels, args.iterations, args.warmup,
                    not args.no_amp, args.classes, args.threads, args.channels_last)
        print(json.dumps(res))


if __name__ == "__main__":
    main()
