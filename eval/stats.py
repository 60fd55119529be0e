"""Accuracy with a percentile-bootstrap confidence interval, overall and per group."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its percentile-bootstrap interval (resampling items)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Resample in blocks so memory stays bounded for large eval sets (n_boot x n indices).
    means = np.empty(n_boot)
    block = max(1, 2_000_000 // x.size)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(x.mean()), float(low), float(high)


def accuracy(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"n", "accuracy", "ci_low", "ci_high"} for 0/1 (or fractional) per-item scores."""
    mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"n": len(values), "accuracy": mean, "ci_low": low, "ci_high": high}


def grouped_accuracy(values: Sequence[float], groups: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """accuracy() per group label (e.g. MATH subject or level), groups in sorted order."""
    if len(values) != len(groups):
        raise ValueError(f"{len(values)} scores but {len(groups)} group labels")
    by: dict[str, list[float]] = defaultdict(list)
    for v, g in zip(values, groups):
        by[str(g)].append(v)
    return {g: accuracy(by[g], n_boot=n_boot, seed=seed) for g in sorted(by)}
