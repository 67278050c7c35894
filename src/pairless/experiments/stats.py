"""The statistics a method comparison needs: a paired test over test images, a rank correlation with a CI.

* :func:`paired_test` — Wilcoxon's signed-rank test of two methods scored on the *same* test images
  (scipy's exact null distribution for up to 50 untied differences, the normal approximation
  beyond).  Pairing removes the image-to-image spread, which is far larger than the gaps between
  normalization presets; a difference of means over folds cannot see those gaps.
* :func:`holm` — Holm's step-down adjustment when several such tests are read together.
* :func:`spearman` — Spearman's ρ between two tables' values of the same rows, with a confidence
  interval from Fisher's z with Bonett & Wright's (2000) standard error for Spearman's ρ,
  ``sqrt((1 + ρ²/2) / (n - 3))``: with the 4–8 rows two EM tables share, a bootstrap over rows is
  too coarse to be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pairless.errors import PairlessError


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (one value per test image, same order).

    Returns ``n``, the median and mean of ``a - b``, the statistic ``W`` (scipy's: the smaller
    signed-rank sum) and ``p``.  All-zero differences give ``p = 1``.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise PairlessError(
            f"a paired test needs two equally long, non-empty lists of scores (got {a.shape} and {b.shape}); "
            "score both methods on the same test images"
        )
    d = a - b
    out = {"n": int(d.size), "median_diff": float(np.median(d)), "mean_diff": float(np.mean(d))}
    if not np.any(d != 0):
        return {**out, "W": 0.0, "p": 1.0}
    res = wilcoxon(a, b, alternative="two-sided", zero_method="wilcox")
    return {**out, "W": float(res.statistic), "p": float(res.pvalue)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values (same order as given): family-wise error control for several tests."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


def spearman(x: Sequence[float], y: Sequence[float], *, level: float = 0.95) -> dict[str, float]:
    """Spearman's ρ of ``x`` and ``y`` with a ``level`` confidence interval (``nan`` for n < 4).

    Returns ``rho``, ``low``, ``high``, ``n`` and the permutation-free two-sided ``p`` scipy gives.
    """
    from scipy.stats import norm, spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise PairlessError(f"a rank correlation needs two equally long lists (got {x.shape} and {y.shape})")
    n = int(x.size)
    if n < 3:
        return {"rho": float("nan"), "low": float("nan"), "high": float("nan"), "n": n, "p": float("nan")}
    res = spearmanr(x, y)
    rho = float(res.statistic)
    low = high = float("nan")
    if n >= 4 and np.isfinite(rho):
        r = float(np.clip(rho, -0.999999, 0.999999))
        se = math.sqrt((1.0 + r * r / 2.0) / (n - 3))
        half = float(norm.ppf(0.5 + level / 2.0)) * se
        low, high = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    return {"rho": rho, "low": low, "high": high, "n": n, "p": float(res.pvalue)}
