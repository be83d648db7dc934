"""The one interval and verdict rule (partsim_core.stats)."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from partsim_core.errors import PartsimError
from partsim_core.stats import (
    binomial_cell,
    bootstrap_cell,
    finding,
    paired_difference_cell,
    verdict,
)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (57, 200)])
def test_binomial_cell_matches_scipy_exact_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    got = binomial_cell(k, n)
    assert got["value"] == pytest.approx(k / n)
    assert got["low"] == pytest.approx(expected.low, abs=1e-9)
    assert got["high"] == pytest.approx(expected.high, abs=1e-9)


def test_binomial_cell_refuses_impossible_counts():
    with pytest.raises(PartsimError, match="successes"):
        binomial_cell(5, 3)
    assert math.isnan(binomial_cell(0, 0)["value"])


def test_bootstrap_of_constant_items_has_zero_width():
    got = bootstrap_cell(np.full(30, 0.7))
    assert got == pytest.approx({"value": 0.7, "low": 0.7, "high": 0.7})


def test_bootstrap_interval_covers_mean_and_shrinks_with_more_items():
    rng = np.random.default_rng(1)
    small = bootstrap_cell(rng.normal(0.5, 0.1, 20))
    large = bootstrap_cell(rng.normal(0.5, 0.1, 2000))
    assert small["low"] < 0.5 < small["high"]
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 3


def test_weighted_value_is_pooled_mean():
    values, weights = np.array([1.0, 0.0]), np.array([3.0, 1.0])
    assert bootstrap_cell(values, weights=weights)["value"] == pytest.approx(0.75)


def test_seed_spread_widens_the_interval():
    items = np.linspace(0.4, 0.6, 50)
    one_seed = bootstrap_cell(items)
    seeds = np.stack([items - 0.1, items, items + 0.1])
    several = bootstrap_cell(seeds)
    assert several["high"] - several["low"] > 2 * (one_seed["high"] - one_seed["low"])


def test_paired_difference_sees_a_small_consistent_shift_that_unpaired_noise_hides():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 40)  # large item-to-item spread
    better = base + 0.02
    diff = paired_difference_cell(better, base)
    assert diff["value"] == pytest.approx(0.02)
    assert verdict(diff) == "holds"
    with pytest.raises(PartsimError, match="same items"):
        paired_difference_cell(base, base[:-1])


@pytest.mark.parametrize("low,high,threshold,expected", [
    (0.1, 0.3, 0.0, "holds"), (-0.3, -0.1, 0.0, "does not hold"), (-0.1, 0.2, 0.0, "inconclusive"),
    (0.2, 0.5, 0.1, "holds"), (0.0, 0.05, 0.1, "does not hold"), (math.nan, 1.0, 0.0, "inconclusive")])
def test_verdict_rule(low, high, threshold, expected):
    assert verdict({"value": 0.0, "low": low, "high": high}, threshold) == expected


def test_finding_schema():
    got = finding("a > b", {"value": 0.2, "low": 0.1, "high": 0.3})
    assert got["verdict"] == "holds" and got["estimate"] == 0.2 and got["interval"] == [0.1, 0.3]
