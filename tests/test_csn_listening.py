"""Table 4.6 (``partsim_core.csn.listening``): cells with intervals, the finding, the paper-beside-ours display.

Expected values are worked out by hand: Clopper-Pearson bounds from the closed-form Beta CDFs of small counts,
bootstrap intervals where every replicate can only give a few known means.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from partsim_core import INSTRUMENTS
from partsim_core.book.thesis_tables import load_thesis_table
from partsim_core.csn.listening import (
    CLAIM,
    ListeningAgreement,
    interval_table,
    paper_beside_ours,
    rate_cell,
    response_matches,
)
from partsim_core.errors import PartsimError


def test_one_seed_is_clopper_pearson_over_responses():
    # 3 of 4 responses match: 75 %. Lower bound: Beta(3, 2) CDF 4x^3 - 3x^4 = 0.025; upper: Beta(4, 1) CDF x^4 = 0.975.
    found = rate_cell([[1, 1, 0, 1]])
    assert found["value"] == pytest.approx(75.0)
    low, high = found["low"] / 100, found["high"] / 100
    assert 4 * low**3 - 3 * low**4 == pytest.approx(0.025, abs=1e-9)
    assert high == pytest.approx(0.975 ** 0.25, abs=1e-9)
    # None of 5: [0, 1 - 0.025^(1/5)]; all of 5: [0.025^(1/5), 1]. A 1-d array is one seed.
    none = rate_cell(np.zeros(5))
    assert (none["value"], none["low"]) == (0.0, 0.0) and none["high"] == pytest.approx(100 * (1 - 0.025 ** 0.2))
    every = rate_cell(np.ones((1, 5)))
    assert every["high"] == 100.0 and every["low"] == pytest.approx(100 * 0.025 ** 0.2)
    assert all(math.isnan(v) for v in rate_cell(np.zeros((1, 0))).values())


def test_several_seeds_pool_the_rate_and_the_interval_includes_their_spread():
    # Seed 0 never matches, seed 1 always: pooled 50 %. Each bootstrap replicate draws one seed's row, so its mean
    # is exactly 0 or 100 and the 95 % interval spans [0, 100] (pooling all 8 responses as one binomial would not).
    found = rate_cell([[0, 0, 0, 0], [1, 1, 1, 1]])
    assert found == {"value": 50.0, "low": 0.0, "high": 100.0}
    assert rate_cell([[1, 1, 1], [1, 1, 1]]) == {"value": 100.0, "low": 100.0, "high": 100.0}
    # Pooled value: (2 + 4) / 8 responses.
    assert rate_cell([[1, 1, 0, 0], [1, 1, 1, 1]])["value"] == pytest.approx(75.0)


def test_response_matches_compare_each_response_with_each_seeds_choice():
    evaluations = {"overall": pd.DataFrame({
        "set_key": ["s1", "s1", "s2", "s3", "s3"],
        "category": ["piano", "piano", "piano", "drums", "drums"],
        "chosen": ["a1", "b1", "a2", "b3", "b3"]})}
    seed0 = pd.Series({"s1": "a1", "s2": "a2", "s3": "a3"})
    seed1 = pd.Series({"s1": "b1", "s2": "b2", "s3": "b3"})
    found = response_matches(evaluations, [seed0, seed1])["overall"]
    np.testing.assert_array_equal(found["piano"], [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(found["drums"], [[0, 0], [1, 1]])
    assert found["bass"].shape == (2, 0)
    assert set(found) == set(INSTRUMENTS)


def _agreement(proposed, baseline, perspective="timbre"):
    matches = {perspective: {"proposed": {"piano": np.asarray(proposed, float)},
                             "baseline": {"piano": np.asarray(baseline, float)}}}
    return ListeningAgreement(matches=matches, source="simulated")


def test_piano_finding_is_a_paired_difference_with_the_verdict_rule():
    timbre = CLAIM.format(perspective="timbre")
    # Every response: proposed matches, baseline does not -> +100 points whatever the resample: holds.
    found = {f["claim"]: f for f in _agreement([[1, 1, 1, 1]], [[0, 0, 0, 0]]).findings()}
    assert found[timbre]["verdict"] == "holds" and found[timbre]["interval"] == [100.0, 100.0]
    assert found[timbre]["estimate"] == 100.0 and found[timbre]["responses"] == 4
    # The same choices -> a difference of exactly 0: does not hold.
    same = {f["claim"]: f for f in _agreement([[1, 0, 1, 0]], [[1, 0, 1, 0]]).findings()}[timbre]
    assert (same["verdict"], same["interval"]) == ("does not hold", [0.0, 0.0])
    # Paired, not two independent rates: +1 and -1 per response, mean 0, the interval straddles 0.
    mixed = {f["claim"]: f for f in _agreement([[1, 0] * 5], [[0, 1] * 5]).findings()}[timbre]
    assert mixed["verdict"] == "inconclusive" and mixed["estimate"] == 0.0
    assert mixed["interval"][0] < 0 < mixed["interval"][1]
    # The other perspective has no rows: not computable -> inconclusive, with a note; a skipped table says why.
    overall = {f["claim"]: f for f in _agreement([[1]], [[0]]).findings()}[CLAIM.format(perspective="overall")]
    assert overall["verdict"] == "inconclusive" and "not computable" in overall["note"]
    skipped = ListeningAgreement(source="skipped: needs condition (i) or (a)").findings()
    assert [f["verdict"] for f in skipped] == ["inconclusive", "inconclusive"]
    assert all("needs condition (i) or (a)" in f["note"] for f in skipped)


def test_cells_layout():
    agreement = ListeningAgreement(matches={"overall": {"proposed": {"drums": np.array([[1.0, 1.0, 0.0, 1.0]]),
                                                                     "bass": np.zeros((1, 0))}}},
                                   source="simulated")
    cells = agreement.cells()
    assert list(cells) == ["overall"] and list(cells["overall"]) == ["proposed"]
    assert cells["overall"]["proposed"]["drums"]["value"] == pytest.approx(75.0)
    assert all(math.isnan(v) for v in cells["overall"]["proposed"]["bass"].values())
    assert ListeningAgreement(source="skipped: x").cells() == {}


def test_paper_beside_ours_keeps_the_printed_cells():
    published = load_thesis_table("4.6a")
    ours = {"proposed": {"drums": {"value": 75.0, "low": 19.412, "high": 99.369},
                         "bass": {"value": math.nan, "low": math.nan, "high": math.nan}}}
    table = paper_beside_ours(published, ours, label="ours (smoke)")
    assert list(table.index) == ["baseline", "proposed"]
    assert list(table.columns[:2]) == [("drums", "paper"), ("drums", "ours (smoke)")]
    # As printed in the thesis (Table 4.6, overall): baseline drums 56.5 ± 3.3, proposed bass 68.3 ± 3.1.
    assert table.at["baseline", ("drums", "paper")] == "56.5 ± 3.3"
    assert table.at["proposed", ("bass", "paper")] == "68.3 ± 3.1"
    assert table.at["baseline", ("guitar", "paper")] == "–"  # the thesis's baseline has no guitar
    assert table.at["proposed", ("drums", "ours (smoke)")] == "75.0 [19.4, 99.4]"
    assert table.at["proposed", ("bass", "ours (smoke)")] == "–"
    assert table.at["baseline", ("drums", "ours (smoke)")] == "–"
    with pytest.raises(PartsimError, match="paper"):
        paper_beside_ours(published, ours, label="paper")
    text = interval_table(ours)
    assert list(text.columns) == list(INSTRUMENTS) and text.at["proposed", "drums"] == "75.0 [19.4, 99.4]"
