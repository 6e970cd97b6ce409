"""K / K' table (supplementary Table 5) at the CPU benchmark, seed 0: best validation Dice (what a choice may
use), test mean Dice [A+B] (read once per run), and the paired difference to the default K 10 / K' 15 over the
4 test cases with dvcl.paired_stats' bootstrap. The default's seed-0 run is ssl_ablation_cpu/no_nps."""
import csv, json, sys
from pathlib import Path
import numpy as np
from dvcl.paired_stats import paired_bootstrap

ROOT = Path(sys.argv[1])  # docs/results/ssl_ablation_cpu
rows = [("K 10, K' 15 (default)", "no_nps")] + [(f"K {a}, K' {b}", f"k{a}_{b}") for a, b in ((5, 5), (5, 10), (10, 10), (15, 15))]

def per_case(folder):
    d = {}
    for r in csv.DictReader(open(ROOT / folder / "runs.csv")):
        if r["seed"] == "0" and r["inference_model"] == "A+B" and r["split"] == "test":
            d.setdefault(r["case"], []).append(float(r["dice"]))
    return {c: 100 * float(np.mean(v)) for c, v in d.items()}

ref = per_case("no_nps")
cases = sorted(ref)
out = ["| K / K' | best validation Dice (iteration) | test mean Dice [A+B] | minus the default, paired over the 4 test cases [95 % CI] |",
       "|---|---|---|---|"]
for label, folder in rows:
    if not (ROOT / folder / "runs.csv").is_file():
        out.append(f"| {label} | not run | | |"); continue
    run = json.loads((ROOT / folder / "dvcl_f0.1_s0" / "run.json").read_text())
    pc = per_case(folder)
    test = float(np.mean([pc[c] for c in cases]))
    if folder == "no_nps":
        diff = ""
    else:
        d = paired_bootstrap(np.array([[pc[c] - ref[c] for c in cases]]))
        diff = f"{d.mean:+.1f} [{d.low:.1f}, {d.high:.1f}]"
    out.append(f"| {label} | {100 * run['best_val_dice']:.1f} ({run.get('best_iteration')}) | {test:.1f} | {diff} |")
print("\n".join(out))
