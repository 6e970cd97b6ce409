"""Issue 17's figures side by side, in one run, against its targets.

    python benchmarks/bench_issue17.py                       # CPU: segmentation + co-training step (about 15 min)
    python benchmarks/bench_issue17.py --rounds 3 --repeats 10 --json out.json
    python benchmarks/bench_issue17.py --device cuda         # on a GPU machine: also the paper-profile step

Runs, each in its own process so that imports and caches are what a user gets:
1. ``bench_segment_speed.py --cases big``: a 512 x 512 x 300 CT, end to end and network stage, for today's
   behaviour (``--engine torch --sw-batch-size 1 --restore`` exact, MONAI imported), the defaults and ``--fast``;
2. ``bench_cotrain_step.py``: DVCL step / CPS step at the quick profile (as the Trainer runs it), and on CUDA
   also at the paper profile.
Then prints one table: each target of the issue, the measured value and whether it holds. Ratios are measured
interleaved inside each script, so they hold on a loaded machine; absolute seconds do not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(args: list) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([sys.executable, *map(str, args)], check=True)


def _step(device: str, profile: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "bench_cotrain_step.py"), "--device", device, "--profile",
                          profile, "--repeats", str(repeats), "--methods", "cps,dvcl"]
                         + (["--threads", "0"] if device != "cpu" else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the co-training step; segmentation picks its own)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the segmentation variants")
    ap.add_argument("--repeats", type=int, default=8, help="timed DVCL+CPS step pairs")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        seg_json = Path(tmp) / "segment.json"
        _run([HERE / "bench_segment_speed.py", "--cases", "big", "--rounds", args.rounds, "--json", seg_json])
        seg = json.loads(seg_json.read_text())["big"]["variants"]
    steps = {"quick": _step(args.device, "quick", args.repeats)}
    if args.device != "cpu":
        steps["paper"] = _step(args.device, "paper", args.repeats)

    today, default = seg["today"], seg["default"]
    rows = [
        ("default >= 3x faster than today, end to end", f"{default['speedup_vs_today']:.2f}x",
         default["speedup_vs_today"] >= 3.0),
        ("default voxel agreement with today >= 99.9 %", f"{100 * default['voxel_agreement']:.3f} %",
         default["voxel_agreement"] >= 0.999),
        ("end to end / network <= 1.2 (default)", f"{default['e2e_over_network']:.2f}",
         default["e2e_over_network"] <= 1.2),
    ]
    if "fast" in seg:
        fast_gain = default["e2e_s"] / seg["fast"]["e2e_s"]
        rows.append(("fast >= 2x faster than the default", f"{fast_gain:.2f}x", fast_gain >= 2.0))
    for profile, s in steps.items():
        ratio = s["ratio_dvcl_over_cps"]
        rows.append((f"DVCL step / CPS step <= 1.15 ({s['device']}, {profile} profile)",
                     f"{ratio:.3f} (median of pairs {s['ratio_median_of_pairs']:.3f}; CPS {s['cps_s_median']:.3f} s)",
                     ratio <= 1.15))
    print(f"\nissue 17, {args.device}: today {today['e2e_s']:.1f} s, default {default['e2e_s']:.1f} s "
          f"(network {default['network_s']:.1f} s) end to end on the 512 x 512 x 300 CT")
    width = max(len(r[0]) for r in rows)
    for target, value, ok in rows:
        print(f"  {target:<{width}}  {value:<55}  {'holds' if ok else 'NOT MET'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"segment": seg, "steps": steps,
                                               "targets": [{"target": t, "value": v, "holds": ok}
                                                           for t, v, ok in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
