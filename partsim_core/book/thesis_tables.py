"""The thesis's published tables, as data, and a thesis-vs-ours comparison.

Each table of chapters 3-6 is transcribed once into ``data/thesis_tables/table_<id>.csv`` (``3.1`` ->
``table_3_1.csv``, sub-table ``5.3a`` -> ``table_5_3a.csv``); ``data/thesis_tables/README.md`` describes every file.
Cells the thesis prints as ``[withheld]`` (computed by the book from the data instead) or ``–`` (not applicable) are
empty, so they load as NaN.

Our side may be plain numbers or interval cells ``{"value", "low", "high"}`` (:mod:`partsim_core.stats`), as the
chapter runners' JSON tables hold them; :func:`partsim_core.book.viz.comparison_table` shows the latter as
``value [low, high]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def is_cell(value: object) -> bool:
    """Whether ``value`` is an interval cell ``{"value", "low", "high"}`` (:func:`partsim_core.stats.cell`)."""
    return isinstance(value, Mapping) and {"value", "low", "high"} <= set(value)


def cell_frame(table: Mapping[Any, Mapping[Any, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A JSON table ``row -> column -> cell`` (e.g. ``results["table_4_2"]``) as a frame of cells (rows x columns);
    a frame is returned unchanged."""
    if isinstance(table, pd.DataFrame):
        return table
    if not isinstance(table, Mapping):
        raise PartsimError(f"expected a table row -> column -> value, got {type(table).__name__}")
    rows = {row: dict(columns) for row, columns in table.items()}
    columns = list(dict.fromkeys(column for values in rows.values() for column in values))
    frame = pd.DataFrame([[values.get(column, np.nan) for column in columns] for values in rows.values()],
                         index=list(rows), columns=columns, dtype=object)
    frame.index.name = "row"
    return frame


def _interval_part(value: object, key: str) -> float:
    """One number of a cell (``value``, ``low`` or ``high``); plain numbers have no interval (NaN bounds)."""
    if is_cell(value):
        number = value[key]
    elif key == "value":
        number = value
    else:
        return np.nan
    return float(number) if number is not None and pd.notna(number) else np.nan


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that hold numbers, interval cells, or nothing at all: the ones a comparison can subtract."""
    def numeric(values: pd.Series) -> bool:
        present = [value for value in values if is_cell(value) or not (value is None or pd.isna(value))]
        return all(is_cell(value) or isinstance(value, (int, float, np.number)) for value in present)

    return [column for column in frame.columns
            if pd.api.types.is_numeric_dtype(frame[column]) or numeric(frame[column])]


def side_by_side(thesis: pd.DataFrame, ours: pd.DataFrame | Mapping[Any, Mapping[Any, Any]],
                 label_ours: str = "ours", scale: float = 1.0) -> pd.DataFrame:
    """Long comparison table: one line per (row, column) cell of either table.

    Args:
        thesis: a table from :func:`load_thesis_table` (or any frame with row labels as index).
        ours: our result shaped the same way (same row labels and column names where they correspond): a frame of
            numbers or of interval cells, or a JSON table ``row -> column -> cell`` from a chapter's results.
        label_ours: name of the column holding our values (e.g. ``"ours (smoke)"``).
        scale: factor applied to our numbers (e.g. 100 for rates in [0, 1] beside a thesis table in %).

    Returns:
        DataFrame with columns ``row, column, thesis, <label_ours>, difference`` where ``difference = ours -
        thesis`` (NaN where either is missing); when ``ours`` holds interval cells, also ``low`` and ``high``
        (after ours). Rows and columns of both tables are kept: thesis order first, then what only ``ours`` has.
        Only numeric columns take part (text columns such as flags are skipped).
    """
    if label_ours in ("row", "column", "thesis", "difference", "low", "high"):
        raise PartsimError(f"label_ours={label_ours!r} clashes with a fixed column name of the comparison")
    ours = cell_frame(ours)
    intervals = any(is_cell(value) for value in ours.to_numpy().ravel())
    rows = list(dict.fromkeys([*thesis.index, *ours.index]))
    thesis_columns = _numeric_columns(thesis)
    our_columns = _numeric_columns(ours)
    columns = list(dict.fromkeys([*thesis_columns, *our_columns]))
    records = []
    for row in rows:
        for column in columns:
            thesis_value = _cell(thesis, row, column) if column in thesis_columns else np.nan
            ours_cell = _cell(ours, row, column, None) if column in our_columns else np.nan
            our_value = _interval_part(ours_cell, "value") * scale
            record = {"row": row, "column": column, "thesis": thesis_value, label_ours: our_value}
            if intervals:
                record["low"] = _interval_part(ours_cell, "low") * scale
                record["high"] = _interval_part(ours_cell, "high") * scale
            record["difference"] = our_value - thesis_value
            records.append(record)
    columns_out = ["row", "column", "thesis", label_ours, *(["low", "high"] if intervals else []), "difference"]
    return pd.DataFrame.from_records(records, columns=columns_out)


def _cell(frame: pd.DataFrame, row: object, column: str, kind: type | None = float) -> Any:
    """``frame.loc[row, column]`` (as ``kind``; ``None`` keeps it as is), NaN when the row is absent or the cell
    empty."""
    if row not in frame.index:
        return np.nan
    value = frame.at[row, column]
    if isinstance(value, pd.Series):
        raise PartsimError(f"row label {row!r} appears more than once; cannot compare it")
    if is_cell(value):
        return value
    if value is None or pd.isna(value):
        return np.nan
    return kind(value) if kind is not None else value
