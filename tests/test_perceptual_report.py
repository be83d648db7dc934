"""Chapter-page helpers of chapter 5 (thesis-vs-ours tables, matrices, interval strings, stimulus selection)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from partsim_core.perceptual import (
    agreement_matrix,
    category_agreement,
    data_description,
    filter_layouts,
    filter_summary,
    interval_layout,
    kept_stimulus_paths,
    mean_log_mel_embedding,
    printed_rates,
    text_checks,
    with_printed,
)
from partsim_core.perceptual.abx import read_answers_csv
from partsim_core.perceptual.analysis import agreement_filter

HEADER = (",ex_name,subject_id,reference,sample_a,sample_b,answer_timbre,answer_rhythm,answer_melody,answer_total,"
          "choice_time")
X, A, B = "set0/0/drums/X_1-0.wav", "set0/0/drums/A_2-0.wav", "set0/0/drums/B_3-0.wav"
MX, MA, MB = "set0/0/mix/X_1-3.wav", "set0/0/mix/A_2-3.wav", "set0/0/mix/B_3-3.wav"


@pytest.fixture()
def responses(tmp_path):
    rows = [f"ex1,p{i},{X},{A},{B},A+,A+,{melody},A+,1000" for i, melody in enumerate(["NA", "NA", "NA", "A-", "NA"])]
    rows += [f"ex1,p{i},{MX},{MA},{MB},B+,B+,B+,{overall},1000" for i, overall in enumerate(["B+", "A+", "B-"])]
    path = tmp_path / "answers.csv"
    path.write_text("\n".join([HEADER] + [f"{i},{row}" for i, row in enumerate(rows)]) + "\n")
    return read_answers_csv(path)[0]


def test_with_printed_adds_thesis_and_difference() -> None:
    ours = pd.DataFrame({"quantity": ["valid responses", "not printed"], "ours": [10, 3]})
    table = with_printed(ours, pd.Series({"valid responses": 12.0}))
    assert table["thesis"].iloc[0] == 12.0 and table["difference"].iloc[0] == -2.0
    assert np.isnan(table["difference"].iloc[1])


def test_agreement_matrix_is_square_in_thesis_order(responses) -> None:
    # p0: drums A, mix B -> disagree; p1: drums A, mix A -> agree; p2: drums A, mix B -> disagree: 1/3.
    grid = agreement_matrix(category_agreement(responses), "xab")
    assert list(grid.index) == list(grid.columns) == ["drums", "mix"]
    assert grid.at["drums", "mix"] == pytest.approx(1 / 3) and grid.at["mix", "drums"] == pytest.approx(1 / 3)
    assert grid.at["drums", "drums"] == 1.0


def test_interval_layout_formats_value_and_bounds() -> None:
    tidy = pd.DataFrame({"perspective": ["timbre"], "category": ["bass"], "percent": [66.666],
                         "ci_low": [9.43], "ci_high": [99.16]})
    assert interval_layout(tidy).at["timbre", "bass"] == "66.7 [9.4, 99.2]"


def test_filter_layouts_and_text_checks(responses) -> None:
    filtered = agreement_filter(responses)
    blocks = filter_layouts(filter_summary(filtered, categories=["drums", "bass", "piano", "guitar", "others"]))
    assert list(blocks) == ["5.3a", "5.3b", "5.3c", "5.3d"]
    # drums overall: all five chose A -> one set, five evaluations; melody: N/A holds 4 of 5 -> dropped.
    assert blocks["5.3a"].at["overall", "drums"] == 1 and blocks["5.3c"].at["overall", "drums"] == 5
    assert blocks["5.3a"].at["melody", "drums"] == 0
    printed = pd.Series({"xab drum-melody sample sets passing the filter": 4.0,
                         "participants never answering drum melody": 39.0})
    checks = text_checks(responses, filtered, ["p0", "p1", "p2", "p3", "p4", "p9"], printed).set_index("check")
    assert checks.at["xab drum-melody sample sets passing the filter", "ours"] == 0
    # Only p3 answered drum melody: p0, p1, p2, p4 and p9 (no drum answer at all) never did.
    assert checks.at["participants never answering drum melody", "ours"] == 5
    assert checks.at["participants never answering drum melody", "thesis"] == 39.0


def test_kept_stimulus_paths_are_those_of_kept_sets(responses) -> None:
    # drums: kept for overall (5/5), timbre and rhythm -> X, A, B needed; mix is not a part.
    assert kept_stimulus_paths(responses) == sorted([X, A, B])
    assert kept_stimulus_paths(responses, perspectives=["melody"]) == []


def test_printed_rates_reads_all_four_blocks() -> None:
    xab = pd.DataFrame({"drums": [56.7], "drums_pm": [3.3]}, index=pd.Index(["proposed"], name="row"))
    xyc = pd.DataFrame({"drums": [95.7, 96.5], "drums_pm": [1.0, 0.9]},
                       index=pd.Index(["overall proposed", "timbre proposed"], name="row"))
    rates = printed_rates(xab, xab, xyc)
    assert rates[["set_type", "perspective", "percent"]].values.tolist() == [
        ["xab", "overall", 56.7], ["xab", "timbre", 56.7], ["xyc", "overall", 95.7], ["xyc", "timbre", 96.5]]


def test_data_description_names_the_data() -> None:
    assert "published Inst-Sim ABX dataset" in data_description(True, False, "abx", 10, 2)
    assert "SIMULATED" in data_description(False, True, "sim", 10, 2)
    text = data_description(False, False, "mine", 1234, 2, dropped=3)
    assert "`mine`" in text and "not** the published" in text and "1,234" in text and "dropping 3 rows" in text


def test_mean_log_mel_embedding_is_time_averaged() -> None:
    from partsim_core.presets import get_preset

    frontend = get_preset("smoke").frontend
    embed = mean_log_mel_embedding(frontend)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(frontend.sample_rate).astype(np.float32)
    vector = embed(noise, "drums")
    assert vector.ndim == 1 and np.all(np.isfinite(vector))
    # Time-averaging: the same second twice has the same mean spectrum (up to frame edges).
    np.testing.assert_allclose(embed(np.concatenate([noise, noise]), "drums"), vector, atol=0.02)
