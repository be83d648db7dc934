"""Tests of the output rule (``partsim_core.data.outputs``) and the temporary siblings of ``partsim_core.data.cache``:
nothing partsim did not create is deleted, moved or replaced; outputs never overlap inputs; killed runs' leftovers
are cleaned; writes are atomic."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partsim_core.data import cache, outputs
from partsim_core.data.outputs import (
    MARKER,
    check_not_inside_inputs,
    check_output_dir,
    check_output_file,
    is_partsim_file,
    output_directory,
    write_json_output,
)
from partsim_core.errors import PartsimError

REPO = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file (and link) under ``root`` with a hash of its content: what "nothing lost" compares."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "link:" + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[key] = "dir"
    return found


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(cache.TEMPORARY_SUFFIXES))


# --------------------------------------------------------------------------------------------------------------
# --out FILE
# --------------------------------------------------------------------------------------------------------------


def test_new_file_is_written_with_provenance(tmp_path):
    path = write_json_output(tmp_path / "sub" / "r.json", {"x": np.float32(0.5), "v": np.arange(3), "nan": np.nan},
                             command="data check")
    text = path.read_text()
    assert text.index('"partsim"') < text.index('"x"')  # provenance first
    data = json.loads(text)
    assert data["partsim"]["command"] == "data check" and data["x"] == 0.5 and data["v"] == [0, 1, 2]
    assert np.isnan(data["nan"])
    assert is_partsim_file(path)
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("fresh", [False, True])
def test_foreign_file_is_never_replaced(tmp_path, fresh):
    target = tmp_path / "notes.json"
    target.write_text('{"mine": 1}')
    before = tree_digest(tmp_path)
    with pytest.raises(PartsimError, match="not written by partsim") as error:
        write_json_output(target, {"a": 1}, fresh=fresh)
    assert str(target) in str(error.value)
    assert tree_digest(tmp_path) == before


def test_foreign_json_with_a_non_object_provenance_is_foreign(tmp_path):
    for text in ('{"partsim": 1}', '[{"partsim": {}}]', '{"partsim": {}', "\xff\xfe"):
        target = tmp_path / "x.json"
        target.write_bytes(text.encode("latin-1"))
        assert not is_partsim_file(target)
        with pytest.raises(PartsimError, match="not written by partsim"):
            check_output_file(target, fresh=True)


def test_own_file_needs_fresh(tmp_path):
    target = write_json_output(tmp_path / "r.json", {"run": 1})
    with pytest.raises(PartsimError, match="--fresh"):
        write_json_output(target, {"run": 2})
    assert json.loads(target.read_text())["run"] == 1
    write_json_output(target, {"run": 2}, fresh=True)
    assert json.loads(target.read_text())["run"] == 2
    assert leftovers(tmp_path) == []


def test_out_file_naming_a_folder_or_a_path_under_a_file(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("keep")
    before = tree_digest(tmp_path)
    with pytest.raises(PartsimError, match="is a folder"):
        write_json_output(tmp_path / "folder", {})
    with pytest.raises(PartsimError, match="is a file, not a folder"):
        write_json_output(tmp_path / "afile" / "deeper" / "r.json", {})
    with pytest.raises(PartsimError, match="is a file, not a folder"):
        check_output_file(tmp_path / "afile" / "r.json")
    assert tree_digest(tmp_path) == before


def test_out_file_symlink_and_special_files_are_refused(tmp_path):
    real = write_json_output(tmp_path / "real.json", {"a": 1})
    link = tmp_path / "link.json"
    link.symlink_to(real)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    before = tree_digest(tmp_path)
    for path in (link, dangling):
        with pytest.raises(PartsimError, match="symbolic link"):
            write_json_output(path, {"a": 2}, fresh=True)
    with pytest.raises(PartsimError, match="not a regular file"):  # and no blocking read of the pipe
        write_json_output(fifo, {"a": 2}, fresh=True)
    assert tree_digest(tmp_path) == before


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux /sys")
def test_out_file_in_an_unwritable_place():
    with pytest.raises(PartsimError) as error:
        write_json_output("/sys/kernel/partsim-test-output.json", {"a": 1})
    assert "/sys/kernel" in str(error.value)
    assert not Path("/sys/kernel/partsim-test-output.json").exists()


def test_read_only_folder_is_refused_before_work(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    with pytest.raises(PartsimError, match="permission denied") as error:
        check_output_file(tmp_path / "new" / "r.json")
    assert str(tmp_path) in str(error.value)
    with pytest.raises(PartsimError, match="permission denied"):
        check_output_dir(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_write_failure_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(PartsimError, match="No space left") as error:
        write_json_output(tmp_path / "r.json", {"a": 1})
    assert str(tmp_path / "r.json") in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_replacement_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_json_output(tmp_path / "r.json", {"run": 1})
    before = target.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json_output(target, {"run": 2}, fresh=True)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_file_created_while_running_is_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    original = outputs.check_output_file

    def check_then_someone_writes(*args, **kwargs):
        result = original(*args, **kwargs)
        target.write_text("written by someone else")
        return result

    monkeypatch.setattr(outputs, "check_output_file", check_then_someone_writes)
    with pytest.raises(PartsimError, match="created by something else"):
        write_json_output(target, {"a": 1})
    assert target.read_text() == "written by someone else"
    assert leftovers(tmp_path) == []


def test_provenance_key_in_data_is_a_bug(tmp_path):
    with pytest.raises(ValueError):
        write_json_output(tmp_path / "r.json", {"partsim": {"forged": True}})


def test_atomic_write_without_overwrite(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"user")
    with pytest.raises(FileExistsError):
        cache.atomic_write_bytes(target, b"partsim", overwrite=False)
    assert target.read_bytes() == b"user"
    cache.atomic_write_bytes(tmp_path / "b.bin", b"new", overwrite=False)
    assert (tmp_path / "b.bin").read_bytes() == b"new"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def test_output_overlapping_an_input_is_refused(tmp_path):
    data = tmp_path / "dataset"
    (data / "train").mkdir(parents=True)
    (data / "train" / "a.flac").write_bytes(b"audio")
    before = tree_digest(tmp_path)
    with pytest.raises(PartsimError, match="is the input"):
        check_output_dir(data, inputs=[data])
    with pytest.raises(PartsimError, match="is inside the input"):
        write_json_output(data / "train" / "r.json", {}, inputs=[None, "", data])
    with pytest.raises(PartsimError, match="is inside the input"), output_directory(data / "new", inputs=[data]):
        pass
    with pytest.raises(PartsimError, match="contains the input"):
        check_output_dir(tmp_path, inputs=[data], fresh=True)
    link = tmp_path / "alias"
    link.symlink_to(data)
    with pytest.raises(PartsimError, match="inside the input"):  # the link is resolved
        check_output_file(link / "r.json", inputs=[data])
    assert tree_digest(tmp_path) == {**before, "alias": "link:" + str(data)}
    check_output_file(tmp_path / "elsewhere.json", inputs=[data])  # beside the input is fine


# --------------------------------------------------------------------------------------------------------------
# --out-dir DIR
# --------------------------------------------------------------------------------------------------------------


def test_new_and_empty_folders_are_used(tmp_path):
    with output_directory(tmp_path / "new") as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "new" / MARKER).is_file() and (tmp_path / "new" / "a.txt").read_text() == "a"
    (tmp_path / "empty").mkdir()
    with output_directory(tmp_path / "empty") as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [MARKER, "b.txt"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fresh", [False, True])
def test_foreign_folder_is_never_replaced(tmp_path, fresh):
    target = tmp_path / "mine"
    (target / "deep").mkdir(parents=True)
    (target / "deep" / "thesis.tex").write_text("years of work")
    before = tree_digest(tmp_path)
    with pytest.raises(PartsimError, match="partsim did not write") as error, \
            output_directory(target, fresh=fresh) as tmp:
        (tmp / "x").write_text("x")
    assert str(target) in str(error.value)
    assert tree_digest(tmp_path) == before


def test_own_folder_needs_fresh_and_is_replaced_whole(tmp_path):
    target = tmp_path / "out"
    with output_directory(target) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(PartsimError, match="--fresh"), output_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert (target / "old.txt").is_file()
    with output_directory(target, fresh=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "new.txt"]
    assert leftovers(tmp_path) == []


def test_is_own_recognises_older_outputs(tmp_path):
    target = tmp_path / "legacy"
    target.mkdir()
    (target / "partsim_ground_truth.json").write_text("{}")
    with pytest.raises(PartsimError, match="partsim did not write"):
        check_output_dir(target, fresh=True)
    assert check_output_dir(target, fresh=True, is_own=lambda p: (p / "partsim_ground_truth.json").is_file())


def test_failed_block_changes_nothing(tmp_path):
    target = tmp_path / "out"
    with output_directory(target) as tmp:
        (tmp / "v1.txt").write_text("1")
    before = tree_digest(tmp_path)
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)), output_directory(target, fresh=True) as tmp:
            (tmp / "v2.txt").write_text("2")
            raise error
    assert tree_digest(tmp_path) == before
    assert leftovers(tmp_path) == []


def test_files_appearing_during_the_run_are_kept(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(PartsimError, match="partsim did not write"), output_directory(target) as tmp:
        (tmp / "result.txt").write_text("r")
        target.mkdir()
        (target / "user.txt").write_text("arrived meanwhile")
    assert sorted(p.name for p in target.iterdir()) == ["user.txt"]
    assert leftovers(tmp_path) == []


def test_out_dir_naming_a_file_a_link_or_a_path_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = tree_digest(tmp_path)
    with pytest.raises(PartsimError, match="is a file; --out-dir names a folder"):
        check_output_dir(tmp_path / "afile", fresh=True)
    with pytest.raises(PartsimError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "afile" / "sub")
    with pytest.raises(PartsimError, match="symbolic link"), output_directory(tmp_path / "link", fresh=True):
        pass
    with pytest.raises(PartsimError, match="current folder"):
        check_output_dir("")
    assert tree_digest(tmp_path) == before


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux /sys")
def test_out_dir_in_an_unwritable_place():
    with pytest.raises(PartsimError, match="/sys/kernel"), output_directory("/sys/kernel/partsim-test-output"):
        pass


# --------------------------------------------------------------------------------------------------------------
# Leftovers of killed runs
# --------------------------------------------------------------------------------------------------------------


def dead_token() -> str:
    """The writer token of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        token = cache.writer_token(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not cache.writer_alive(token)
    return token


def test_stale_siblings_are_removed_live_and_foreign_ones_kept(tmp_path):
    dead = dead_token()
    stale_dir = tmp_path / f".out.{dead}.abc123.partial"
    (stale_dir / "sub").mkdir(parents=True)
    stale_old = tmp_path / f".out.{dead}.xyz.old"
    stale_old.mkdir()
    stale_tmp = tmp_path / f".out.{dead}.q1.tmp"
    stale_tmp.write_bytes(b"half")
    live = tmp_path / f".out.{cache.writer_token()}.zz.partial"
    live.mkdir()
    host = cache.writer_token().rsplit("-", 1)[1]
    reused_pid = tmp_path / f".out.w{os.getpid()}-1-{host}.rr.partial"  # same pid, another start: a dead writer
    reused_pid.mkdir()
    other_host = tmp_path / f".out.{dead.rsplit('-', 1)[0]}-{'0' * 6 if host != '0' * 6 else '1' * 6}.h.partial"
    other_host.mkdir()  # a writer on another machine sharing the cache: cannot be judged from here, kept
    foreign = [tmp_path / ".out.mine.partial", tmp_path / ".other.partial", tmp_path / f".outer.{dead}.a.partial",
               tmp_path / "out.partial"]
    for path in foreign:
        path.mkdir()
    target_of_link = tmp_path / "keep"
    target_of_link.mkdir()
    (target_of_link / "file").write_text("keep")
    (tmp_path / f".out.{dead}.ln.partial").symlink_to(target_of_link)

    removed = cache.clean_stale_partials(tmp_path / "out")
    expected = {stale_dir, stale_old, stale_tmp}
    if Path("/proc/self/stat").is_file():
        expected.add(reused_pid)
    assert set(removed) == expected
    assert live.is_dir() and other_host.is_dir() and all(path.is_dir() for path in foreign)
    assert (target_of_link / "file").read_text() == "keep"


def test_a_killed_run_leaves_a_partial_that_the_next_run_removes(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from partsim_core.data.outputs import output_directory
        with output_directory({str(tmp_path / 'out')!r}) as tmp:
            (tmp / "half.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL
    assert not (tmp_path / "out").exists()
    assert len(leftovers(tmp_path)) == 1
    with output_directory(tmp_path / "out") as tmp:
        (tmp / "full.txt").write_text("full")
    assert leftovers(tmp_path) == []
    assert (tmp_path / "out" / "full.txt").is_file()


def test_atomic_directory_cleans_and_replaces_cache_folders(tmp_path):
    dead = dead_token()
    (tmp_path / f".entry.{dead}.k.partial").mkdir()
    with cache.atomic_directory(tmp_path / "entry") as tmp:
        (tmp / "v1").write_text("1")
    with cache.atomic_directory(tmp_path / "entry") as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in (tmp_path / "entry").iterdir()) == ["v2"]
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------
# Property: the overlap rule is the component-wise prefix relation
# --------------------------------------------------------------------------------------------------------------

_PARTS = st.lists(st.sampled_from(["a", "b", "ab", "a.b", "a b"]), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(output=_PARTS, source=_PARTS)
def test_overlap_is_the_component_prefix_relation(output, source):
    base = Path("/nonexistent-partsim-test-root")
    overlapping = output[: len(source)] == source or source[: len(output)] == output  # computed on the parts
    try:
        check_not_inside_inputs(base.joinpath(*output), [base.joinpath(*source)])
        refused = False
    except PartsimError:
        refused = True
    assert refused == overlapping


def test_output_folders_get_the_usual_mode_not_mkdtemps_0700(tmp_path):
    import os
    import stat

    from partsim_core.data.outputs import output_directory

    old = os.umask(0o022)
    try:
        with output_directory(tmp_path / "out") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


@pytest.mark.parametrize("name", ["result.txt", "result", "result.json.tmp"])
def test_out_must_name_a_json_file_before_any_work(tmp_path: Path, name: str) -> None:
    with pytest.raises(PartsimError, match=r"give a \.json file name"):
        check_output_file(tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert check_output_file(tmp_path / "RESULT.JSON") == tmp_path / "RESULT.JSON"  # the suffix in any case
