"""Plotly figures and styled tables that several chapter notebooks share.

Only what more than one chapter draws lives here: the "thesis | ours | difference" table beside every result
(:func:`comparison_table`, :func:`wide_comparison`; our cells with their 95 % interval as ``value [low, high]``),
tables of interval cells without a thesis column (:func:`interval_table`), the findings with their verdicts
(:func:`findings_table`), labelled heat maps (distance/correlation matrices, Tables 4.5 and 5.x, Figures 4.11 and
5.8), t-SNE scatter plots (Figures 3.2, 4.7-4.9 and 5.9) and accuracy-against-SDR curves of several separators
(:func:`quality_curve`; chapter 4's crossover, and chapter 3's separator-quality curve can draw with it). Audio
tables live in :mod:`partsim_core.book.audio`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from pandas.io.formats.style import Styler

from partsim_core.book.thesis_tables import cell_frame, is_cell
from partsim_core.errors import PartsimError

#: How an empty (withheld / not applicable / not computed) cell is shown.
MISSING = "–"

#: Colour of each verdict in :func:`findings_table`.
VERDICT_COLOURS = {"holds": "color: #1a7f37", "does not hold": "color: #cf222e", "inconclusive": "color: #9a6700"}

#: Columns of a :func:`~partsim_core.book.thesis_tables.side_by_side` frame besides our label.
_FIXED = ("row", "column", "thesis", "low", "high", "difference")


def format_interval(value: float, low: float = np.nan, high: float = np.nan, digits: int = 2) -> str:
    """``"81.20 [75.00, 86.10]"``; without bounds just the value; :data:`MISSING` for NaN."""
    if value is None or not np.isfinite(value):
        return MISSING
    text = f"{value:.{digits}f}"
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def format_cell(cell: Any, digits: int = 2, scale: float = 1.0) -> str:
    """An interval cell ``{"value", "low", "high"}`` (or a plain number) as :func:`format_interval` text."""
    if is_cell(cell):
        numbers = [np.nan if cell[key] is None else float(cell[key]) * scale for key in ("value", "low", "high")]
        return format_interval(*numbers, digits=digits)
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return MISSING
    return format_interval(float(cell) * scale, digits=digits)


def _ours_label(comparison: pd.DataFrame, function: str) -> str:
    """The label of our column in a side_by_side frame (checking its shape)."""
    ours = [column for column in comparison.columns if column not in _FIXED]
    has_interval = {"low", "high"} <= set(comparison.columns)
    expected = 7 if has_interval else 5
    if len(ours) != 1 or {"row", "column", "thesis", "difference"} - set(comparison.columns) \
            or len(comparison.columns) != expected:
        raise PartsimError(f"{function} needs a side_by_side frame (row, column, thesis, ours, [low, high,] "
                           f"difference); got columns {list(comparison.columns)}")
    return ours[0]


def _thesis_outside(comparison: pd.DataFrame) -> pd.Series:
    """Per line: True when the thesis's value lies outside our interval (False where either is missing)."""
    thesis, low, high = (comparison[key].astype(float) for key in ("thesis", "low", "high"))
    return ((thesis < low) | (thesis > high)) & thesis.notna() & low.notna() & high.notna()


def _difference_colour(value: object) -> str:
    """CSS for a difference cell: green when ours is higher, red when lower, nothing when missing or zero."""
    if not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value == 0:
        return ""
    return "color: #1a7f37" if value > 0 else "color: #cf222e"


def comparison_table(comparison: pd.DataFrame, digits: int = 2, caption: str | None = None) -> Styler:
    """Styled thesis-vs-ours table of a :func:`partsim_core.book.thesis_tables.side_by_side` frame.

    Args:
        comparison: long frame with columns ``row, column, thesis, <ours>, difference`` (any label for ours), or,
            when our side had interval cells, ``row, column, thesis, <ours>, low, high, difference``.
        digits: decimals shown for every number.
        caption: optional caption above the table (e.g. ``"Table 5.2 (%): thesis vs ours, preset smoke"``).

    Returns:
        A pandas ``Styler``: empty cells read ``–``. With intervals, ours reads ``value [low, high]`` and a column
        ``thesis in interval`` says whether the thesis's value lies inside our 95 % interval; the difference is
        coloured only where it does not (green: ours higher, red: lower). Without intervals every non-zero
        difference is coloured. Displaying it in a notebook renders HTML (Jupyter Book keeps it).

    Raises:
        PartsimError: when ``comparison`` lacks the side_by_side columns.
    """
    ours = _ours_label(comparison, "comparison_table")
    if "low" not in comparison.columns:
        numbers = ["thesis", ours, "difference"]
        styler = comparison.style.format({column: f"{{:.{digits}f}}" for column in numbers}, na_rep=MISSING)
        styler = styler.map(_difference_colour, subset=["difference"]).hide(axis="index")
        return styler.set_caption(caption) if caption else styler
    outside = _thesis_outside(comparison)
    inside = np.where(comparison[["thesis", "low", "high"]].isna().any(axis=1), MISSING,
                      np.where(outside, "no", "yes"))
    shown = pd.DataFrame({
        "row": comparison["row"], "column": comparison["column"], "thesis": comparison["thesis"],
        ours: [format_interval(v, lo, hi, digits) for v, lo, hi in
               zip(comparison[ours], comparison["low"], comparison["high"], strict=True)],
        "thesis in interval": inside,
        "difference": comparison["difference"],
    })
    styler = shown.style.format({"thesis": f"{{:.{digits}f}}", "difference": f"{{:.{digits}f}}"}, na_rep=MISSING)
    colours = [_difference_colour(value) if flag else "" for value, flag in zip(shown["difference"], outside,
                                                                                 strict=True)]
    styler = styler.apply(lambda _: colours, subset=["difference"]).hide(axis="index")
    return styler.set_caption(caption) if caption else styler


def interval_table(table: Mapping[Any, Mapping[Any, Any]] | pd.DataFrame, digits: int = 2, scale: float = 1.0,
                   caption: str | None = None) -> Styler:
    """A table of interval cells (``row -> column -> {"value", "low", "high"}``, e.g. a chapter's JSON table) shown
    as ``value [low, high]``; plain numbers show alone, empty cells as ``–``.

    Args:
        table: a JSON table or a frame of cells (rows x columns).
        digits: decimals.
        scale: factor for every number (100 for rates in [0, 1] shown in %).
        caption: text above the table.
    """
    frame = cell_frame(table)
    shown = frame.apply(lambda column: column.map(lambda value: format_cell(value, digits, scale)))
    styler = shown.style
    return styler.set_caption(caption) if caption else styler


def findings_table(findings: Sequence[Mapping[str, Any]], digits: int = 2, caption: str | None = None) -> Styler:
    """The findings of a chapter (``stats.finding`` dicts: claim, verdict, estimate, interval) as a table, the
    verdict coloured (holds green, does not hold red, inconclusive amber).

    Raises:
        PartsimError: a finding without claim, verdict, estimate or interval, or an unknown verdict.
    """
    rows = []
    for index, found in enumerate(findings):
        missing = {"claim", "verdict", "estimate", "interval"} - set(found)
        if missing:
            raise PartsimError(f"finding {index} lacks {sorted(missing)}: {dict(found)}")
        if found["verdict"] not in VERDICT_COLOURS:
            raise PartsimError(f"finding {index}: unknown verdict {found['verdict']!r} (one of {list(VERDICT_COLOURS)})")
        low, high = (np.nan if bound is None else float(bound) for bound in found["interval"])
        estimate = np.nan if found["estimate"] is None else float(found["estimate"])
        rows.append({"claim": found["claim"], "verdict": found["verdict"],
                     "estimate [95 % interval]": format_interval(estimate, low, high, digits)})
    shown = pd.DataFrame(rows, columns=["claim", "verdict", "estimate [95 % interval]"])
    styler = shown.style.map(lambda verdict: VERDICT_COLOURS.get(verdict, ""), subset=["verdict"])
    styler = styler.hide(axis="index").set_properties(subset=["claim"], **{"white-space": "normal"})
    return styler.set_caption(caption) if caption else styler


def heatmap(matrix: pd.DataFrame, title: str = "", colorscale: str = "Viridis", zmin: float | None = None,
            zmax: float | None = None, text_fmt: str | None = ".2f", height: int | None = None) -> go.Figure:
    """Labelled heat map of a matrix frame (rows top to bottom as in the frame), values written in the cells.

    Args:
        matrix: numbers; its index and columns label the axes. NaN cells stay blank.
        title: figure title.
        colorscale: any plotly colour scale name (``"RdBu"`` for correlations, ``"Viridis"`` for distances).
        zmin, zmax: colour range; default: the data range.
        text_fmt: d3 format of the numbers written in the cells (``".2f"``, ``".1%"``); ``None`` writes none
            (use it for large matrices).
        height: figure height in pixels; default grows with the number of rows.

    Returns:
        A plotly ``Figure``.
    """
    values = matrix.to_numpy(dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise PartsimError(f"heatmap needs a non-empty 2-d matrix, got shape {values.shape}")
    x_labels = [str(label) for label in matrix.columns]
    y_labels = [str(label) for label in matrix.index]
    trace = go.Heatmap(z=values, x=x_labels, y=y_labels, colorscale=colorscale, zmin=zmin, zmax=zmax,
                       hoverongaps=False, hovertemplate="%{y} / %{x}: %{z}<extra></extra>")
    if text_fmt is not None:
        trace.update(texttemplate=f"%{{z:{text_fmt}}}")
    figure = go.Figure(trace)
    figure.update_layout(title=title, height=height or max(300, 40 * len(y_labels) + 150))
    # Matrices read top to bottom, like the table they come from.
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_xaxes(type="category")
    return figure


def tsne_scatter(points: pd.DataFrame, color: str | None = None, hover: Sequence[str] | None = None,
                 title: str = "", facet: str | None = None) -> go.Figure:
    """Scatter plot of two-dimensional embeddings (columns ``x`` and ``y``, e.g. from t-SNE).

    Args:
        points: one row per point with columns ``x``, ``y`` and whatever ``color``/``hover``/``facet`` name.
        color: column that colours the points (track ID, part-level label, cluster); treated as categories.
        hover: extra columns shown on hover.
        title: figure title.
        facet: column that splits the figure into panels side by side (e.g. the subspace: drums, bass, ...).

    Returns:
        A plotly ``Figure``; without facets the two axes share one scale (distances in a t-SNE map matter).
    """
    needed = ["x", "y", *([color] if color else []), *(hover or []), *([facet] if facet else [])]
    absent = [column for column in needed if column not in points.columns]
    if absent:
        raise PartsimError(f"tsne_scatter: columns {absent} are missing; the frame has {list(points.columns)}")
    frame = points.copy()
    if color:
        frame[color] = frame[color].astype(str)  # categorical colours, not a continuous scale of track numbers
    figure = px.scatter(frame, x="x", y="y", color=color, hover_data=list(hover or []), facet_col=facet,
                        title=title)
    figure.update_traces(marker={"size": 6, "opacity": 0.8})
    figure.update_xaxes(showticklabels=False, title_text="")
    figure.update_yaxes(showticklabels=False, title_text="")
    if facet is None:
        figure.update_yaxes(scaleanchor="x", scaleratio=1)
    return figure


def wide_comparison(comparison: pd.DataFrame, digits: int = 2, caption: str | None = None) -> Styler:
    """A :func:`~partsim_core.book.thesis_tables.side_by_side` frame laid out like the thesis's table: one line per row,
    and for every column the thesis's value beside ours (``value [low, high]`` when ours has intervals; the difference
    is left out, see :func:`comparison_table`). Chapter 4's wide tables (Table 4.2 has 9 rows x 5 parts) use it.
    """
    ours = _ours_label(comparison, "wide_comparison")
    rows = list(dict.fromkeys(comparison["row"]))
    columns = list(dict.fromkeys(comparison["column"]))
    frame = comparison
    if "low" in comparison.columns:  # ours as "value [low, high]" text; the thesis stays a number
        frame = comparison.copy()
        frame[ours] = [format_interval(v, lo, hi, digits)
                       for v, lo, hi in zip(frame[ours], frame["low"], frame["high"], strict=True)]
    wide = frame.pivot(index="row", columns="column", values=["thesis", ours])
    wide = wide.swaplevel(axis=1).reindex(index=rows, columns=pd.MultiIndex.from_product([columns, ["thesis", ours]]))
    wide.index.name = None
    styler = wide.style.format(lambda value: value if isinstance(value, str) else format_interval(value, digits=digits))
    styler = styler.set_properties(subset=[(column, ours) for column in columns], **{"font-weight": "bold"})
    return styler.set_caption(caption) if caption else styler


def quality_curve(points: pd.DataFrame, reference: Mapping[str, Mapping[str, float]] | None = None,
                  reference_label: str = "reference", title: str = "",
                  y_title: str = "accuracy (%)") -> go.Figure:
    """Accuracy against separator quality, one panel per part: each separator a marker at (SDR, accuracy) with the
    accuracy's 95 % interval as an error bar, joined in SDR order; optionally a reference accuracy per part as a
    horizontal line with its interval as a band (chapter 4's separator crossover: the CSN's Table 4.2 accuracy).

    Args:
        points: one row per separator and part with columns ``separator``, ``part``, ``sdr``, ``accuracy``, ``low``,
            ``high`` (e.g. :meth:`partsim_core.csn.crossover.CrossoverResult.frame`); rows without SDR or accuracy
            are left out.
        reference: ``{part: {"value", "low", "high"}}`` (non-finite cells are not drawn).
        reference_label: legend name of the reference.
        title: figure title.
        y_title: title of the accuracy axis.
    """
    needed = ["separator", "part", "sdr", "accuracy", "low", "high"]
    absent = [column for column in needed if column not in points.columns]
    if absent:
        raise PartsimError(f"quality_curve: columns {absent} are missing; the frame has {list(points.columns)}")
    frame = points.dropna(subset=["sdr", "accuracy"]).sort_values(["part", "sdr"])
    parts = list(dict.fromkeys(points["part"]))
    figure = px.line(frame, x="sdr", y="accuracy", facet_col="part", category_orders={"part": parts},
                     markers=False, title=title, color_discrete_sequence=["#888888"])
    figure.update_traces(showlegend=False)
    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]
    for number, (name, group) in enumerate(frame.groupby("separator", sort=False)):
        for column, part in enumerate(parts, start=1):
            rows = group[group["part"] == part]
            if rows.empty:
                continue
            figure.add_trace(go.Scatter(
                x=rows["sdr"], y=rows["accuracy"], mode="markers", name=str(name), legendgroup=str(name),
                showlegend=column == 1, marker={"symbol": symbols[number % len(symbols)], "size": 9},
                error_y={"type": "data", "symmetric": False, "array": rows["high"] - rows["accuracy"],
                         "arrayminus": rows["accuracy"] - rows["low"]}), row=1, col=column)
    for column, part in enumerate(parts, start=1):
        cell = (reference or {}).get(part)
        if not cell or not np.isfinite(cell.get("value", np.nan)):
            continue
        if np.isfinite(cell.get("low", np.nan)) and np.isfinite(cell.get("high", np.nan)):
            figure.add_hrect(y0=cell["low"], y1=cell["high"], fillcolor="#1f77b4", opacity=0.15, line_width=0,
                             row=1, col=column)
        figure.add_hline(y=cell["value"], line_dash="dash", line_color="#1f77b4", row=1, col=column,
                         annotation_text=reference_label if column == 1 else None)
    figure.update_xaxes(title_text="mean test SDR (dB)")
    figure.update_yaxes(title_text=y_title, col=1)
    return figure
