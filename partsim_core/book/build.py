"""Build the partsim Jupyter Book: data step, papermill execution of each chapter, offline HTML.

``partsim book build`` (see :mod:`partsim_core.cli.book`) calls :func:`build_book`, which

1. runs the data step: the embedded mini-Slakh dataset of the preset is generated unless ``data_root`` is given
   (:func:`partsim_core.data.synth.synthesize_dataset` returns at once when it is already there);
2. converts every chapter notebook listed in ``_toc.yml`` (jupytext "percent" files ``notebooks/<name>.py``) to
   ``.ipynb`` and executes it exactly once with papermill in a staging folder under
   ``cache_root()/book/<preset>/``; a failing cell fails the build with a :class:`PartsimError` naming the
   notebook and the cell's error;
3. copies ``plotly.min.js`` from the installed plotly package into the staged ``book/_static`` and runs
   ``jupyter-book build`` on the staging folder with execution off;
4. publishes ``_build/html`` atomically to ``<repo>/_build/html`` or the requested folder.

Every chapter notebook calls :func:`setup_notebook` in its first code cell so that plotly figures render as plain
HTML divs that rely on the single ``plotly.min.js`` the book ships (no CDN, no require.js), and
:func:`resolve_dataset_root` to find its data.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.resources
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from partsim_core.data.cache import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    cache_root,
    repository_root,
)
from partsim_core.data.dataset import resolve_dataset_root
from partsim_core.errors import PartsimError
from partsim_core.presets import get_preset

#: Parameters every chapter notebook declares in its ``parameters`` cell.
COMMON_PARAMETERS: tuple[str, ...] = ("preset", "data_root")

#: Name of the plotly renderer registered by :func:`setup_notebook`.
PLOTLY_RENDERER_NAME = "partsim_book"

#: File written into a published HTML folder; marks it as ours so that a rebuild may replace it.
BUILD_INFO_NAME = ".partsim-book.json"

#: Folders and files of the repository that make up the book besides the notebooks.
BOOK_SOURCES: tuple[str, ...] = ("_config.yml", "_toc.yml", "book")

#: Terminal colour codes in Sphinx's output (stripped from the saved log).
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

#: Lines of the jupyter-book log worth quoting in an error message.
PROBLEM_LINE = re.compile(r"WARNING:|ERROR:|CRITICAL:|^\w*(Error|Exception)\b")


# --------------------------------------------------------------------------------------------------------------
# Inside a chapter notebook
# --------------------------------------------------------------------------------------------------------------


def _make_plotly_div_renderer() -> Any:
    """A plotly renderer that emits a bare ``<div>`` + inline script, without plotly.js (book pages load it once)."""
    import plotly.io as pio
    from plotly.io._base_renderers import MimetypeRenderer

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

    return PlotlyDivRenderer()


def setup_notebook() -> None:
    """Prepare a chapter notebook for the book; every chapter calls this in its first code cell.

    Registers and selects a plotly renderer whose figures are HTML divs that use the ``plotly.min.js`` shipped once
    with the book (see ``_config.yml``), instead of embedding 4 MB of plotly.js per figure or loading it from a CDN,
    and sets pandas display options for readable tables.

    Used by: every notebook in ``notebooks/`` (Data chapter, chapters 3-6).
    """
    import warnings

    import pandas as pd
    import plotly.io as pio

    # tqdm.auto falls back to text bars without ipywidgets and warns about it on import; text bars are what the
    # book wants (widget bars would need widget JavaScript from a CDN).
    warnings.filterwarnings("ignore", message="IProgress not found")
    pio.renderers[PLOTLY_RENDERER_NAME] = _make_plotly_div_renderer()
    pio.renderers.default = PLOTLY_RENDERER_NAME
    pd.set_option("display.max_rows", 60)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.width", 160)
    pd.set_option("display.precision", 3)


# --------------------------------------------------------------------------------------------------------------
# Table of contents and notebook sources
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TocEntry:
    """One ``file:`` entry of ``_toc.yml``, resolved against the repository."""

    name: str  # as written in _toc.yml, without suffix: "notebooks/data"
    source: Path  # the file it resolves to: notebooks/data.py or book/intro.md

    @property
    def is_notebook(self) -> bool:
        """True for a chapter notebook (a jupytext ``.py`` or an ``.ipynb`` source)."""
        return self.source.suffix in (".py", ".ipynb")


def _toc_file_names(node: Any) -> list[str]:
    """All ``file``/``root`` values of a parsed ``_toc.yml``, in reading order."""
    names: list[str] = []
    if isinstance(node, Mapping):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                names.append(node[key])
        for value in node.values():
            if isinstance(value, list | Mapping):
                names.extend(_toc_file_names(value))
    elif isinstance(node, list):
        for item in node:
            names.extend(_toc_file_names(item))
    return names


def read_toc(repo: Path | None = None) -> list[TocEntry]:
    """Every page of ``_toc.yml``, resolved to its source file in the repository.

    Used by: :func:`build_book` and ``tests/test_book.py``.

    Raises:
        PartsimError: ``_toc.yml`` is missing or malformed, or an entry has no source file.
    """
    repo = _repo(repo)
    toc_path = repo / "_toc.yml"
    try:
        toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartsimError(f"{toc_path}: no table of contents (is this the partsim repository?)") from None
    except yaml.YAMLError as error:
        raise PartsimError(f"{toc_path}: not valid YAML: {error}") from None
    if not isinstance(toc, Mapping) or "root" not in toc:
        raise PartsimError(f"{toc_path}: expected a jupyter-book table of contents with a 'root' entry")
    entries = []
    for name in _toc_file_names(toc):
        stem = Path(name).with_suffix("") if Path(name).suffix in (".md", ".py", ".ipynb") else Path(name)
        candidates = [repo / f"{stem}{suffix}" for suffix in (".py", ".md", ".ipynb")]
        found = [path for path in candidates if path.is_file()]
        if not found:
            raise PartsimError(f"{toc_path}: entry {name!r} has no source file ({stem}.py, .md or .ipynb)")
        entries.append(TocEntry(name=str(stem), source=found[0]))
    return entries


def read_notebook_source(path: Path) -> Any:
    """Read a chapter notebook (jupytext percent ``.py`` or ``.ipynb``) as an nbformat notebook.

    Raises:
        PartsimError: the file is missing or cannot be parsed.
    """
    import jupytext

    try:
        if path.suffix == ".py":
            return jupytext.read(path, fmt="py:percent")
        return jupytext.read(path)
    except FileNotFoundError:
        raise PartsimError(f"notebook {path} does not exist") from None
    except Exception as error:  # jupytext raises many kinds; all mean "cannot read this file"
        raise PartsimError(f"notebook {path}: cannot be read: {error}") from error


def notebook_parameter_names(notebook: Any, name: str = "notebook") -> tuple[str, ...]:
    """Names assigned in the cell tagged ``parameters`` of ``notebook``.

    Raises:
        PartsimError: no cell is tagged ``parameters``, or that cell is not valid Python.
    """
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as error:
                raise PartsimError(f"{name}: the 'parameters' cell is not valid Python: {error}") from None
            names: list[str] = []
            for statement in tree.body:
                targets = statement.targets if isinstance(statement, ast.Assign) else (
                    [statement.target] if isinstance(statement, ast.AnnAssign) else [])
                names.extend(target.id for target in targets if isinstance(target, ast.Name))
            return tuple(names)
    raise PartsimError(f"{name}: no code cell is tagged 'parameters' (papermill needs one)")


# --------------------------------------------------------------------------------------------------------------
# Executing one notebook
# --------------------------------------------------------------------------------------------------------------


def _current_python_kernel_manager_class() -> type:
    """A kernel manager that always starts ``sys.executable``'s ipykernel, whatever kernelspecs are installed.

    A user-level ``python3`` kernelspec could point at another interpreter without partsim installed; the book
    must run with the same Python (and packages) as the ``partsim`` command. The kernel talks over Unix sockets
    beside its connection file (IPC transport) rather than loopback TCP, which other local users could reach (and
    which makes ipykernel print a warning per notebook).
    """
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class CurrentPythonKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name="Python 3 (partsim)",
                    language="python",
                    metadata={},
                )
            return self._kernel_spec

    return CurrentPythonKernelManager


def _describe_failed_cell(error: Any) -> str:
    """``cell [3] `x = load(...)`: ValueError: ...`` from a papermill execution error."""
    first_line = next((line.strip() for line in str(error.source).splitlines() if line.strip()), "")
    if len(first_line) > 70:
        first_line = first_line[:67] + "..."
    evalue = str(error.evalue).strip().splitlines()
    return f"cell [{error.exec_count}] `{first_line}`: {error.ename}: {evalue[0] if evalue else ''}".rstrip(": ")


def execute_notebook(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    cwd: Path | None = None,
    display_name: str | None = None,
    failed_copy: Path | None = None,
) -> Path:
    """Execute a chapter notebook once with papermill and write the executed ``.ipynb`` atomically.

    Only parameters that the notebook's ``parameters`` cell declares are injected. On a failing cell nothing is
    written at ``output``; the partially executed notebook goes to ``failed_copy`` for inspection.

    Used by: :func:`build_book`; ``tests/test_book.py``.

    Args:
        source: jupytext percent ``.py`` (or ``.ipynb``) notebook.
        output: where the executed notebook goes.
        parameters: values for the ``parameters`` cell; names the notebook does not declare are not injected.
        cwd: working directory of the kernel (default: the source's folder).
        display_name: how messages name the notebook (default: the source path).
        failed_copy: where a failed execution is kept (default: ``<output stem>.failed.ipynb`` beside it).

    Raises:
        PartsimError: the notebook cannot be read, lacks a ``parameters`` cell, or a cell fails; the message names
            the notebook, the cell and its error.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    label = display_name or str(source)
    notebook = read_notebook_source(source)
    declared = notebook_parameter_names(notebook, label)
    injected = {key: value for key, value in parameters.items() if key in declared}
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    output = Path(output)
    failed_copy = Path(failed_copy) if failed_copy is not None else output.with_name(f"{output.stem}.failed.ipynb")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".tmp.ipynb", dir=output.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    # papermill re-parses the parameters cell and warns about lines it cannot read (comments with "=") and about
    # parameters it thinks unknown; notebook_parameter_names has already done that check properly.
    papermill_logger = logging.getLogger("papermill")
    previous_level = papermill_logger.level
    papermill_logger.setLevel(logging.ERROR)
    try:
        papermill.execute_notebook(
            notebook,
            str(tmp_path),
            parameters=injected,
            kernel_name="python3",
            language="python",
            cwd=str(cwd or source.parent),
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=False,
            kernel_manager_class=_current_python_kernel_manager_class(),
        )
        os.replace(tmp_path, output)
    except PapermillExecutionError as error:
        kept = ""
        if tmp_path.exists() and tmp_path.stat().st_size:
            failed_copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp_path, failed_copy)
            kept = f" (executed copy: {failed_copy})"
        raise PartsimError(f"notebook {label} failed in {_describe_failed_cell(error)}{kept}") from None
    except Exception as error:  # kernel death, timeouts, papermill input errors: all stop the build
        raise PartsimError(f"notebook {label} could not be executed: {type(error).__name__}: {error}") from error
    finally:
        papermill_logger.setLevel(previous_level)
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
    return output


# --------------------------------------------------------------------------------------------------------------
# Building the book
# --------------------------------------------------------------------------------------------------------------


@dataclass
class BookBuildResult:
    """What :func:`build_book` produced: where the HTML is, and how long each notebook took."""

    preset: str
    html_dir: Path
    data_root: Path
    notebook_seconds: dict[str, float] = field(default_factory=dict)
    sphinx_seconds: float = 0.0
    total_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written as ``.partsim-book.json`` into the HTML folder)."""
        return {
            "preset": self.preset,
            "html_dir": str(self.html_dir),
            "data_root": str(self.data_root),
            "notebook_seconds": {key: round(value, 2) for key, value in self.notebook_seconds.items()},
            "sphinx_seconds": round(self.sphinx_seconds, 2),
            "total_seconds": round(self.total_seconds, 2),
        }


def _repo(repo: Path | None) -> Path:
    """The repository holding ``_config.yml`` / ``_toc.yml`` (default: the checkout this package runs from)."""
    if repo is not None:
        return Path(repo).resolve()
    found = repository_root()
    if found is None or not (found / "_toc.yml").is_file():
        raise PartsimError("the book sources (_config.yml, _toc.yml, notebooks/) were not found; run from a "
                           "source checkout of partsim (pip install -e .)")
    return found


def copy_plotly_js(static_dir: Path) -> Path:
    """Copy ``plotly.min.js`` from the installed plotly package into ``static_dir`` (a built artefact).

    Used by: :func:`build_book` (the staged ``book/_static``).
    """
    source = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    if not source.is_file():
        raise PartsimError(f"the installed plotly package has no {source}; reinstall plotly")
    return atomic_write_bytes(Path(static_dir) / "plotly.min.js", source.read_bytes())


def _stage_sources(repo: Path, stage: Path) -> None:
    """Copy the book's non-notebook sources into the staging folder."""
    for name in BOOK_SOURCES:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, stage / name, ignore=shutil.ignore_patterns("_executed", "__pycache__"))
        elif source.is_file():
            shutil.copy2(source, stage / name)
        else:
            raise PartsimError(f"book source {source} is missing")


def _run_jupyter_book(stage: Path, log_path: Path) -> None:
    """``jupyter-book build`` of the staged folder with this Python; any Sphinx warning fails the build.

    The full log is written to ``log_path``; on failure the error message quotes its warnings and errors.
    """
    command = [
        sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build", str(stage), "--builder", "html", "--warningiserror", "--keep-going",
    ]
    environment = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    completed = subprocess.run(command, cwd=stage, capture_output=True, text=True, check=False, env=environment)
    log_text = ANSI_ESCAPE.sub("", completed.stdout + completed.stderr)
    atomic_write_text(log_path, log_text)
    if completed.returncode != 0:
        lines = log_text.splitlines()
        problems = [line for line in lines if PROBLEM_LINE.search(line)]
        shown = "\n".join((problems or lines)[-30:])
        raise PartsimError(f"jupyter-book build failed (exit {completed.returncode}; full log: {log_path}):\n{shown}")


def _check_output_folder(out: Path, default_out: Path) -> None:
    """Refuse to replace a non-empty folder that is not a previous book build."""
    if out.exists() and out != default_out:
        if not out.is_dir():
            raise PartsimError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / BUILD_INFO_NAME).is_file():
            raise PartsimError(f"--out {out} is a non-empty folder that is not a partsim book build; "
                               "choose an empty or new folder")


def build_book(
    preset: str = "default",
    data_root: str | os.PathLike | None = None,
    abx_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    repo: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> BookBuildResult:
    """Run the data step, execute every chapter notebook of ``_toc.yml`` once, and build the HTML book.

    Used by: ``partsim book build`` and ``tests/test_book.py``.

    Args:
        preset: ``smoke``, ``default`` or ``paper`` (:mod:`partsim_core.presets`).
        data_root: a Slakh2100-format folder; ``None`` generates/reuses the preset's embedded dataset.
        abx_dir: the Inst-Sim-ABX dataset for chapters that declare ``abx_dir`` (chapter 5); ``None`` leaves the
            notebook's own default.
        out: where the HTML goes (default ``<repo>/_build/html``); replaced atomically.
        repo: the repository holding the book sources (default: this checkout).
        progress: show a progress bar over the notebooks.
        log: where one-line progress messages go (default: stderr).

    Raises:
        PartsimError: bad preset or folder, a missing notebook, a failing cell (naming the notebook), or a failing
            jupyter-book build.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    get_preset(preset)
    repo = _repo(repo)
    default_out = repo / "_build" / "html"
    out_path = Path(out).expanduser().resolve() if out is not None else default_out
    _check_output_folder(out_path, default_out)
    if abx_dir is not None and not Path(abx_dir).expanduser().is_dir():
        raise PartsimError(f"--abx {abx_dir} is not a folder (expected the Inst-Sim-ABX dataset)")
    if data_root is not None and not Path(data_root).expanduser().is_dir():
        raise PartsimError(f"--data-root {data_root} is not a folder (expected a Slakh2100-format dataset)")
    entries = read_toc(repo)
    notebooks = [entry for entry in entries if entry.is_notebook]
    # Check every notebook before spending minutes on data and execution.
    for entry in notebooks:
        declared = notebook_parameter_names(read_notebook_source(entry.source), str(entry.source.relative_to(repo)))
        missing = [name for name in COMMON_PARAMETERS if name not in declared]
        if missing:
            raise PartsimError(f"{entry.source.relative_to(repo)}: the 'parameters' cell lacks {', '.join(missing)}")

    say(f"book: data step for preset {preset!r}" + (f" (data root {data_root})" if data_root else ""))
    dataset_root = resolve_dataset_root(preset, data_root or "", progress=progress)
    parameters: dict[str, Any] = {"preset": preset, "data_root": str(dataset_root) if data_root else ""}
    if abx_dir is not None:
        parameters["abx_dir"] = str(Path(abx_dir).expanduser().resolve())

    result = BookBuildResult(preset=preset, html_dir=out_path, data_root=dataset_root)
    book_cache = cache_root() / "book" / preset
    book_cache.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="stage-", dir=book_cache))
    try:
        _stage_sources(repo, stage)
        copy_plotly_js(stage / "book" / "_static")
        bar = tqdm(notebooks, desc="book notebooks", unit="notebook", disable=not progress, file=sys.stderr)
        for index, entry in enumerate(bar, start=1):
            label = str(entry.source.relative_to(repo))
            bar.set_postfix_str(label)
            tick = time.perf_counter()
            execute_notebook(entry.source, stage / f"{entry.name}.ipynb", parameters, cwd=entry.source.parent,
                             display_name=label, failed_copy=book_cache / "failed" / f"{Path(entry.name).name}.ipynb")
            seconds = time.perf_counter() - tick
            result.notebook_seconds[label] = seconds
            message = f"book: [{index}/{len(notebooks)}] {label} executed in {seconds:.1f} s"
            if progress:
                bar.write(message, file=sys.stderr)
            else:
                say(message)
        bar.close()

        say("book: building HTML with jupyter-book (no execution)")
        tick = time.perf_counter()
        _run_jupyter_book(stage, book_cache / "jupyter-book.log")
        result.sphinx_seconds = time.perf_counter() - tick

        # Keep the executed notebooks of the last good build for inspection.
        with atomic_directory(book_cache / "executed") as executed:
            for entry in notebooks:
                target = executed / f"{entry.name}.ipynb"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(stage / f"{entry.name}.ipynb", target)
        result.total_seconds = time.perf_counter() - started
        with atomic_directory(out_path) as publish:
            shutil.copytree(stage / "_build" / "html", publish, dirs_exist_ok=True)
            atomic_write_json(publish / BUILD_INFO_NAME, result.to_dict())
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


def main_summary(result: BookBuildResult) -> str:
    """One-line summary printed by ``partsim book build``."""
    notebooks = len(result.notebook_seconds)
    return (f"book: built {notebooks} chapter notebook(s) for preset {result.preset} in {result.total_seconds:.0f} s "
            f"-> {result.html_dir / 'index.html'}")


def load_build_info(html_dir: Path) -> dict[str, Any]:
    """The ``.partsim-book.json`` provenance written into a published book folder."""
    path = Path(html_dir) / BUILD_INFO_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartsimError(f"{html_dir} holds no partsim book build ({BUILD_INFO_NAME} missing)") from None
