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
    python benchmarks/bench_cotrain_step.py --channels-last both --methods supervised,cps,dvcl --repeats 6

Memory format: as the Trainer runs it (``TrainConfig.channels_last``, default ``auto`` = channels-last on the CPU,
:mod:`dvcl.networks.memory_format`): the same function lays out the models and the batch images. ``--channels-last
both`` times every method in both layouts, interleaved, and prints the speed-up and the loss of the first
(fixed-seed) step in each layout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List, Optional


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


def to_train_format(m, batch_l, batch_u, channels_last: bool):
    """What the Trainer does with ``TrainConfig.channels_last`` (``dvcl.networks.memory_format``)."""
    from dvcl.networks.memory_format import batch_to_channels_last, to_channels_last

    if not channels_last:
        return batch_l, batch_u
    to_channels_last(m.models)
    return batch_to_channels_last(batch_l), batch_to_channels_last(batch_u)


def step(m, opt, batch_l, batch_u, iteration: int, device, losses: Optional[List[float]] = None) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    m.train()
    opt.zero_grad(set_to_none=True)
    loss, _ = m.compute_loss(batch_l, batch_u if m.uses_unlabeled else None, iteration)
    loss.backward()
    opt.step()
    m.after_step(iteration)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    if losses is not None:
        losses.append(float(loss.detach()))
    return dt


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
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds (one step of every method and layout each)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="option for both runs (a TrainConfig field or network.X), e.g. batch_labeled=4")
    ap.add_argument("--dvcl-set", dest="dvcl_options", action="append", default=[], metavar="KEY=VALUE",
                    help="DVCL method parameter, e.g. neighbour_space=probabilities")
    ap.add_argument("--breakdown", action="store_true", help="also print a torch.profiler table of the DVCL step")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--release-freed-memory", action="store_true",
                    help="leave glibc's malloc thresholds alone (the Trainer raises them: dvcl.utils.allocator)")
    ap.add_argument("--methods", default="dvcl,cps",
                    help="comma-separated methods to time, interleaved (the DVCL/CPS ratio needs dvcl and cps)")
    ap.add_argument("--channels-last", default="auto", choices=("auto", "on", "off", "both"),
                    help="memory format as TrainConfig.channels_last (auto: on for the CPU, as the Trainer); "
                         "both: off and on interleaved, with the speed-up")
    args = ap.parse_args()

    import torch

    from dvcl.networks.memory_format import channels_last_enabled
    from dvcl.utils.allocator import keep_freed_memory
    from dvcl.utils.device import select_device

    if not args.release_freed_memory:
        keep_freed_memory()  # as the Trainer does (dvcl.training.trainer.train)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device, strict=True)
    formats = [False, True] if args.channels_last == "both" else [channels_last_enabled(args.channels_last, device)]
    fmt_name = {False: "off", True: "on"}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs = []  # (key, method name, model, optimizer, batch_l, batch_u)
    for cl in formats:
        for name in methods:
            m, opt, cfg = build(name, args.profile, args.classes, device,
                                args.options + (args.dvcl_options if name == "dvcl" else []))
            batch_l, batch_u = to_train_format(m, *make_batch(cfg, args.classes, device), cl)
            key = name if len(formats) == 1 else f"{name}_{fmt_name[cl]}"
            runs.append((key, name, m, opt, batch_l, batch_u))
    times: Dict[str, List[float]] = {r[0]: [] for r in runs}
    losses: Dict[str, List[float]] = {r[0]: [] for r in runs}
    for i in range(args.warmup + args.repeats):
        order = runs if i % 2 == 0 else runs[::-1]
        for key, _, m, opt, batch_l, batch_u in order:
            torch.manual_seed(1000 + i)  # the same random draws for a method in both layouts
            dt = step(m, opt, batch_l, batch_u, 5000 + i, device, losses[key])
            if i >= args.warmup:
                times[key].append(dt)
        shown = ", ".join(f"{k} {times[k][-1]:.3f} s" for k in times) if i >= args.warmup else "warm-up"
        print(f"  round {i + 1}/{args.warmup + args.repeats}: {shown}", file=sys.stderr, flush=True)
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
        "channels_last": args.channels_last if len(formats) > 1 else formats[0],
    }
    for key in times:
        result[f"{key}_s_median"] = round(med[key], 4)
    for key in times:
        result[f"{key}_s_all"] = [round(t, 4) for t in times[key]]

    def ratio(a: str, b: str) -> Dict[str, float]:
        # ratio of the medians, and the median of the per-round ratios (robust to load that drifts during a run)
        return {"of_medians": round(med[a] / med[b], 3),
                "median_of_pairs": round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)}

    suffixes = [""] if len(formats) == 1 else [f"_{fmt_name[cl]}" for cl in formats]
    if "dvcl" in methods and "cps" in methods:
        for suf in suffixes:
            r = ratio(f"dvcl{suf}", f"cps{suf}")
            result[f"ratio_dvcl_over_cps{suf}"] = r["of_medians"]
            result[f"ratio_median_of_pairs{suf}"] = r["median_of_pairs"]
    if len(formats) > 1:
        for name in methods:
            r = ratio(f"{name}_off", f"{name}_on")
            result[f"speedup_{name}"] = r["of_medians"]
            result[f"speedup_{name}_median_of_pairs"] = r["median_of_pairs"]
            # the first step: same initial weights, batch and random draws in both layouts
            result[f"first_loss_{name}"] = [losses[f"{name}_off"][0], losses[f"{name}_on"][0]]
            result[f"first_loss_{name}_abs_diff"] = abs(losses[f"{name}_off"][0] - losses[f"{name}_on"][0])
    result["dvcl_options"] = args.dvcl_options
    result["keep_freed_memory"] = not args.release_freed_memory
    print(json.dumps(result))
    if args.breakdown:
        key, _, m, opt, batch_l, batch_u = next((r for r in runs if r[1] == "dvcl"), runs[0])
        breakdown(m, opt, batch_l, batch_u, device, args.rows)


if __name__ == "__main__":
    main()
