"""Validation of the Inst-Sim ABX answers format: bad inputs through the CLI, published checksums, and a
property-based test of the loader (only PartsimError, never a silent change of counts)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partsim_core.cli import main as partsim_main
from partsim_core.errors import PartsimError
from partsim_core.perceptual import load_abx, thesis_tables
from partsim_core.perceptual.abx import read_answers_table
from partsim_core.perceptual.validate import PUBLISHED_SHA256, file_sha256

COLUMNS = ["", "ex_name", "subject_id", "reference", "sample_a", "sample_b", "answer_timbre", "answer_rhythm",
           "answer_melody", "answer_total", "choice_time"]
X, A, B = "set0/0/drums/X_1-0.wav", "set0/0/drums/A_2-0.wav", "set0/0/drums/B_3-0.wav"
CATCH = ["ex1", "p1", "samples/dummyX1.wav", "samples/dummyX1.wav", "samples/dummyB1.wav", "A+", "A+", "A+", "A+",
         "9000"]
GOOD = [
    ["ex1", "p1", X, A, B, "A+", "A-", "NA", "A-", "20000"],
    ["ex1", "p2", X, A, B, "B-", "A+", "", "A+", "21000"],
    ["ex1", "p3", X, B, A, "A-", "NA", "B+", "B+", "22000"],
    CATCH,
]
ABX_ROOT = Path(os.environ.get("PARTSIM_ABX_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "abx")


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for index, row in enumerate(rows):
        writer.writerow([str(index), *row])
    return buffer.getvalue()


def make_dataset(root: Path, rows: list[list[str]] | None = None, answers: bytes | None = None,
                 config: bytes | None = None) -> Path:
    (root / "csvs").mkdir(parents=True)
    data = answers if answers is not None else csv_text(rows if rows is not None else GOOD).encode()
    (root / "csvs" / "inst_sim_abx_answers.csv").write_bytes(data)
    if config is not None:
        (root / "sample_configs").mkdir()
        (root / "sample_configs" / "dict_triplet_1.json").write_bytes(config)
    return root


def with_row(index: int, column: int, value: str) -> list[list[str]]:
    rows = [list(row) for row in GOOD]
    rows[index][column] = value
    return rows


# name, dataset arguments, text the error must contain (besides the file name), droppable row-level error
BAD_INPUTS = [
    ("header only", {"answers": csv_text([]).encode()}, "no response rows", False),
    ("empty file", {"answers": b""}, "cannot parse", False),
    ("catch trials only", {"rows": [CATCH, CATCH[:1] + ["p2"] + CATCH[2:]]}, "only catch trials", False),
    ("choice_time inf", {"rows": with_row(0, 9, "inf")}, "choice_time 'inf'", True),
    ("choice_time negative", {"rows": with_row(1, 9, "-5")}, "choice_time '-5'", True),
    ("choice_time fraction", {"rows": with_row(1, 9, "1.5")}, "choice_time '1.5'", True),
    ("N/A overall", {"rows": with_row(0, 8, "NA")}, "N/A in answer_total", True),
    ("empty overall", {"rows": with_row(1, 8, "")}, "N/A in answer_total", True),
    ("three N/A", {"rows": [GOOD[0][:5] + ["NA", "NA", "NA"] + GOOD[0][8:], *GOOD[1:]]},
     "N/A in all of timbre, rhythm and melody", True),
    ("unknown code", {"rows": with_row(2, 6, "C+")}, "unknown answer code 'C+'", True),
    ("exact duplicate", {"rows": GOOD + [GOOD[1]]}, "exact duplicate of line 3", True),
    ("second answer to one set", {"rows": GOOD + [with_row(0, 8, "B+")[0]]}, "second answer of subject 'p1'", True),
    ("bad stimulus path", {"rows": with_row(0, 2, "set0/0/drums/X1-0.wav")}, "does not follow", True),
    ("non-UTF-8 answers", {"answers": csv_text(GOOD).encode().replace(b"p2", b"p\xff")}, "cannot parse", False),
    ("non-UTF-8 sample config", {"config": b'{"0": {"\xff": 1}}'}, "cannot read sample config", False),
    ("sample config Infinity", {"config": b'{"0": {"0": {"test1": {"drums": {"X": {"ID": Infinity}}}}}}'},
     "malformed sample config", False),
    ("sample config not an object", {"config": b"[1, 2]"}, "malformed sample config", False),
]


@pytest.mark.parametrize(("name", "dataset", "message", "droppable"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_error_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture, name: str,
                                                     dataset: dict, message: str, droppable: bool) -> None:
    root = make_dataset(tmp_path / "abx", **dataset)
    out = tmp_path / "tables.json"
    code = partsim_main(["perceptual", "tables", "--abx", str(root), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("partsim: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    expected_file = "dict_triplet_1.json" if "config" in dataset else "inst_sim_abx_answers.csv"
    assert expected_file in err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "abx"]


@pytest.mark.parametrize(("name", "dataset", "message", "droppable"), [b for b in BAD_INPUTS if b[3]],
                         ids=[b[0] for b in BAD_INPUTS if b[3]])
def test_drop_invalid_drops_and_says_how_many(tmp_path: Path, capsys: pytest.CaptureFixture, name: str,
                                              dataset: dict, message: str, droppable: bool) -> None:
    root = make_dataset(tmp_path / "abx", **dataset)
    out = tmp_path / "tables.json"
    assert partsim_main(["perceptual", "tables", "--abx", str(root), "--out", str(out), "--drop-invalid"]) == 0
    err = capsys.readouterr().err
    assert "dropped 1 invalid row(s)" in err and "modified or non-published data" in err
    tables = json.loads(out.read_text())
    # Three valid responses in GOOD; the broken row is one of them or an extra one.
    broken_extra = len(dataset["rows"]) > len(GOOD)
    assert tables["valid_responses"] == (3 if broken_extra else 2)


def test_duplicates_never_double_counts(tmp_path: Path) -> None:
    clean = load_abx(make_dataset(tmp_path / "clean"))
    doubled = load_abx(make_dataset(tmp_path / "doubled", rows=GOOD + GOOD[:3]), drop_invalid=True)
    assert len(doubled.dropped) == 3 and list(doubled.dropped["row"]) == [6, 7, 8]
    assert len(doubled.responses) == len(clean.responses) == 3
    with pytest.raises(PartsimError, match=r"line 6: exact duplicate of line 2 \(3 invalid rows in all"):
        load_abx(tmp_path / "doubled")


def test_small_dataset_is_not_called_published(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_dataset(tmp_path / "abx")
    assert not load_abx(root).published
    assert partsim_main(["perceptual", "tables", "--abx", str(root), "--out", str(tmp_path / "t.json")]) == 0
    err = capsys.readouterr().err
    assert "modified or non-published data" in err and "published Inst-Sim ABX data (SHA-256" not in err


@pytest.fixture(scope="module")
def abx_root() -> Path:
    if not (ABX_ROOT / "csvs" / "inst_sim_abx_answers.csv").is_file():
        pytest.skip("../shared/abx (the published Inst-Sim ABX dataset) is not beside the repository")
    return ABX_ROOT


def test_published_files_have_the_stored_checksums(abx_root: Path) -> None:
    for relative, digest in PUBLISHED_SHA256.items():
        assert file_sha256(abx_root / relative) == digest, relative


def test_published_only_when_unchanged(abx_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t.json"
    assert partsim_main(["perceptual", "tables", "--abx", str(abx_root), "--out", str(out)]) == 0
    assert "(published Inst-Sim ABX data (SHA-256 verified))" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(abx_root, copy)
    answers = copy / "csvs" / "inst_sim_abx_answers.csv"
    answers.chmod(0o644)
    lines = answers.read_text().splitlines(keepends=True)
    answers.write_text("".join(lines + lines[1:3]))  # two exact duplicate rows appended
    assert partsim_main(["perceptual", "tables", "--abx", str(copy), "--out", str(out), "--fresh"]) == 2
    assert "exact duplicate of line 2" in capsys.readouterr().err
    assert partsim_main(["perceptual", "tables", "--abx", str(copy), "--out", str(out), "--drop-invalid", "--fresh"]) == 0
    err = capsys.readouterr().err
    assert "modified or non-published data" in err and "dropped 2 invalid row(s)" in err
    assert json.loads(out.read_text())["valid_responses"] == 26898


# ------------------------------------------------------------------------------------------ property-based

FOLDERS = ["drums", "bass", "residuals", "mix", "vocals"]
answer_cells = st.one_of(st.sampled_from(["A+", "A-", "B+", "B-", "NA", "", " B-", "N/A", "a+", "C"]),
                         st.text(max_size=3))
time_cells = st.one_of(st.sampled_from(["15000", "0", "-1", "1.5", "inf", "nan", "", "1e3", "9" * 30, " 7 "]),
                       st.integers(min_value=0, max_value=10**7).map(str), st.text(max_size=4))


@st.composite
def stimulus_paths(draw, valid: bool) -> tuple[str, str, str]:
    if draw(st.integers(0, 9)) == 0:
        x = "samples/dummyX1.wav"
        return x, draw(st.sampled_from([x, "samples/dummyA1.wav"])), draw(st.sampled_from([x, "samples/dummyB1.wav"]))
    if not valid and draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=8)), draw(st.text(max_size=8)), draw(st.text(max_size=8))
    folders = FOLDERS[:4] if valid else FOLDERS
    place = f"set{draw(st.integers(0, 2))}/{draw(st.integers(0, 1))}/{draw(st.sampled_from(folders))}"
    roles = draw(st.sampled_from(["AB", "BA", "YC", "CY"] if valid else ["AB", "YC", "AY", "XA"]))
    x_place = place if valid or draw(st.booleans()) else "set9/9/drums"
    return (f"{x_place}/X_{draw(st.integers(1, 4))}-0.wav",
            f"{place}/{roles[0]}_{draw(st.integers(1, 4))}-1.wav",
            f"{place}/{roles[1]}_{draw(st.integers(1, 4))}-2.wav")


@st.composite
def answer_rows(draw) -> list[str]:
    """Three rows in four follow the published format; the others may break it anywhere."""
    valid = draw(st.integers(0, 3)) > 0
    reference, sample_a, sample_b = draw(stimulus_paths(valid))
    if valid:
        codes = st.sampled_from(["A+", "A-", "B+", "B-"])
        answers = [draw(st.sampled_from(["A+", "A-", "B+", "B-", "NA", ""])) for _ in range(2)] + [draw(codes)]
        answers += [draw(codes)]  # overall
        time = str(draw(st.integers(min_value=0, max_value=10**7)))
    else:
        answers = [draw(answer_cells) for _ in range(4)]
        time = draw(time_cells)
    return ["ex1", draw(st.sampled_from(["p1", "p2", "p3", "p4"])), reference, sample_a, sample_b, *answers, time]


@st.composite
def answer_files(draw) -> list[list[str]]:
    rows = draw(st.lists(answer_rows(), max_size=10))
    if rows and draw(st.booleans()):
        rows.append(list(draw(st.sampled_from(rows))))  # an exact duplicate
    return rows


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=answer_files(), drop_invalid=st.booleans())
def test_loader_only_raises_partsim_error_and_never_changes_counts(rows: list[list[str]], drop_invalid: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "answers.csv"
        path.write_text(csv_text(rows), encoding="utf-8")
        try:
            responses, catch, dropped = read_answers_table(path, drop_invalid=drop_invalid)
        except PartsimError:
            return
    # Every data row is either a valid response, a catch trial or a reported drop: nothing vanishes or doubles.
    assert len(responses) + len(catch) + len(dropped) == len(rows)
    if not drop_invalid:
        assert len(dropped) == 0
    kept_lines = sorted([*responses["row"], *catch["row"]])
    assert sorted([*kept_lines, *dropped["row"]]) == list(range(2, len(rows) + 2))
    # The overall answers of the kept rows are the file's own (row number -> answer).
    for line, answer in zip(responses["row"], responses["answer_overall"]):
        assert rows[line - 2][8].strip() == answer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=answer_files())
def test_whatever_loads_gives_tables(rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "answers.csv"
        path.write_text(csv_text(rows), encoding="utf-8")
        try:
            responses, _, _ = read_answers_table(path, drop_invalid=True)
        except PartsimError:
            return
    # Every analysis of the CLI's JSON runs on whatever the loader accepts (or refuses with a PartsimError).
    try:
        tables = thesis_tables(responses)
    except PartsimError:
        return
    assert tables["valid_responses"] == len(responses)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400), drop_invalid=st.booleans())
def test_loader_survives_arbitrary_bytes(data: bytes, drop_invalid: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "answers.csv"
        path.write_bytes(",".join(COLUMNS).encode() + b"\n" + data)
        try:
            responses, _, _ = read_answers_table(path, drop_invalid=drop_invalid)
        except PartsimError:
            return
    assert len(responses) > 0
