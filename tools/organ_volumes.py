"""Organ volumes painted by the synthetic abdomen generator, next to adult CT volumetry (issue 13).

Why: a network trained on synthetic anatomy learns the organ sizes it was shown; the phantom paints liver, spleen,
kidneys and gallbladder at roughly half of adult volumes. This tool measures the painted volumes (before any
field-of-view cut; organ absence and the pelvis off) for ``--organ-sizes phantom`` and ``adult`` and prints them
beside :data:`dvcl.synthesis.priors.ADULT_ORGAN_VOLUME_ML`, which is how
:data:`~dvcl.synthesis.priors.ADULT_ORGAN_SCALE` was calibrated. The painted volumes spread wider than the
literature's: the phantom's body size and its cranio-caudal extent (which can cut a kidney or the spleen) vary too.

    .venv/bin/python tools/organ_volumes.py --cases 24            # about 1 min per size setting on one core
    .venv/bin/python tools/organ_volumes.py --cases 8 --anatomy-mm 4
"""

from __future__ import annotations

import argparse
from typing import Dict, List

import numpy as np

from dvcl.phantoms.abdomen import GB, LIVER, LKID, RKID, SPLEEN
from dvcl.synthesis.anatomy import paint_anatomy
from dvcl.synthesis.config import ORGAN_SIZES, SynthesisConfig
from dvcl.synthesis.priors import ADULT_ORGAN_VOLUME_ML

#: organ of the volumetry table -> the label values it counts (one kidney each: both are pooled)
LABELS = {"liver": (LIVER,), "spleen": (SPLEEN,), "kidney": (RKID, LKID), "gallbladder": (GB,)}


def painted_volumes(cases: int, organ_sizes: str, anatomy_mm: float = 2.0,
                    first_seed: int = 0) -> Dict[str, List[float]]:
    """Millilitres per organ over ``cases`` seeds (kidneys: one value per kidney)."""
    cfg = SynthesisConfig(organ_sizes=organ_sizes, absence=False, pelvis=False, anatomy_mm=anatomy_mm)
    out: Dict[str, List[float]] = {name: [] for name in LABELS}
    for seed in range(first_seed, first_seed + cases):
        a = paint_anatomy(seed, np.random.default_rng(seed), cfg)
        counts = np.bincount(a.label.ravel(), minlength=14)
        ml = a.spacing ** 3 / 1000.0
        for name, values in LABELS.items():
            out[name].extend(float(counts[v] * ml) for v in values)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--anatomy-mm", type=float, default=2.0)
    args = p.parse_args(argv)
    print(f"painted organ volumes, ml (p10 / median / p90 over {args.cases} cases; kidneys pooled)")
    print("| organ | adult CT (literature) | " + " | ".join(ORGAN_SIZES) + " |")
    print("|---|---|" + "---|" * len(ORGAN_SIZES))
    vols = {s: painted_volumes(args.cases, s, args.anatomy_mm) for s in ORGAN_SIZES}
    for name in LABELS:
        lit = " / ".join(f"{v:.0f}" for v in ADULT_ORGAN_VOLUME_ML[name])
        cells = [" / ".join(f"{v:.0f}" for v in np.percentile(vols[s][name], [10, 50, 90])) for s in ORGAN_SIZES]
        print(f"| {name} | {lit} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
