"""Gate 1 of ../protocol.md (and its addendum): a model against the shipped one on the fresh synthetic cases, paired
by case, mean Dice over all 13 structures or over ``--structures`` (the addendum's part (b'): the seven whose
surroundings the fat planes leave alone), with a 95 % bootstrap interval over cases (dvcl.paired_stats).

    python gate_stats.py CANDIDATE/metrics.csv SHIPPED/metrics.csv [--structures untouched]
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "backend"))
from dvcl.paired_stats import paired_bootstrap  # noqa: E402
from dvcl.synthesis.priors import FAT_PLANE_ORGANS  # noqa: E402

#: the addendum's (b'): every structure but the liver and the fat-plane organs
UNTOUCHED = ("right kidney", "spleen", "aorta", "inferior vena cava", "esophagus", "stomach", "left kidney")
assert not set(UNTOUCHED) & set(FAT_PLANE_ORGANS)


def per_case(path: str, keep) -> dict:
    cases: dict = {}
    for r in csv.DictReader(open(path)):
        if r["dice_pct"] not in ("", "nan") and (keep is None or r["structure"] in keep):
            cases.setdefault(r["case"], []).append(float(r["dice_pct"]))
    return {c: float(np.mean(v)) for c, v in cases.items()}


p = argparse.ArgumentParser()
p.add_argument("candidate")
p.add_argument("shipped")
p.add_argument("--structures", choices=("all", "untouched"), default="all")
args = p.parse_args()
keep = UNTOUCHED if args.structures == "untouched" else None
a, b = per_case(args.candidate, keep), per_case(args.shipped, keep)
if a.keys() != b.keys():
    raise SystemExit(f"different cases: {len(a)} vs {len(b)}")
keys = sorted(a)
d = np.array([a[k] - b[k] for k in keys])
print(f"{args.structures}: model {np.mean([a[k] for k in keys]):.2f}  shipped {np.mean([b[k] for k in keys]):.2f}  "
      f"n={len(keys)}  paired {paired_bootstrap(d[None, :]).text()}  better on {(d > 0).sum()} of {len(d)}")
