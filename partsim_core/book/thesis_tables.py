"""The thesis's published tables, as data, and a thesis-vs-ours comparison.

Each table of chapters 3-6 is transcribed once into ``data/thesis_tables/table_<id>.csv`` (``3.1`` ->
``table_3_1.csv``, sub-table ``5.3a`` -> ``table_5_3a.csv``); ``data/thesis_tables/README.md`` describes every file.
Cells the thesis prints as ``[withheld]`` (computed by the book from the data instead) or ``–`` (not applicable) are
empty, so they load as NaN.

Used by: every chapter notebook, to show "thesis | ours | difference" beside each result (see
:func:`partsim_core.book.viz.comparison_table`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from partsim_core.errors import PartsimError

_TABLE_FILE = re.compile(r"^table_(\d+)_(\d+)([a-z]?)\.csv$")


def thesis_tables_dir() -> Path:
    """Folder holding the transcribed tables: ``data/thesis_tables`` at the repository root."""
    return Path(__file__).resolve().parents[2] / "data" / "thesis_tables"


def available_thesis_tables() -> list[str]:
    """Ids of the transcribed tables (``"3.1"``, ``"5.3a"``, ...), in chapter order."""
    folder = thesis_tables_dir()
    found = []
    for path in folder.glob("table_*.csv") if folder.is_dir() else []:
        match = _TABLE_FILE.match(path.name)
        if match:
            chapter, number, part = match.groups()
            found.append(((int(chapter), int(number), part), f"{chapter}.{number}{part}"))
    return [table_id for _, table_id in sorted(found)]


def _table_path(table_id: str) -> Path:
    """CSV file for ``table_id`` such as ``"4.2"`` or ``"5.3a"``."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*([a-dA-D]?)\s*", str(table_id))
    path = None
    if match:
        chapter, number, part = match.groups()
        path = thesis_tables_dir() / f"table_{chapter}_{number}{part.lower()}.csv"
    if path is None or not path.is_file():
        available = ", ".join(available_thesis_tables()) or "none (data/thesis_tables is missing)"
        raise PartsimError(f"unknown thesis table {table_id!r}; available: {available}")
    return path


def load_thesis_table(table_id: str) -> pd.DataFrame:
    """One published table of the thesis, as transcribed in ``data/thesis_tables``.

    Args:
        table_id: ``"3.1"``, ``"4.2"``, ``"5.3a"``, ... (see :func:`available_thesis_tables`).

    Returns:
        DataFrame indexed by the thesis's row label (lowercased, column ``row``), one column per thesis column.
        Columns whose non-empty cells are all numbers are float; others (the ``w/`` flags of Tables 4.2 and 6.1,
        the strategies of 6.1) stay text. Withheld or absent cells are NaN.

    Raises:
        PartsimError: for an unknown id (the message lists the available ones) or an unreadable file.

    Used by: every chapter notebook's comparison tables.
    """
    path = _table_path(table_id)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise PartsimError(f"cannot read thesis table {path.name}: {error}") from None
    if raw.columns[0] != "row":
        raise PartsimError(f"thesis table {path.name} must start with a 'row' column, got {raw.columns[0]!r}")
    table = raw.set_index("row")
    table = table.replace("", np.nan)
    for column in table.columns:
        values = table[column]
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() == values.notna().sum():
            table[column] = numbers.astype(float)
    table.index.name = "row"
    table.attrs["thesis_table"] = str(table_id).strip()
    return table


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that hold numbers (or nothing at all): the ones a comparison can subtract."""
    return [column for column in frame.columns
            if pd.api.types.is_numeric_dtype(frame[column]) or frame[column].isna().all()]


def side_by_side(thesis: pd.DataFrame, ours: pd.DataFrame, label_ours: str = "ours") -> pd.DataFrame:
    """Long comparison table: one line per (row, column) cell of either frame.

    Args:
        thesis: a table from :func:`load_thesis_table` (or any frame with row labels as index).
        ours: our result shaped the same way (same row labels and column names where they correspond).
        label_ours: name of the column holding our values (e.g. ``"ours (smoke)"``).

    Returns:
        DataFrame with columns ``row, column, thesis, <label_ours>, difference`` where ``difference = ours -
        thesis`` (NaN where either is missing). Rows and columns of both frames are kept: thesis order first,
        then what only ``ours`` has. Only numeric columns take part (text columns such as flags are skipped).

    Used by: :func:`partsim_core.book.viz.comparison_table` in every chapter notebook.
    """
    if label_ours in ("row", "column", "thesis", "difference"):
        raise PartsimError(f"label_ours={label_ours!r} clashes with a fixed column name of the comparison")
    rows = list(dict.fromkeys([*thesis.index, *ours.index]))
    thesis_columns = _numeric_columns(thesis)
    our_columns = _numeric_columns(ours)
    columns = list(dict.fromkeys([*thesis_columns, *our_columns]))
    records = []
    for row in rows:
        for column in columns:
            thesis_value = _cell(thesis, row, column) if column in thesis_columns else np.nan
            our_value = _cell(ours, row, column) if column in our_columns else np.nan
            records.append({"row": row, "column": column, "thesis": thesis_value, label_ours: our_value,
                            "difference": our_value - thesis_value})
    return pd.DataFrame.from_records(records, columns=["row", "column", "thesis", label_ours, "difference"])


def _cell(frame: pd.DataFrame, row: object, column: str) -> float:
    """``frame.loc[row, column]`` as a float, NaN when the row is absent or the cell empty."""
    if row not in frame.index:
        return np.nan
    value = frame.at[row, column]
    if isinstance(value, pd.Series):
        raise PartsimError(f"row label {row!r} appears more than once; cannot compare it")
    return float(value) if pd.notna(value) else np.nan
