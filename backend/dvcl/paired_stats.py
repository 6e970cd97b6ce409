"""Paired differences between two methods with a bootstrap confidence interval (numpy only).

A comparison table is only convincing when the difference between two rows is shown with its uncertainty.
The two methods are evaluated on the same test cases with the same training seeds, so the differences are
*paired*: d[s, c] = score_M(seed s, case c) - score_R(seed s, case c). The point estimate is the mean of d;
the 95 % interval is a percentile bootstrap that resamples test cases and seeds with replacement (cases jointly
over seeds: a case stays a case in every seed), so both sources of variation - which cases happened to be in
the test split and which seeds were drawn - widen the interval. Deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference and its bootstrap interval (same unit as the scores)."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_cases: int
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def text(self, scale: float = 1.0, digits: int = 2) -> str:
        """``+1.23 [0.40, 2.10]`` (scaled, e.g. 100 for percent)."""
        f = f"{{:+.{digits}f}} [{{:.{digits}f}}, {{:.{digits}f}}]"
        return f.format(self.mean * scale, self.low * scale, self.high * scale)


def paired_bootstrap(diffs: np.ndarray, n_boot: int = 10000, level: float = 0.95, seed: int = 0,
                     rng: Optional[np.random.Generator] = None) -> PairedDifference:
    """Bootstrap the mean of a (seeds x cases) array of paired differences (NaN entries are skipped).

    Each replicate draws ``n_cases`` case columns and ``n_seeds`` seed rows with replacement and takes the
    mean of the selected block; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of
    the replicate means. With one seed only the cases are resampled (and vice versa).

    Raises:
        ValueError: not a 2-D array, or no finite value.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"paired differences must be a (seeds, cases) array, got shape {d.shape}")
    if not np.isfinite(d).any():
        raise ValueError("no finite paired difference")
    n_seeds, n_cases = d.shape
    mean = float(np.nanmean(d))
    rng = rng if rng is not None else np.random.default_rng(seed)
    rows = rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1 else np.zeros((n_boot, 1), dtype=int)
    cols = rng.integers(0, n_cases, size=(n_boot, n_cases)) if n_cases > 1 else np.zeros((n_boot, 1), dtype=int)
    values = np.where(np.isfinite(d), d, 0.0)
    weights = np.isfinite(d).astype(np.float64)
    # mean over the selected block = sum_{i in rows, j in cols} d[i, j] / count, computed as row-sum products
    row_counts = np.zeros((n_boot, n_seeds))
    np.add.at(row_counts, (np.arange(n_boot)[:, None], rows), 1.0)
    col_counts = np.zeros((n_boot, n_cases))
    np.add.at(col_counts, (np.arange(n_boot)[:, None], cols), 1.0)
    totals = np.einsum("bi,ij,bj->b", row_counts, values, col_counts)
    counts = np.einsum("bi,ij,bj->b", row_counts, weights, col_counts)
    means = totals[counts > 0] / counts[counts > 0]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedDifference(mean, float(low), float(high), n_seeds, n_cases, level)
