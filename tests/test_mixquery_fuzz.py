"""Chapter 6 (MixQuery): the index reader under damage (issue 12 items 2 and 6).

A table of the damages reported in the issue (``index.json`` ``[]`` or lacking ``songs``, swapped song ids,
reordered parts, a garbled ``.npy`` header, zeroed vectors, a NaN row, a flipped byte in ``vectors.npy``, ...) each
give a :class:`PartsimError` naming the damaged file (and ``partsim mixquery query`` exits 2 with ``partsim: error:``
and no traceback), and Hypothesis searches random byte-level and JSON-level damage for anything else: opening a
damaged index either fails with a PartsimError or (when the damage changed nothing) answers exactly as the intact one.

Every damaged copy lives in its own new folder: verification is memoised per process by (path, size, mtime), and
two writes within one clock tick can keep the mtime.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mixquery_index import CATALOG_SONGS, make_catalog, tiny_backend

from partsim_core.cli import main as partsim_main
from partsim_core.errors import PartsimError
from partsim_core.mixquery import MixQueryIndex, StemQuery, build_index
from partsim_core.mixquery.manifest import (
    INDEX_FILE,
    PRESENT_FILE,
    VECTORS_FILE,
    index_problem,
    seal,
    verify_index,
)

QUERIES = [StemQuery("Track00001", "drums", 1), StemQuery("Track00004", "bass", 0)]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, list]:
    """``(catalog root, intact index folder, its answers)``, built once for the module (private cache)."""
    root = tmp_path_factory.mktemp("mq")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(root / "cache"))
        catalog = make_catalog(root / "catalog", CATALOG_SONGS)
        with pytest.warns(UserWarning, match="skipped"):
            index = build_index(catalog, tiny_backend(), root / "index", progress=False)
    return catalog, root / "index", answers(index)


def answers(index: MixQueryIndex) -> list:
    """Everything a user sees: ranked songs and similar stems of a few queries, and the song list."""
    return [index.songs, index.search_songs(QUERIES, k=5), index.similar_stems(QUERIES[0], k=5),
            index.search_songs(QUERIES[1:], k=5)]


_copies = itertools.count()


def fresh_copy(folder: Path, base: Path) -> Path:
    """A copy of the index folder under a name never used before in this process."""
    target = base / f"copy{next(_copies)}"
    shutil.copytree(folder, target)
    return target


def _edit_meta(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / INDEX_FILE).read_text())
        replacement = edit(meta)
        (folder / INDEX_FILE).write_text(json.dumps(meta if replacement is None else replacement))
    return damage


def _swap_songs(meta: dict) -> None:
    meta["songs"][0]["id"], meta["songs"][1]["id"] = meta["songs"][1]["id"], meta["songs"][0]["id"]


def _reorder_parts(meta: dict) -> None:
    meta["parts"] = meta["parts"][1:] + meta["parts"][:1]


def _edit_vectors(edit: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        vectors = np.load(folder / VECTORS_FILE)
        edit(vectors)
        np.save(folder / VECTORS_FILE, vectors)
    return damage


def _flip_byte(name: str, offset_from_end: int) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        data[len(data) - offset_from_end] ^= 0x40
        (folder / name).write_bytes(bytes(data))
    return damage


def _garble_header(folder: Path) -> None:
    data = bytearray((folder / VECTORS_FILE).read_bytes())
    data[10:40] = b"{'descr': ???, 'shape': (((("
    (folder / VECTORS_FILE).write_bytes(bytes(data))


def _zero(vectors: np.ndarray) -> None:
    vectors[:] = 0.0


def _nan_row(vectors: np.ndarray) -> None:
    vectors[2] = np.nan


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "index.json is []": (lambda f: (f / INDEX_FILE).write_text("[]"), INDEX_FILE),
    "index.json lacks songs": (_edit_meta(lambda m: m.pop("songs")), INDEX_FILE),
    "index.json is not JSON": (lambda f: (f / INDEX_FILE).write_bytes(b"\xff{oops"), INDEX_FILE),
    "swapped song ids": (_edit_meta(_swap_songs), INDEX_FILE),
    "reordered parts": (_edit_meta(_reorder_parts), INDEX_FILE),
    "changed segment bound": (_edit_meta(lambda m: m["songs"][0]["segments"][1].__setitem__(1, 999_999)),
                              INDEX_FILE),
    "segment bounds not integers": (_edit_meta(lambda m: m["songs"][0]["segments"].__setitem__(0, ["a", None])),
                                    INDEX_FILE),
    "songs is a dict": (_edit_meta(lambda m: m.__setitem__("songs", {"a": 1})), INDEX_FILE),
    "garbled npy header": (_garble_header, VECTORS_FILE),
    "zeroed vectors": (_edit_vectors(_zero), VECTORS_FILE),
    "a NaN row": (_edit_vectors(_nan_row), VECTORS_FILE),
    "flipped byte in vectors.npy": (_flip_byte(VECTORS_FILE, 100), VECTORS_FILE),
    "flipped byte in present.npy": (_flip_byte(PRESENT_FILE, 3), PRESENT_FILE),
    "truncated vectors.npy": (lambda f: (f / VECTORS_FILE).write_bytes((f / VECTORS_FILE).read_bytes()[:-64]),
                              VECTORS_FILE),
    "vectors.npy missing": (lambda f: (f / VECTORS_FILE).unlink(), VECTORS_FILE),
    "vectors.npy is a folder": (lambda f: ((f / VECTORS_FILE).unlink(), (f / VECTORS_FILE).mkdir()), VECTORS_FILE),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_every_reported_damage_is_refused_naming_the_file(built, tmp_path, capsys, damage) -> None:
    _catalog, intact, _answers = built
    folder = fresh_copy(intact, tmp_path)
    apply, named = DAMAGES[damage]
    apply(folder)
    with pytest.raises(PartsimError) as error:
        MixQueryIndex.load(folder)
    message = str(error.value)
    assert named in message and "rebuild" in message, message
    assert index_problem(folder) == message
    # The command line: the error contract, no traceback.
    code = partsim_main(["mixquery", "query", "--index", str(folder), "--stem", "Track00001:drums:1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("partsim: error: ") and named in err and "Traceback" not in err


def test_a_nan_row_is_refused_even_with_a_resealed_manifest(built, tmp_path) -> None:
    # Checksums recomputed over the damage: the finiteness scan still refuses it.
    folder = fresh_copy(built[1], tmp_path)
    _edit_vectors(_nan_row)(folder)
    meta = json.loads((folder / INDEX_FILE).read_text())
    (folder / INDEX_FILE).write_text(json.dumps(seal(meta, folder)))
    with pytest.raises(PartsimError, match=f"{VECTORS_FILE}: holds NaN or infinite vectors"):
        verify_index(folder)


def test_the_intact_index_verifies_and_answers_as_built(built, tmp_path) -> None:
    _catalog, intact, expected = built
    folder = fresh_copy(intact, tmp_path)
    meta = verify_index(folder)
    assert set(meta["files"]) == {VECTORS_FILE, PRESENT_FILE}
    assert meta["files"][VECTORS_FILE]["shape"] == [6, 5, 128] and meta["files"][VECTORS_FILE]["dtype"] == "float32"
    assert len(meta["files"][VECTORS_FILE]["blake2b"]) == 32 and index_problem(folder) is None
    assert answers(MixQueryIndex.load(folder)) == expected


@pytest.mark.parametrize("damage", ["flipped byte in vectors.npy", "index.json is []", "swapped song ids"])
def test_index_rebuilds_a_damaged_index_instead_of_reusing_it(built, tmp_path, monkeypatch, damage) -> None:
    catalog, intact, expected = built
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    folder = fresh_copy(intact, tmp_path)
    DAMAGES[damage][0](folder)
    with pytest.warns(UserWarning, match="skipped"):
        index = build_index(catalog, tiny_backend(), folder, progress=False)
    assert not index.reused and DAMAGES[damage][1] in index.rebuild_reason
    assert index.describe()["rebuild_reason"] == index.rebuild_reason
    assert answers(index) == expected and index_problem(folder) is None
    assert build_index(catalog, tiny_backend(), folder, progress=False).reused


# --------------------------------------------------------------------------------------------------------------
# Hypothesis: random damage
# --------------------------------------------------------------------------------------------------------------


def _outcome(folder: Path, expected: list) -> str:
    """``"refused"`` (a PartsimError) or ``"same"`` (identical answers); anything else fails the test."""
    try:
        index = MixQueryIndex.load(folder)
    except PartsimError as error:
        assert str(error) and "Traceback" not in str(error)
        return "refused"
    assert answers(index) == expected, "a damaged index answered differently without a word"
    return "same"


@FUZZ
@given(name=st.sampled_from([INDEX_FILE, VECTORS_FILE, PRESENT_FILE]),
       operation=st.sampled_from(["flip", "truncate", "insert", "overwrite"]),
       position=st.floats(0.0, 1.0), payload=st.binary(min_size=1, max_size=16))
def test_random_byte_damage_is_refused_or_harmless(built, tmp_path, name, operation, position, payload) -> None:
    _catalog, intact, expected = built
    folder = fresh_copy(intact, tmp_path)
    data = bytearray((folder / name).read_bytes())
    at = min(int(position * len(data)), len(data) - 1)
    if operation == "flip":
        data[at] ^= payload[0] or 1
    elif operation == "truncate":
        del data[at:]
    elif operation == "insert":
        data[at:at] = payload
    else:
        data[at:at + len(payload)] = payload
    (folder / name).write_bytes(bytes(data))
    outcome = _outcome(folder, expected)
    if bytes(data) != (intact / name).read_bytes():
        assert outcome == "refused"


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**7) | st.floats(allow_nan=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def _json_paths(value: object, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for number, item in enumerate(value[:4]):
            paths += _json_paths(item, (*prefix, number))
    return paths


@FUZZ
@given(choice=st.integers(0, 10**6), replacement=JSON_VALUES, delete=st.booleans())
def test_random_manifest_edits_are_refused_or_harmless(built, tmp_path, choice, replacement, delete) -> None:
    _catalog, intact, expected = built
    folder = fresh_copy(intact, tmp_path)
    meta = json.loads((folder / INDEX_FILE).read_text())
    original = json.loads(json.dumps(meta))
    paths = _json_paths(meta)
    path = paths[choice % len(paths)]
    if not path:
        meta = replacement
    else:
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    (folder / INDEX_FILE).write_text(json.dumps(meta))
    outcome = _outcome(folder, expected)
    if meta != original:
        assert outcome == "refused"
