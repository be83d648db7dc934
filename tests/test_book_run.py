"""One notebook executed for the book or for a student: parameters, environment, collapsed code, published results,
``partsim book run``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from partsim_core.book.audio import MEDIA_DIR_ENV
from partsim_core.book.execute import HIDE_INPUT_TAG, execute_notebook
from partsim_core.book.notebook import RESULTS_DIR_ENV, publish_results
from partsim_core.book.run import find_chapter, parse_parameter_value, run_chapter
from partsim_core.cli import main as partsim_main
from partsim_core.data.outputs import MARKER
from partsim_core.errors import PartsimError

TINY_CELLS = [
    'preset = "smoke"\ndata_root = ""\nseed = 0\nscale = 1.5',
    "# %% [markdown]\n# ## A section",
    ("import numpy as np\nimport partsim_core.book.build  # imports tqdm.auto, which warns in a kernel\n"
     "from partsim_core.book.audio import audio_table\n"
     "from partsim_core.book.notebook import publish_results\n"
     "print(f'{preset}|{seed}|{scale}')"),
    "audio_table({'mix': {'a': np.sin(np.arange(8000) / 3.0) * 0.2}}, sample_rate=8000, name='tiny')",
    "publish_results('tiny', {'preset': preset, 'seed': seed, 'value': np.float32(scale) * 2, 'nan': float('nan')})",
]


def _percent_notebook(path: Path, cells: list[str]) -> Path:
    """A jupytext percent notebook whose first cell is tagged ``parameters``; cells starting with "# %%" keep
    their own header."""
    parts = [f"# %% [markdown]\n# # Chapter {path.stem}\n", '# %% tags=["parameters"]\n' + cells[0] + "\n"]
    parts += [cell + "\n" if cell.startswith("# %%") else f"# %%\n{cell}\n" for cell in cells[1:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    """A repository with a table of contents and two tiny chapters."""
    repo = tmp_path / "repo"
    (repo / "book").mkdir(parents=True)
    (repo / "book" / "intro.md").write_text("# Intro\n", encoding="utf-8")
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/tiny\n"
                                   "  - file: notebooks/tinier\n", encoding="utf-8")
    _percent_notebook(repo / "notebooks" / "tiny.py", TINY_CELLS)
    _percent_notebook(repo / "notebooks" / "tinier.py", ['preset = "smoke"\ndata_root = ""', "x = 1"])
    return repo


def test_publish_results_writes_plain_json_where_the_runner_says(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESULTS_DIR_ENV, str(tmp_path / "results"))
    results = {"findings": [{"claim": "x > 0", "verdict": "holds", "estimate": np.float64(0.5),
                             "interval": np.array([0.25, 0.75])}],
               "table_3_2": {"ideal": {"drums": {"value": 91.0, "low": float("nan"), "high": np.inf}}},
               "count": np.int64(3)}
    assert publish_results("ch3", results) is None  # nothing for a notebook to print
    path = tmp_path / "results" / "ch3.json"
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["findings"][0]["interval"] == [0.25, 0.75] and written["count"] == 3
    assert written["table_3_2"]["ideal"]["drums"] == {"value": 91.0, "low": None, "high": None}


def test_publish_results_checks_even_without_a_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESULTS_DIR_ENV, raising=False)
    publish_results("ch3", {"a": 1})
    with pytest.raises(PartsimError, match="bad result name"):
        publish_results("../ch3", {"a": 1})
    with pytest.raises(PartsimError, match="path"):
        publish_results("ch3", {"root": Path("/data/slakh")})
    with pytest.raises(PartsimError, match="not JSON"):
        publish_results("ch3", {"model": object()})


def test_executed_notebook_gets_environment_collapsed_code_and_no_paths(tiny_repo: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "tiny.ipynb"
    before = dict(os.environ)
    execute_notebook(tiny_repo / "notebooks" / "tiny.py", output, {"preset": "paper", "seed": 7},
                     environment={MEDIA_DIR_ENV: str(tmp_path / "media"), RESULTS_DIR_ENV: str(tmp_path / "res")},
                     collapse_code=True)
    assert dict(os.environ) == before  # the kernel's environment did not leak into this process
    executed = nbformat.read(output, as_version=4)
    printed = "".join(out.get("text", "") for cell in executed.cells for out in cell.get("outputs", []))
    assert "paper|7|1.5" in printed
    stderr = [out for cell in executed.cells for out in cell.get("outputs", []) if out.get("name") == "stderr"]
    assert not stderr  # e.g. tqdm's IProgress warning, which names its installed file
    code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert len(code_cells) == 5  # parameters, papermill's injected parameters, three more
    assert all(HIDE_INPUT_TAG in cell.metadata.get("tags", []) for cell in code_cells)
    assert all(HIDE_INPUT_TAG not in cell.metadata.get("tags", []) for cell in executed.cells
               if cell.cell_type == "markdown")
    assert (tmp_path / "media" / "tiny-mix-a.ogg").is_file()
    assert json.loads((tmp_path / "res" / "tiny.json").read_text()) == {"preset": "paper", "seed": 7, "value": 3.0,
                                                                        "nan": None}
    assert str(tmp_path) not in output.read_text(encoding="utf-8")  # papermill's input/output paths dropped


def test_find_chapter_by_name_prefix_and_path(tiny_repo: Path) -> None:
    assert find_chapter("tinier", tiny_repo).name == "notebooks/tinier"
    assert find_chapter("notebooks/tiny.py", tiny_repo).name == "notebooks/tiny"
    assert find_chapter("tiny", tiny_repo).name == "notebooks/tiny"  # exact stem beats the prefix
    with pytest.raises(PartsimError, match="no chapter notebook 'ch9'.*tiny, tinier"):
        find_chapter("ch9", tiny_repo)
    with pytest.raises(PartsimError, match="ambiguous"):
        find_chapter("ti", tiny_repo)


def test_parameter_values_are_read_as_papermill_does() -> None:
    assert [parse_parameter_value(text) for text in ("3", "0.5", "True", "None", "oracle", "1e-3")] == \
        [3, 0.5, True, None, "oracle", 0.001]


def test_run_chapter_writes_notebook_page_media_and_results(tiny_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = run_chapter("tiny", {"preset": "default", "data_root": "", "device": "cpu", "seed": 2},
                      overrides=[("scale", "4")], out_dir=out, repo=tiny_repo)
    assert run.parameters == {"preset": "default", "data_root": "", "seed": 2, "scale": 4}  # no device declared
    assert sorted(path.name for path in out.iterdir()) == \
        sorted([MARKER, "plotly.min.js", "tiny.html", "tiny.ipynb", "tiny.json", "tiny_media"])
    assert json.loads((out / "tiny.json").read_text())["value"] == 8.0
    page = (out / "tiny.html").read_text(encoding="utf-8")
    assert "default|2|4" in page and "<h2>A section</h2>" in page
    assert 'src="tiny_media/tiny-mix-a.ogg"' in page and (out / "tiny_media" / "tiny-mix-a.ogg").is_file()
    assert "<script src='plotly.min.js'>" in page and "<details class='code'>" in page
    # A second run into the same folder needs --fresh; with it the folder is replaced.
    with pytest.raises(PartsimError, match="--fresh"):
        run_chapter("tiny", {"preset": "smoke"}, out_dir=out, repo=tiny_repo)
    run_chapter("tiny", {"preset": "smoke"}, out_dir=out, fresh=True, repo=tiny_repo)
    assert "smoke|0|1.5" in (out / "tiny.html").read_text(encoding="utf-8")


def test_run_chapter_refuses_unknown_parameters_and_foreign_folders(tiny_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PartsimError, match="no parameter 'backend'.*preset, data_root, seed, scale"):
        run_chapter("tiny", {}, overrides=[("backend", "oracle")], out_dir=tmp_path / "x", repo=tiny_repo)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(PartsimError, match="did not write"):
        run_chapter("tiny", {}, out_dir=foreign, fresh=True, repo=tiny_repo)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep"


def test_cli_book_run_reports_a_failing_cell(tiny_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _percent_notebook(tiny_repo / "notebooks" / "tinier.py", ['preset = "smoke"\ndata_root = ""',
                                                              "raise ValueError('boom')"])
    monkeypatch.setattr("partsim_core.book.execute.repository_root", lambda: tiny_repo)
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))  # the failed copy goes there
    code = partsim_main(["book", "run", "tinier", "--out-dir", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert "notebooks/tinier.py failed" in error and "ValueError: boom" in error and "Traceback" not in error
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_build_book_collapses_code_publishes_media_and_results(tiny_repo: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole (tiny) book: jupyter-book renders code behind toggles, audio beside the page, results collected."""
    import shutil

    from partsim_core.book.build import build_book

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    for name in ("_config.yml", "book"):  # the real configuration and static files
        source = Path(__file__).resolve().parents[1] / name
        if source.is_dir():
            shutil.copytree(source, tiny_repo / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, tiny_repo / name)
    data = tmp_path / "data"
    data.mkdir()
    result = build_book("smoke", data_root=data, out_dir=tmp_path / "built", seed=5, repo=tiny_repo, progress=False,
                        log=lambda message: None)
    html_dir = tmp_path / "built" / "html"
    assert result.html_dir == html_dir and (tmp_path / "built" / MARKER).is_file()
    page = (html_dir / "notebooks" / "tiny.html").read_text(encoding="utf-8")
    assert "smoke|5|1.5" in page  # seed passed on because tiny declares it
    # Every code cell is collapsed behind a toggle; its output stays in view.
    cells = re.findall(r'<div class="cell((?: tag_[^ "]+)*) docutils container">', page)
    assert len(cells) == 5 and all(" tag_hide-input" in tags for tags in cells)
    assert page.count('<details class="admonition hide above-input">') == 5  # myst-nb's toggle around each input
    assert 'src="tiny_media/tiny-mix-a.ogg"' in page
    assert (html_dir / "notebooks" / "tiny_media" / "tiny-mix-a.ogg").read_bytes()[:4] == b"OggS"
    assert json.loads((tmp_path / "built" / "results" / "tiny.json").read_text()) == {
        "preset": "smoke", "seed": 5, "value": 3.0, "nan": None}
    assert result.results == {"tiny": "notebooks/tiny"}
    for path in html_dir.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".ipynb", ".json", ".txt", ".js"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert str(tmp_path) not in text, f"{path.relative_to(html_dir)} names the build machine's folders"
