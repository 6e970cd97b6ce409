"""Does the unlabeled data help? DVCL vs CPS vs labeled-only on synthetic phantoms in a 10% labeled setting.

Setting (defaults): 10 labeled phantoms split 6:2:2 by ``dvcl prepare``; labeled fraction 1/3 keeps 2 of the 6
training cases labeled and the other 4 join 14 unlabeled-only phantoms, i.e. 2 labeled + 18 unlabeled (10%).
Every method trains with the same seed, the ``quick`` profile (patch 32x64x64, U-Net 8..64, batch 2+2) and the
same iteration budget, and is evaluated on held-out phantoms it never saw: the cache's 2 test cases plus
``--test`` freshly generated ones (a different phantom seed). Scores are Dice and Jaccard per structure in the
preprocessed grid (1.25 x 1.25 x 2.5 mm), mean over structures present, then over cases, from the best
checkpoint (validation Dice on the 2 val phantoms), with sliding-window inference (Gaussian, 50% overlap) on the
mean softmax of the method's inference models.

    python benchmarks/bench_ssl_phantoms.py --work /tmp/ssl_bench             # ~15 min on a 2-core CPU
    python benchmarks/bench_ssl_phantoms.py --iterations 600 --seeds 0 1 2 --device cuda

Methods: ``supervised`` (labeled only), ``cps`` (DVCL's co-training with lambda_c = 0) and ``dvcl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

#: name shown -> (method, method parameters)
METHODS = {
    "supervised": ("supervised", {}),
    "cps": ("dvcl", {"lambda_c": 0.0}),
    "dvcl": ("dvcl", {}),
    # a longer CPS ramp-up (half the run instead of 10 %): in a budget of a few hundred iterations the
    # pseudo-labels of the first iterations are mostly background and full-weight CPS locks that in
    "cps-ramp0.5": ("dvcl", {"lambda_c": 0.0, "cps_rampup_fraction": 0.5}),
    "dvcl-ramp0.5": ("dvcl", {"cps_rampup_fraction": 0.5}),
    # supervised-only warm-up over the first half of the run, then the usual 10 % ramp-up (warmup_fraction)
    "cps-warmup0.5": ("dvcl", {"lambda_c": 0.0, "warmup_fraction": 0.5}),
    "dvcl-warmup0.5": ("dvcl", {"warmup_fraction": 0.5}),
}


def make_data(work: Path, n_labeled: int, n_unlabeled: int, n_test: int, kind: str, seed: int,
              spacing: Optional[Sequence[float]] = None):
    """Write the phantoms and prepare the training cache and a held-out test cache (skipped when present).

    ``spacing`` overrides the paper's 1.25 x 1.25 x 2.5 mm (e.g. 2.5 x 2.5 x 5 mm lets the quick profile's
    32x64x64 patch see most of a phantom's abdomen, so a CPU budget of a few hundred iterations can learn).
    """
    from dvcl.data.cache import Cache, prepare_dataset
    from dvcl.phantoms import write_phantom_dataset
    from dvcl.preprocessing import PreprocessConfig

    pcfg = PreprocessConfig(spacing=tuple(spacing)) if spacing else None

    caches = []
    for name, n_l, n_u, s in (("train", n_labeled, n_unlabeled, seed), ("heldout", n_test, 0, seed + 1000)):
        cache_dir = work / f"cache_{name}"
        if Cache.is_cache(cache_dir):
            caches.append(Cache(cache_dir))
            continue
        raw = work / f"raw_{name}"
        if not (raw / "dataset.json").is_file():
            raw = Path(write_phantom_dataset(raw, n_l, n_u, kind, s, overwrite=True)["out_dir"])
        cache, _ = prepare_dataset(raw, cache_dir, cfg=pcfg)
        caches.append(cache)
    return caches[0], caches[1]


def train_method(cache, work: Path, label: str, fraction: float, seed: int, iterations: int, device: str,
                 profile: str) -> Dict:
    from dvcl.training import TrainConfig, apply_preset_schedule, apply_profile, train

    method, params = METHODS[label]
    cfg = TrainConfig()
    apply_preset_schedule(cfg, cache.preset)
    apply_profile(cfg, profile)
    cfg.data = str(cache.root)
    cfg.method = method
    cfg.method_params = dict(params)
    cfg.labeled_fraction = fraction
    cfg.seed = seed
    cfg.iterations = iterations
    cfg.val_every = max(1, iterations // 4)
    cfg.num_workers = 1
    run = work / f"run_{label}_seed{seed}"
    t0 = time.monotonic()
    res = train(cfg, run, device=device, overwrite=True)
    return {"run": run, "cfg": cfg, "minutes": (time.monotonic() - t0) / 60, "best_val_dice": res.best_val_dice}


def evaluate(run: Path, cfg, cases: Sequence, device_name: str) -> Dict:
    """Dice/Jaccard of the best checkpoint on (cache, case id) pairs, in the preprocessed grid."""
    import torch
    from monai.metrics import DiceHelper, compute_iou
    from monai.networks.utils import one_hot

    from dvcl.inference.sliding_window import WindowConfig, sliding_window
    from dvcl.methods import get_method_class
    from dvcl.training.checkpoint import load_models, load_weights
    from dvcl.utils.device import select_device

    device = select_device(device_name)
    C = cfg.network.num_classes
    method = get_method_class(cfg.method)(cfg, C, device)
    method.setup()
    load_models(method.models, load_weights(run / "checkpoints" / "best.safetensors"), str(run))
    method.eval()
    window = WindowConfig.from_overlap(cfg.val_roi, 0.5, sw_batch_size=4)  # the same windows for every profile
    dice_fn = DiceHelper(include_background=False, num_classes=C, reduction="none", ignore_empty=True,
                         get_not_nans=False)
    dices, jaccards = [], []
    with torch.no_grad():
        for cache, cid in cases:
            img = torch.from_numpy(np.load(cache.image_path(cid)).astype(np.float32))[None, None].to(device)
            lab = torch.from_numpy(np.load(cache.label_path(cid)).astype(np.int64))[None, None].to(device)
            probs = sliding_window(img[0], window.roi, window.stride, method.predict_proba, window.sw_batch_size)[None]
            pred = probs.argmax(1, keepdim=True)
            d = dice_fn(pred, lab)[0].float().cpu().numpy()
            j = compute_iou(one_hot(pred, C), one_hot(lab, C), include_background=False, ignore_empty=True)
            dices.append(d)
            jaccards.append(j[0].float().cpu().numpy())
    d, j = np.stack(dices), np.stack(jaccards)
    return {
        "dice": float(np.nanmean(np.nanmean(d, axis=1))),
        "jaccard": float(np.nanmean(np.nanmean(j, axis=1))),
        "dice_per_class": [None if np.isnan(v) else round(float(v), 4) for v in np.nanmean(d, axis=0)],
        "cases": len(cases),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dvcl_ssl_bench"), help="working folder (reused)")
    ap.add_argument("--kind", default="abdomen", help="phantom kind (abdomen or cardiac)")
    ap.add_argument("--labeled", type=int, default=10, help="labeled phantoms, split 6:2:2")
    ap.add_argument("--unlabeled", type=int, default=14, help="unlabeled-only phantoms")
    ap.add_argument("--test", type=int, default=4, help="extra held-out labeled phantoms")
    ap.add_argument("--fraction", type=float, default=1 / 3, help="labeled fraction of the training split")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=["supervised", "cps", "dvcl"], choices=list(METHODS))
    ap.add_argument("--profile", default="quick", choices=("quick", "paper"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                    help="resampling spacing in mm (default: the paper's 1.25 1.25 2.5)")
    args = ap.parse_args()

    import torch

    from dvcl.utils import progress

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    progress.set_mode("none")
    args.work.mkdir(parents=True, exist_ok=True)
    cache, heldout = make_data(args.work, args.labeled, args.unlabeled, args.test, args.kind, 0, args.spacing)
    cases = [(cache, c) for c in cache.splits.get("test", [])] + [(heldout, c) for c in heldout.labeled_ids]
    print(f"train cache {cache.root}: splits " + json.dumps({k: len(v) for k, v in cache.splits.items()
                                                              if isinstance(v, list) and k != "ratios"}))
    print(f"evaluating on {len(cases)} held-out phantoms; {args.iterations} iterations per run; spacing "
          f"{cache.preprocessing.spacing} mm")

    rows: List[Dict] = []
    for seed in args.seeds:
        for label in args.methods:
            t = train_method(cache, args.work, label, args.fraction, seed, args.iterations, args.device, args.profile)
            scores = evaluate(t["run"], t["cfg"], cases, args.device)
            row = {"method": label, "seed": seed, **scores, "best_val_dice": t["best_val_dice"],
                   "train_minutes": round(t["minutes"], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    print("\n| method | mean Dice (%) | mean Jaccard (%) | seeds | train min/run |")
    print("|---|---|---|---|---|")
    for label in args.methods:
        sel = [r for r in rows if r["method"] == label]
        d = np.array([r["dice"] for r in sel]) * 100
        j = np.array([r["jaccard"] for r in sel]) * 100
        sd = f" +/- {d.std(ddof=1):.2f}" if len(sel) > 1 else ""
        print(f"| {label} | {d.mean():.2f}{sd} | {j.mean():.2f} | {len(sel)} | "
              f"{np.mean([r['train_minutes'] for r in sel]):.1f} |")


if __name__ == "__main__":
    main()
