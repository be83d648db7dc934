"""Chapter 6 metrics (``partsim_core.mixquery.metrics``): recall and reciprocal rank by hand, the random peer's exact
expectation against brute force and an independent formula, means per combination, and interval cells."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from partsim_core.errors import PartsimError
from partsim_core.mixquery import metrics as ev


def test_recall_and_reciprocal_rank_by_hand():
    ranking = ["x1", "r1", "x2", "x3", "r2", "x4", "r3", "x5"]
    relevant = {"r1", "r2", "r3"}
    assert ev.recall_at_k(ranking, relevant, 1) == 0.0
    assert ev.recall_at_k(ranking, relevant, 2) == pytest.approx(1 / 3)
    assert ev.recall_at_k(ranking, relevant, 5) == pytest.approx(2 / 3)
    assert ev.recall_at_k(ranking, relevant, 7) == 1.0
    assert ev.recall_at_k(ranking, relevant, 100) == 1.0
    assert ev.reciprocal_rank(ranking, relevant) == 0.5
    assert ev.reciprocal_rank(["x", "y", "z", "r"], {"r"}) == 0.25
    assert ev.reciprocal_rank(["x", "y"], {"r"}) == 0.0
    metrics = ev.query_metrics(ranking, relevant, ks=(2, 7))
    assert metrics == {"recall@2": pytest.approx(1 / 3), "recall@7": 1.0, "rr": 0.5, "first_relevant_rank": 2}
    # A relevant item missing from the ranking counts against recall.
    assert ev.recall_at_k(["r1", "x"], {"r1", "gone"}, 10) == 0.5
    with pytest.raises(PartsimError):
        ev.recall_at_k(ranking, set(), 10)


def test_summary_table_means_per_method_and_combination():
    per_query = pd.DataFrame([
        {"method": "m", "query": "q0", "combination": "drums+bass", "recall@10": 1.0, "recall@100": 1.0, "rr": 1.0},
        {"method": "m", "query": "q1", "combination": "drums+bass", "recall@10": 0.0, "recall@100": 1.0, "rr": 0.1},
        {"method": "m", "query": "q2", "combination": "bass+piano", "recall@10": 0.5, "recall@100": 0.5, "rr": 0.5},
    ])
    table = ev.summary_table(per_query)
    assert list(table.index) == [("m", "drums+bass"), ("m", "bass+piano"), ("m", "all")]
    assert table.loc[("m", "drums+bass"), "recall@10"] == 0.5
    assert table.loc[("m", "drums+bass"), "MRR"] == pytest.approx(0.55)
    assert table.loc[("m", "all"), "recall@100"] == pytest.approx(2.5 / 3)
    assert table.loc[("m", "all"), "queries"] == 3


@pytest.mark.parametrize("n, r", [(1, 1), (5, 1), (6, 2), (7, 3), (6, 6)])
def test_random_expectation_equals_the_mean_over_all_rankings(n, r):
    items = [f"i{number}" for number in range(n)]
    relevant = set(items[:r])
    rankings = list(itertools.permutations(items))
    expected = ev.expected_random_metrics(n, r, ks=(1, 3, 10))
    for k in (1, 3, 10):
        brute = np.mean([ev.recall_at_k(ranking, relevant, k) for ranking in rankings])
        assert expected[f"recall@{k}"] == pytest.approx(brute, abs=1e-12)
    brute_rr = np.mean([ev.reciprocal_rank(ranking, relevant) for ranking in rankings])
    assert expected["rr"] == pytest.approx(brute_rr, abs=1e-12)


def test_random_expectation_of_a_large_catalog_from_the_survival_function():
    # E[1/X] from P(X > r) = C(N - r, R) / C(N, R) (first relevant beyond rank r), summed exactly with fractions.
    n, r = 250, 4
    survival = [Fraction(math.comb(n - rank, r), math.comb(n, r)) for rank in range(n + 1)]
    exact = sum(Fraction(1, rank) * (survival[rank - 1] - survival[rank]) for rank in range(1, n + 1))
    expected = ev.expected_random_metrics(n, r)
    assert expected["rr"] == pytest.approx(float(exact), rel=1e-12)
    assert expected["recall@10"] == pytest.approx(10 / 250)
    assert expected["recall@100"] == pytest.approx(100 / 250)
    with pytest.raises(PartsimError):
        ev.expected_random_metrics(3, 4)



def per_query_frame(values: dict[str, list[float]], seeds: int = 1) -> pd.DataFrame:
    rows = []
    for method, column in values.items():
        for seed in range(seeds):
            for number, value in enumerate(column):
                rows.append({"method": method, "query": f"q{number}", "combination": "drums+bass", "seed": seed,
                             "recall@10": value, "recall@100": 1.0, "rr": value + 0.01 * seed})
    return pd.DataFrame(rows)


def test_metric_cells_are_means_with_intervals_over_queries():
    frame = per_query_frame({"a": [1.0, 0.5, 0.25, 1.0], "b": [0.5, 0.5, 0.5, 0.5]})
    cells = ev.metric_cells(frame)
    assert set(cells) == {"a", "b"} and set(cells["a"]) == {"drums+bass", "all"}
    mrr = cells["a"]["all"]["MRR"]
    assert mrr["value"] == pytest.approx(2.75 / 4)
    assert 0.25 <= mrr["low"] < mrr["value"] < mrr["high"] <= 1.0
    constant = cells["b"]["all"]["MRR"]  # no spread over queries: a point interval
    assert constant["low"] == constant["high"] == pytest.approx(0.5)
    # Seeds enter the estimate and the interval.
    seeded = ev.metric_cells(per_query_frame({"b": [0.5, 0.5, 0.5, 0.5]}, seeds=3))["b"]["all"]["MRR"]
    assert seeded["value"] == pytest.approx(0.51)
    assert seeded["low"] == pytest.approx(0.5) and seeded["high"] == pytest.approx(0.52)


def test_difference_cell_is_paired_over_the_same_queries():
    # b = a + 0.1 on every query: the paired difference has no spread although the queries vary widely.
    a = [0.1, 0.9, 0.3, 0.7, 0.5]
    frame = per_query_frame({"a": a, "b": [value + 0.1 for value in a]})
    cell = ev.difference_cell(frame, "b", "a")
    assert cell["value"] == pytest.approx(0.1)
    assert cell["low"] == pytest.approx(0.1) and cell["high"] == pytest.approx(0.1)
    other = frame[frame["method"] == "a"].assign(method="c", query=lambda f: "x" + f["query"])
    with pytest.raises(PartsimError, match="same queries"):
        ev.difference_cell(pd.concat([frame, other]), "a", "c")
