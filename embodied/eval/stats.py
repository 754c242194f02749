"""Confidence intervals for benchmark tables.

Success is a Bernoulli mean: the Wilson score interval (good coverage at small n and near 0/1,
never leaves [0, 1]). SPL and other bounded continuous measures: a seeded percentile bootstrap
of the mean (no normality assumption; deterministic for a given seed).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n."""
    if n <= 0:
        raise ValueError(f"n={n}: need at least one episode")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes}: must be in [0, n={n}]")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends despite rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def bootstrap_interval(values, confidence: float = 0.95, samples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_interval: no values")
    _z(confidence)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarize(values, binary: bool = False, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """{"mean", "ci_low", "ci_high", "n"} with Wilson (binary) or bootstrap intervals."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize: no values")
    lo, hi = wilson_interval(float(x.sum()), int(x.size), confidence) if binary else \
        bootstrap_interval(x, confidence, seed=seed)
    return {"mean": float(x.mean()), "ci_low": lo, "ci_high": hi, "n": int(x.size)}
