"""DVCL step vs CPS step, interleaved in one process (issue 17: DVCL / CPS <= 1.15 at the quick profile).

Both methods are built from the same seed (same initial nets A and B) and see the same batch. Every
repetition times one DVCL step and one CPS step back to back (alternating which goes first), so machine load
affects both alike; the figures are the ratio of the medians and the median of the per-pair ratios. A step
is what the Trainer does per iteration after the data arrive: forward of A and B on labeled + unlabeled
patches, the method's loss, backward and the optimiser step (AdamW for the quick profile, SGD for the paper profile).

The batch is a multi-organ-like patch: a random label map of ``--classes`` blobs and an image whose
intensity depends on the label plus noise, so the networks give a real mix of reliable and unreliable voxels.

    python benchmarks/bench_cotrain_step.py                        # quick profile, CPU, 1 thread
    python benchmarks/bench_cotrain_step.py --profile paper --device cuda --repeats 20
    python benchmarks/bench_cotrain_step.py --breakdown            # where DVCL's extra time goes (profiler)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List


def build(method: str, profile: str, num_classes: int, device, options: List[str]):
    import torch

    from dvcl.methods import get_method_class
    from dvcl.training.config import TrainConfig, apply_profile, set_option

    cfg = TrainConfig(method=method)
    apply_profile(cfg, profile)
    cfg.iterations = 20000
    for item in options:
        key, _, value = item.partition("=")
        set_option(cfg, key.strip(), value.strip())
    cfg.network.num_classes = num_classes
    torch.manual_seed(0)
    m = get_method_class(method)(cfg, num_classes, device)
    m.setup()
    params = list(m.trainable_parameters())
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=1e-4)
    return m, opt, cfg


def make_batch(cfg, num_classes: int, device, seed: int = 0):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    n = cfg.batch_labeled + cfg.batch_unlabeled
    z, y, x = cfg.patch
    coarse = torch.randint(0, num_classes, (n, 1, max(1, z // 8), max(1, y // 8), max(1, x // 8)), generator=g)
    label = F.interpolate(coarse.float(), size=(z, y, x), mode="nearest").long()
    image = label.float() / num_classes + 0.3 * torch.randn(label.shape, generator=g)
    nl = cfg.batch_labeled
    return ({"image": image[:nl].to(device), "label": label[:nl].to(device), "case": ["l"] * nl},
            {"image": image[nl:].to(device), "case": ["u"] * (n - nl)})


def step(m, opt, batch_l, batch_u, iteration: int, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    m.train()
    opt.zero_grad(set_to_none=True)
    loss, _ = m.compute_loss(batch_l, batch_u, iteration)
    loss.backward()
    opt.step()
    m.after_step(iteration)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def breakdown(m, opt, batch_l, batch_u, device, rows: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for i in range(2):
        step(m, opt, batch_l, batch_u, 5000 + i, device)
    with profile(activities=acts, record_shapes=False) as prof:
        for i in range(3):
            step(m, opt, batch_l, batch_u, 5002 + i, device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), file=sys.stderr)
    del torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=("quick", "paper"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    ap.add_argument("--classes", type=int, default=14, help="classes incl. background (FLARE22: 14)")
    ap.add_argument("--repeats", type=int, default=10, help="timed DVCL+CPS pairs")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="option for both runs (a TrainConfig field or network.X), e.g. batch_labeled=4")
    ap.add_argument("--dvcl-set", dest="dvcl_options", action="append", default=[], metavar="KEY=VALUE",
                    help="DVCL method parameter, e.g. neighbour_space=probabilities")
    ap.add_argument("--breakdown", action="store_true", help="also print a torch.profiler table of the DVCL step")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--release-freed-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (the Trainer raises them: dvcl.utils.allocator)")
    args = ap.parse_args()

    import torch

    from dvcl.utils.allocator import keep_freed_memory
    from dvcl.utils.device import select_device

    if not args.release_freed_memory:
        keep_freed_memory()  # as the Trainer does (dvcl.training.trainer.train)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device, strict=True)
    dvcl, dvcl_opt, cfg = build("dvcl", args.profile, args.classes, device, args.options + args.dvcl_options)
    cps, cps_opt, _ = build("cps", args.profile, args.classes, device, args.options)
    batch_l, batch_u = make_batch(cfg, args.classes, device)
    times: Dict[str, List[float]] = {"dvcl": [], "cps": []}
    pairs = [("dvcl", dvcl, dvcl_opt), ("cps", cps, cps_opt)]
    for i in range(args.warmup + args.repeats):
        order = pairs if i % 2 == 0 else pairs[::-1]
        for name, m, opt in order:
            dt = step(m, opt, batch_l, batch_u, 5000 + i, device)
            if i >= args.warmup:
                times[name].append(dt)
        print(f"  pair {i + 1}/{args.warmup + args.repeats}{' (warm-up)' if i < args.warmup else ''}: "
              f"dvcl {times['dvcl'][-1] if i >= args.warmup else dt:.3f} s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "profile": args.profile,
        "batch": f"{cfg.batch_labeled}+{cfg.batch_unlabeled}",
        "patch": "x".join(map(str, cfg.patch)),
        "channels": list(cfg.network.channels),
        "classes": args.classes,
        "dvcl_s_median": round(med["dvcl"], 4),
        "cps_s_median": round(med["cps"], 4),
        "dvcl_s_all": [round(t, 4) for t in times["dvcl"]],
        "cps_s_all": [round(t, 4) for t in times["cps"]],
        "ratio_dvcl_over_cps": round(med["dvcl"] / med["cps"], 3),
        # each DVCL step over the CPS step next to it in time: robust to load that drifts during the run
        "ratio_median_of_pairs": round(statistics.median(d / c for d, c in zip(times["dvcl"], times["cps"])), 3),
        "dvcl_options": args.dvcl_options,
        "keep_freed_memory": not args.release_freed_memory,
    }
    print(json.dumps(result))
    if args.breakdown:
        breakdown(dvcl, dvcl_opt, batch_l, batch_u, device, args.rows)


if __name__ == "__main__":
    main()
