"""How a model is trained on synthetic CT: the training settings that differ from the paper's protocol, and why.

One place for these facts: ``dvcl adapt`` fine-tunes with them and ``benchmarks/synthetic_model.sh`` reads its
defaults from here (``python -m dvcl.synthetic_training flip_prob``). TrainConfig keeps the paper's values (random
flips on every axis, no oversampling) for the issue-12 benchmark, whose protocol they are.

Standard library only: the Slicer module and the shell read it without torch.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, Union

#: Training options for models of synthetic CT (``dvcl train --set KEY=VALUE``):
#:
#: * ``flip_prob`` 0: no random flips. Every label set the models ship with has left/right structures (kidneys,
#:   adrenal glands, liver and spleen; heart chambers), which a mirrored patch teaches the network to confuse,
#:   and the scans are reoriented to one canonical orientation before the network sees them (TotalSegmentator
#:   trains without mirroring for the same reason). Measured on synthetic validation
#:   (docs/results/synthetic_model_cpu.md): without flips the abdominal model reached 0.32 mean Dice at
#:   iteration 1500, with them 0.11 (right kidney 0.66 vs 0.04); on the real CT 44.0 vs 28.0 %.
#: * ``foreground_oversample`` 0.33 with ``oversample_mode`` ``class``: nnU-Net's share of crops centred on an
#:   organ, the organ drawn uniformly, so small organs are seen as often as the liver.
#: * ``affine_prob`` stays 0 (TrainConfig's default): nnU-Net's random scaling and rotation of the crops, measured
#:   on two seeds from scratch, moved the real-CT mean by +3.4 and -2.3 points, within the seed spread, and lowered
#:   synthetic validation by about 2 points (docs/results/synthetic_model_cpu.md, "Scale augmentation").
SYNTHETIC_TRAINING: Dict[str, Union[float, str]] = {
    "flip_prob": 0.0,
    "foreground_oversample": 0.33,
    "oversample_mode": "class",
}


def set_arguments() -> List[str]:
    """``["--set", "flip_prob=0.0", ...]`` for ``dvcl train``."""
    out: List[str] = []
    for key, value in SYNTHETIC_TRAINING.items():
        out += ["--set", f"{key}={value}"]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Print one setting's value (``flip_prob``), or every setting as ``dvcl train`` arguments."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(" ".join(set_arguments()))
        return 0
    if args[0] not in SYNTHETIC_TRAINING:
        print(f"unknown setting {args[0]!r}; known: {', '.join(SYNTHETIC_TRAINING)}", file=sys.stderr)
        return 2
    print(SYNTHETIC_TRAINING[args[0]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
