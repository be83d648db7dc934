"""Retrieval metrics against the pseudo-piece ground truth: recall@k, reciprocal rank, the exact expectation of a
random ranking, and table cells with 95 % intervals.

Per query: recall@k = share of the relevant pieces in the top k (k = 10, 100), reciprocal rank = 1 / rank of the
first relevant piece (its mean is the MRR). The random peer's values are **exact** expectations
(:func:`expected_random_metrics`), not a sampled shuffle. Table cells (:func:`metric_cells`) are means over queries
with a percentile-bootstrap 95 % interval over queries (and training seeds), by
:func:`partsim_core.stats.bootstrap_cell`; differences between methods (:func:`difference_cell`) are resampled
paired over the same queries (:func:`partsim_core.stats.paired_difference_cell`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from partsim_core.errors import PartsimError
from partsim_core.mixquery.pseudo_catalog import PseudoCatalog
from partsim_core.mixquery.pseudo_plan import PART_COMBINATIONS
from partsim_core.mixquery.search import SongHit
from partsim_core.stats import bootstrap_cell, paired_difference_cell

#: Cut-offs of recall@k.
RECALL_KS: tuple[int, ...] = (10, 100)

#: Method name of the random peer.
RANDOM_METHOD = "random"

#: Per-query column of each reported metric.
METRIC_COLUMNS: dict[str, str] = {"recall@10": "recall@10", "recall@100": "recall@100", "MRR": "rr"}


def recall_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items among the first ``k`` of ``ranking``.

    Raises:
        PartsimError: no relevant item, or ``k < 1``."""
    relevant = set(relevant)
    if not relevant:
        raise PartsimError("recall needs at least one relevant item")
    if k < 1:
        raise PartsimError(f"k must be at least 1, got {k}")
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def reciprocal_rank(ranking: Sequence[str], relevant: Collection[str]) -> float:
    """``1 / rank`` of the first relevant item of ``ranking`` (ranks from 1), 0 when none is ranked."""
    relevant = set(relevant)
    for rank, item in enumerate(ranking, start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def expected_random_metrics(n_candidates: int, n_relevant: int, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Exact expected recall@k and reciprocal rank of a uniformly random ranking of ``n_candidates`` items of which
    ``n_relevant`` are relevant.

    ``E[recall@k] = min(k, N) / N`` (each relevant item is in the top k with that probability);
    ``E[RR] = sum_r (1 / r) P(first relevant at r)`` with ``P(first at r) = C(N - r, R - 1) / C(N, R)``.

    Raises:
        PartsimError: ``n_relevant`` not in ``1..n_candidates``."""
    n, r = int(n_candidates), int(n_relevant)
    if not 1 <= r <= n:
        raise PartsimError(f"need 1 <= relevant ({r}) <= candidates ({n})")
    total = math.comb(n, r)
    expected_rr = sum(math.comb(n - rank, r - 1) / rank for rank in range(1, n - r + 2)) / total
    out = {f"recall@{k}": min(k, n) / n for k in ks}
    out["rr"] = float(expected_rr)
    return out


def query_metrics(ranking: Sequence[str], relevant: Collection[str], ks: Sequence[int] = RECALL_KS
                  ) -> dict[str, float]:
    """recall@k for every ``k``, reciprocal rank (``rr``) and the rank of the first relevant item."""
    out = {f"recall@{k}": recall_at_k(ranking, relevant, k) for k in ks}
    rr = reciprocal_rank(ranking, relevant)
    out["rr"] = rr
    out["first_relevant_rank"] = round(1.0 / rr) if rr > 0 else math.nan
    return out


def summary_table(per_query: pd.DataFrame, ks: Sequence[int] = RECALL_KS) -> pd.DataFrame:
    """Mean recall@k and MRR per method and part combination, plus an ``all`` row per method.

    Args:
        per_query: One row per (method, query) with ``method``, ``combination``, ``recall@k``, ``rr``.

    Returns:
        Indexed by (method, combination); columns ``recall@k``..., ``MRR``, ``queries``. Methods keep their order
        of appearance; combinations follow :data:`PART_COMBINATIONS`, ``all`` last."""
    columns = [f"recall@{k}" for k in ks]
    methods = list(dict.fromkeys(per_query["method"]))
    order = [f"{a}+{b}" for a, b in PART_COMBINATIONS]
    rows = []
    for method in methods:
        own = per_query[per_query["method"] == method]
        for combination in [c for c in order if c in set(own["combination"])] + ["all"]:
            chosen = own if combination == "all" else own[own["combination"] == combination]
            row = {"method": method, "combination": combination}
            row.update({column: float(chosen[column].mean()) for column in columns})
            row["MRR"] = float(chosen["rr"].mean())
            row["queries"] = int(chosen["query"].nunique()) if "query" in chosen else len(chosen)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["method", "combination"])


def random_rankings(catalog: PseudoCatalog, seed: int = 0) -> dict[str, list[SongHit]]:
    """A seeded uniform shuffle of the catalog (query songs left out) per query; best segment 0, distance NaN."""
    rankings = {}
    ids = catalog.catalog_ids
    for number, query in enumerate(catalog.queries):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7, number]))
        candidates = [song for song in ids if song not in (query.song_a, query.song_b)]
        rankings[query.query_id] = [SongHit(candidates[i], math.nan, 0) for i in rng.permutation(len(candidates))]
    return rankings


def per_query_table(method: str, rankings: Mapping[str, Sequence[SongHit]], catalog: PseudoCatalog,
                    ks: Sequence[int] = RECALL_KS) -> pd.DataFrame:
    """One row per query: method, query, combination, recall@k, rr, first relevant rank, relevant, candidates."""
    rows = []
    for query in catalog.queries:
        ranking = [hit.song for hit in rankings[query.query_id]]
        relevant = catalog.relevant(query)
        row = {"method": method, "query": query.query_id, "combination": query.combination}
        row.update(query_metrics(ranking, relevant, ks))
        row.update({"relevant": len(relevant), "candidates": len(ranking)})
        rows.append(row)
    return pd.DataFrame(rows)


def random_expectation_table(catalog: PseudoCatalog, ks: Sequence[int] = RECALL_KS) -> pd.DataFrame:
    """:func:`per_query_table`'s columns for random ranking, from :func:`expected_random_metrics` (exact)."""
    rows = []
    n_candidates = len(catalog.catalog_ids) - 2
    for query in catalog.queries:
        relevant = catalog.relevant(query)
        row = {"method": RANDOM_METHOD, "query": query.query_id, "combination": query.combination}
        row.update(expected_random_metrics(n_candidates, len(relevant), ks))
        row.update({"first_relevant_rank": math.nan, "relevant": len(relevant), "candidates": n_candidates})
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_query_matrix(per_query: pd.DataFrame, method: str, column: str, combination: str = "all"
                       ) -> tuple[np.ndarray, list[str]]:
    """``(seeds, queries)`` values of one method's metric column (queries sorted; one row without seeds)."""
    own = per_query[per_query["method"] == method]
    if combination != "all":
        own = own[own["combination"] == combination]
    if own.empty:
        raise PartsimError(f"no per-query rows of method {method!r} (combination {combination!r})")
    # Rows without a seed (the exact random expectation) serve every seed.
    seeds = own["seed"].fillna(0) if "seed" in own else pd.Series(0, index=own.index)
    wide = own.assign(seed=seeds).pivot_table(index="seed", columns="query", values=column, aggfunc="first")
    return wide.to_numpy(dtype=np.float64), [str(query) for query in wide.columns]


def metric_cells(per_query: pd.DataFrame, seed: int = 0) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{method: {combination or "all": {metric: cell}}}``: mean over queries (and seeds) with a bootstrap 95 %
    interval over queries (and seeds), for recall@10, recall@100 and MRR.

    Args:
        per_query: Rows of :func:`per_query_table` (a ``seed`` column when several seeds were run).
        seed: Seeds the resampling."""
    order = [f"{a}+{b}" for a, b in PART_COMBINATIONS]
    present = set(per_query["combination"])
    out: dict[str, dict] = {}
    for method in dict.fromkeys(per_query["method"]):
        out[method] = {}
        for combination in [c for c in order if c in present] + ["all"]:
            out[method][combination] = {
                name: bootstrap_cell(_seed_query_matrix(per_query, method, column, combination)[0], seed=seed)
                for name, column in METRIC_COLUMNS.items()}
    return out


def difference_cell(per_query: pd.DataFrame, first: str, second: str, metric: str = "MRR", seed: int = 0
                    ) -> dict[str, float]:
    """``metric(first) - metric(second)`` over all queries, resampled paired (the same queries and seeds).

    Raises:
        PartsimError: the two methods were not measured on the same queries."""
    column = METRIC_COLUMNS[metric]
    a, queries_a = _seed_query_matrix(per_query, first, column)
    b, queries_b = _seed_query_matrix(per_query, second, column)
    if queries_a != queries_b:
        raise PartsimError(f"methods {first!r} and {second!r} were not measured on the same queries")
    return paired_difference_cell(a, b, seed=seed)


def cells_table(cells: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]) -> pd.DataFrame:
    """:func:`metric_cells` as a long table: method, combination, metric, value, low, high."""
    return pd.DataFrame([{"method": method, "combination": combination, "metric": metric, **cell}
                         for method, by_combination in cells.items()
                         for combination, by_metric in by_combination.items()
                         for metric, cell in by_metric.items()])
