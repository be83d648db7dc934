"""Shared notebook figures: they show the numbers they are given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from partsim_core.book.thesis_tables import side_by_side
from partsim_core.book.viz import (
    comparison_table,
    findings_table,
    heatmap,
    interval_table,
    tsne_scatter,
    wide_comparison,
)
from partsim_core.errors import PartsimError


def test_comparison_table_formats_and_colours() -> None:
    thesis = pd.DataFrame({"drums": [56.7, np.nan]}, index=pd.Index(["melody", "timbre"], name="row"))
    ours = pd.DataFrame({"drums": [50.1, 70.0]}, index=pd.Index(["melody", "timbre"], name="row"))
    html = comparison_table(side_by_side(thesis, ours), digits=1, caption="Table 5.2").to_html()
    assert "56.7" in html and "50.1" in html and "-6.6" in html  # 50.1 - 56.7
    assert "–" in html  # the empty thesis cell and its difference
    assert "#cf222e" in html and "#1a7f37" not in html  # one lower value, none higher
    assert "Table 5.2" in html
    with pytest.raises(PartsimError, match="side_by_side"):
        comparison_table(thesis)


def test_heatmap_keeps_labels_and_values() -> None:
    matrix = pd.DataFrame([[1.0, 0.25], [np.nan, 1.0]], index=["drums", "bass"], columns=["drums", "bass"])
    figure = heatmap(matrix, title="corr", colorscale="RdBu", zmin=-1, zmax=1, text_fmt=".2f")
    trace = figure.data[0]
    assert list(trace.y) == ["drums", "bass"] and list(trace.x) == ["drums", "bass"]
    assert trace.z[0][1] == 0.25 and np.isnan(trace.z[1][0])
    assert (trace.zmin, trace.zmax) == (-1, 1) and trace.texttemplate == "%{z:.2f}"
    assert figure.layout.title.text == "corr"


def test_tsne_scatter_colours_by_category() -> None:
    points = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 0.0, 1.0, 0.0], "track": [1, 1, 2, 3],
                           "segment": [0, 1, 0, 0]})
    figure = tsne_scatter(points, color="track", hover=["segment"])
    assert sorted(trace.name for trace in figure.data) == ["1", "2", "3"]
    assert sum(len(trace.x) for trace in figure.data) == 4
    with pytest.raises(PartsimError, match="missing"):
        tsne_scatter(points, color="subspace")


# Interval cells as the chapter runners write them: {"value", "low", "high"} (partsim_core.stats.cell).
OURS_CELLS = {"(i)": {"drums": {"value": 0.80, "low": 0.70, "high": 0.90},
                      "bass": {"value": 0.50, "low": 0.45, "high": 0.55}},
              "(c)": {"drums": {"value": 0.20, "low": None, "high": None}}}
THESIS = pd.DataFrame({"drums": [75.0, 15.0], "bass": [96.0, np.nan]},
                      index=pd.Index(["(i)", "(c)"], name="row"))


def test_side_by_side_takes_json_cells_and_scales_them() -> None:
    comparison = side_by_side(THESIS, OURS_CELLS, label_ours="ours (smoke)", scale=100)
    assert list(comparison.columns) == ["row", "column", "thesis", "ours (smoke)", "low", "high", "difference"]
    line = comparison.set_index(["row", "column"]).loc[("(i)", "bass")]
    assert [line["ours (smoke)"], line["low"], line["high"], line["thesis"]] == pytest.approx([50, 45, 55, 96])
    assert line["difference"] == pytest.approx(-46.0)
    unbounded = comparison.set_index(["row", "column"]).loc[("(c)", "drums")]
    assert unbounded["ours (smoke)"] == 20.0 and np.isnan(unbounded["low"])


def test_comparison_table_with_intervals_colours_only_a_thesis_outside() -> None:
    html = comparison_table(side_by_side(THESIS, OURS_CELLS, scale=100), digits=1).to_html()
    assert "80.0 [70.0, 90.0]" in html and "50.0 [45.0, 55.0]" in html
    assert "20.0" in html and "20.0 [" not in html  # no bounds, no interval
    # drums (i): thesis 75 inside [70, 90] -> "yes", +5 not coloured; bass (i): 96 outside [45, 55] -> red -46.
    assert html.count(">yes<") == 1 and html.count(">no<") == 1
    assert "#cf222e" in html and "#1a7f37" not in html


def test_interval_table_and_wide_comparison() -> None:
    html = interval_table(OURS_CELLS, digits=1, scale=100, caption="Table 4.2 (%)").to_html()
    assert "80.0 [70.0, 90.0]" in html and "Table 4.2 (%)" in html and "–" in html  # (c) has no bass
    wide = wide_comparison(side_by_side(THESIS, OURS_CELLS, scale=100), digits=1).to_html()
    assert "80.0 [70.0, 90.0]" in wide and "96.0" in wide
    plain = wide_comparison(side_by_side(THESIS, THESIS * 0.5), digits=1).to_html()
    assert "37.5" in plain and "–" in plain


def test_findings_table_colours_verdicts() -> None:
    findings = [{"claim": "ideal > separated (drums)", "verdict": "holds", "estimate": 4.2, "interval": [1.0, 7.5]},
                {"claim": "CSN > baseline", "verdict": "inconclusive", "estimate": 0.3, "interval": [-2.0, 2.5]}]
    html = findings_table(findings, digits=1).to_html()
    assert "4.2 [1.0, 7.5]" in html and "0.3 [-2.0, 2.5]" in html
    assert "#1a7f37" in html and "#9a6700" in html and "#cf222e" not in html
    with pytest.raises(PartsimError, match="unknown verdict"):
        findings_table([{**findings[0], "verdict": "maybe"}])
    with pytest.raises(PartsimError, match="lacks"):
        findings_table([{"claim": "x"}])
