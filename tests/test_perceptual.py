"""Chapter 5 (Inst-Sim ABX listening test): loader, analyses, agreement filter, model agreement, CLI.

Expected values are worked out by hand in the comments (tiny tables) or typed in from the thesis (real data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from partsim_core.cli import main as partsim_main
from partsim_core.errors import PartsimError
from partsim_core.perceptual import (
    agreement_filter,
    all_na_participants,
    category_agreement,
    clopper_pearson,
    extract_stimuli,
    filter_summary,
    load_abx,
    model_listener_agreement,
    part_track_matches,
    perspective_matching_rates,
    read_answers_csv,
    read_sample_configs,
    response_counts,
    thesis_tables,
    variance_comparison,
    within_between,
)

HEADER = (",ex_name,subject_id,reference,sample_a,sample_b,answer_timbre,answer_rhythm,answer_melody,answer_total,"
          "choice_time")


def write_csv(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{i},{row}" for i, row in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


# Two sample sets, three participants. Set 1 (xab, drums): X_1-0 / A_2-0 / B_3-0, participant p3 sees A/B swapped.
# Set 2 (xyc, bass): X_1-5 / Y_1-9 / C_4-2. One catch trial and one empty (= N/A) melody answer.
XAB_A, XAB_B = "set0/0/drums/A_2-0.wav", "set0/0/drums/B_3-0.wav"
XAB_X = "set0/0/drums/X_1-0.wav"
XYC_X, XYC_Y, XYC_C = "set0/0/bass/X_1-5.wav", "set0/0/bass/Y_1-9.wav", "set0/0/bass/C_4-2.wav"
TINY_ROWS = [
    # timbre, rhythm, melody, overall
    f"ex1,p1,{XAB_X},{XAB_A},{XAB_B},A+,A-,NA,A-,20000",       # p1 chooses file A_2 overall
    f"ex1,p2,{XAB_X},{XAB_A},{XAB_B},B-,A+,,A+,21000",         # p2 chooses A_2 overall; melody empty = N/A
    f"ex1,p3,{XAB_X},{XAB_B},{XAB_A},A-,NA,B+,B+,22000",      # swapped order: B letter = file A_2 overall
    f"ex1,p1,{XYC_X},{XYC_Y},{XYC_C},A+,A+,A+,A+,23000",       # chooses Y
    f"ex1,p2,{XYC_X},{XYC_C},{XYC_Y},B+,NA,NA,B-,24000",       # chooses Y (order swapped)
    f"ex1,p3,{XYC_X},{XYC_C},{XYC_Y},A-,A-,B-,A-,25000",       # chooses C overall
    "ex1,p1,samples/dummyX1.wav,samples/dummyX1.wav,samples/dummyB1.wav,A+,A+,A+,A+,9000",  # catch trial
]


@pytest.fixture()
def tiny(tmp_path: Path) -> pd.DataFrame:
    responses, catch = read_answers_csv(write_csv(tmp_path / "answers.csv", TINY_ROWS))
    assert len(catch) == 1
    return responses


def test_loader_parses_roles_types_and_na(tiny: pd.DataFrame) -> None:
    assert len(tiny) == 6
    assert list(tiny["set_type"]) == ["xab"] * 3 + ["xyc"] * 3
    assert list(tiny["category"]) == ["drums"] * 3 + ["bass"] * 3
    assert tiny.loc[1, "answer_melody"] == "N/A"          # empty cell
    assert tiny.loc[0, "answer_melody"] == "N/A"          # "NA"
    assert tiny.loc[2, "chosen_overall"] == XAB_A          # letter B with swapped order -> file A_2
    assert tiny.loc[2, "chosen_track_overall"] == 2
    assert list(tiny["chosen_role_overall"]) == ["A", "A", "A", "Y", "Y", "C"]
    assert tiny.loc[0, "strength_timbre"] == "strong" and tiny.loc[0, "strength_overall"] == "weak"
    assert tiny["set_key"].nunique() == 2
    assert tiny.loc[0, "track_x"] == 1 and tiny.loc[0, "evaluation_set"] == 0


def test_residuals_folder_is_others(tmp_path: Path) -> None:
    row = "ex1,p1,set3/2/residuals/X_5-1.wav,set3/2/residuals/A_6-1.wav,set3/2/residuals/B_7-1.wav,A+,A+,A+,A+,1"
    responses, _ = read_answers_csv(write_csv(tmp_path / "a.csv", [row]))
    assert responses.loc[0, "category"] == "others"
    assert responses.loc[0, "evaluation_set"] == 3 and responses.loc[0, "sample_set"] == 2


def test_malformed_csv_errors_name_file_and_row(tmp_path: Path) -> None:
    bad_code = list(TINY_ROWS)
    bad_code[2] = bad_code[2].replace("B+,B+,22000", "B+,C+,22000")
    path = write_csv(tmp_path / "bad.csv", bad_code)
    with pytest.raises(PartsimError, match=r"bad\.csv, line 4: unknown answer code 'C\+'"):
        read_answers_csv(path)
    missing = tmp_path / "missing.csv"
    missing.write_text("ex_name,subject_id,reference\nex1,p1,x\n")
    with pytest.raises(PartsimError, match=r"missing\.csv lacks column\(s\): sample_a"):
        read_answers_csv(missing)
    bad_path = write_csv(tmp_path / "path.csv", [TINY_ROWS[0].replace("X_1-0", "X1-0")])
    with pytest.raises(PartsimError, match=r"path\.csv, line 2"):
        read_answers_csv(bad_path)


def test_table_5_2_matching_rates_by_hand(tiny: pd.DataFrame) -> None:
    rates = perspective_matching_rates(tiny).set_index(["perspective", "category"])["percent"]
    # drums: overall files A_2, A_2, A_2. timbre letters A, B, A(swapped -> B_3): files A_2, B_3, B_3 -> 1/3.
    assert rates["timbre", "drums"] == pytest.approx(100 / 3)
    # rhythm: A (match), A (match), N/A -> 2/3.  melody: N/A, N/A, B (=A_2, match) -> 1/3.
    assert rates["rhythm", "drums"] == pytest.approx(200 / 3)
    assert rates["melody", "drums"] == pytest.approx(100 / 3)
    # bass: overall A, B, A. timbre A, B, A -> 3/3; rhythm A, N/A, A -> 2/3; melody A, N/A, B -> 1/3.
    assert rates["timbre", "bass"] == pytest.approx(100.0)
    assert rates["rhythm", "bass"] == pytest.approx(200 / 3)
    assert rates["melody", "bass"] == pytest.approx(100 / 3)


def test_agreement_filter_compares_files_not_letters(tiny: pd.DataFrame) -> None:
    raw = agreement_filter(tiny)
    filtered = raw.set_index(["perspective", "category"])
    # drums overall: all three chose file A_2 (letters A, A, B) -> 100 % -> kept, 3 evaluations.
    assert bool(filtered.loc[("overall", "drums"), "kept"])
    assert filtered.loc[("overall", "drums"), "top_choice"] == XAB_A
    assert filtered.loc[("overall", "drums"), "evaluations"] == 3
    # bass overall: Y, Y, C -> 2/3 < 80 % -> dropped.
    assert not bool(filtered.loc[("overall", "bass"), "kept"])
    assert filtered.loc[("overall", "bass"), "top_share"] == pytest.approx(2 / 3)
    # drums melody: N/A, N/A, A_2 -> top choice N/A (2/3) -> dropped.
    assert filtered.loc[("melody", "drums"), "top_choice"] == "N/A"
    assert not bool(filtered.loc[("melody", "drums"), "kept"])
    summary = filter_summary(raw).set_index(["set_type", "perspective", "category"])
    assert summary.loc[("xab", "overall", "drums"), "sets"] == 1
    assert summary.loc[("xab", "overall", "drums"), "evaluations"] == 3
    assert summary.loc[("xyc", "overall", "bass"), "sets"] == 0


def test_filter_keeps_exactly_80_percent_and_drops_na_majority(tmp_path: Path) -> None:
    rows = [f"ex1,p{i},{XAB_X},{XAB_A},{XAB_B},{t},A+,NA,{o},1"
            for i, (t, o) in enumerate([("NA", "A+"), ("NA", "A+"), ("NA", "A+"), ("NA", "A+"), ("A+", "B-")])]
    responses, _ = read_answers_csv(write_csv(tmp_path / "eighty.csv", rows))
    filtered = agreement_filter(responses).set_index("perspective")
    # overall: 4 of 5 chose A_2 = exactly 80 % -> kept, with all 5 A/B responses as evaluations.
    assert bool(filtered.loc["overall", "kept"]) and filtered.loc["overall", "evaluations"] == 5
    # timbre: N/A holds 80 % -> dropped although it reaches the threshold.
    assert not bool(filtered.loc["timbre", "kept"])
    # rhythm: 5 of 5 A -> kept.  melody: all N/A -> dropped.
    assert bool(filtered.loc["rhythm", "kept"]) and not bool(filtered.loc["melody", "kept"])


def test_within_between_by_hand(tiny: pd.DataFrame) -> None:
    table = within_between(tiny).set_index(["na", "perspective", "category"])
    # overall on xyc: Y, Y, C -> 2 of 3.
    assert table.loc[("including_na", "overall", "bass"), "same_track"] == 2
    assert table.loc[("including_na", "overall", "bass"), "percent"] == pytest.approx(200 / 3)
    # melody: A (=Y), N/A, B (=Y) -> including N/A 2/3, excluding 2/2.
    assert table.loc[("including_na", "melody", "bass"), "responses"] == 3
    assert table.loc[("excluding_na", "melody", "bass"), "percent"] == pytest.approx(100.0)
    assert ("excluding_na", "overall", "bass") not in table.index
    low, high = stats.binomtest(2, 3).proportion_ci(confidence_level=0.95, method="exact")
    assert table.loc[("including_na", "overall", "bass"), "ci_low"] == pytest.approx(100 * low)
    assert table.loc[("including_na", "overall", "bass"), "ci_high"] == pytest.approx(100 * high)


def test_clopper_pearson_reference_values() -> None:
    # k = 0 of 10: upper bound solves (1 - p)^10 = 0.025 -> 1 - 0.025 ** 0.1.
    low, high = clopper_pearson(0, 10)
    assert float(low) == 0.0 and float(high) == pytest.approx(1 - 0.025 ** 0.1)
    low, high = clopper_pearson(np.array([7, 10]), np.array([20, 10]))
    reference = stats.binomtest(7, 20).proportion_ci(method="exact")
    assert low[0] == pytest.approx(reference.low) and high[0] == pytest.approx(reference.high)
    assert high[1] == 1.0 and low[1] == pytest.approx(0.025 ** 0.1)


def test_response_counts_strong_weak_na(tmp_path: Path) -> None:
    rows = [f"ex1,p1,{XAB_X},{XAB_A},{XAB_B},A+,NA,B-,A-,1",
            "ex1,p1,set0/0/mix/X_1-3.wav,set0/0/mix/A_2-3.wav,set0/0/mix/B_3-3.wav,B+,B+,NA,B+,1"]
    responses, _ = read_answers_csv(write_csv(tmp_path / "c.csv", rows))
    counts = response_counts(responses).set_index(["set_type", "category", "perspective", "strength"])["count"]
    assert counts["xab", "drums", "timbre", "strong"] == 1
    assert counts["xab", "drums", "rhythm", "N/A"] == 1
    assert counts["xab", "drums", "melody", "weak"] == 1
    assert counts["xab", "mix", "overall", "strong"] == 1
    assert counts["xab", "mix", "overall", "weak"] == 0


def _triplet_rows(subject: str, set_no: int, choices: dict[str, str]) -> list[str]:
    rows = []
    for folder, letter in choices.items():
        base = f"set{set_no}/0/{folder}"
        answer = f"{letter}+"
        rows.append(f"ex2,{subject},{base}/X_1-0.wav,{base}/A_2-0.wav,{base}/B_3-0.wav,"
                    f"{answer},{answer},{answer},{answer},1")
    return rows


def test_category_agreement_and_part_track_matches_by_hand(tmp_path: Path) -> None:
    # p1 on triplet 0/0: drums A, bass A, piano B, guitar A, residuals B, mix A.
    # p2 on triplet 0/0: drums B, bass A, piano B, guitar B, residuals B, mix B.
    rows = (_triplet_rows("p1", 0, {"drums": "A", "bass": "A", "piano": "B", "guitar": "A", "residuals": "B",
                                    "mix": "A"})
            + _triplet_rows("p2", 0, {"drums": "B", "bass": "A", "piano": "B", "guitar": "B", "residuals": "B",
                                      "mix": "B"}))
    responses, _ = read_answers_csv(write_csv(tmp_path / "t.csv", rows))
    agreement = category_agreement(responses).set_index(["set_type", "category_1", "category_2"])
    # drums-bass: p1 A/A agree, p2 B/A disagree -> 0.5; drums-mix: A/A, B/B -> 1.0; bass-piano: A/B, A/B -> 0.
    assert agreement.loc[("xab", "drums", "bass"), "agreement"] == pytest.approx(0.5)
    assert agreement.loc[("xab", "drums", "mix"), "agreement"] == pytest.approx(1.0)
    assert agreement.loc[("xab", "bass", "piano"), "agreement"] == pytest.approx(0.0)
    assert agreement.loc[("xab", "bass", "piano"), "pairs"] == 2
    matches = part_track_matches(responses)
    # Match with mix: p1 -> drums 1, bass 1, piano 0, guitar 1, others 0; p2 -> 1, 0, 1, 1, 1.
    assert matches.loc[("p1", "0/0")].tolist() == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert matches.loc[("p2", "0/0")].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0]


def test_variance_comparison_by_hand() -> None:
    # Two triplets with 4 participants each; participants see 4 triplets... built directly as the match table.
    index = pd.MultiIndex.from_tuples(
        [(f"s{p}", f"t{t}") for t in range(2) for p in range(4)] + [("s0", "t2"), ("s0", "t3")],
        names=["subject_id", "triplet"])
    drums = [1, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    matches = pd.DataFrame({part: drums for part in ("drums", "bass", "piano", "guitar", "others")},
                           index=index, dtype=float)
    table = variance_comparison(matches, evaluation_range=(4, 9))
    # Triplets with 4-9 evaluations: t0 (1,1,1,1) var 0; t1 (0,0,0,1) sample var 0.25. Mean 0.125.
    assert table.loc["drums", "var_triplet"] == pytest.approx(0.125)
    # Participants with 4-9 evaluations: only s0 (t0..t3: 1, 0, 0, 1) -> sample var 1/3.
    assert table.loc["drums", "var_participant"] == pytest.approx(1 / 3)
    assert table.loc["drums", "mean_evaluations_participant"] == pytest.approx(4.0)
    expected = stats.mannwhitneyu([0.0, 0.25], [1 / 3], alternative="less").pvalue
    assert table.loc["drums", "p_value"] == pytest.approx(expected)


def _write_configs(folder: Path) -> None:
    entry = {"X": {"ID": 1, "seg": 0, "filename": "X_1-0.wav", "sr": 100, "index_s": 100, "index_e": 150},
             "A": {"ID": 2, "seg": 0, "filename": "A_2-0.wav", "sr": 100, "index_s": 0, "index_e": 50},
             "B": {"ID": 3, "seg": 0, "filename": "B_3-0.wav", "sr": 100, "index_s": 20, "index_e": 70}}
    xyc = {"X": entry["X"], "Y": {"ID": 1, "seg": 9, "filename": "Y_1-9.wav", "sr": 100, "index_s": 0,
                                  "index_e": 50},
           "C": {"ID": 4, "seg": 2, "filename": "C_4-2.wav", "sr": 100, "index_s": 10, "index_e": 60}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dict_triplet_1.json").write_text(json.dumps({"0": {"0": {"test1": {"drums": xyc},
                                                                         "test2": {"drums": entry}}}}))


def test_sample_configs_and_extraction_with_rescaling(tmp_path: Path) -> None:
    _write_configs(tmp_path / "sample_configs")
    configs = read_sample_configs(tmp_path / "sample_configs")
    assert set(configs["set_type"]) == {"xab", "xyc"}
    assert len(configs) == 6 and configs["path"].str.startswith("set0/0/drums/").all()

    def signal_for(track: int, category: str) -> np.ndarray:
        # At 200 Hz (twice the configs' 100 Hz): sample value = track * 1000 + index.
        return track * 1000 + np.arange(400, dtype=np.float32)

    stimuli = extract_stimuli(configs, signal_for, sample_rate=200, progress=False)
    # X: [100:150] at 100 Hz -> [200:300] at 200 Hz of track 1.
    np.testing.assert_array_equal(stimuli["set0/0/drums/X_1-0.wav"], 1000 + np.arange(200, 300))
    np.testing.assert_array_equal(stimuli["set0/0/drums/B_3-0.wav"], 3000 + np.arange(40, 140))
    with pytest.raises(PartsimError, match="starts at sample"):
        extract_stimuli(configs, lambda track, category: np.zeros(100, np.float32), 200, progress=False)


def test_model_listener_agreement_by_hand(tmp_path: Path) -> None:
    # Five listeners on the xab drums set: overall A_2 x4, B_3 x1 (80 % -> kept); timbre A_2 x2, B_3 x3 (dropped).
    answers = [("A+", "A+"), ("A-", "A-"), ("A+", "B+"), ("A+", "B-"), ("B-", "B+")]
    rows = [f"ex1,p{i},{XAB_X},{XAB_A},{XAB_B},{timbre},A+,NA,{overall},1"
            for i, (overall, timbre) in enumerate(answers)]
    responses, _ = read_answers_csv(write_csv(tmp_path / "m.csv", rows))
    stimuli = {XAB_X: np.zeros(10, np.float32), XAB_A: np.full(10, 3.0, np.float32),
               XAB_B: np.full(10, 1.0, np.float32)}
    # Embedding = mean value: B_3 (1.0) is nearer to X (0.0) than A_2 (3.0).
    table = model_listener_agreement(responses, stimuli, lambda audio, category: np.array([audio.mean()]),
                                     progress=False).set_index(["set_type", "perspective", "category"])
    overall = table.loc[("xab", "overall", "drums")]
    assert overall["sets"] == 1 and overall["evaluations"] == 5 and overall["matches"] == 1
    assert overall["percent"] == pytest.approx(20.0)
    low, high = stats.binomtest(1, 5).proportion_ci(method="exact")
    assert overall["ci_low"] == pytest.approx(100 * low) and overall["ci_high"] == pytest.approx(100 * high)
    assert table.loc[("xab", "timbre", "drums"), "evaluations"] == 0
    # rhythm: all five chose A_2 -> kept, model picks B_3 -> 0 of 5.
    assert table.loc[("xab", "rhythm", "drums"), "matches"] == 0
    assert table.loc[("xab", "rhythm", "drums"), "evaluations"] == 5


def test_tables_cli_writes_one_json_object(tmp_path: Path) -> None:
    write_csv(tmp_path / "abx" / "csvs" / "inst_sim_abx_answers.csv", TINY_ROWS)
    out = tmp_path / "tables.json"
    assert partsim_main(["perceptual", "tables", "--abx", str(tmp_path / "abx"), "--out", str(out)]) == 0
    tables = json.loads(out.read_text())
    assert tables["valid_responses"] == 6
    assert tables["table_5_2"]["timbre"]["drums"] == pytest.approx(100 / 3)
    assert tables["table_5_3"]["xab"]["sets"]["overall"]["drums"] == 1
    assert set(tables["table_5_3"]["xab"]["sets"]["overall"]) == {"drums", "bass", "piano", "guitar", "others"}
    assert set(tables["table_5_4"]) == {"including_na", "excluding_na"}


def test_tables_cli_reports_malformed_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = list(TINY_ROWS)
    rows[0] = rows[0].replace("A+,A-,NA,A-", "A+,A-,NA,X")
    write_csv(tmp_path / "abx" / "csvs" / "inst_sim_abx_answers.csv", rows)
    code = partsim_main(["perceptual", "tables", "--abx", str(tmp_path / "abx"), "--out", str(tmp_path / "o.json")])
    assert code == 2
    assert "inst_sim_abx_answers.csv, line 2: unknown answer code 'X'" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


# ------------------------------------------------------------------------------------------------ real data

PUBLISHED_TABLE_5_2 = {
    "timbre": [74.7, 74.5, 75.6, 75.1, 75.3, 74.3],
    "rhythm": [84.4, 80.1, 78.4, 80.6, 79.8, 82.0],
    "melody": [56.7, 79.0, 80.7, 81.0, 83.1, 82.8],
}


#: The published dataset: ../shared/abx beside the repository (PARTSIM_ABX_DIR overrides it, e.g. in a worktree).
ABX_ROOT = Path(os.environ.get("PARTSIM_ABX_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "abx")


@pytest.fixture(scope="module")
def published() -> object:
    if not (ABX_ROOT / "csvs" / "inst_sim_abx_answers.csv").is_file():
        pytest.skip("../shared/abx (the published Inst-Sim ABX dataset) is not beside the repository")
    return load_abx(ABX_ROOT)


def test_published_counts(published) -> None:
    assert len(published.responses) == 26898
    assert len(published.catch_trials) == 28095 - 26898
    subjects = set(published.responses["subject_id"]) | set(published.catch_trials["subject_id"])
    assert len(subjects) == 281
    complete = published.responses[published.responses["complete"]]
    assert complete["subject_id"].nunique() == 167
    assert published.responses.groupby("evaluation_set")["subject_id"].nunique().min() >= 6
    # Thesis 5.3.4: 39 of the 281 unique participants never gave a non-N/A drum-melody answer.
    assert all_na_participants(published.responses, sorted(subjects), "drums", "melody") == 39


def test_published_table_5_2(published) -> None:
    rates = perspective_matching_rates(published.responses).set_index(["perspective", "category"])["percent"]
    for perspective, values in PUBLISHED_TABLE_5_2.items():
        for category, value in zip(("drums", "bass", "piano", "guitar", "others", "mix"), values):
            assert abs(rates[perspective, category] - value) <= 0.1, (perspective, category)


def test_published_filter_and_splits(published) -> None:
    tables = thesis_tables(published.responses)
    # Thesis 5.3.4: only four xab sample sets pass the filter for drum melody.
    assert tables["table_5_3"]["xab"]["sets"]["melody"]["drums"] == 4
    root = published.root
    xab, xyc = load_abx(root, "xab"), load_abx(root, "xyc")
    assert (xab.responses["set_type"] == "xab").all() and (xyc.responses["set_type"] == "xyc").all()
    assert len(xab.responses) + len(xyc.responses) == 26898
    # Thesis 5.3.2 caption: after the 4-9 filter, 5.74 evaluations per music triplet on average.
    table = variance_comparison(part_track_matches(published.responses))
    assert table["mean_evaluations_triplet"].iloc[0] == pytest.approx(5.74, abs=0.005)
    assert (table["var_triplet"] < table["var_participant"]).all()
    assert len(published.configs) > 0 and published.configs["path"].str.match(r"set\d+/\d+/").all()
