"""Thesis Tables 3.1 and 3.2 as pure functions of per-track results, every cell with its 95 % interval.

A cell is ``{"value", "low", "high"}`` (:func:`partsim_core.stats.cell`). The unit resampled by the intervals is a
**test track** (a training track for Table 3.1's train columns): per-track values are bootstrapped with
:func:`partsim_core.stats.bootstrap_cell`; with several training seeds the per-track accuracies are a
``(seeds, tracks)`` array and each bootstrap replicate also draws a seed, so the interval includes the seed spread.
Table 3.2's per-track accuracies are weighted by the track's number of test segments, so the cell's value is the
pooled segment accuracy the thesis reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART
from partsim_core.stats import bootstrap_cell, cell

#: Row labels of thesis Table 3.2 by input kind (``mix`` = the track network).
TABLE_3_2_ROWS: dict[str, str] = {"mix": "baseline", "separated": "proposed", "ideal": "proposed (ideal)"}

#: Columns of thesis Table 3.1 (metric and split).
TABLE_3_1_COLUMNS: tuple[str, ...] = ("sdr_train", "sdr_test", "sir_train", "sir_test", "sar_train", "sar_test")

#: Per-track accuracies of one network over seeds: ``(seeds, tracks)`` accuracies (%) and ``(tracks,)`` weights.
PerTrack = tuple[np.ndarray, np.ndarray]

Cell = dict[str, float]


def empty_cell() -> Cell:
    """A cell without data (NaN value and interval)."""
    return cell(math.nan, math.nan, math.nan)


def mean_cell(values: np.ndarray, weights: np.ndarray | None = None, seed: int = 0) -> Cell:
    """Bootstrap cell of per-item values (``(items,)`` or ``(seeds, items)``; NaN items ignored), empty when no
    item has a finite value (and a positive weight)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).any(axis=0)
    if weights is not None:
        finite = finite & (np.asarray(weights, dtype=float) > 0)
    if not finite.any():
        return empty_cell()
    return bootstrap_cell(values, weights=weights, seed=seed)


def table_3_1(quality: pd.DataFrame, seed: int = 0) -> dict[str, dict[str, Cell]]:
    """Table 3.1: per part, the mean SDR/SIR/SAR (dB) over tracks with a bootstrap interval over tracks.

    Args:
        quality: one row per (split, track, part) with ``sdr``, ``sir``, ``sar``
            (:func:`~partsim_core.baseline.bss.separation_quality`); a track where the part is silent has no row.
        seed: seed of the resampling.

    Returns:
        ``{part: {column: cell}}`` with rows :data:`~partsim_core.INSTRUMENTS` and columns
        :data:`TABLE_3_1_COLUMNS` (an empty cell where no track was measured).
    """
    table: dict[str, dict[str, Cell]] = {}
    for part in INSTRUMENTS:
        row = {}
        for column in TABLE_3_1_COLUMNS:
            metric, split = column.split("_")
            chosen = quality[(quality["part"] == part) & (quality["split"] == split)] if len(quality) else quality
            values = chosen[metric].to_numpy(dtype=float) if len(chosen) else np.zeros(0)
            row[column] = mean_cell(values, seed=seed)
        table[part] = row
    return table


def table_3_2(per_track: Mapping[tuple[str, str], PerTrack], seed: int = 0) -> dict[str, dict[str, Cell]]:
    """Table 3.2: kNN track-ID accuracy (%) per row (baseline / proposed / proposed (ideal)) and column (mix and the
    five parts), with a bootstrap interval over test tracks (and seeds).

    Args:
        per_track: ``(input, part) -> ((seeds, tracks) accuracies %, (tracks,) segment counts)`` with input
            ``mix`` (part ``mix``), ``separated`` or ``ideal``.
        seed: seed of the resampling.

    Returns:
        ``{row: {column: cell}}``; cells the thesis leaves empty (e.g. baseline / drums) are absent.
    """
    table: dict[str, dict[str, Cell]] = {row: {} for row in TABLE_3_2_ROWS.values()}
    for (kind, part), (accuracies, weights) in per_track.items():
        table[TABLE_3_2_ROWS[kind]][part] = mean_cell(accuracies, weights, seed=seed)
    return table


def values_frame(table: Mapping[str, Mapping[str, Cell]], columns: list[str] | None = None) -> pd.DataFrame:
    """The cells' values as a frame (rows and columns of the table; NaN where a cell is absent)."""
    columns = columns or list(dict.fromkeys(column for row in table.values() for column in row))
    return pd.DataFrame({column: [table[row].get(column, empty_cell())["value"] for row in table]
                         for column in columns}, index=pd.Index(list(table), name="row"), dtype=float)


def intervals_frame(table: Mapping[str, Mapping[str, Cell]], columns: list[str] | None = None,
                    digits: int = 1) -> pd.DataFrame:
    """The cells as text ``value [low, high]`` (``–`` where absent or undefined), for display."""
    columns = columns or list(dict.fromkeys(column for row in table.values() for column in row))

    def text(item: Cell | None) -> str:
        if item is None or not math.isfinite(item["value"]):
            return "–"
        if not (math.isfinite(item["low"]) and math.isfinite(item["high"])):
            return f"{item['value']:.{digits}f}"
        return f"{item['value']:.{digits}f} [{item['low']:.{digits}f}, {item['high']:.{digits}f}]"

    return pd.DataFrame({column: [text(table[row].get(column)) for row in table] for column in columns},
                        index=pd.Index(list(table), name="row"))


def table_3_2_columns() -> list[str]:
    """Columns of Table 3.2: the mix (track network) and the five parts."""
    return [MIX_PART, *INSTRUMENTS]
