"""The bad-input matrix of the ``partsim`` command (issue 12): each row is a command line, the damage done to the
user's files before it runs, the exit status and message expected, and the promise that nothing was lost (every file
of the user's work folder has the same checksum after the run, and no output, half-written or not, appeared).

Also the error contract itself (:func:`partsim_core.cli.main`): user errors are one line with exit status 2, bugs one
line naming a crash log with exit status 1, ``--debug`` prints the traceback.

Rows run in-process through ``partsim_core.cli.main`` (fast); a few run as a subprocess to prove that no traceback
reaches stderr. The chapter commands are covered only through the shared mechanisms (``--out`` / ``--out-dir`` /
``--preset``), and every such row must be refused *before* any work: reading or generating a dataset inside such a
row is reported as a failure (the guard below). Chapter command names live in :data:`CHAPTER_COMMANDS`.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_data_slakh import write_track

from partsim_core import cli
from partsim_core.cli import data as cli_data
from partsim_core.cli import main
from partsim_core.data import dataset as data_dataset
from partsim_core.data import slakh, synth
from partsim_core.data.outputs import MARKER, PROVENANCE_KEY
from partsim_core.errors import PartsimError, reading_user_file

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE = Path("/sys/kernel")  # not writable even for root (Linux)


# --------------------------------------------------------------------------------------------------------------
# The user's work folder and the damage done to it
# --------------------------------------------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with a checksum of its content (links by target, folders by name)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = "special"
    return found


def tone(seconds: float = 1.0, rate: int = 8000, level: float = 0.1) -> np.ndarray:
    return (level * np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(seconds * rate)))).astype(np.float32)


def make_root(work: Path) -> Path:
    """A small, valid Slakh-format root: two tracks of one second."""
    root = work / "root"
    write_track(root / "train" / "Track00001", {"S00": {"program": 0, "audio": tone()},
                                                "S01": {"program": 33, "audio": tone(level=0.05)}})
    write_track(root / "test" / "Track00002", {"S00": {"program": 128, "is_drum": True, "audio": tone()}})
    return root


def truncate_stem(work: Path) -> None:
    path = work / "root" / "train" / "Track00001" / "stems" / "S00.flac"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def delete_stem(work: Path) -> None:
    (work / "root" / "train" / "Track00001" / "stems" / "S01.flac").unlink()


def garble_metadata(work: Path) -> None:
    (work / "root" / "train" / "Track00001" / "metadata.yaml").write_text("stems: {S00: [broken\n")


def metadata_not_utf8(work: Path) -> None:
    (work / "root" / "train" / "Track00001" / "metadata.yaml").write_bytes(b"stems:\n  S00: {program_num: \xff\xfe}\n")


def metadata_without_program(work: Path) -> None:
    (work / "root" / "train" / "Track00001" / "metadata.yaml").write_text("stems:\n  S00: {is_drum: false}\n")


def nan_stem(work: Path) -> None:
    audio = tone()
    audio[100] = np.nan
    path = work / "root" / "train" / "Track00001" / "stems" / "S00.flac"
    path.unlink()
    sf.write(path.with_suffix(".wav"), audio, 8000, subtype="FLOAT")


def inf_mix(work: Path) -> None:
    audio = tone()
    audio[-1] = -np.inf
    path = work / "root" / "test" / "Track00002" / "mix.flac"
    path.unlink()
    sf.write(path.with_suffix(".wav"), audio, 8000, subtype="DOUBLE")


def delete_mix(work: Path) -> None:
    (work / "root" / "test" / "Track00002" / "mix.flac").unlink()


def folder_at(name: str) -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        (work / name).mkdir(parents=True, exist_ok=True)
        (work / name / "keep.txt").write_text("the user's file")
    return damage


def file_at(name: str, text: str = '{"mine": true}') -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    return damage


def bytes_at(name: str, data: bytes) -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        (work / name).write_bytes(data)
    return damage


def link_at(name: str, target: str) -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        (work / target).write_text('{"partsim": {"version": "0"}}')
        (work / name).symlink_to(work / target)
    return damage


def other_partsim_dataset(work: Path) -> None:
    """A folder partsim generated with seed 7 (marker and ground truth; no audio needed to recognise it)."""
    folder = work / "ds"
    folder.mkdir()
    (folder / MARKER).write_text("{}\n")
    (folder / synth.GROUND_TRUTH_FILE).write_text(json.dumps(
        {"generator": {"name": synth.GENERATOR_NAME, "version": synth.GENERATOR_VERSION, "preset": "smoke",
                       "seed": 7, "soundfont": "TimGM6mb.sf2"}, "tracks": {}}))


def broken_soundfont(work: Path) -> None:
    (work / "font.sf2").write_bytes(b"RIFF\x00\x00\x00\x00sfbk not really")


def real_soundfont(work: Path) -> None:
    (work / "font.sf2").write_bytes(synth.default_soundfont().read_bytes())


def redux_json(text: str) -> Callable[[Path], None]:
    return file_at("redux.json", text)


def combine(*damages: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(work: Path) -> None:
        for step in damages:
            step(work)
    return damage


# --------------------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One bad input: ``argv`` may use ``{w}`` (the work folder) and ``{u}`` (an unwritable folder)."""

    name: str
    argv: tuple[str, ...]
    damage: Callable[[Path], None] | None
    code: int
    fragment: str
    #: Where the fragment must appear: ``err`` (the error line) or ``out`` (data check's JSON problems).
    stream: str = "err"
    #: The row needs the valid root of :func:`make_root` (before the damage).
    root: bool = True
    marks: tuple = field(default=())


def row(name: str, argv: str, damage: Callable[[Path], None] | None, code: int, fragment: str, **kwargs) -> object:
    item = Row(name, tuple(argv.split()), damage, code, fragment, **kwargs)
    return pytest.param(item, id=name, marks=list(item.marks))


LINUX_SYS = pytest.mark.skipif(not UNWRITABLE.is_dir() or not sys.platform.startswith("linux"),
                               reason="needs Linux /sys (unwritable even for root)")

DATA_ROWS = [
    # data check: unusable input (exit 2)
    row("check-missing-root", "data check {w}/nowhere", None, 2, "nowhere: Slakh root not found", root=False),
    row("check-no-tracks", "data check {w}/empty", folder_at("empty"), 2, "no TrackXXXXX folders", root=False),
    row("check-root-is-a-file", "data check {w}/afile", file_at("afile"), 2, "Slakh root not found", root=False),
    row("check-redux-missing", "data check {w}/root --redux-json {w}/redux.json", None, 2, "redux file not found"),
    row("check-redux-malformed", "data check {w}/root --redux-json {w}/redux.json", redux_json("[1, 2"), 2,
        "malformed redux JSON"),
    row("check-redux-wrong-shape", "data check {w}/root --redux-json {w}/redux.json",
        redux_json('{"Track00001": {"action": "delete"}}'), 2, "malformed redux JSON"),
    row("check-redux-not-utf8", "data check {w}/root --redux-json {w}/redux.json", bytes_at("redux.json", b"{\xff}"),
        2, "malformed redux JSON"),
    row("check-bad-segment-seconds", "data check {w}/root --segment-seconds -3", None, 2,
        "expected a positive number"),
    # data check: damaged dataset (exit 1, the problem names the file in the JSON on stdout)
    row("check-truncated-flac", "data check {w}/root", truncate_stem, 1,
        "root/train/Track00001/stems/S00.flac", stream="out"),
    row("check-missing-stem", "data check {w}/root", delete_stem, 1,
        "S01.flac\", \"problem\": \"stem marked audio_rendered but file missing", stream="out"),
    row("check-missing-mix", "data check {w}/root", delete_mix, 1, "Track00002/mix.flac\", \"problem\": \"mix file",
        stream="out"),
    row("check-malformed-yaml", "data check {w}/root", garble_metadata, 1,
        "Track00001/metadata.yaml\", \"problem\": \"malformed YAML", stream="out"),
    row("check-metadata-not-utf8", "data check {w}/root", metadata_not_utf8, 1,
        "Track00001/metadata.yaml\", \"problem\": \"cannot read metadata", stream="out"),
    row("check-metadata-no-program", "data check {w}/root", metadata_without_program, 1,
        "stem S00 has no integer program_num", stream="out"),
    row("check-nan-stem", "data check {w}/root", nan_stem, 1, "S00.wav\", \"problem\": \"non-finite audio",
        stream="out"),
    row("check-inf-mix", "data check {w}/root", inf_mix, 1, "mix.wav\", \"problem\": \"non-finite audio",
        stream="out"),
    row("check-short-track", "data check {w}/root --segment-seconds 3", None, 1,
        "shorter than one 3-s segment", stream="out"),
    # data check --out FILE
    row("check-out-folder", "data check {w}/root --out {w}/results", folder_at("results"), 2, "is a folder"),
    row("check-out-under-file", "data check {w}/root --out {w}/afile/summary.json", file_at("afile"), 2,
        "is a file, not a folder"),
    row("check-out-foreign", "data check {w}/root --out {w}/summary.json", file_at("summary.json"), 2,
        "not written by partsim"),
    row("check-out-foreign-fresh", "data check {w}/root --out {w}/summary.json --fresh", file_at("summary.json"), 2,
        "not written by partsim"),
    row("check-out-link", "data check {w}/root --out {w}/link.json --fresh", link_at("link.json", "real.json"), 2,
        "symbolic link"),
    row("check-out-inside-input", "data check {w}/root --out {w}/root/summary.json", None, 2, "inside the input"),
    row("check-out-unwritable", "data check {w}/root --out {u}/summary.json", None, 2, "cannot write",
        marks=(LINUX_SYS,)),
    # data synth
    row("synth-out-dir-foreign", "data synth --preset smoke --jobs 1 --out-dir {w}/mine", folder_at("mine"), 2,
        "not a partsim-generated dataset", root=False),
    row("synth-out-dir-foreign-fresh", "data synth --preset smoke --jobs 1 --out-dir {w}/mine --fresh",
        folder_at("mine"), 2, "not a partsim-generated dataset", root=False),
    row("synth-out-dir-is-dataset", "data synth --preset smoke --jobs 1 --out-dir {w}/root --fresh", None, 2,
        "not a partsim-generated dataset"),
    row("synth-out-dir-file", "data synth --preset smoke --jobs 1 --out-dir {w}/afile", file_at("afile"), 2,
        "is a file", root=False),
    row("synth-out-dir-under-file", "data synth --preset smoke --jobs 1 --out-dir {w}/afile/ds", file_at("afile"),
        2, "is a file, not a folder", root=False),
    row("synth-out-dir-other-seed", "data synth --preset smoke --jobs 1 --out-dir {w}/ds", other_partsim_dataset,
        2, "seed 7", root=False),
    row("synth-out-dir-unwritable", "data synth --preset smoke --jobs 1 --out-dir {u}/ds", None, 2,
        "cannot create a folder", root=False, marks=(LINUX_SYS,)),
    row("synth-soundfont-missing", "data synth --preset smoke --out-dir {w}/ds --soundfont {w}/none.sf2", None, 2,
        "SoundFont not found", root=False),
    row("synth-soundfont-broken", "data synth --preset smoke --out-dir {w}/ds --soundfont {w}/font.sf2",
        broken_soundfont, 2, "cannot load SoundFont", root=False),
    row("synth-out-dir-contains-soundfont", "data synth --preset smoke --out-dir {w} --soundfont {w}/font.sf2 "
        "--fresh", real_soundfont, 2, "contains the input", root=False),
    row("synth-unknown-preset", "data synth --preset huge --out-dir {w}/ds", None, 2, "invalid choice: 'huge'",
        root=False),
    row("synth-jobs-zero", "data synth --jobs 0 --out-dir {w}/ds", None, 2, "expected a positive integer",
        root=False),
    row("synth-seed-negative", "data synth --seed -1 --out-dir {w}/ds", None, 2, "non-negative integer", root=False),
    row("synth-old-out-flag", "data synth --out {w}/ds", None, 2, "unrecognized arguments: --out", root=False),
]



@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """The user's folder (digested before and after); the cache lives beside it, in its own folder."""
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _guard(monkeypatch, functions) -> None:
    """Make calling any of ``functions`` fail the row. Replacing the code object reaches every reference to the
    function, however it was imported."""
    def started(*args, **kwargs):
        raise GeneratorExit("test guard: the command started work (a dataset, a rendering) before refusing its bad "
                            "input; check outputs and options first")

    for function in functions:
        monkeypatch.setattr(function, "__code__", started.__code__)


@pytest.fixture
def no_work(monkeypatch) -> None:
    """A bad input must be refused before any work: rendering tracks or loading a chapter's dataset fails the row."""
    _guard(monkeypatch, [synth.build_track, synth.render_layer, data_dataset.load_dataset,
                         data_dataset.resolve_dataset_root])


def run_row(item: Row, work: Path, capsys) -> tuple[int, str, str]:
    if item.root:
        make_root(work)
    if item.damage is not None:
        item.damage(work)
    argv = [part.format(w=work, u=UNWRITABLE) for part in item.argv]
    before = tree_digest(work)
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's usage errors
        code = exited.code
    captured = capsys.readouterr()
    assert tree_digest(work) == before, "the user's files changed or an output appeared"
    return code, captured.out, captured.err


@pytest.mark.parametrize("item", DATA_ROWS)
def test_data_commands(item: Row, work: Path, capsys, no_work) -> None:
    code, out, err = run_row(item, work, capsys)
    assert code == item.code, err
    text = out if item.stream == "out" else err
    assert item.fragment.lower() in text.lower(), (out, err)
    assert "Traceback" not in err
    if item.code == 2 and item.stream == "err" and "usage:" not in err:
        assert err.startswith("partsim: error: ") and len(err.strip().splitlines()) == 1, err
        named = (str(work), str(UNWRITABLE), "SoundFont")
        assert any(text in err for text in named), err  # the message names the file


# --------------------------------------------------------------------------------------------------------------
# Chapter commands: only the shared mechanisms (--out FILE, --out-dir DIR, --preset)
# --------------------------------------------------------------------------------------------------------------

#: Command line of each chapter command, its output option and whether that names a file or a folder, and the
#: other arguments it needs. Update the names here when a command is renamed.
CHAPTER_COMMANDS: dict[str, tuple[tuple[str, ...], str, str, tuple[str, ...]]] = {
    "baseline-run": (("baseline", "run"), "--out", "file", ()),
    "csn-run": (("csn", "run"), "--out", "file", ()),
    "mixquery-index": (("mixquery", "index"), "--out-dir", "dir", ()),
    "mixquery-run": (("mixquery", "run"), "--out", "file", ()),
    "perceptual-tables": (("perceptual", "tables"), "--out", "file", ("--abx", "{w}/abx")),
    "perceptual-run": (("perceptual", "run"), "--out", "file", ("--abx", "{w}/abx")),
    "perceptual-simulate": (("perceptual", "simulate"), "--out-dir", "dir", ()),
    "train-part": (("train", "part", "--part", "drums"), "--out-dir", "dir", ()),
    "book-build": (("book", "build"), "--out-dir", "dir", ()),
}

#: The shared cases: damage, the output path (relative to the work folder), extra flags, expected fragment.
FILE_CASES = {
    "out-is-a-folder": (folder_at("results.json"), "results.json", (), "is a folder"),
    "out-under-a-file": (file_at("afile"), "afile/results.json", (), "is a file, not a folder"),
    "out-foreign-file": (file_at("results.json"), "results.json", ("--fresh",), "not written by partsim"),
}
DIR_CASES = {
    "out-dir-foreign-folder": (folder_at("mine"), "mine", ("--fresh",), "partsim did not write"),
    "out-dir-is-a-file": (file_at("afile"), "afile", (), "is a file"),
    "out-dir-under-a-file": (file_at("afile"), "afile/out", (), "is a file, not a folder"),
}


def _parser_for(words: tuple[str, ...]):
    """The leaf parser of a command (``None`` when the command does not exist)."""
    parser = cli.build_parser()
    for word in words:
        if word.startswith("-"):
            break
        children = [action.choices for action in parser._actions if hasattr(action, "choices")
                    and isinstance(action.choices, dict)]
        if not children or word not in children[0]:
            return None
        parser = children[0][word]
    return parser


def _options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


#: Commands whose owners are moving them to the output rule as this is written (issue 11/12): their output rows are
#: expected to fail until then. Remove an entry once its rows pass (pytest reports them as XPASS).
PENDING: dict[str, str] = {
}


def chapter_rows():
    for command, (words, option, kind, extra) in CHAPTER_COMMANDS.items():
        marks = [pytest.mark.xfail(reason=PENDING[command], strict=False)] if command in PENDING else []
        for case, spec in (FILE_CASES if kind == "file" else DIR_CASES).items():
            yield pytest.param(command, case, spec, id=f"{command}-{case}", marks=marks)
        yield pytest.param(command, "unknown-preset", None, id=f"{command}-unknown-preset")


@pytest.fixture
def guard_datasets(monkeypatch, no_work) -> None:
    """Chapter rows may not even open or generate a dataset before refusing a bad output."""
    _guard(monkeypatch, [synth.synthesize_dataset, slakh.open_slakh])


@pytest.mark.parametrize("command, case, spec", list(chapter_rows()))
def test_chapter_commands_shared_mechanisms(command, case, spec, work: Path, capsys, guard_datasets) -> None:
    words, option, _, extra = CHAPTER_COMMANDS[command]
    parser = _parser_for(words)
    if parser is None:
        pytest.skip(f"'partsim {' '.join(w for w in words if not w.startswith('-'))}' does not exist (yet)")
    options = _options(parser)
    (work / "abx").mkdir()
    extra = tuple(part.format(w=work) for part in extra)
    preset = ("--preset", "smoke") if "--preset" in options else ()
    if case == "unknown-preset":
        if not preset:
            pytest.skip(f"{command} has no --preset")
        item = Row(command, (*words, *extra, "--preset", "huge"), None, 2, "invalid choice: 'huge'", root=False)
    else:
        if option not in options:
            pytest.skip(f"{command} has no {option} (yet)")
        damage, target, flags, fragment = spec
        flags = tuple(flag for flag in flags if flag in options)
        item = Row(command, (*words, *extra, *preset, option, f"{{w}}/{target}", *flags), damage, 2, fragment,
                   root=False)
    code, _, err = run_row(item, work, capsys)
    assert code == 2, err
    assert item.fragment in err, err
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------------------------
# A few rows as real processes: no traceback reaches the terminal
# --------------------------------------------------------------------------------------------------------------


def run_partsim(*argv: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PARTSIM_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "partsim_core.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.slow
def test_subprocess_errors_are_one_line_without_traceback(tmp_path):
    work = tmp_path / "work"
    root = make_root(work)
    folder_at("mine")(work)
    (work / "results").mkdir()
    before = tree_digest(work)
    cases = [
        (("data", "check", str(work / "nowhere")), "Slakh root not found"),
        (("data", "check", str(root), "--out", str(work / "results")), "is a folder"),
        (("data", "synth", "--preset", "smoke", "--out-dir", str(work / "mine"), "--fresh"),
         "not a partsim-generated dataset"),
    ]
    for argv, fragment in cases:
        done = run_partsim(*argv, cache=tmp_path / "cache")
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("partsim: error: ") and fragment in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    usage = run_partsim("data", "synth", "--jobs", "0", cache=tmp_path / "cache")
    assert usage.returncode == 2 and "usage:" in usage.stderr and "Traceback" not in usage.stderr
    assert tree_digest(work) == before


# --------------------------------------------------------------------------------------------------------------
# The contract of main(): user errors, environment errors, bugs, --debug
# --------------------------------------------------------------------------------------------------------------


def failing_check(error: BaseException):
    def run_check(args):
        raise error
    return run_check


def call(monkeypatch, capsys, error: BaseException, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(cli_data, "run_check", failing_check(error))
    code = main([*argv] if argv else ["data", "check", "somewhere"])
    captured = capsys.readouterr()
    return code, captured.err


def test_partsim_error_is_one_line_exit_2(monkeypatch, capsys, work):
    code, err = call(monkeypatch, capsys, PartsimError("x.yaml: malformed"))
    assert code == 2 and err == "partsim: error: x.yaml: malformed\n"


@pytest.mark.parametrize("number", [errno.EACCES, errno.ENOSPC, errno.EROFS])
def test_environment_failures_are_user_errors(monkeypatch, capsys, work, number):
    error = OSError(number, os.strerror(number), "/some/place/out.json")
    code, err = call(monkeypatch, capsys, error)
    assert code == 2
    assert err == f"partsim: error: '/some/place/out.json': {os.strerror(number)}\n"


def test_missing_file_under_a_named_path_is_a_user_error(monkeypatch, capsys, work):
    named = work / "dataset"
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", str(named / "train" / "x.flac"))
    code, err = call(monkeypatch, capsys, error, "data", "check", str(named))
    assert code == 2 and str(named / "train" / "x.flac") in err and "Traceback" not in err


def test_missing_file_elsewhere_is_a_bug(monkeypatch, capsys, work):
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "/partsim/internal/table.csv")
    code, err = call(monkeypatch, capsys, error, "data", "check", str(work / "dataset"))
    assert code == 1 and "internal error" in err


def test_bug_prints_one_line_and_writes_a_crash_log(monkeypatch, capsys, work):
    code, err = call(monkeypatch, capsys, ZeroDivisionError("division by zero"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("partsim: internal error") and "ZeroDivisionError: division by zero" in lines[0]
    assert "--debug" in lines[0]
    logs = list((work.parent / "cache" / "logs").glob("crash-*.txt"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
    assert "command: partsim data check somewhere" in text


@pytest.mark.parametrize("argv", [["--debug", "data", "check", "somewhere"], ["data", "check", "somewhere",
                                                                               "--debug"]])
def test_debug_prints_the_traceback(monkeypatch, capsys, work, argv):
    code, err = call(monkeypatch, capsys, ZeroDivisionError("division by zero"), *argv)
    assert code == 1 and "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert not (work.parent / "cache" / "logs").exists()
    code, err = call(monkeypatch, capsys, PartsimError("bad value"), *argv)
    assert code == 2 and "Traceback" in err and err.strip().endswith("partsim: error: bad value")


def test_crash_log_falls_back_when_the_cache_is_unwritable(monkeypatch, capsys, work, tmp_path):
    (tmp_path / "blocked").write_text("a file where the cache should be")
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "blocked"))
    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    code, err = call(monkeypatch, capsys, RuntimeError("boom"))
    assert code == 1 and str(tmp_path / "tmp" / "partsim-logs") in err


def test_interrupt_and_broken_pipe(monkeypatch, capsys, work):
    assert call(monkeypatch, capsys, KeyboardInterrupt())[0] == 130
    monkeypatch.setattr(cli, "_silence_stdout", lambda: None)
    assert call(monkeypatch, capsys, BrokenPipeError(errno.EPIPE, "Broken pipe")) == (141, "")


def test_reading_user_file(tmp_path):
    bad = tmp_path / "responses.csv"
    bad.write_bytes(b"a,b\n\xff\xfe\n")
    not_utf8 = r"responses.csv: responses csv is not UTF-8 text \(invalid byte at position 4\)"
    with pytest.raises(PartsimError, match=not_utf8), reading_user_file(bad, "responses csv"):
        bad.read_text(encoding="utf-8")
    missing = tmp_path / "none.csv"
    with pytest.raises(PartsimError, match="none.csv: responses csv not found"), \
            reading_user_file(missing, "responses csv"):
        missing.read_text()
    with pytest.raises(PartsimError, match="expected, found a folder"), reading_user_file(tmp_path, "responses csv"):
        tmp_path.read_text()
    with pytest.raises(ValueError, match="a bug"), reading_user_file(bad):  # other errors are not the file's
        raise ValueError("a bug")


def _commands(parser) -> list[tuple[str, str | None, object]]:
    """``(name, one-line help, parser)`` of the sub-commands of ``parser``."""
    for action in parser._actions:
        if hasattr(action, "_choices_actions"):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return [(name, helps.get(name), child) for name, child in action.choices.items()]
    return []


def test_every_group_and_command_explains_itself():
    """``partsim --help`` lists every group with a one-line help, each group's ``--help`` every command."""
    parser = cli.build_parser()
    top = parser.format_help()
    groups = _commands(parser)
    assert len(groups) == len(cli.COMMAND_MODULES)
    for group, summary, group_parser in groups:
        assert summary and "\n" not in summary and group in top, group
        commands = _commands(group_parser)
        assert commands, f"group {group} has no commands"
        text = group_parser.format_help()
        for command, summary, command_parser in commands:
            assert summary and "\n" not in summary, f"partsim {group} {command}: no one-line help"
            assert command in text
            assert command_parser.description or command_parser.format_help()


def test_no_help_prints_a_doubled_percent_sign():
    """argparse formats help with %: a literal percent sign must be written '%%' in the source, never shown so."""
    doubled = []
    for group, _, group_parser in _commands(cli.build_parser()):
        for command, _, command_parser in _commands(group_parser):
            if "%%" in command_parser.format_help():
                doubled.append(f"partsim {group} {command}")
    assert doubled == []


def test_provenance_key_is_what_fresh_needs(work, capsys):
    root = make_root(work)
    out = work / "summary.json"
    assert main(["data", "check", str(root), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[PROVENANCE_KEY]["command"] == "data check"
    capsys.readouterr()


def _commands_with(option: str):
    """``(words, leaf parser)`` of every partsim command that takes ``option``."""
    stack = [((), cli.build_parser())]
    while stack:
        words, parser = stack.pop()
        children = [action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if not children:
            if option in _options(parser):
                yield words
            continue
        for choices in children:
            stack.extend(((*words, name), child) for name, child in choices.items())


def test_every_seeds_option_refuses_an_absurd_count_before_any_work(work, capsys, no_work) -> None:
    """``--seeds`` is bounded (each seed trains every model again): 101 is refused with exit 2, 100 accepted."""
    from partsim_core.cli.options import MAX_SEEDS

    commands = sorted(_commands_with("--seeds"))
    assert {("book", "build"), ("train", "all"), ("train", "csn"), ("csn", "run")} <= set(commands)
    for words in commands:
        with pytest.raises(SystemExit) as stopped:
            _parser_for(words).parse_args(["--seeds", str(MAX_SEEDS + 1)])
        assert stopped.value.code == 2
        assert f"at most {MAX_SEEDS} seeds" in capsys.readouterr().err, words
        seeds_type = next(action.type for action in _parser_for(words)._actions if "--seeds" in action.option_strings)
        assert seeds_type(str(MAX_SEEDS)) == MAX_SEEDS
