"""Plotly figures and styled tables that several chapter notebooks share.

Only what more than one chapter draws lives here: the "thesis | ours | difference" table beside every result
(:func:`comparison_table`), labelled heat maps (distance/correlation matrices, Tables 4.5 and 5.x, Figures 4.11 and
5.8) and t-SNE scatter plots (Figures 3.2, 4.7-4.9 and 5.9).

Used by: the chapter notebooks in ``notebooks/``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from pandas.io.formats.style import Styler

from partsim_core.errors import PartsimError

#: How an empty (withheld / not applicable / not computed) cell is shown.
MISSING = "–"


def _difference_colour(value: object) -> str:
    """CSS for a difference cell: green when ours is higher, red when lower, nothing when missing or zero."""
    if not isinstance(value, (int, float, np.floating)) or not np.isfinite(value) or value == 0:
        return ""
    return "color: #1a7f37" if value > 0 else "color: #cf222e"


def comparison_table(comparison: pd.DataFrame, digits: int = 2, caption: str | None = None) -> Styler:
    """Styled thesis-vs-ours table of a :func:`partsim_core.book.thesis_tables.side_by_side` frame.

    Args:
        comparison: long frame with columns ``row, column, thesis, <ours>, difference`` (any label for ours).
        digits: decimals shown for every number.
        caption: optional caption above the table (e.g. ``"Table 5.2 (%): thesis vs ours, preset smoke"``).

    Returns:
        A pandas ``Styler``: empty cells read ``–``, the difference is green when ours is higher, red when lower.
        Displaying it in a notebook renders HTML (Jupyter Book keeps it).

    Raises:
        PartsimError: when ``comparison`` lacks the side_by_side columns.
    """
    required = {"row", "column", "thesis", "difference"}
    missing = required - set(comparison.columns)
    if missing or len(comparison.columns) != 5:
        raise PartsimError(f"comparison_table needs a side_by_side frame (row, column, thesis, ours, difference); "
                           f"got columns {list(comparison.columns)}")
    numbers = [column for column in comparison.columns if column not in ("row", "column")]
    styler = comparison.style.format({column: f"{{:.{digits}f}}" for column in numbers}, na_rep=MISSING)
    styler = styler.map(_difference_colour, subset=["difference"]).hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    return styler


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
    and for every column the thesis's value beside ours (the difference is left out; see :func:`comparison_table`).

    Used by: chapter 4's wide tables (Table 4.2 has 9 rows x 5 parts).
    """
    required = {"row", "column", "thesis", "difference"}
    if required - set(comparison.columns) or len(comparison.columns) != 5:
        raise PartsimError(f"wide_comparison needs a side_by_side frame (row, column, thesis, ours, difference); "
                           f"got columns {list(comparison.columns)}")
    ours = [column for column in comparison.columns if column not in required][0]
    rows = list(dict.fromkeys(comparison["row"]))
    columns = list(dict.fromkeys(comparison["column"]))
    wide = comparison.pivot(index="row", columns="column", values=["thesis", ours])
    wide = wide.swaplevel(axis=1).reindex(index=rows, columns=pd.MultiIndex.from_product([columns, ["thesis", ours]]))
    wide.index.name = None
    styler = wide.style.format(f"{{:.{digits}f}}", na_rep=MISSING)
    styler = styler.set_properties(subset=[(column, ours) for column in columns], **{"font-weight": "bold"})
    if caption:
        styler = styler.set_caption(caption)
    return styler
