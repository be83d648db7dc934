"""Transcribed thesis tables: spot checks, a full cross-check against the thesis text, and the comparison maths."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from partsim_core.book.thesis_tables import (
    available_thesis_tables,
    load_thesis_table,
    side_by_side,
    thesis_tables_dir,
)
from partsim_core.errors import PartsimError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
THESIS = SHARED / "papers" / "thesis.txt"

EXPECTED_IDS = ["3.1", "3.2", "4.1", "4.2", "4.3", "4.4", "4.5a", "4.5b", "4.5c", "4.6a", "4.6b", "5.1", "5.2",
                "5.3a", "5.3b", "5.3c", "5.3d", "5.4a", "5.4b", "6.1"]


def test_every_table_is_there_and_loads() -> None:
    assert available_thesis_tables() == EXPECTED_IDS
    for table_id in EXPECTED_IDS:
        table = load_thesis_table(table_id)
        assert table.index.name == "row" and len(table) > 0 and len(table.columns) > 0
        assert all(label == label.lower() for label in table.index)


@pytest.mark.parametrize(("table_id", "row", "column", "value"), [
    ("3.1", "piano", "sdr_train", -11.20),
    ("3.1", "drums", "sir_test", 18.74),
    ("3.2", "proposed", "drums", 94.00),
    ("3.2", "baseline", "mix", 95.29),
    ("3.2", "proposed (ideal)", "piano", 93.11),
    ("4.1", "piano", "baseline_10s", 45.30),
    ("4.2", "(i)", "others", 80.69),
    ("4.3", "w/pre, wo/norm", "bass", 76.89),
    ("4.4", "w/psd", "bass", 0.4782),
    ("4.5a", "drums", "bass", 0.000112),
    ("4.5c", "piano", "guitar", -0.170),
    ("4.6b", "proposed", "guitar", 73.8),
    ("4.6b", "proposed", "guitar_pm", 4.5),
    ("5.2", "melody", "drums", 56.7),
    ("5.2", "rhythm", "mix", 82.0),
    ("6.1", "4", "comparison_rank", 1936),
])
def test_spot_values_read_from_the_thesis(table_id: str, row: str, column: str, value: float) -> None:
    assert load_thesis_table(table_id).at[row, column] == pytest.approx(value, abs=1e-12)


def test_absent_and_withheld_cells_are_nan() -> None:
    table_3_2 = load_thesis_table("3.2")
    assert table_3_2.isna().sum().sum() == 5  # the five "–" cells
    assert math.isnan(load_thesis_table("4.1").at["guitar", "baseline_3s"])
    for table_id in ["5.1", "5.3a", "5.3b", "5.3c", "5.3d", "5.4a", "5.4b"]:
        assert load_thesis_table(table_id).isna().all().all(), table_id


def test_flags_stay_text() -> None:
    table = load_thesis_table("4.2")
    assert table.at["(e)", "basic"] == "w/†" and table.at["(e)", "pre"] == "w/"
    assert pd.isna(table.at["(b)", "norm"])
    assert load_thesis_table("6.1").at["2", "comparison_strategy"] == "C1"


def test_unknown_id_lists_the_available_ones() -> None:
    with pytest.raises(PartsimError, match=r"unknown thesis table '9\.9'.*3\.1.*5\.3a"):
        load_thesis_table("9.9")
    with pytest.raises(PartsimError, match="available"):
        load_thesis_table("4.5")  # split into 4.5a-c


# --- Cross-check against the thesis text itself ------------------------------------------------------------------

#: For each printed table: where its block starts in thesis.txt, and which CSV files hold it.
BLOCKS: dict[str, tuple[list[str], list[str]]] = {
    # table: ([markers to find, in order], [csv ids])
    "3.1": (["Table 3.1:"], ["3.1"]),
    "3.2": (["Table 3.2:"], ["3.2"]),
    "4.1": (["Table 4.1:"], ["4.1"]),
    "4.2": (["Table 4.2:"], ["4.2"]),
    "4.3": (["Table 4.3:"], ["4.3"]),
    "4.4": (["Table 4.4:"], ["4.4"]),
    "4.5": (["Table 4.5:"], ["4.5a", "4.5b", "4.5c"]),
    "4.6": (["Table 4.6:"], ["4.6a", "4.6b"]),
    "5.1": (["Table 5.1:"], ["5.1"]),
    "5.2": (["Table 5.2:"], ["5.2"]),
    "5.3a": (["Table 5.3:", "(a) *"], ["5.3a"]),
    "5.3b": (["Table 5.3:", "(b) *"], ["5.3b"]),
    "5.3c": (["Table 5.3:", "(c) *"], ["5.3c"]),
    "5.3d": (["Table 5.3:", "(d) *"], ["5.3d"]),
    "5.4a": (["Table 5.4:", "(a) *"], ["5.4a"]),
    "5.4b": (["Table 5.4:", "(b) *"], ["5.4b"]),
    "6.1": (["Table 6.1:"], ["6.1"]),
}

#: Header lines whose digits are not table values (column titles such as "Input: 3 s" or the set numbers 0-7).
HEADER_LINE = re.compile(r"Input:|^\t\t0\t1\t")


def printed_table_lines(lines: list[str], markers: list[str]) -> list[str]:
    """The tab-separated lines of the table that follows ``markers`` (each searched after the previous)."""
    position = 0
    for marker in markers:
        position = next(i for i in range(position, len(lines)) if lines[i].startswith(marker))
    table: list[str] = []
    for line in lines[position + 1:]:
        if "\t" in line:
            table.append(line)
        elif line.strip() and table:
            break
    return table


def printed_cells(table_lines: list[str]) -> tuple[list[str], int]:
    """Numeric tokens as printed (the thesis's "–" minus made ASCII) and the number of ``[withheld]`` cells."""
    numbers: list[str] = []
    withheld = 0
    for line in table_lines:
        withheld += line.count("[withheld]")
        if HEADER_LINE.search(line):
            continue
        for cell in line.split("\t")[1:]:
            for part in re.split(r"[±,]", cell):
                part = part.strip().replace("–", "-").replace(" ", "")
                if re.fullmatch(r"-?\d+(\.\d+)?", part):
                    numbers.append(part)
    return numbers, withheld


def csv_cells(table_ids: list[str]) -> tuple[list[str], int]:
    """Numeric cells of our CSV files exactly as written (text), and the number of empty numeric cells."""
    numbers: list[str] = []
    empty = 0
    for table_id in table_ids:
        path = thesis_tables_dir() / f"table_{table_id.replace('.', '_')}.csv"
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column in raw.columns[1:]:
            values = raw[column]
            if all(value == "" or re.fullmatch(r"-?\d+(\.\d+)?", value) for value in values):
                numbers.extend(value for value in values if value)
                empty += sum(value == "" for value in values)
    return numbers, empty


@pytest.mark.skipif(not THESIS.is_file(), reason="shared/papers/thesis.txt is absent (see shared/README.md)")
@pytest.mark.parametrize("printed", list(BLOCKS))
def test_csv_holds_exactly_the_printed_digits(printed: str) -> None:
    lines = THESIS.read_text(encoding="utf-8").splitlines()
    markers, table_ids = BLOCKS[printed]
    table_lines = printed_table_lines(lines, markers)
    assert table_lines, f"table {printed} not found in thesis.txt"
    expected_numbers, expected_withheld = printed_cells(table_lines)
    ours_numbers, ours_empty = csv_cells(table_ids)
    # Same printed digits (as text: "38.00" must stay "38.00"), whatever the layout of our files.
    assert sorted(ours_numbers) == sorted(expected_numbers)
    # Every withheld cell is an empty cell (tables with withheld cells have nothing else empty).
    if expected_withheld:
        assert ours_empty == expected_withheld


@pytest.mark.skipif(not THESIS.is_file(), reason="shared/papers/thesis.txt is absent (see shared/README.md)")
def test_withheld_counts_per_table() -> None:
    lines = THESIS.read_text(encoding="utf-8").splitlines()
    counts = {printed: printed_cells(printed_table_lines(lines, BLOCKS[printed][0]))[1] for printed in BLOCKS}
    # Counted by eye in thesis.txt: 3 x 5 in 5.1, 4 x 5 in each of 5.3a-d, 4 x 6 and 3 x 6 in 5.4a-b.
    assert {k: v for k, v in counts.items() if v} == {"5.1": 15, "5.3a": 20, "5.3b": 20, "5.3c": 20, "5.3d": 20,
                                                      "5.4a": 24, "5.4b": 18}
    assert sum(counts.values()) == THESIS.read_text(encoding="utf-8").count("[withheld]")


# --- side_by_side -------------------------------------------------------------------------------------------------

def test_side_by_side_arithmetic_and_union_of_rows_and_columns() -> None:
    thesis = pd.DataFrame({"drums": [90.0, np.nan], "bass": [50.0, 40.0], "flag": ["w/", None]},
                          index=pd.Index(["proposed", "baseline"], name="row"))
    ours = pd.DataFrame({"drums": [87.5, 70.0], "piano": [60.0, 10.0]},
                        index=pd.Index(["proposed", "extra"], name="row"))
    long = side_by_side(thesis, ours, label_ours="ours (smoke)")
    assert list(long.columns) == ["row", "column", "thesis", "ours (smoke)", "difference"]
    # 3 rows (proposed, baseline, extra) x 3 numeric columns (drums, bass, piano); the text column is skipped.
    assert len(long) == 9 and "flag" not in set(long["column"])
    cell = long.set_index(["row", "column"])
    assert cell.loc[("proposed", "drums"), "difference"] == pytest.approx(-2.5)
    assert cell.loc[("proposed", "drums"), "thesis"] == 90.0
    assert math.isnan(cell.loc[("proposed", "bass"), "difference"])  # ours lacks bass
    assert math.isnan(cell.loc[("baseline", "drums"), "difference"])  # thesis cell empty
    assert cell.loc[("extra", "piano"), "ours (smoke)"] == 10.0
    assert math.isnan(cell.loc[("extra", "piano"), "thesis"])
    assert list(long["row"].drop_duplicates()) == ["proposed", "baseline", "extra"]


def test_side_by_side_with_a_real_table() -> None:
    thesis = load_thesis_table("5.2")
    ours = thesis + 1.0
    long = side_by_side(thesis, ours)
    assert len(long) == 18
    np.testing.assert_allclose(long["difference"], 1.0)
