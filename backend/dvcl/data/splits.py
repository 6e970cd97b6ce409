"""Seeded train/val/test splits (6:2:2 by default) and labeled-fraction selection.

Splits are written to ``splits.json`` in the cache so that every run and every method of a comparison sees
the same cases (as DHC commits its split files).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from dvcl.errors import ConfigError


def make_splits(
    case_ids: Sequence[str], seed: int = 0, ratios: Tuple[int, int, int] = (6, 2, 2)
) -> Dict[str, List[str]]:
    """Split labeled case ids into train/val/test with the given ratios, reproducibly.

    Small data sets keep at least one training case; val and test get ``round(n * ratio)`` cases each.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ConfigError("case ids must be unique")
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(f"invalid split ratios {ratios}")
    n = len(ids)
    total = float(sum(ratios))
    n_val = int(round(n * ratios[1] / total))
    n_test = int(round(n * ratios[2] / total))
    while n - n_val - n_test < 1 and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    test = sorted(shuffled[:n_test])
    val = sorted(shuffled[n_test : n_test + n_val])
    train = sorted(shuffled[n_test + n_val :])
    return {"train": train, "val": val, "test": test}


def labeled_subset(train_ids: Sequence[str], fraction: float, seed: int = 0) -> List[str]:
    """The labeled part of the training cases for a labeled fraction (e.g. 0.1), at least one case.

    The rest of the training cases are used as unlabeled data (their labels are never read).
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"labeled fraction must be in (0, 1], got {fraction}")
    ids = sorted(train_ids)
    if not ids:
        raise ConfigError("no labeled training cases")
    k = max(1, int(round(fraction * len(ids))))
    order = np.random.default_rng(seed + 1000).permutation(len(ids))[:k]
    return sorted(ids[i] for i in order)
