"""``partsim book run``: execute one chapter notebook into an executed ``.ipynb`` and a standalone HTML page.

A student runs a chapter with other parameters without converting anything by hand: the jupytext source is
converted in memory, executed once with papermill (:func:`~partsim_core.book.execute.execute_notebook`), and
written with its page into one output folder::

    <out-dir>/<chapter>.ipynb       the executed notebook (open it in Jupyter)
    <out-dir>/<chapter>.html        a page of it that works offline (plotly.min.js beside it)
    <out-dir>/<chapter>_media/      the audio clips of its players (OGG)
    <out-dir>/<name>.json           the results the notebook published (publish_results)
"""

from __future__ import annotations

import html
import importlib.resources
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partsim_core.book.audio import MEDIA_DIR_ENV, MEDIA_URL_ENV
from partsim_core.book.execute import (
    TocEntry,
    book_repo,
    execute_notebook,
    notebook_parameter_names,
    read_notebook_source,
    read_toc,
)
from partsim_core.book.notebook import RESULTS_DIR_ENV
from partsim_core.data.cache import atomic_write_text, cache_root
from partsim_core.data.outputs import output_directory
from partsim_core.errors import PartsimError

#: Terminal colour codes in tracebacks.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

#: Style of the standalone page: readable width, tables that scroll, collapsed code.
PAGE_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }
pre { background: #f6f8fa; padding: 0.5em; overflow-x: auto; font-size: 0.85rem; }
pre.error { background: #fdecea; }
details.code > summary { cursor: pointer; color: #57606a; font-size: 0.85rem; }
.output { overflow-x: auto; margin: 0.5em 0 1em; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { padding: 0.15em 0.5em; border-bottom: 1px solid #ddd; white-space: nowrap; }
.partsim-audio-table audio { height: 2em; width: 15em; }
"""


@dataclass
class ChapterRun:
    """What :func:`run_chapter` wrote: the folder, the executed notebook, its page and the published results."""

    chapter: str
    out_dir: Path
    notebook: Path
    page: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    results: list[Path] = field(default_factory=list)


def parse_parameter_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill reads it: int, float, True/False/None, else the string itself."""
    constants = {"True": True, "False": False, "None": None, "true": True, "false": False}
    if text in constants:
        return constants[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def find_chapter(chapter: str, repo: Path | None = None) -> TocEntry:
    """The ``_toc.yml`` notebook a name means: its file stem (``ch3_separation_baseline``), its toc name
    (``notebooks/ch3_separation_baseline``), its source path, or a unique prefix of the stem (``ch3``, ``data``).

    Raises:
        PartsimError: no notebook or several match; the message lists the chapters.
    """
    repo = book_repo(repo)
    notebooks = [entry for entry in read_toc(repo) if entry.is_notebook]
    wanted = str(chapter).strip()
    stem = Path(wanted).with_suffix("").name if Path(wanted).suffix in (".py", ".ipynb") else Path(wanted).name
    exact = [entry for entry in notebooks if wanted in (entry.name, str(entry.source.relative_to(repo)))
             or Path(entry.name).name == stem]
    matches = exact or [entry for entry in notebooks if Path(entry.name).name.startswith(stem)]
    names = ", ".join(Path(entry.name).name for entry in notebooks)
    if not matches:
        raise PartsimError(f"no chapter notebook {chapter!r} in _toc.yml; chapters: {names}")
    if len(matches) > 1:
        raise PartsimError(f"chapter {chapter!r} is ambiguous ({', '.join(Path(e.name).name for e in matches)}); "
                           f"chapters: {names}")
    return matches[0]


def _render_output(output: Mapping[str, Any], markdown: Any) -> str:
    """HTML of one cell output (rich HTML first, then images, markdown, plain text)."""
    kind = output.get("output_type")
    if kind == "stream":
        return f"<pre>{html.escape(''.join(output.get('text', '')))}</pre>"
    if kind == "error":
        trace = ANSI_ESCAPE.sub("", "\n".join(output.get("traceback", [])))
        return f"<pre class='error'>{html.escape(trace or output.get('ename', 'error'))}</pre>"
    data = output.get("data", {})
    if "text/html" in data:
        return "".join(data["text/html"])
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            return f"<img src='data:{mime};base64,{''.join(data[mime]).strip()}'>"
    if "image/svg+xml" in data:
        return "".join(data["image/svg+xml"])
    if "text/markdown" in data:
        return markdown.render("".join(data["text/markdown"]))
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def notebook_page(notebook: Any, title: str, plotly_js: str = "plotly.min.js") -> str:
    """A standalone HTML page of an executed notebook: prose, outputs in view, each code cell behind a toggle.

    Plotly figures (divs from :func:`~partsim_core.book.notebook.setup_notebook`) use ``plotly_js``, loaded once
    in the page's head from a path relative to the page; nothing is loaded from the internet.
    """
    from markdown_it import MarkdownIt

    markdown = MarkdownIt("commonmark", {"html": True}).enable("table")
    body = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            body.append(markdown.render(cell.source))
        elif cell.cell_type == "code":
            if cell.source.strip():
                body.append(f"<details class='code'><summary>code</summary><pre><code>{html.escape(cell.source)}"
                            "</code></pre></details>")
            outputs = "".join(_render_output(output, markdown) for output in cell.get("outputs", []))
            if outputs:
                body.append(f"<div class='output'>{outputs}</div>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<script src='{html.escape(plotly_js, quote=True)}'></script><style>{PAGE_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def run_chapter(
    chapter: str,
    parameters: Mapping[str, Any],
    overrides: Sequence[tuple[str, str]] = (),
    out_dir: str | Path | None = None,
    fresh: bool = False,
    repo: Path | None = None,
) -> ChapterRun:
    """Execute one chapter notebook with papermill and write the executed notebook, its page and its results.

    Args:
        chapter: which notebook (see :func:`find_chapter`).
        parameters: the shared options (``preset``, ``data_root``, ``device``, ``seed``, ``fresh``); each reaches
            the notebook only when its ``parameters`` cell declares it.
        overrides: ``-p NAME VALUE`` pairs; every NAME must be a declared parameter (values parsed as papermill
            does, see :func:`parse_parameter_value`); they win over ``parameters``.
        out_dir: the output folder; default ``<repo>/_build/run/<chapter>``, replaced by each run. An explicit
            folder follows the output rule (new, empty, or with ``fresh`` a partsim output).
        fresh: allows replacing an explicit ``out_dir`` partsim wrote (and is passed on as ``fresh``).
        repo: the repository holding the notebooks (default: this checkout).

    Raises:
        PartsimError: unknown chapter or parameter, a folder the output rule refuses, or a failing cell (the message
            names the notebook and the cell).
    """
    repo = book_repo(repo)
    entry = find_chapter(chapter, repo)
    stem = Path(entry.name).name
    label = str(entry.source.relative_to(repo))
    declared = notebook_parameter_names(read_notebook_source(entry.source), label)
    unknown = [name for name, _ in overrides if name not in declared]
    if unknown:
        raise PartsimError(f"{label} has no parameter {', '.join(map(repr, unknown))}; its parameters: "
                           f"{', '.join(declared)}")
    values = {name: value for name, value in parameters.items() if name in declared}
    for name in ("data_root", "abx_dir"):  # shown in the page's parameter cell: relative to the kernel's folder
        if values.get(name):
            values[name] = os.path.relpath(Path(values[name]).expanduser().resolve(), entry.source.parent)
    values.update({name: parse_parameter_value(text) for name, text in overrides})
    default_out = repo / "_build" / "run" / stem
    target = Path(out_dir).expanduser() if out_dir is not None else default_out
    inputs = [entry.source.parent / values[name] for name in ("data_root", "abx_dir") if values.get(name)]
    inputs.append(repo / "notebooks")
    plotly_js = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    with output_directory(target, inputs, fresh=fresh or out_dir is None) as folder:
        environment = {MEDIA_DIR_ENV: str(folder / f"{stem}_media"), MEDIA_URL_ENV: f"{stem}_media",
                       RESULTS_DIR_ENV: str(folder)}
        notebook_path = execute_notebook(entry.source, folder / f"{stem}.ipynb", values, cwd=entry.source.parent,
                                         display_name=label, failed_copy=_failed_folder() / f"{stem}.failed.ipynb",
                                         environment=environment)
        notebook = read_notebook_source(notebook_path)
        atomic_write_text(folder / f"{stem}.html", notebook_page(notebook, title=stem))
        shutil.copyfile(str(plotly_js), folder / "plotly.min.js")
        results = sorted(path.name for path in folder.glob("*.json"))
    return ChapterRun(chapter=stem, out_dir=target, notebook=target / f"{stem}.ipynb", page=target / f"{stem}.html",
                      parameters=values, results=[target / name for name in results])


def _failed_folder() -> Path:
    """Where a failed execution's partially executed notebook is kept for inspection."""
    return cache_root() / "book" / "run" / "failed"
