"""One-seed ablation table at the CPU benchmark (seed 0): best validation Dice (what a choice may use), test mean
Dice [A+B] (read once per run), and the paired difference to the first row over the 4 test cases with
dvcl.paired_stats' bootstrap. Reads each folder's committed runs.csv and dvcl_f0.1_s0/run.json.

    python seed0_table.py docs/results/ssl_ablation_cpu                       # the K / K' table (Table 5)
    python seed0_table.py docs/results/ssl_ablation_cpu "LABEL=FOLDER" ...    # any rows, the first the reference
    SEED=1 python seed0_table.py ...                                           # another seed's runs

The default's seed-0 run is ssl_ablation_cpu/no_nps."""
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from dvcl.paired_stats import paired_bootstrap

ROOT = Path(sys.argv[1])  # docs/results/ssl_ablation_cpu
KK_ROWS = [("K 10, K' 15 (default)", "no_nps")] + [(f"K {a}, K' {b}", f"k{a}_{b}")
                                                   for a, b in ((5, 5), (5, 10), (10, 10), (15, 15))]
rows = [tuple(arg.split("=", 1)) for arg in sys.argv[2:]] or KK_ROWS
SEED = os.environ.get("SEED", "0")


def per_case(folder):
    d = {}
    for r in csv.DictReader(open(ROOT / folder / "runs.csv")):
        if r["seed"] == SEED and r["inference_model"] == "A+B" and r["split"] == "test":
            d.setdefault(r["case"], []).append(float(r["dice"]))
    return {c: 100 * float(np.mean(v)) for c, v in d.items()}


ref_folder = rows[0][1]
ref = per_case(ref_folder)
cases = sorted(ref)
out = ["| row | best validation Dice (iteration) | test mean Dice [A+B] | minus the first row, paired over the "
       f"{len(cases)} test cases [95 % CI] |", "|---|---|---|---|"]
for label, folder in rows:
    if not (ROOT / folder / "runs.csv").is_file():
        out.append(f"| {label} | not run | | |")
        continue
    run = json.loads((ROOT / folder / f"dvcl_f0.1_s{SEED}" / "run.json").read_text())
    pc = per_case(folder)
    test = float(np.mean([pc[c] for c in cases]))
    if folder == ref_folder:
        diff = ""
    else:
        d = paired_bootstrap(np.array([[pc[c] - ref[c] for c in cases]]))
        diff = f"{d.mean:+.1f} [{d.low:.1f}, {d.high:.1f}]"
    out.append(f"| {label} | {100 * run['best_val_dice']:.1f} ({run.get('best_iteration')}) | {test:.1f} | {diff} |")
print("\n".join(out))
