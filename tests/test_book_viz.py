"""Shared notebook figures: they show the numbers they are given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from partsim_core.errors import PartsimError
from partsim_core.book.thesis_tables import side_by_side
from partsim_core.book.viz import comparison_table, heatmap, tsne_scatter


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
