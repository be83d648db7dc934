"""Intervals and verdicts: the one rule by which every chapter turns numbers into findings.

Every reproduced accuracy or rate is reported as a *cell* ``{"value", "low", "high"}`` with a 95 % interval, and
every finding ("A is better than B") gets a verdict from the interval of its estimate, never from two point
estimates of one run:

* **Units.** Where the unit of evaluation is one response (a listener's answer), the interval is the exact
  binomial (Clopper-Pearson) interval: :func:`binomial_cell`. Where results are per test item (a test track, a
  query) the interval is a percentile bootstrap over those items: :func:`bootstrap_cell`. With several training
  seeds, each bootstrap replicate also draws a seed at random (:func:`bootstrap_cell` with a ``(seeds, items)``
  array), so the interval includes the seed-to-seed spread.
* **Differences** between two conditions are resampled *paired*: the same items (and seeds) are drawn for both
  (:func:`paired_difference_cell`).
* **Verdict rule** (:func:`verdict`): a claim "estimate > threshold" *holds* when the whole 95 % interval lies
  above the threshold, *does not hold* when the whole interval lies at or below it, and is *inconclusive* when the
  interval contains it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from partsim_core.errors import PartsimError

#: Confidence of every interval the book prints.
CONFIDENCE = 0.95

#: Bootstrap replicates (enough for stable 2.5 / 97.5 % percentiles).
BOOTSTRAP_REPLICATES = 2000

#: The three verdicts a finding can get.
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "inconclusive")


def cell(value: float, low: float, high: float) -> dict[str, float]:
    """A table cell: the estimate and its interval (NaN where undefined)."""
    return {"value": float(value), "low": float(low), "high": float(high)}


def binomial_cell(successes: int, trials: int, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Rate ``successes / trials`` with its exact Clopper-Pearson interval (unit: one response).

    Raises:
        PartsimError: negative counts or more successes than trials.
    """
    k, n = int(successes), int(trials)
    if n < 0 or k < 0 or k > n:
        raise PartsimError(f"binomial counts must satisfy 0 <= successes <= trials, got {k} of {n}")
    if n == 0:
        return cell(math.nan, math.nan, math.nan)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(scipy_stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(scipy_stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return cell(k / n, low, high)


def _as_seed_item_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise PartsimError(f"{name} must be a non-empty (items,) or (seeds, items) array, got shape {array.shape}")
    return array


def _replicate_means(matrix: np.ndarray, weights: np.ndarray | None, rng: np.random.Generator,
                     replicates: int) -> np.ndarray:
    """Means of ``replicates`` bootstrap draws: a random seed row and items drawn with replacement."""
    n_seeds, n_items = matrix.shape
    seed_rows = rng.integers(0, n_seeds, size=replicates)
    items = rng.integers(0, n_items, size=(replicates, n_items))
    drawn = matrix[seed_rows[:, None], items]
    if weights is None:
        return np.nanmean(drawn, axis=1)
    w = weights[items]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(drawn * w, axis=1) / np.sum(np.where(np.isnan(drawn), 0.0, w), axis=1)


def bootstrap_cell(values: Any, weights: Any = None, confidence: float = CONFIDENCE,
                   replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict[str, float]:
    """Mean of per-item values with a percentile-bootstrap interval over items (and seeds).

    Args:
        values: ``(items,)`` per-item values (e.g. a test track's accuracy), or ``(seeds, items)`` for several
            trained seeds evaluated on the same items; NaN items are ignored.
        weights: optional ``(items,)`` weights (e.g. a track's number of segments, so the estimate equals the
            pooled accuracy over segments).
        confidence: interval coverage.
        replicates: bootstrap draws.
        seed: seed of the resampling (the interval is reproducible).

    Returns:
        ``{"value", "low", "high"}``; the value is the (weighted) mean over items and seeds.
    """
    matrix = _as_seed_item_matrix(values, "values")
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w is not None and w.shape[0] != matrix.shape[1]:
        raise PartsimError(f"weights have {w.shape[0]} entries for {matrix.shape[1]} items")
    if w is None:
        value = float(np.nanmean(matrix))
    else:
        mask = ~np.isnan(matrix)
        value = float(np.nansum(matrix * w) / np.sum(mask * w))
    means = _replicate_means(matrix, w, np.random.default_rng(seed), replicates)
    alpha = 1.0 - confidence
    low, high = np.nanquantile(means, [alpha / 2, 1 - alpha / 2])
    return cell(value, low, high)


def paired_difference_cell(first: Any, second: Any, weights: Any = None, confidence: float = CONFIDENCE,
                           replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0) -> dict[str, float]:
    """``mean(first) - mean(second)`` with a paired bootstrap interval: both drawn on the same items and seeds.

    Raises:
        PartsimError: the two arrays do not have the same shape (they must be measured on the same items).
    """
    a = _as_seed_item_matrix(first, "first")
    b = _as_seed_item_matrix(second, "second")
    if a.shape[1] != b.shape[1]:
        raise PartsimError(f"paired difference needs the same items: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] != b.shape[0]:
        # Different numbers of seeds: pair seeds by index modulo the shorter list.
        n = max(a.shape[0], b.shape[0])
        a = a[np.arange(n) % a.shape[0]]
        b = b[np.arange(n) % b.shape[0]]
    return bootstrap_cell(a - b, weights=weights, confidence=confidence, replicates=replicates, seed=seed)


def verdict(interval_cell: dict[str, float], threshold: float = 0.0) -> str:
    """The rule of every finding: ``holds`` when the whole interval lies above ``threshold``, ``does not hold``
    when it lies at or below it, ``inconclusive`` when it contains it (or is undefined)."""
    low, high = interval_cell["low"], interval_cell["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if low > threshold:
        return "holds"
    if high <= threshold:
        return "does not hold"
    return "inconclusive"


def finding(claim: str, estimate_cell: dict[str, float], threshold: float = 0.0, **extra: Any) -> dict[str, Any]:
    """A finding as every chapter's JSON writes it: claim, verdict (by :func:`verdict`), estimate and interval."""
    return {"claim": claim, "verdict": verdict(estimate_cell, threshold), "estimate": estimate_cell["value"],
            "interval": [estimate_cell["low"], estimate_cell["high"]], "threshold": float(threshold), **extra}
