"""Seeded train/val/test splits (6:2:2 by default) and the labeled subset (a fraction, a count, or the paper's count).

Splits are written to ``splits.json`` in the cache so that every run and every method of a comparison sees
the same cases (as DHC commits its split files).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

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


#: The paper's labeled counts where rounding a fraction of the 6:2:2 training split gives another number
#: (supplementary Sec. A): preset -> (training cases of the paper's split, {fraction: labeled count}).
#: MM-WHS: 20 CT -> 12 training cases; 10 % is 2 labeled : 10 unlabeled (round(1.2) would give 1), 50 % is 6 : 6.
#: FLARE22: 70 labeled CT -> 42 training cases, all labeled at both settings; the unlabeled cases (42 for 50 %,
#: 378 for 10 %) come from the extra unlabeled folder (``dvcl prepare --unlabeled``), not from the labeled ones.
PAPER_LABELED_COUNTS: Dict[str, Tuple[int, Dict[float, int]]] = {
    "mmwhs": (12, {0.1: 2, 0.5: 6}),
    "flare22": (42, {0.1: 42, 0.5: 42}),
}


def labeled_count(n_train: int, fraction: float, count: Optional[int] = None, preset: str = "") -> int:
    """How many of ``n_train`` training cases keep their labels.

    ``count`` (``--labeled-count``) wins when given; else the paper's count for ``preset`` at ``fraction``
    when the training split has the paper's size (:data:`PAPER_LABELED_COUNTS`); else ``round(fraction *
    n_train)``, at least one.

    Raises:
        ConfigError: a count outside ``1..n_train`` or a fraction outside (0, 1].
    """
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= n_train:
            raise ConfigError(f"labeled count must be an integer in [1, {n_train}] (the training cases), "
                              f"got {count!r}")
        return count
    if not 0 < fraction <= 1:
        raise ConfigError(f"labeled fraction must be in (0, 1], got {fraction}")
    paper = PAPER_LABELED_COUNTS.get(str(preset).lower())
    if paper is not None and paper[0] == n_train:
        for f, n in paper[1].items():
            if abs(f - float(fraction)) < 1e-9:
                return n
    return max(1, int(round(fraction * n_train)))


def labeled_subset(train_ids: Sequence[str], fraction: float, seed: int = 0, count: Optional[int] = None,
                   preset: str = "") -> List[str]:
    """The labeled part of the training cases for a labeled fraction (e.g. 0.1) or count, at least one case.

    The number of cases comes from :func:`labeled_count`. The rest of the training cases are used as unlabeled
    data (their labels are never read). The draw depends only on ``seed`` and the case ids, so every method and
    every training seed sees the same labeled cases.
    """
    ids = sorted(train_ids)
    if not ids:
        raise ConfigError("no labeled training cases")
    k = labeled_count(len(ids), fraction, count, preset)
    order = np.random.default_rng(seed + 1000).permutation(len(ids))[:k]
    return sorted(ids[i] for i in order)
