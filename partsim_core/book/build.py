"""Build the partsim Jupyter Book: data step, papermill execution of each chapter, offline HTML, results JSON.

``partsim book build`` (see :mod:`partsim_core.cli.book`) calls :func:`build_book`, which

1. runs the data step: the embedded mini-Slakh dataset of the preset is generated unless ``data_root`` is given
   (:func:`partsim_core.data.synth.synthesize_dataset` returns at once when it is already there);
2. runs the training step (``jobs != 1``): every model the chapter notebooks of ``_toc.yml`` train
   (:func:`~partsim_core.book.training_plan.book_training_jobs`) is trained, or found in the artefact cache, in
   ``jobs`` single-threaded worker processes (:func:`~partsim_core.book.training_plan.run_training_jobs`), so the
   notebooks reuse them instead of training one model after another; ``jobs=1`` skips the step and the notebooks
   train as they go;
3. converts every chapter notebook listed in ``_toc.yml`` (jupytext "percent" files ``notebooks/<name>.py``) to
   ``.ipynb`` and executes it exactly once with papermill in a staging folder under
   ``cache_root()/book/<preset>/``, passing ``preset``, ``data_root``, ``device``, ``seed``, ``seeds``, ``fresh`` and
   ``abx_dir`` to the notebooks whose ``parameters`` cell declares them; a failing cell fails the build with a
   :class:`PartsimError` naming the notebook and the cell's error. Every code cell is tagged ``hide-input``, so
   the pages show prose, tables, figures and audio with the code behind a toggle;
4. copies ``plotly.min.js`` from the installed plotly package into the staged ``book/_static`` and runs
   ``jupyter-book build`` on the staging folder with execution off;
5. publishes the HTML to ``<out-dir>/html`` (with each page's audio files beside it in ``<page>_media/``) and the
   results each notebook handed over with :func:`~partsim_core.book.notebook.publish_results` to
   ``<out-dir>/results/<name>.json``; ``<out-dir>`` is ``<repo>/_build`` unless given.

Every chapter notebook calls :func:`setup_notebook` in its first code cell so that plotly figures render as plain
HTML divs that rely on the single ``plotly.min.js`` the book ships (no CDN, no require.js).
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partsim_core.book.audio import MEDIA_DIR_ENV, MEDIA_URL_ENV
from partsim_core.book.execute import (
    book_repo,
    execute_notebook,
    notebook_parameter_names,
    read_notebook_source,
    read_toc,
)
from partsim_core.book.notebook import RESULTS_DIR_ENV, publish_results, setup_notebook
from partsim_core.book.training_plan import NOTEBOOK_CHAPTERS, book_training_jobs, run_training_jobs
from partsim_core.data.cache import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    cache_root,
)
from partsim_core.data.dataset import load_dataset, resolve_dataset_root
from partsim_core.data.outputs import check_output_dir, output_directory
from partsim_core.errors import PartsimError
from partsim_core.presets import get_preset
from partsim_core.training import usable_cores

__all__ = [
    "BookBuildResult", "build_book", "execute_notebook", "main_summary", "notebook_parameter_names",
    "publish_results", "read_notebook_source", "read_toc", "setup_notebook",
]

#: Parameters every chapter notebook declares in its ``parameters`` cell.
COMMON_PARAMETERS: tuple[str, ...] = ("preset", "data_root")

#: File written into a published HTML folder: the build's preset and timings (no machine paths).
BUILD_INFO_NAME = ".partsim-book.json"

#: Folders and files of the repository that make up the book besides the notebooks.
BOOK_SOURCES: tuple[str, ...] = ("_config.yml", "_toc.yml", "book")

#: Staging sub-folders where notebooks write their audio and their results.
MEDIA_STAGE = "_media"
RESULTS_STAGE = "_results"

#: Suffix of the folder beside a page that holds its audio files (``notebooks/data_media/``).
MEDIA_SUFFIX = "_media"

#: Terminal colour codes in Sphinx's output (stripped from the saved log).
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

#: Lines of the jupyter-book log worth quoting in an error message.
PROBLEM_LINE = re.compile(r"WARNING:|ERROR:|CRITICAL:|^\w*(Error|Exception)\b")


@dataclass
class BookBuildResult:
    """What :func:`build_book` produced: where the HTML and the results are, and how long each notebook took."""

    preset: str
    html_dir: Path
    results_dir: Path
    data: str
    notebook_seconds: dict[str, float] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    #: Seconds of the training step (0 when skipped), its worker processes and its jobs (trained / reused).
    training_seconds: float = 0.0
    training_workers: int = 1
    training_jobs: dict[str, int] = field(default_factory=dict)
    sphinx_seconds: float = 0.0
    total_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written as ``.partsim-book.json`` into the HTML folder; no absolute paths)."""
        return {
            "preset": self.preset,
            "data": self.data,
            "notebook_seconds": {key: round(value, 2) for key, value in self.notebook_seconds.items()},
            "results": dict(self.results),
            "training_seconds": round(self.training_seconds, 2),
            "training_workers": self.training_workers,
            "training_jobs": dict(self.training_jobs),
            "sphinx_seconds": round(self.sphinx_seconds, 2),
            "total_seconds": round(self.total_seconds, 2),
        }


def copy_plotly_js(static_dir: Path) -> Path:
    """Copy ``plotly.min.js`` from the installed plotly package into ``static_dir`` (a built artefact)."""
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


def relative_paths(parameters: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """``parameters`` with every path made relative to the kernel's working folder ``cwd``, so that the pages
    (whose parameter cells show the values) name no absolute folder of the machine that built them."""
    return {name: os.path.relpath(value, cwd) if isinstance(value, Path) else value
            for name, value in parameters.items()}


def media_folder_name(entry_name: str) -> str:
    """Folder beside a page holding its audio: ``notebooks/data`` -> ``data_media`` (in ``notebooks/``)."""
    return f"{Path(entry_name).name}{MEDIA_SUFFIX}"


def _collect_results(stage: Path, notebooks: list[Any], target: Path) -> dict[str, str]:
    """Copy every notebook's published results into ``target``; two notebooks may not publish the same name."""
    owners: dict[str, str] = {}
    target.mkdir(parents=True, exist_ok=True)
    for entry in notebooks:
        for path in sorted((stage / RESULTS_STAGE / entry.name).glob("*.json")):
            if path.stem in owners:
                raise PartsimError(f"{entry.name} and {owners[path.stem]} both publish results named {path.stem!r}")
            owners[path.stem] = entry.name
            shutil.copy2(path, target / path.name)
    return owners


def _publish_media(stage: Path, notebooks: list[Any], html_dir: Path) -> None:
    """Copy each notebook's audio folder beside its page in the built HTML."""
    for entry in notebooks:
        media = stage / MEDIA_STAGE / entry.name
        if media.is_dir():
            shutil.copytree(media, html_dir / Path(entry.name).parent / media_folder_name(entry.name),
                            dirs_exist_ok=True)


def build_book(
    preset: str = "default",
    data_root: str | os.PathLike | None = None,
    abx_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    seeds: int | None = None,
    fresh: bool = False,
    repo: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    jobs: int | None = None,
) -> BookBuildResult:
    """Run the data step, execute every chapter notebook of ``_toc.yml`` once, build the HTML book and collect the
    chapters' results.

    Args:
        preset: ``smoke``, ``default`` or ``paper`` (:mod:`partsim_core.presets`).
        data_root: a Slakh2100-format folder; ``None`` generates/reuses the preset's embedded dataset.
        abx_dir: the Inst-Sim-ABX dataset for chapters that declare ``abx_dir`` (chapter 5); ``None`` leaves the
            notebook's own default.
        out_dir: the build folder, which receives ``html/`` and ``results/``. Default ``<repo>/_build``, whose two
            sub-folders each build replaces; an explicit folder follows the output rule of
            :mod:`partsim_core.data.outputs` (new, empty, or with ``fresh`` a partsim output).
        device: passed to notebooks that declare ``device``.
        seed: passed to notebooks that declare ``seed``.
        seeds: training seeds, passed to notebooks that declare ``seeds`` (``None``: the preset's
            :attr:`~partsim_core.presets.Preset.seeds`, 3 for ``default``).
        fresh: passed to notebooks that declare ``fresh``; allows replacing an explicit ``out_dir`` partsim wrote.
        repo: the repository holding the book sources (default: this checkout).
        progress: show a progress bar over the notebooks.
        log: where one-line progress messages go (default: stderr).
        jobs: worker processes of the training step (``None``: the usable cores); ``1`` skips the step (the
            notebooks train their models themselves, one after another).

    Raises:
        PartsimError: bad preset or folder, a missing notebook, a failing training job (naming it), a failing
            cell (naming the notebook), or a failing jupyter-book build.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    settings = get_preset(preset)
    seeds = int(seeds or settings.seeds)
    if seeds < 1:
        raise PartsimError(f"seeds must be a positive integer, got {seeds}")
    workers = usable_cores() if jobs is None else jobs
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PartsimError(f"jobs must be a positive integer, got {jobs!r}")
    repo = book_repo(repo)
    if abx_dir is not None and not Path(abx_dir).expanduser().is_dir():
        raise PartsimError(f"--abx {abx_dir} is not a folder (expected the Inst-Sim-ABX dataset)")
    if data_root and not Path(data_root).expanduser().is_dir():
        raise PartsimError(f"--data-root {data_root} is not a folder (expected a Slakh2100-format dataset)")
    inputs = [data_root, abx_dir, repo / "notebooks", repo / "book"]
    if out_dir is not None:
        check_output_dir(out_dir, inputs, fresh)
    entries = read_toc(repo)
    notebooks = [entry for entry in entries if entry.is_notebook]
    # Check every notebook before spending minutes on data and execution.
    for entry in notebooks:
        declared = notebook_parameter_names(read_notebook_source(entry.source), str(entry.source.relative_to(repo)))
        missing = [name for name in COMMON_PARAMETERS if name not in declared]
        if missing:
            raise PartsimError(f"{entry.source.relative_to(repo)}: the 'parameters' cell lacks {', '.join(missing)}")

    say(f"book: data step for preset {preset!r}" + (" (given data root)" if data_root else ""))
    dataset_root = resolve_dataset_root(preset, data_root or "", progress=progress)
    parameters: dict[str, Any] = {"preset": preset, "data_root": dataset_root if data_root else "",
                                  "device": device, "seed": int(seed), "seeds": seeds, "fresh": bool(fresh)}
    if abx_dir is not None:
        parameters["abx_dir"] = Path(abx_dir).expanduser().resolve()

    build_root = Path(out_dir).expanduser() if out_dir is not None else repo / "_build"
    result = BookBuildResult(preset=preset, html_dir=build_root / "html", results_dir=build_root / "results",
                             data=f"data root {Path(data_root).name}" if data_root else f"embedded {preset}",
                             training_workers=workers)
    chapters = sorted({NOTEBOOK_CHAPTERS[Path(entry.name).name] for entry in notebooks
                       if Path(entry.name).name in NOTEBOOK_CHAPTERS})
    if workers > 1 and chapters:
        tick = time.perf_counter()
        data = load_dataset(preset, dataset_root if data_root else "", progress=progress)
        plan = book_training_jobs(data, range(int(seed), int(seed) + seeds), device=device, chapters=chapters)
        say(f"book: training step: {len(plan)} jobs in {workers} worker processes")
        # Without a progress bar, one line per finished job (name, trained or reused, seconds) in the build's log.
        trained = run_training_jobs(plan, workers=workers, progress=progress, log=None if progress else say)
        result.training_seconds = time.perf_counter() - tick
        reused = sum(1 for value in trained.values() if isinstance(value, dict) and value.get("reused") is True)
        result.training_jobs = {"jobs": len(plan), "reused": reused}
        say(f"book: training step done in {result.training_seconds:.0f} s ({reused} of {len(plan)} jobs reused)")
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
            environment = {MEDIA_DIR_ENV: str(stage / MEDIA_STAGE / entry.name),
                           MEDIA_URL_ENV: media_folder_name(entry.name),
                           RESULTS_DIR_ENV: str(stage / RESULTS_STAGE / entry.name)}
            execute_notebook(entry.source, stage / f"{entry.name}.ipynb",
                             relative_paths(parameters, entry.source.parent), cwd=entry.source.parent,
                             display_name=label, failed_copy=book_cache / "failed" / f"{Path(entry.name).name}.ipynb",
                             environment=environment, collapse_code=True)
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
        html = stage / "_build" / "html"
        _publish_media(stage, notebooks, html)
        results = stage / "_build" / "results"
        result.results = _collect_results(stage, notebooks, results)

        # Keep the executed notebooks of the last good build for inspection.
        with atomic_directory(book_cache / "executed") as executed:
            for entry in notebooks:
                target = executed / f"{entry.name}.ipynb"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(stage / f"{entry.name}.ipynb", target)
        result.total_seconds = time.perf_counter() - started
        atomic_write_json(html / BUILD_INFO_NAME, result.to_dict())
        if out_dir is None:
            for name, built in (("html", html), ("results", results)):
                with atomic_directory(build_root / name) as publish:
                    shutil.copytree(built, publish, dirs_exist_ok=True)
        else:
            with output_directory(build_root, inputs, fresh) as publish:
                shutil.copytree(html, publish / "html")
                shutil.copytree(results, publish / "results")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


def main_summary(result: BookBuildResult) -> str:
    """One-line summary printed by ``partsim book build``."""
    notebooks = len(result.notebook_seconds)
    return (f"book: built {notebooks} chapter notebook(s) for preset {result.preset} in {result.total_seconds:.0f} s "
            f"-> {result.html_dir / 'index.html'}; results of {len(result.results)} chapter(s) in "
            f"{result.results_dir}")
