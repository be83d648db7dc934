"""The C0-C3 listening test of thesis 6.4.1 (Table 6.1, Fig. 6.8), run with **simulated** listeners.

For every query (two stems of different songs) and method, the catalog is ranked; the target is rank 1, the
comparison rank ``m`` is drawn uniformly per strategy from the thesis's ranges rescaled to the ``N`` ranked songs
(:func:`comparison_rank_ranges`: C0 = 2..max(2, round(100 / 3108 N)), C1-C3 the remaining ranks in three equal
parts; at N = 3108 exactly the thesis's 2-100, 101-1103, 1104-2106, 2107-3108). Listeners are **simulated** from the
generator's ground truth: a candidate scores, per query part, 1 when its part comes from the query's source track,
else 0.5 when it has the same style, else 0 - and 0 when the part does not play at least half of the 10-s segment
listened to (the candidate's best segment) - summed over the query's two parts. A listener picks the target when
``score(target) - score(comparison) + s e > 0`` (``e`` standard normal per answer, ``s`` the listener's noise level
drawn uniformly from ``listener_noise``; an exact tie is a coin flip). Every listener answers every trial; the same
draws serve every method (common random numbers).

Accuracy per strategy is a rate of single responses, so its 95 % interval in the tables is the exact binomial
(Clopper-Pearson) interval of :func:`partsim_core.stats.binomial_cell` (the thesis used Wilson's score interval).
The answers to one query set share its target and comparison, so a *finding* about a strategy resamples query sets
(and seeds) instead (:meth:`SimulatedABX.query_accuracy` with :func:`partsim_core.stats.bootstrap_cell`). **These are not
listeners**: the numbers say how well a ranking follows the generator's notion of "same track / same style",
nothing about people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from partsim_core.errors import PartsimError
from partsim_core.mixquery.catalog import SEGMENT_SECONDS
from partsim_core.mixquery.ground_truth import audible
from partsim_core.mixquery.pseudo_catalog import PseudoCatalog
from partsim_core.mixquery.pseudo_plan import EvaluationQuery
from partsim_core.mixquery.search import SongHit
from partsim_core.stats import binomial_cell

#: The thesis's retrieval catalog (6.3.1) and the last rank of strategy C0 (6.4.1).
THESIS_CATALOG_SONGS = 3108
THESIS_C0_LAST_RANK = 100

#: Comparison strategies of thesis 6.4.1.
STRATEGIES: tuple[str, ...] = ("C0", "C1", "C2", "C3")

#: Score of a candidate's part from the query's source track, and from another track of the same style.
SAME_TRACK_SCORE = 1.0
SAME_STYLE_SCORE = 0.5

#: Label of every simulated listening-test output.
SIMULATED = "SIMULATED"


def comparison_rank_ranges(n_ranked: int, thesis_songs: int = THESIS_CATALOG_SONGS,
                           thesis_c0_last: int = THESIS_C0_LAST_RANK) -> dict[str, tuple[int, int]]:
    """Inclusive rank ranges of strategies C0-C3 for a ranking of ``n_ranked`` songs (thesis 6.4.1, rescaled).

    C0 = ``2 .. max(2, round(thesis_c0_last / thesis_songs * n))``; the ranks after it split into three parts of
    equal size (the first parts one larger when the count is not divisible by 3), as the thesis's 101-1103,
    1104-2106, 2107-3108 for n = 3108.

    Raises:
        PartsimError: fewer ranks than the four strategies need (n < 5).
    """
    n = int(n_ranked)
    c0_last = max(2, round(thesis_c0_last / thesis_songs * n))
    rest = n - c0_last
    if rest < 3:
        raise PartsimError(f"a ranking of {n} songs is too short for the four comparison strategies (needs >= 5)")
    sizes = [rest // 3 + (1 if part < rest % 3 else 0) for part in range(3)]
    ranges = {"C0": (2, c0_last)}
    first = c0_last + 1
    for strategy, size in zip(STRATEGIES[1:], sizes):
        ranges[strategy] = (first, first + size - 1)
        first += size
    return ranges



def strategy_ranges(n_ranked: int) -> pd.DataFrame:
    """Rank ranges of C0-C3 at the thesis's catalog size (Table 6.1's design) and rescaled to ``n_ranked`` songs
    (the notebook joins the thesis's query sets and ranks from its Table 6.1)."""
    thesis = comparison_rank_ranges(THESIS_CATALOG_SONGS)
    ours = comparison_rank_ranges(n_ranked)
    return pd.DataFrame([{"strategy": strategy,
                          "thesis ranks": f"{thesis[strategy][0]}-{thesis[strategy][1]} of {THESIS_CATALOG_SONGS}",
                          "ours ranks": f"{ours[strategy][0]}-{ours[strategy][1]} of {n_ranked}"}
                         for strategy in STRATEGIES]).set_index("strategy")


def listener_score(catalog: PseudoCatalog, candidate: str, segment: int, query: EvaluationQuery,
                   segment_seconds: float = SEGMENT_SECONDS) -> float:
    """Ground-truth match of a candidate's segment to the query's two stems (see the module docstring).

    Per query part: 0 when the candidate lacks the part or it does not sound in the candidate's 10-s segment
    ``segment`` (pieces are aligned from 0, so a piece's part sounds where its source's does);
    :data:`SAME_TRACK_SCORE` when it comes from the query's source song; :data:`SAME_STYLE_SCORE` when its style
    equals the query part's; else 0. Summed over the two parts.
    """
    start = segment * segment_seconds
    end = min(start + segment_seconds, catalog.seconds(candidate))
    sources = catalog.sources(candidate)
    score = 0.0
    for song, part in ((query.song_a, query.part_a), (query.song_b, query.part_b)):
        source = sources.get(part)
        if source is None:
            continue
        truth = catalog.part_truth(source, part)
        if not audible(truth, start, end):
            continue
        if source == song:
            score += SAME_TRACK_SCORE
        elif truth.get("style") == (catalog.part_truth(song, part) or {}).get("style"):
            score += SAME_STYLE_SCORE
    return score


@dataclass
class SimulatedABX:
    """The simulated C0-C3 listening test (**SIMULATED**: listeners follow the generator's ground truth).

    Attributes:
        ranges: Rank range of each strategy.
        n_ranked: Songs in each ranking (catalog minus the two query songs).
        listeners: Number of simulated listeners.
        noise: Each listener's noise level.
        trials: One row per (method, query, strategy, listener): rank, target, comparison, both scores, correct.
    """

    ranges: dict[str, tuple[int, int]]
    n_ranked: int
    listeners: int
    noise: list[float]
    trials: pd.DataFrame
    label: str = SIMULATED

    def accuracy(self, by_part: bool = False) -> pd.DataFrame:
        """Accuracy (share of answers choosing the target) with exact binomial 95 % intervals per method and
        strategy (and query part with ``by_part``: a trial counts for both of its parts, as thesis Fig. 6.8)."""
        trials = self.trials
        keys = ["method", "strategy"]
        if by_part:
            trials = pd.concat([trials.assign(part=trials["part_a"]), trials.assign(part=trials["part_b"])])
            keys.append("part")
        rows = []
        for key, group in trials.groupby(keys, sort=False):
            correct, n = int(group["correct"].sum()), len(group)
            interval = binomial_cell(correct, n)
            rows.append({**dict(zip(keys, key)), "answers": n, "correct": correct, "accuracy": interval["value"],
                         "ci_low": interval["low"], "ci_high": interval["high"], "label": self.label})
        return pd.DataFrame(rows).set_index(keys)

    def query_accuracy(self, method: str, strategy: str) -> np.ndarray:
        """``(seeds, queries)`` share of the listeners choosing the target per query set (and seed): the answers of
        one query set share its target and comparison, so findings resample query sets, not answers."""
        chosen = self.trials[(self.trials["method"] == method) & (self.trials["strategy"] == strategy)]
        if chosen.empty:
            raise PartsimError(f"no simulated answers of method {method!r} under strategy {strategy!r}")
        seeds = chosen["seed"] if "seed" in chosen else pd.Series(0, index=chosen.index)
        wide = chosen.assign(seed=seeds).pivot_table(index="seed", columns="query", values="correct", aggfunc="mean")
        return wide.to_numpy(dtype=np.float64)

    def cells(self, by_part: bool = False) -> dict[str, Any]:
        """``{method: {strategy: cell}}`` (with ``by_part``: ``{method: {part: {strategy: cell}}}``)."""
        out: dict[str, Any] = {}
        for key, row in self.accuracy(by_part).iterrows():
            method, strategy, *part = key
            target = out.setdefault(method, {})
            if part:
                target = target.setdefault(part[0], {})
            target[strategy] = {"value": float(row["accuracy"]), "low": float(row["ci_low"]),
                                "high": float(row["ci_high"])}
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (ranges, accuracy cells; not the single answers)."""
        return {"label": self.label,
                "note": "SIMULATED listeners that follow the generator's ground truth, not people; intervals: exact "
                        "binomial (Clopper-Pearson), unit = one answer",
                "ranges": {strategy: list(bounds) for strategy, bounds in self.ranges.items()},
                "n_ranked": self.n_ranked, "listeners": self.listeners, "noise": self.noise,
                "accuracy": self.cells(), "accuracy_by_part": self.cells(by_part=True)}


def simulate_abx(rankings: Mapping[str, Mapping[str, Sequence[SongHit]]], catalog: PseudoCatalog,
                 listeners: int = 15, listener_noise: tuple[float, float] = (0.2, 0.6), seed: int = 0,
                 segment_seconds: float = SEGMENT_SECONDS) -> SimulatedABX:
    """Run the simulated C0-C3 test (module docstring) on every method's rankings.

    Args:
        rankings: ``{method: {query id: ranked SongHits}}`` (query songs left out, every ranking equally long).
        catalog: The pseudo-piece catalog (ground truth).
        listeners: Simulated listeners.
        listener_noise: Range of their noise levels.
        seed: Seeds the comparison ranks, the listeners' noise levels and answers (shared by all methods).
        segment_seconds: Length of the segments listened to.

    Raises:
        PartsimError: no rankings, rankings of different lengths, or too short for the strategies.
    """
    if not rankings:
        raise PartsimError("the simulated listening test needs at least one method's rankings")
    queries = catalog.queries
    lengths = {len(ranked[query.query_id]) for ranked in rankings.values() for query in queries}
    if len(lengths) != 1:
        raise PartsimError(f"rankings of different lengths {sorted(lengths)}: every method must rank the same catalog")
    n_ranked = lengths.pop()
    ranges = comparison_rank_ranges(n_ranked)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 8]))
    low, high = listener_noise
    noise = rng.uniform(low, high, size=listeners)
    # Shared draws: comparison rank per (query, strategy); answer noise and coin per (query, strategy, listener).
    ranks = np.array([[int(rng.integers(ranges[s][0], ranges[s][1] + 1)) for s in STRATEGIES] for _ in queries])
    errors = rng.standard_normal((len(queries), len(STRATEGIES), listeners))
    coins = rng.random((len(queries), len(STRATEGIES), listeners)) < 0.5
    rows = []
    for method, ranked in rankings.items():
        for q_number, query in enumerate(queries):
            hits = ranked[query.query_id]
            target = hits[0]
            target_score = listener_score(catalog, target.song, target.best_segment, query, segment_seconds)
            for s_number, strategy in enumerate(STRATEGIES):
                rank = int(ranks[q_number, s_number])
                comparison = hits[rank - 1]
                comparison_score = listener_score(catalog, comparison.song, comparison.best_segment, query,
                                                  segment_seconds)
                for listener in range(listeners):
                    margin = target_score - comparison_score + noise[listener] * errors[q_number, s_number, listener]
                    correct = bool(coins[q_number, s_number, listener]) if margin == 0 else bool(margin > 0)
                    rows.append({"method": method, "query": query.query_id, "combination": query.combination,
                                 "part_a": query.part_a, "part_b": query.part_b, "strategy": strategy, "rank": rank,
                                 "target": target.song, "comparison": comparison.song,
                                 "target_score": target_score, "comparison_score": comparison_score,
                                 "listener": listener, "correct": correct})
    return SimulatedABX(ranges, n_ranked, listeners, [float(value) for value in noise], pd.DataFrame(rows))

