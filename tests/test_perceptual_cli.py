"""``partsim perceptual run``: the chapter's JSON with Clopper-Pearson cells; ``--out`` is always a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from partsim_core.cli import main as partsim_main

HEADER = (",ex_name,subject_id,reference,sample_a,sample_b,answer_timbre,answer_rhythm,answer_melody,answer_total,"
          "choice_time")
XAB = "set0/0/drums/X_1-0.wav,set0/0/drums/A_2-0.wav,set0/0/drums/B_3-0.wav"
XYC = "set0/0/bass/X_1-5.wav,set0/0/bass/Y_1-9.wav,set0/0/bass/C_4-2.wav"
XYC_SWAPPED = "set0/0/bass/X_1-5.wav,set0/0/bass/C_4-2.wav,set0/0/bass/Y_1-9.wav"
ROWS = [
    # timbre, rhythm, melody, overall
    f"ex1,p1,{XAB},A+,A-,NA,A-,20000",
    f"ex1,p2,{XAB},B-,A+,,A+,21000",
    f"ex1,p3,{XAB},A-,NA,B+,A+,22000",
    f"ex1,p1,{XYC},A+,A+,A+,A+,23000",          # Y
    f"ex1,p2,{XYC_SWAPPED},B+,NA,NA,B-,24000",  # Y
    f"ex1,p3,{XYC_SWAPPED},A-,A-,B-,A-,25000",  # C
    "ex1,p1,samples/dummyX1.wav,samples/dummyX1.wav,samples/dummyB1.wav,A+,A+,A+,A+,9000",
]


def make_abx(root: Path, rows: list[str] = ROWS) -> Path:
    (root / "csvs").mkdir(parents=True)
    lines = [HEADER] + [f"{i},{row}" for i, row in enumerate(rows)]
    (root / "csvs" / "inst_sim_abx_answers.csv").write_text("\n".join(lines) + "\n")
    return root


def cp_percent(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return 100 * ci.low, 100 * ci.high


def test_run_writes_rate_cells_with_clopper_pearson_intervals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "chapter5.json"
    assert partsim_main(["perceptual", "run", "--abx", str(make_abx(tmp_path / "abx")), "--out", str(out)]) == 0
    assert "modified or non-published data" in capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["data"] == {"published": False, "valid_responses": 6, "catch_trials": 1, "dropped_rows": 0,
                              "dropped_reasons": {}}
    # Table 5.2, drums timbre: overall A, A, A; timbre A, B, A -> 2 of 3 match.
    cell = result["table_5_2"]["timbre"]["drums"]
    assert set(cell) == {"value", "low", "high"}
    assert cell["value"] == pytest.approx(200 / 3)
    assert (cell["low"], cell["high"]) == pytest.approx(cp_percent(2, 3))
    # Table 5.4, overall bass: Y, Y, C -> 2 of 3; melody excluding N/A: p1 A of X/Y/C = Y, p2 N/A, p3 B of X/C/Y
    # = Y -> 2 of 2.
    assert result["table_5_4"]["including_na"]["overall"]["bass"]["value"] == pytest.approx(200 / 3)
    melody = result["table_5_4"]["excluding_na"]["melody"]["bass"]
    assert melody["value"] == pytest.approx(100.0) and melody["high"] == pytest.approx(100.0)
    assert melody["low"] == pytest.approx(cp_percent(2, 2)[0])
    # Table 5.3 keeps plain counts and names its reading; drums overall: A_2 chosen 3 of 3 -> one set, 3 evaluations.
    assert result["table_5_3"]["agreement"] == {"xab": "all", "xyc": "non_na"}
    assert result["table_5_3"]["xab"]["sets"]["overall"]["drums"] == 1
    assert result["table_5_3"]["xab"]["evaluations"]["overall"]["drums"] == 3
    assert result["participants"]["unique participants"] == 3


def test_run_out_must_be_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    abx = make_abx(tmp_path / "abx")
    folder = tmp_path / "results"
    folder.mkdir()
    assert partsim_main(["perceptual", "run", "--abx", str(abx), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("partsim: error: --out") and "is a folder" in err
    assert list(folder.iterdir()) == []
    assert partsim_main(["perceptual", "run", "--abx", str(abx), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".json" in capsys.readouterr().err and not (tmp_path / "x.txt").exists()


def test_run_refuses_and_drops_like_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    abx = make_abx(tmp_path / "abx", ROWS + [ROWS[0]])
    out = tmp_path / "c.json"
    assert partsim_main(["perceptual", "run", "--abx", str(abx), "--out", str(out)]) == 2
    assert "exact duplicate of line 2" in capsys.readouterr().err and not out.exists()
    assert partsim_main(["perceptual", "run", "--abx", str(abx), "--out", str(out), "--drop-invalid"]) == 0
    result = json.loads(out.read_text())
    assert result["data"]["dropped_rows"] == 1 and result["data"]["valid_responses"] == 6
    assert result["data"]["dropped_reasons"] == {"exact duplicate of line N": 1}
