"""Reading the table of contents and executing one chapter notebook with papermill.

The jupytext "percent" sources ``notebooks/<name>.py`` are converted in memory (never by hand), the cell tagged
``parameters`` tells which parameters a notebook takes, and :func:`execute_notebook` runs it once in a kernel of
this very Python, passing the runner's output folders (media, results) through the kernel's environment.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from partsim_core.data.cache import repository_root
from partsim_core.errors import PartsimError

#: Tag that makes Jupyter Book collapse a code cell's input behind a toggle (outputs stay in view).
HIDE_INPUT_TAG = "hide-input"

#: Tags after which a cell is not collapsed again (the author already chose how it shows).
VISIBILITY_TAGS = frozenset({"hide-input", "hide-cell", "remove-input", "remove-cell", "show-input"})

#: Notebook metadata papermill writes that would print the builder's absolute paths into the published files.
PAPERMILL_PATH_KEYS = ("input_path", "output_path")


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


def book_repo(repo: Path | None) -> Path:
    """The repository holding ``_config.yml`` / ``_toc.yml`` (default: the checkout this package runs from)."""
    if repo is not None:
        return Path(repo).resolve()
    found = repository_root()
    if found is None or not (found / "_toc.yml").is_file():
        raise PartsimError("the book sources (_config.yml, _toc.yml, notebooks/) were not found; run from a "
                           "source checkout of partsim (pip install -e .)")
    return found


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

    Raises:
        PartsimError: ``_toc.yml`` is missing or malformed, or an entry has no source file.
    """
    repo = book_repo(repo)
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


@contextlib.contextmanager
def kernel_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables while a kernel starts (it inherits this process's environment), then restore."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update({name: str(value) for name, value in variables.items()})
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def collapse_code_cells(notebook: Any) -> Any:
    """Tag every code cell ``hide-input`` (unless it already has a visibility tag): the book shows the outputs and
    keeps the code behind a toggle. Changes ``notebook`` in place and returns it."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.setdefault("metadata", {}).get("tags", []))
        if not VISIBILITY_TAGS & set(tags):
            cell.metadata["tags"] = [*tags, HIDE_INPUT_TAG]
    return notebook


def _scrub_papermill_paths(notebook: Any) -> Any:
    """Drop papermill's record of the input and output paths (the builder's folders) from the metadata."""
    record = notebook.metadata.get("papermill", {})
    for key in PAPERMILL_PATH_KEYS:
        record.pop(key, None)
    return notebook


def execute_notebook(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    cwd: Path | None = None,
    display_name: str | None = None,
    failed_copy: Path | None = None,
    environment: Mapping[str, str] | None = None,
    collapse_code: bool = False,
) -> Path:
    """Execute a chapter notebook once with papermill and write the executed ``.ipynb`` atomically.

    Only parameters that the notebook's ``parameters`` cell declares are injected. On a failing cell nothing is
    written at ``output``; the partially executed notebook goes to ``failed_copy`` for inspection.

    Args:
        source: jupytext percent ``.py`` (or ``.ipynb``) notebook.
        output: where the executed notebook goes.
        parameters: values for the ``parameters`` cell; names the notebook does not declare are not injected.
        cwd: working directory of the kernel (default: the source's folder).
        display_name: how messages name the notebook (default: the source path).
        failed_copy: where a failed execution is kept (default: ``<output stem>.failed.ipynb`` beside it).
        environment: variables the kernel gets (e.g. the media and results folders); this process's environment
            is restored afterwards.
        collapse_code: tag every code cell ``hide-input`` (the book's code toggles).

    Raises:
        PartsimError: the notebook cannot be read, lacks a ``parameters`` cell, or a cell fails; the message names
            the notebook, the cell and its error.
    """
    import nbformat
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes it private; the executed notebook is for readers
    # papermill re-parses the parameters cell and warns about lines it cannot read (comments with "=") and about
    # parameters it thinks unknown; notebook_parameter_names has already done that check properly.
    papermill_logger = logging.getLogger("papermill")
    previous_level = papermill_logger.level
    papermill_logger.setLevel(logging.ERROR)
    try:
        with kernel_environment(environment or {}):
            executed = papermill.execute_notebook(
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
        _scrub_papermill_paths(executed)
        if collapse_code:
            collapse_code_cells(executed)
        nbformat.write(executed, str(tmp_path))
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
