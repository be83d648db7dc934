"""The 80 % filter's readings, the numbers the thesis prints about Tables 5.1 and 5.3, and how ours compare.

Hand-made cases are worked out in the comments; on the published data the printed numbers come from
``data/thesis_tables`` (never from the code under test).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from partsim_core.book.thesis_tables import load_thesis_table, thesis_tables_dir
from partsim_core.errors import PartsimError
from partsim_core.perceptual import (
    agreement_filter,
    kept_evaluations,
    load_abx,
    part_track_matches,
)
from partsim_core.perceptual.abx import read_answers_csv
from partsim_core.perceptual.analysis import variance_comparison
from partsim_core.perceptual.published import (
    consistent_trials,
    filter_rule_evidence,
    implied_evaluations,
    p_value_jackknife,
    p_value_variants,
    rates_from_table,
)

ABX_ROOT = Path(os.environ.get("PARTSIM_ABX_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "abx")
COLUMNS = ["", "ex_name", "subject_id", "reference", "sample_a", "sample_b", "answer_timbre", "answer_rhythm",
           "answer_melody", "answer_total", "choice_time"]
XAB = ("set0/0/drums/X_1-0.wav", "set0/0/drums/A_2-0.wav", "set0/0/drums/B_3-0.wav")
XYC = ("set0/0/bass/X_1-5.wav", "set0/0/bass/Y_1-9.wav", "set0/0/bass/C_4-2.wav")


def load_rows(tmp_path: Path, rows: list[tuple]) -> pd.DataFrame:
    """rows: (subject, (X, A, B), timbre, overall); rhythm A+, melody NA."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for index, (subject, (x, a, b), timbre, overall) in enumerate(rows):
        writer.writerow([index, "ex1", subject, x, a, b, timbre, "A+", "NA", overall, 1000])
    path = tmp_path / "answers.csv"
    path.write_text(buffer.getvalue())
    return read_answers_csv(path)[0]


def test_non_na_agreement_ignores_na_but_drops_na_majorities(tmp_path: Path) -> None:
    # Set 1 (xab) timbre: NA, NA, A, A, A -> all answers: A holds 3/5 = 60 % -> dropped;
    # non-N/A answers: A holds 3/3 and N/A (2) is not the most frequent -> kept, 3 evaluations.
    rows = [(f"p{i}", XAB, timbre, "A+") for i, timbre in enumerate(["NA", "NA", "A+", "A-", "A+"])]
    responses = load_rows(tmp_path, rows)
    all_rule = agreement_filter(responses, agreement="all").set_index("perspective")
    non_na = agreement_filter(responses, agreement="non_na").set_index("perspective")
    assert not bool(all_rule.loc["timbre", "kept"]) and all_rule.loc["timbre", "top_share"] == pytest.approx(0.6)
    assert bool(non_na.loc["timbre", "kept"]) and non_na.loc["timbre", "top_share"] == pytest.approx(1.0)
    assert non_na.loc["timbre", "evaluations"] == 3
    # melody: all N/A -> dropped by both.
    assert not bool(non_na.loc["melody", "kept"]) and not bool(all_rule.loc["melody", "kept"])


def test_non_na_agreement_drops_when_na_leads_or_ties(tmp_path: Path) -> None:
    # timbre NA, NA, NA, A, A: A holds 2/2 of the A/B answers, but N/A (3) leads -> dropped.
    rows = [(f"p{i}", XAB, timbre, "A+") for i, timbre in enumerate(["NA", "NA", "NA", "A+", "A-"])]
    assert not bool(agreement_filter(load_rows(tmp_path, rows), agreement="non_na")
                    .set_index("perspective").loc["timbre", "kept"])
    # NA, NA, A, A: a tie between N/A and file A counts as N/A leading -> dropped.
    rows = [(f"p{i}", XAB, timbre, "A+") for i, timbre in enumerate(["NA", "NA", "A+", "A-"])]
    assert not bool(agreement_filter(load_rows(tmp_path, rows), agreement="non_na")
                    .set_index("perspective").loc["timbre", "kept"])


def test_default_reading_is_all_for_xab_and_non_na_for_xyc(tmp_path: Path) -> None:
    # The same answers to an xab and an xyc set: timbre NA, NA, first file x3.
    rows = [(f"p{i}", XAB, timbre, "A+") for i, timbre in enumerate(["NA", "NA", "A+", "A-", "A+"])]
    rows += [(f"p{i}", XYC, timbre, "A+") for i, timbre in enumerate(["NA", "NA", "A+", "A-", "A+"])]
    filtered = agreement_filter(load_rows(tmp_path, rows)).set_index(["perspective", "set_type"])
    assert not bool(filtered.loc[("timbre", "xab"), "kept"])   # 60 % of all answers
    assert bool(filtered.loc[("timbre", "xyc"), "kept"])       # 100 % of the A/B answers
    with pytest.raises(PartsimError, match="no agreement rule for sample-set type"):
        agreement_filter(load_rows(tmp_path, rows), agreement={"xab": "all"})
    with pytest.raises(PartsimError, match="unknown agreement rule"):
        agreement_filter(load_rows(tmp_path, rows), agreement="most")


def test_presented_units_split_an_xyc_set_by_order(tmp_path: Path) -> None:
    x, y, c = XYC
    # Overall: order (Y, C): Y, Y, Y, Y; order (C, Y): Y, C. Files: Y 5 of 6 = 83 % -> one kept set of 6.
    # Presented: (Y, C) 4/4 kept; (C, Y) 1/2 dropped -> 4 evaluations kept.
    rows = [(f"p{i}", (x, y, c), "A+", "A+") for i in range(4)]
    rows += [("p4", (x, c, y), "A+", "B+"), ("p5", (x, c, y), "A+", "A+")]
    responses = load_rows(tmp_path, rows)
    files = agreement_filter(responses, agreement="all", sample_set="files")
    presented = agreement_filter(responses, agreement="all", sample_set="presented")
    assert len(files[files["perspective"] == "overall"]) == 1
    assert len(kept_evaluations(responses, files, "overall")) == 6
    assert len(presented[presented["perspective"] == "overall"]) == 2
    assert len(kept_evaluations(responses, presented, "overall")) == 4


def test_consistent_trials_by_hand() -> None:
    # Wald: 100 * 1.96 * sqrt(0.25 / n) = 10.0 +- 0.05 -> n in {96, 97}; 97 cannot give a rate of 50.0 +- 0.05
    # (48/97 = 49.5 %, 49/97 = 50.5 %), so only n = 96 (48/96).
    assert consistent_trials(50.0, 10.0, interval="wald", max_trials=500).tolist() == [96]
    # Clopper-Pearson: 150 of 200 -> scipy's exact interval, printed to 0.1, must admit n = 200.
    ci = stats.binomtest(150, 200).proportion_ci(method="exact")
    half = round(100 * (ci.high - ci.low) / 2, 1)
    assert 200 in consistent_trials(75.0, half).tolist()
    assert len(consistent_trials(75.0, 0.1, max_trials=1000)) == 0  # far too narrow for n <= 1000


def test_rates_from_table_reads_plain_and_prefixed_rows() -> None:
    table = pd.DataFrame({"drums": [56.7, 95.7, 96.5], "drums_pm": [3.3, 1.0, 0.9]},
                         index=pd.Index(["proposed", "overall proposed", "timbre proposed"], name="row"))
    rates = rates_from_table(table, "xyc", "timbre")
    assert rates[["model", "percent", "half_width"]].values.tolist() == [["proposed", 56.7, 3.3],
                                                                         ["proposed", 96.5, 0.9]]


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def published():
    if not (ABX_ROOT / "csvs" / "inst_sim_abx_answers.csv").is_file():
        pytest.skip("../shared/abx (the published Inst-Sim ABX dataset) is not beside the repository")
    return load_abx(ABX_ROOT)


@pytest.fixture(scope="module")
def printed() -> pd.Series:
    return pd.read_csv(thesis_tables_dir() / "table_5_text.csv", index_col="row")["value"]


@pytest.fixture(scope="module")
def evidence(published, printed):
    paper = pd.read_csv(thesis_tables_dir() / "table_5_3_paper_xyc_rates.csv", index_col="row")
    rates = pd.concat([rates_from_table(load_thesis_table("4.6a"), "xab", "overall"),
                       rates_from_table(load_thesis_table("4.6b"), "xab", "timbre"),
                       rates_from_table(paper, "xyc", "overall"), rates_from_table(paper, "xyc", "timbre")],
                      ignore_index=True)
    summary, cells = filter_rule_evidence(published.responses, implied_evaluations(rates),
                                          int(printed["xab drum-melody sample sets passing the filter"]))
    return summary.set_index(["agreement", "sample_set", "set_type"]), cells


def test_table_5_3_xab_needs_agreement_among_all_answers(evidence) -> None:
    summary, cells = evidence
    # Only agreement among all answers gives the printed four drum-melody sets and fewer sets than overall.
    assert summary.loc[("all", "files", "xab"), "drum_melody_matches"]
    assert summary.loc[("all", "files", "xab"), "fewer_than_overall"] == 15
    assert not summary.loc[("non_na", "files", "xab"), "drum_melody_matches"]
    assert summary.loc[("non_na", "files", "xab"), "fewer_than_overall"] < 15
    # How close per cell: every xab timbre/overall ratio within 2 % (log) of the range Table 4.6 allows; with
    # non-N/A agreement every one is off by more than 50 %.
    xab = cells[(cells["set_type"] == "xab") & (cells["perspective"] == "timbre") & (cells["sample_set"] == "files")]
    for rule, limit in (("all", 0.02), ("non_na", None)):
        part = xab[xab["agreement"] == rule]
        log_error = [0.0 if row.ratio_within else min(abs(math.log(row.ratio / row.ratio_low)),
                                                      abs(math.log(row.ratio / row.ratio_high)))
                     for row in part.itertuples()]
        assert len(log_error) == 5
        assert (max(log_error) < limit) if limit else (min(log_error) > math.log(1.5))


def test_table_5_3_xyc_non_na_agreement_is_closest(evidence) -> None:
    summary, cells = evidence
    # xyc: non-N/A agreement puts all five timbre/overall ratios in the range the paper's half-widths allow,
    # agreement among all answers only three; the price: 3 of 15 cells keep more sets than overall.
    assert summary.loc[("non_na", "files", "xyc"), "ratio_within"] == 5
    assert summary.loc[("all", "files", "xyc"), "ratio_within"] == 3
    assert summary.loc[("non_na", "files", "xyc"), "fewer_than_overall"] == 12
    # No reading reproduces the xyc overall counts (no N/A there): drums, guitar, others lie above the range.
    overall = cells[(cells["set_type"] == "xyc") & (cells["perspective"] == "overall")
                    & (cells["agreement"] == "non_na") & (cells["sample_set"] == "files")].set_index("category")
    assert not overall.loc[["drums", "guitar", "others"], "within"].any()
    assert (overall.loc[["drums", "guitar", "others"], "evaluations"]
            > overall.loc[["drums", "guitar", "others"], "n_high"]).all()
    # Every reading agrees with "more agreement in xyc than in xab".
    assert (summary["xyc_more"] == summary["of_xyc_cells"]).all()


def test_default_table_5_3_reading_on_published_data(published, printed) -> None:
    parts = published.responses[published.responses["category"].isin(["drums", "bass", "piano", "guitar",
                                                                       "others"])]
    filtered = agreement_filter(parts)
    kept = filtered[filtered["kept"]].groupby(["set_type", "perspective", "category"]).size()
    assert kept[("xab", "melody", "drums")] == printed["xab drum-melody sample sets passing the filter"]
    # xyc drum melody: non-N/A agreement keeps several times the 29 sets of all-answer agreement.
    all_rule = agreement_filter(parts, agreement="all")
    all_kept = all_rule[all_rule["kept"]].groupby(["set_type", "perspective", "category"]).size()
    assert kept[("xyc", "melody", "drums")] > 4 * all_kept[("xyc", "melody", "drums")]


def test_table_5_1_bass_p_value_sits_on_the_threshold(published, printed) -> None:
    matches = part_track_matches(published.responses)
    table = variance_comparison(matches)
    alpha = printed["significance level (table 5.1)"]
    # The thesis: p < 0.01 for every part but piano. Ours: bass just above, under every one-sided variant.
    assert table.loc["piano", "p_value"] > alpha
    assert (table.loc[["drums", "guitar", "others"], "p_value"] < alpha).all()
    variants = p_value_variants(matches)
    one_sided = variants.loc["bass", ["one-sided", "one-sided, no continuity correction"]]
    assert ((one_sided > alpha) & (one_sided < 1.05 * alpha)).all()
    assert variants.loc["bass", "two-sided"] > 2 * alpha * 0.99
    assert variants.loc["bass", "population variance (ddof 0)"] > 10 * alpha
    assert variants.loc["bass", "one-sided Welch t-test"] > 10 * alpha
    # Our participants are not exactly the thesis's (4.71 vs the printed 4.68 evaluations each).
    ours = table.loc["bass", "mean_evaluations_participant"]
    assert abs(ours - printed["mean evaluations per participant (table 5.1)"]) > 0.02


@pytest.mark.slow
def test_table_5_1_bass_verdict_is_fragile(published, printed) -> None:
    matches = part_track_matches(published.responses)
    alpha = printed["significance level (table 5.1)"]
    # One participant more or less moves bass across 0.01 either way: inconclusive at 0.01, while p < 0.05
    # holds whoever is left out.
    jackknife = p_value_jackknife(matches, "bass")
    assert jackknife["p_value"].min() < alpha < jackknife["p_value"].max()
    assert jackknife["p_value"].max() < 0.05
