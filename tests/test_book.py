"""Tests of the book: table of contents, the papermill executor, the plotly renderer, and the smoke build.

The smoke build runs once per session (``smoke_book`` fixture, marked slow) into a temporary ``--out``, reusing the
cached dataset (``PARTSIM_CACHE`` is left as is); the browser test opens every page in headless Chromium.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
import yaml

from partsim_core.book.build import (
    BUILD_INFO_NAME,
    build_book,
    execute_notebook,
    notebook_parameter_names,
    read_notebook_source,
    read_toc,
    setup_notebook,
)
from partsim_core.cli import main as partsim_main
from partsim_core.errors import PartsimError

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _toc_files(node) -> list[str]:
    """Every ``root``/``file`` value of a parsed ``_toc.yml`` (written independently of partsim_core.book.build)."""
    found = []
    if isinstance(node, dict):
        found += [node[key] for key in ("root", "file") if key in node]
        for value in node.values():
            found += _toc_files(value) if isinstance(value, (dict, list)) else []
    elif isinstance(node, list):
        for item in node:
            found += _toc_files(item)
    return found


def _write_percent_notebook(path: Path, cells: list[str]) -> Path:
    """A jupytext percent notebook: the first cell is tagged ``parameters``."""
    parts = ["# %% [markdown]\n# A tiny test notebook\n"]
    parts.append('# %% tags=["parameters"]\n' + cells[0] + "\n")
    parts += [f"# %%\n{cell}\n" for cell in cells[1:]]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Fast tests
# ---------------------------------------------------------------------------------------------------------------


def test_every_toc_notebook_exists_and_has_a_parameters_cell() -> None:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = _toc_files(toc)
    assert files[0] == "book/intro" and (REPO_ROOT / "book" / "intro.md").is_file()
    notebooks = [name for name in files if name.startswith("notebooks/")]
    assert "notebooks/data" in notebooks and "notebooks/ch5_perceptual_analysis" in notebooks
    for name in notebooks:
        source = REPO_ROOT / f"{name}.py"
        assert source.is_file(), f"{name} is in _toc.yml but {source.name} is missing"
        text = source.read_text(encoding="utf-8")
        # jupytext percent format: the parameters cell header carries the tag.
        header = re.search(r'^# %%.*tags=\[[^\]]*"parameters"[^\]]*\].*$', text, flags=re.M)
        assert header, f"{source.name} has no cell tagged 'parameters'"
        body = text[header.end():].split("\n# %%", 1)[0]
        assert re.search(r"^preset\s*[:=]", body, flags=re.M), f"{source.name}: parameters lack preset"
        assert re.search(r"^data_root\s*[:=]", body, flags=re.M), f"{source.name}: parameters lack data_root"
    # The library's reader agrees with the independent parse above.
    assert [entry.name for entry in read_toc(REPO_ROOT)] == files


def test_parameter_names_come_from_the_tagged_cell(tmp_path: Path) -> None:
    path = _write_percent_notebook(tmp_path / "params.py", ['preset = "smoke"\ndata_root = ""\nabx_dir: str = ""',
                                                            "x = 1"])
    assert notebook_parameter_names(read_notebook_source(path)) == ("preset", "data_root", "abx_dir")


def test_notebook_without_parameters_cell_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noparams.py"
    path.write_text("# %%\nx = 1\n", encoding="utf-8")
    with pytest.raises(PartsimError, match="noparams.py.*parameters"):
        execute_notebook(path, tmp_path / "out.ipynb", {"preset": "smoke"})
    assert not (tmp_path / "out.ipynb").exists()


def test_failing_cell_raises_partsim_error_naming_the_notebook(tmp_path: Path) -> None:
    path = _write_percent_notebook(tmp_path / "broken_chapter.py",
                                   ['preset = "smoke"', "y = 2", 'raise ValueError("boom 42")', "z = 3"])
    output = tmp_path / "executed" / "broken_chapter.ipynb"
    with pytest.raises(PartsimError) as raised:
        execute_notebook(path, output, {"preset": "default"}, display_name="notebooks/broken_chapter.py")
    message = str(raised.value)
    assert "notebooks/broken_chapter.py" in message
    assert "ValueError: boom 42" in message
    assert "\n" not in message  # the CLI prints it as one line
    assert not output.exists()  # no half-written executed notebook
    failed = output.with_name("broken_chapter.failed.ipynb")
    executed = nbformat.read(failed, as_version=4)
    errors = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert [error["evalue"] for error in errors] == ["boom 42"]


def test_executor_injects_only_declared_parameters(tmp_path: Path) -> None:
    path = _write_percent_notebook(tmp_path / "echo.py", ['preset = "smoke"\ndata_root = ""',
                                                          "print(f'{preset}|{data_root}|{\"abx_dir\" in dir()}')"])
    output = execute_notebook(path, tmp_path / "echo.ipynb", {"preset": "paper", "data_root": "/x", "abx_dir": "/a"})
    executed = nbformat.read(output, as_version=4)
    printed = "".join(out.get("text", "") for cell in executed.cells for out in cell.get("outputs", []))
    assert printed.strip() == "paper|/x|False"


def test_plotly_figures_render_as_divs_without_plotlyjs() -> None:
    import plotly.graph_objects as go
    import plotly.io as pio

    previous = pio.renderers.default
    try:
        setup_notebook()
        renderer = pio.renderers[pio.renderers.default]
        figure = go.Figure(go.Bar(x=["drums", "bass"], y=[3, 4]))
        bundle = renderer.to_mimebundle(figure.to_dict())
    finally:
        pio.renderers.default = previous
    html = bundle["text/html"]
    assert set(bundle) == {"text/html"}
    assert re.search(r'<div id="partsim-figure-\d+" class="plotly-graph-div"', html)
    assert "Plotly.newPlot" in html
    # plotly.min.js is ~4.8 MB: a figure that embedded it, or loaded it from a CDN, would show here.
    assert len(html) < 20_000 and "<script src" not in html and "cdn" not in html.lower()


def test_cli_build_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        partsim_main(["book", "build", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--preset", "--data-root", "--abx", "--out-dir", "--device", "--seed", "--fresh", "--no-progress",
                   "smoke", "default", "paper"):
        assert option in text
    assert "--out " not in text  # --out is always a file; the book is a folder


def test_build_refuses_to_replace_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "thesis.tex").write_text("precious", encoding="utf-8")
    assert partsim_main(["book", "build", "--preset", "smoke", "--out-dir", str(tmp_path), "--no-progress"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "thesis.tex").read_text(encoding="utf-8") == "precious"


def test_unknown_data_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(PartsimError, match="no_such_dataset"):
        build_book("smoke", data_root=tmp_path / "no_such_dataset", out_dir=tmp_path / "book", progress=False)


# ---------------------------------------------------------------------------------------------------------------
# The smoke build (once per session) and its checks
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML of the whole book built with ``partsim book build --preset smoke --out-dir <tmp>``, once."""
    out = tmp_path_factory.mktemp("book") / "build"
    code = partsim_main(["book", "build", "--preset", "smoke", "--out-dir", str(out), "--no-progress"])
    assert code == 0, "partsim book build --preset smoke failed (see the captured stderr)"
    return out / "html"


def _html_pages(html_dir: Path) -> list[Path]:
    return sorted(path for path in html_dir.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(path.relative_to(html_dir).parts))


@pytest.mark.slow
def test_smoke_book_has_every_chapter(smoke_book: Path) -> None:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    for name in _toc_files(toc):
        assert (smoke_book / f"{name}.html").is_file(), f"{name}.html missing from the built book"
    info = json.loads((smoke_book / BUILD_INFO_NAME).read_text(encoding="utf-8"))
    notebooks = [name for name in _toc_files(toc) if name.startswith("notebooks/")]
    assert sorted(info["notebook_seconds"]) == sorted(f"{name}.py" for name in notebooks)
    assert info["preset"] == "smoke"
    data_page = (smoke_book / "notebooks" / "data.html").read_text(encoding="utf-8")
    assert data_page.count('class="plotly-graph-div"') >= 4  # durations, shares, tempo, spectrogram
    # Audio plays from OGG files beside the page at the model's rate, never inlined.
    sources = re.findall(r'<audio[^>]*\bsrc="([^"]+)"', data_page)
    assert len(sources) >= 2 and "base64" not in data_page
    for source in sources:
        assert source.startswith("data_media/") and source.endswith(".ogg")
        clip = smoke_book / "notebooks" / source
        assert clip.read_bytes()[:4] == b"OggS"
    assert "Traceback" not in data_page


@pytest.mark.slow
def test_smoke_book_loads_no_remote_script(smoke_book: Path) -> None:
    assert (smoke_book / "_static" / "plotly.min.js").stat().st_size > 1_000_000
    for page in _html_pages(smoke_book):
        html = page.read_text(encoding="utf-8")
        remote = re.findall(r"""<script[^>]*\bsrc=["']?(?:https?:)?//""", html, flags=re.I)
        assert not remote, f"{page.name} loads a remote script"
        assert not re.search(r"""["'](?:https?:)?//[^"']+\.js\b""", html), f"{page.name} names a remote .js URL"
        assert "require.min.js" not in html
        if 'class="plotly-graph-div"' in html:
            # plotly.js is loaded once, synchronously, before the first inline figure script.
            assert html.count("plotly.min.js") == 1
            tag = re.search(r"<script[^>]*plotly\.min\.js[^>]*>", html).group(0)
            assert "defer" not in tag and "async" not in tag
            assert html.index("plotly.min.js") < html.index("Plotly.newPlot")


#: Folders of the machine that built the book; no published file may name them.
MACHINE_PATHS = ("/work/", "/home/", "/root/", "/tmp/", str(REPO_ROOT), str(Path.home()))

#: Files that are not text (audio, images, fonts) and need no check.
BINARY_SUFFIXES = {".ogg", ".png", ".jpg", ".svg", ".woff", ".woff2", ".ttf", ".eot", ".ico", ".gif"}


@pytest.mark.slow
def test_smoke_book_prints_no_machine_paths(smoke_book: Path) -> None:
    build = smoke_book.parent  # html/ and results/
    checked = 0
    for path in sorted(build.rglob("*")):
        if not path.is_file() or path.suffix in BINARY_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found = sorted({machine for machine in MACHINE_PATHS if machine in text})
        assert not found, f"{path.relative_to(build)} names {found}"
        checked += 1
    assert checked > 10


@pytest.mark.slow
def test_smoke_book_collapses_every_code_cell(smoke_book: Path) -> None:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    for name in (name for name in _toc_files(toc) if name.startswith("notebooks/")):
        page = (smoke_book / f"{name}.html").read_text(encoding="utf-8")
        cells = re.findall(r'<div class="cell((?: tag_[^ "]+)*) docutils container">', page)
        assert cells, f"{name}: no code cells found"
        visible = [tags for tags in cells if " tag_hide-input" not in tags and " tag_remove-input" not in tags]
        assert not visible, f"{name}: {len(visible)} code cell(s) shown without a toggle"
        assert page.count('<details class="admonition hide above-input">') >= len(cells) - page.count("tag_remove")
        assert 'class="cell_output' in page  # outputs stay in view


@pytest.mark.slow
def test_smoke_book_writes_each_chapters_results(smoke_book: Path) -> None:
    results = smoke_book.parent / "results"
    data = json.loads((results / "data.json").read_text(encoding="utf-8"))
    assert data["preset"] == "smoke" and data["tracks"]["test"] >= 1
    info = json.loads((smoke_book / BUILD_INFO_NAME).read_text(encoding="utf-8"))
    assert sorted(info["results"]) == sorted(path.stem for path in results.glob("*.json"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="session")
def served_book(smoke_book: Path) -> Iterator[str]:
    """``http://127.0.0.1:<random port>/`` serving the built book from a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(smoke_book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_renders_in_headless_chromium(smoke_book: Path, served_book: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium'); the browser test needs it")
    from playwright.sync_api import sync_playwright

    pages = _html_pages(smoke_book)
    assert any(page.name == "data.html" for page in pages)
    figures_seen = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for path in pages:
                url = served_book + path.relative_to(smoke_book).as_posix()
                page = browser.new_page()
                errors: list[str] = []
                requests: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(f"pageerror: {error}"))
                page.on("console", lambda message, errors=errors: errors.append(
                    f"console: {message.text} @ {message.location.get('url', '')}")
                    if message.type == "error" and "favicon" not in (message.location.get("url", "")
                                                                       + message.text) else None)
                page.on("request", lambda request, requests=requests: requests.append(request.url))
                response = page.goto(url, wait_until="load")
                assert response is not None and response.ok, f"{url} did not load"
                if re.search(r"<meta[^>]+http-equiv=.refresh", path.read_text(encoding="utf-8"), flags=re.I):
                    # index.html only redirects to the root page: follow it, then check where it lands.
                    page.wait_for_url(lambda current, url=url: current != url, timeout=10_000)
                    page.wait_for_load_state("load")
                n_figures = page.locator(".plotly-graph-div").count()
                if n_figures:
                    page.wait_for_function(
                        "n => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && "
                        "[...document.querySelectorAll('.plotly-graph-div')]"
                        ".filter(d => d.querySelector('.main-svg')).length === n", arg=n_figures, timeout=30_000)
                drawn = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')]"
                                      ".filter(d => d.querySelector('.main-svg')).length")
                assert drawn == n_figures, f"{path.name}: {drawn} of {n_figures} figures drawn"
                figures_seen += n_figures
                # Every audio player's file (OGG beside the page) loads and has a duration.
                audio = page.evaluate("""async () => Promise.all([...document.querySelectorAll('audio')].map(
                    a => new Promise(done => {
                        a.addEventListener('loadedmetadata', () => done([a.getAttribute('src'), a.duration]),
                                           {once: true});
                        a.addEventListener('error', () => done([a.getAttribute('src'), -1]), {once: true});
                        a.preload = 'metadata'; a.load(); })))""")
                broken = [source for source, duration in audio if not duration > 0]
                assert not broken, f"{path.name}: audio that does not load: {broken}"
                page.wait_for_timeout(200)  # let late console errors arrive
                assert not errors, f"{path.name}: JavaScript errors: {errors}"
                remote = [request for request in requests
                          if urlparse(request).scheme not in ("data", "blob")
                          and urlparse(request).hostname != "127.0.0.1"]
                assert not remote, f"{path.name}: requests leave 127.0.0.1: {remote}"
                page.close()
        finally:
            browser.close()
    assert figures_seen >= 4
