"""Gate 1 of docs/results/synthetic_wide_cpu/protocol.md: candidate vs shipped on the 24 synthetic validation cases."""
import csv, sys
import numpy as np
sys.path.insert(0, "/work/runwide/backend")
from dvcl.paired_stats import paired_bootstrap

def per_case(path):
    rows = list(csv.DictReader(open(path)))
    cases = {}
    for r in rows:
        if r["dice_pct"] not in ("", "nan"):
            cases.setdefault(r["case"], []).append(float(r["dice_pct"]))
    return {c: np.mean(v) for c, v in cases.items()}

a = per_case(sys.argv[1]); b = per_case(sys.argv[2])
assert a.keys() == b.keys(), (len(a), len(b))
keys = sorted(a)
d = np.array([a[k] - b[k] for k in keys])
print(f"candidate {np.mean([a[k] for k in keys]):.2f}  shipped {np.mean([b[k] for k in keys]):.2f}  n={len(keys)}")
p = paired_bootstrap(d[None, :])
print(f"paired {p.text()}  SD {d.std(ddof=1):.2f}  better on {(d > 0).sum()} of {len(d)}")
