"""What a chapter notebook calls: set up the page (:func:`setup_notebook`) and hand its results to the runner
(:func:`publish_results`).

Both work the same whether the notebook runs inside ``partsim book build``, ``partsim book run`` or by hand in
Jupyter; the runner tells the notebook where its outputs go through environment variables, which the kernel
inherits (:data:`RESULTS_DIR_ENV`, and the media folder of :mod:`partsim_core.book.audio`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer

from partsim_core.data.cache import atomic_write_text
from partsim_core.errors import PartsimError

#: Name of the plotly renderer registered by :func:`setup_notebook`.
PLOTLY_RENDERER_NAME = "partsim_book"

#: Environment variable naming the folder where :func:`publish_results` writes ``<name>.json``.
RESULTS_DIR_ENV = "PARTSIM_BOOK_RESULTS_DIR"

#: Allowed result names: what becomes ``_build/results/<name>.json``.
RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PlotlyDivRenderer(MimetypeRenderer):
    """Renders a figure as ``text/html``: one div and an inline ``Plotly.newPlot`` call, no plotly.js."""

    def __init__(self) -> None:
        # Deterministic div ids (rather than random UUIDs) keep rebuilt HTML identical for identical results.
        self._counter = itertools.count(1)

    def to_mimebundle(self, fig_dict: dict) -> dict[str, str]:
        html = pio.to_html(
            fig_dict,
            include_plotlyjs=False,
            include_mathjax=False,
            full_html=False,
            validate=False,
            div_id=f"partsim-figure-{next(self._counter)}",
            default_width="100%",
            config={"displaylogo": False, "responsive": True},
        )
        return {"text/html": html}


def setup_notebook() -> None:
    """Prepare a chapter notebook for the book; every chapter calls this in its first code cell.

    Registers and selects a plotly renderer whose figures are HTML divs that use the ``plotly.min.js`` shipped once
    with the book (see ``_config.yml``), instead of embedding 4 MB of plotly.js per figure or loading it from a CDN,
    and sets pandas display options for readable tables.
    """
    # tqdm.auto falls back to text bars without ipywidgets and warns about it on import; text bars are what the
    # book wants (widget bars would need widget JavaScript from a CDN).
    warnings.filterwarnings("ignore", message="IProgress not found")
    pio.renderers[PLOTLY_RENDERER_NAME] = PlotlyDivRenderer()
    pio.renderers.default = PLOTLY_RENDERER_NAME
    pd.set_option("display.max_rows", 60)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.width", 160)
    pd.set_option("display.precision", 3)


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON: numpy and pandas scalars and arrays unwrapped, NaN and infinities as ``null``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Path):
        raise PartsimError(f"results {where}: a path ({value.name}) has no place in published results; name the "
                           "dataset by preset or a relative location")
    raise PartsimError(f"results {where}: {type(value).__name__} is not JSON (use dicts, lists, numbers, strings)")


def publish_results(name: str, results: Mapping[str, Any]) -> None:
    """Hand a chapter's results dict to the runner; a chapter notebook calls this in its last cell.

    Under ``partsim book build`` the file ends up as ``_build/results/<name>.json``, under ``partsim book run`` as
    ``<out-dir>/<name>.json``. Run by hand (no runner set :data:`RESULTS_DIR_ENV`), it only checks ``results``.

    Args:
        name: the chapter's result name, e.g. ``"ch3"`` (letters, digits, ``_``, ``-``, ``.``).
        results: the chapter runner's JSON dict (the schema of issue 13: ``findings`` and tables of cells).

    Returns nothing (so that, as a cell's last line, it prints no path of the machine).

    Raises:
        PartsimError: a bad name, or a value that is not JSON (numpy values are converted; NaN becomes null).
    """
    if not isinstance(name, str) or not RESULT_NAME.match(name):
        raise PartsimError(f"publish_results: bad result name {name!r} (letters, digits, '_', '-', '.')")
    if not isinstance(results, Mapping):
        raise PartsimError(f"publish_results {name!r}: results must be a dict, got {type(results).__name__}")
    text = json.dumps(_plain(results, name), indent=2, allow_nan=False) + "\n"
    folder = os.environ.get(RESULTS_DIR_ENV, "")
    if folder:
        path = Path(folder) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
