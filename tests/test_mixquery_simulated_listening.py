"""The simulated C0-C3 test (``partsim_core.mixquery.simulated_listening``): the rank ranges against the thesis's,
the listener's score on a hand-made manifest, and simulated answers that follow the scores and share their draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from partsim_core.errors import PartsimError
from partsim_core.mixquery import pseudo_catalog
from partsim_core.mixquery import simulated_listening as ev
from partsim_core.mixquery.pseudo_plan import EvaluationQuery
from partsim_core.mixquery.search import SongHit


def test_comparison_ranges_at_the_thesis_size_are_the_thesis_ranges():
    assert ev.comparison_rank_ranges(3108) == {"C0": (2, 100), "C1": (101, 1103), "C2": (1104, 2106),
                                               "C3": (2107, 3108)}


@pytest.mark.parametrize("n", [5, 6, 7, 58, 100, 218, 1000, 5000])
def test_comparison_ranges_cover_ranks_2_to_n_in_order(n):
    ranges = ev.comparison_rank_ranges(n)
    assert list(ranges) == ["C0", "C1", "C2", "C3"]
    assert ranges["C0"] == (2, max(2, round(100 / 3108 * n)))
    covered = [rank for low, high in ranges.values() for rank in range(low, high + 1)]
    assert covered == list(range(2, n + 1))
    sizes = [high - low + 1 for strategy, (low, high) in ranges.items() if strategy != "C0"]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)


def test_comparison_ranges_refuse_a_too_short_ranking():
    with pytest.raises(PartsimError, match="too short"):
        ev.comparison_rank_ranges(4)


def test_strategy_ranges_beside_the_thesis_design():
    table = ev.strategy_ranges(58)
    assert list(table.index) == ["C0", "C1", "C2", "C3"]
    assert table.loc["C0", "thesis ranks"] == "2-100 of 3108"
    assert table.loc["C3", "thesis ranks"] == "2107-3108 of 3108"
    assert table.loc["C3", "ours ranks"].endswith("of 58")


def hand_catalog(tmp_path: Path) -> tuple[pseudo_catalog.PseudoCatalog, EvaluationQuery]:
    """A manifest-only catalog: A (drums rock 0-20 s, bass funk 0-5 s), B (bass funk), C (drums rock, bass octave),
    D (drums jazz, bass funk); pieces from them; the query is A's drums + B's bass."""
    def song(drums, bass, bass_active=((0.0, 20.0),)):
        return {"seconds": 20.0, "samples": 2000, "truth": {"parts": {
            "drums": {"style": drums, "active": [[0.0, 20.0]]},
            "bass": {"style": bass, "active": [list(span) for span in bass_active]}}}}

    def piece(drums, bass):
        return {"kind": "random", "query": None, "seconds": 20.0, "samples": 2000,
                "sources": {"drums": drums, "bass": bass, "piano": None, "guitar": None, "others": None}}

    query = EvaluationQuery("q000", "A", "drums", 0, "B", "bass", 0)
    manifest = {"format_version": pseudo_catalog.CATALOG_FORMAT_VERSION, "key": "hand",
                "songs": {"A": song("rock", "funk", ((0.0, 5.0),)), "B": song("jazz", "funk"),
                          "C": song("rock", "octave"), "D": song("jazz", "funk")},
                "pieces": {"P1": piece("A", "B"), "P2": piece("C", "B"), "P3": piece("A", "A"), "P4": piece("D", "C"),
                           "P5": piece(None, "D"), "P6": piece("C", "C")},
                "queries": [query.to_dict()]}
    return pseudo_catalog.PseudoCatalog(tmp_path, manifest), query


def test_listener_score_by_hand(tmp_path):
    catalog, query = hand_catalog(tmp_path)
    score = ev.listener_score
    assert score(catalog, "P1", 0, query) == 2.0  # A's drums + B's bass
    assert score(catalog, "P2", 0, query) == 1.5  # drums of the same style (rock) + B's bass
    assert score(catalog, "P3", 0, query) == 1.5  # A's drums + a funk bass that plays 5 of 10 s
    assert score(catalog, "P3", 1, query) == 1.0  # 10-20 s: A's bass is silent
    assert score(catalog, "P4", 0, query) == 0.0  # jazz drums, octave bass
    assert score(catalog, "P5", 0, query) == 0.5  # no drums, a funk bass
    assert score(catalog, "C", 0, query) == 0.5  # a test song: rock drums, octave bass
    assert catalog.relevant(query) == ["P1"]


def test_simulated_listeners_follow_scores_and_share_draws(tmp_path):
    catalog, query = hand_catalog(tmp_path)
    order = ["P1", "P2", "P3", "P5", "C", "P6", "D", "P4"]  # ranked by score, best first (ties in any order)
    good = {query.query_id: [SongHit(song, 0.0, 0) for song in order]}
    bad = {query.query_id: [SongHit(song, 0.0, 0) for song in reversed(order)]}
    result = ev.simulate_abx({"good": good, "same": good, "bad": bad}, catalog, listeners=40,
                             listener_noise=(0.0, 0.0), seed=3)
    trials = result.trials
    assert result.n_ranked == 8 and result.label == "SIMULATED"
    assert len(trials) == 3 * 4 * 40
    for strategy, (low, high) in result.ranges.items():
        ranks = trials.loc[trials["strategy"] == strategy, "rank"]
        assert ranks.between(low, high).all()
    # Without noise the answer is the sign of the score difference; an exact tie is a coin flip.
    decided = trials[trials["target_score"] != trials["comparison_score"]]
    assert (decided["correct"] == (decided["target_score"] > decided["comparison_score"])).all()
    # Identical rankings get identical answers (common random numbers).
    columns = ["strategy", "rank", "listener", "correct"]
    np.testing.assert_array_equal(trials.loc[trials["method"] == "good", columns].to_numpy(),
                                  trials.loc[trials["method"] == "same", columns].to_numpy())
    accuracy = result.accuracy()
    assert accuracy.loc[("good", "C3"), "accuracy"] == 1.0 and accuracy.loc[("bad", "C3"), "accuracy"] == 0.0
    # Exact binomial intervals, unit = one answer: for 40 of 40 the lower bound is 0.025 ** (1 / 40).
    row = accuracy.loc[("good", "C3")]
    assert row["answers"] == 40 and row["ci_high"] == 1.0
    assert row["ci_low"] == pytest.approx(0.025 ** (1 / 40), rel=1e-9)
    assert result.cells()["good"]["C3"] == {"value": 1.0, "low": row["ci_low"], "high": 1.0}
    # Findings resample query sets: one query here, the share of its 40 listeners choosing the target.
    np.testing.assert_array_equal(result.query_accuracy("good", "C3"), [[1.0]])
    np.testing.assert_array_equal(result.query_accuracy("bad", "C3"), [[0.0]])
    with pytest.raises(PartsimError, match="no simulated answers"):
        result.query_accuracy("nobody", "C3")
    by_part = result.accuracy(by_part=True)
    assert set(by_part.index.get_level_values("part")) == {"drums", "bass"}
    assert by_part["answers"].sum() == 2 * len(trials)
    again = ev.simulate_abx({"good": good, "same": good, "bad": bad}, catalog, listeners=40,
                            listener_noise=(0.0, 0.0), seed=3)
    pd.testing.assert_frame_equal(trials, again.trials)
    json.dumps(result.to_json())
    with pytest.raises(PartsimError, match="different lengths"):
        ev.simulate_abx({"good": good, "short": {query.query_id: good[query.query_id][:-1]}}, catalog)

