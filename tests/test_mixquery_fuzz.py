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
    NORMS_FILE,
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
    "flipped byte in norms.npy": (_flip_byte(NORMS_FILE, 3), NORMS_FILE),
    "norms.npy missing": (lambda f: (f / NORMS_FILE).unlink(), NORMS_FILE),
    "no distance in the manifest": (_edit_meta(lambda m: m.pop("distance")), INDEX_FILE),
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
    assert set(meta["files"]) == {VECTORS_FILE, PRESENT_FILE, NORMS_FILE}
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
@given(name=st.sampled_from([INDEX_FILE, VECTORS_FILE, PRESENT_FILE, NORMS_FILE]),
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


# --------------------------------------------------------------------------------------------------------------
# Hypothesis: the web app's request handling (issue 12 item 6)
# --------------------------------------------------------------------------------------------------------------

APP_FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def app_server():
    from test_mixquery_app import MAX_BODY, FakeMixQueryIndex

    from partsim_core.mixquery.app import BackgroundServer, make_app

    index = FakeMixQueryIndex()
    with BackgroundServer(make_app(index, max_query_set=4, max_body_bytes=MAX_BODY, k=10)) as server:
        yield server, index


def _send(port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
          host: bytes | None = None) -> tuple[int | None, bytes]:
    from test_mixquery_app import raw_request

    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + (host or b"127.0.0.1:%d" % port),
             b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body and not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers):
        lines.append(b"Content-Length: %d" % len(body))
    framing = any(name.lower() in (b"content-length", b"transfer-encoding", b"expect") for name, _ in headers)
    return raw_request(port, b"\r\n".join(lines) + b"\r\n", body, half_close=framing)


def _no_server_error(status: int | None, answer: bytes) -> None:
    assert status is None or status < 500, answer[:300]
    assert b"Traceback" not in answer and b'File "' not in answer


PATH_PREFIXES = [b"/", b"/static/", b"/api/songs/", b"/api/", b"/audio/Track00000/", b"/audio/Track00000/mix/",
                 b"/audio/", b"/api/search", b"/api/similar"]
PATH_BYTES = st.binary(max_size=40).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b""))
PERCENT = st.binary(max_size=8).map(lambda raw: "".join(f"%{byte:02X}" for byte in raw).encode())


@APP_FUZZ
@given(method=st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"]),
       prefix=st.sampled_from(PATH_PREFIXES), tail=st.lists(PATH_BYTES | PERCENT, max_size=3).map(b"".join),
       suffix=st.sampled_from([b"", b".wav", b"/0.wav", b"?x=1", b"#f", b"/"]))
def test_random_paths_never_get_a_server_error(app_server, method, prefix, tail, suffix) -> None:
    server, _index = app_server
    status, answer = _send(server.port, method, prefix + tail + suffix, [])
    _no_server_error(status, answer)


HEADER_NAMES = [b"Range", b"Content-Type", b"Origin", b"Content-Length", b"Accept-Encoding", b"If-None-Match",
                b"If-Modified-Since", b"Sec-Fetch-Site", b"Transfer-Encoding", b"Cookie", b"Expect", b"Referer",
                b"Host", b"Connection", b"X-Forwarded-Host", b"Accept"]
HEADER_VALUES = (st.binary(max_size=30).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
                 | st.sampled_from([b"bytes=0-", b"bytes=-1", b"bytes=99999999999999999999-1", b"application/json",
                                    b"http://evil.example", b"chunked", b"-1", b"1e9", b"100-continue",
                                    "bytes=\u0661-\u0662".encode(), b"gzip, br", b"0"]))


@APP_FUZZ
@given(method=st.sampled_from([b"GET", b"HEAD", b"POST"]),
       path=st.sampled_from([b"/", b"/api/songs", b"/api/songs/Track00001", b"/static/app.js", b"/api/search",
                             b"/api/similar", b"/audio/Track00001/bass/1.wav", b"/audio/Track00002/mix/0.wav"]),
       headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUES), max_size=4),
       body=st.binary(max_size=64))
def test_random_headers_never_get_a_server_error(app_server, method, path, headers, body) -> None:
    server, _index = app_server
    status, answer = _send(server.port, method, path, headers, body if method == b"POST" else b"")
    _no_server_error(status, answer)


def _json_post(server, path: str, body: bytes):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


SONGS = st.sampled_from(["Track00000", "Track00001", "Track00003", "Odd/..name <b>&amp; ünï", "nosuch", ""])
PARTS = st.sampled_from(["drums", "bass", "piano", "guitar", "others", "mix", "vocals"])
QUERY = st.fixed_dictionaries({"song": SONGS, "part": PARTS, "segment": st.integers(-1, 6)})
ODD = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                   lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                               max_size=3), max_leaves=5)


@APP_FUZZ
@given(queries=st.lists(QUERY | ODD, max_size=5), k=st.none() | st.integers(-2, 120) | ODD,
       extra=st.dictionaries(st.sampled_from(["verbose", "queries2"]), ODD, max_size=1))
def test_random_searches_answer_4xx_or_exactly_the_index_ranking(app_server, queries, k, extra) -> None:
    from partsim_core.mixquery import StemQuery

    server, index = app_server
    payload = {"queries": queries, **extra}
    if k is not None:
        payload["k"] = k
    body = json.dumps(payload).encode()
    status, answer = _json_post(server, "/api/search", body)
    _no_server_error(status, answer)
    assert status in (200, 400, 413), (status, answer[:200])
    if status == 200:
        results = json.loads(answer)["results"]
        expected = index.search_songs([StemQuery(**query) for query in queries], k=10 if k is None else k) \
            if queries else []
        assert [(r["song"], r["best_segment"]) for r in results] == [(h.song, h.best_segment) for h in expected]
        np.testing.assert_allclose([r["distance"] for r in results], [h.distance for h in expected], rtol=1e-12)


@APP_FUZZ
@given(query=QUERY, k=st.integers(-1, 120))
def test_random_similar_requests_answer_4xx_or_exactly_the_index_neighbours(app_server, query, k) -> None:
    from partsim_core.mixquery import StemQuery

    server, index = app_server
    status, answer = _json_post(server, "/api/similar", json.dumps({**query, "k": k}).encode())
    _no_server_error(status, answer)
    assert status in (200, 400), (status, answer[:200])
    if status == 200:
        expected = index.similar_stems(StemQuery(**query), k=k)
        assert [(h["song"], h["segment"]) for h in json.loads(answer)["results"]] == \
            [(e.song, e.segment) for e in expected]


@APP_FUZZ
@given(first=st.none() | st.integers(0, 10**20), last=st.none() | st.integers(0, 10**20),
       garnish=st.sampled_from(["", " ", ",0-1", "x"]))
def test_random_ranges_give_the_right_bytes_or_416(app_server, first, last, garnish) -> None:
    from partsim_core.mixquery.app import audio_url

    server, index = app_server
    path = audio_url(index.songs[1], "bass", 1).encode()
    status, full = _send(server.port, b"GET", path, [])
    full_body = full.partition(b"\r\n\r\n")[2]
    value = f"bytes={'' if first is None else first}-{'' if last is None else last}{garnish}".encode()
    status, answer = _send(server.port, b"GET", path, [(b"Range", value)])
    _no_server_error(status, answer)
    body = answer.partition(b"\r\n\r\n")[2]
    size = len(full_body)
    assert status in (200, 206, 416), status
    if status == 200:
        assert body == full_body
    elif status == 206:
        head = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        span = next(line for line in head.split("\r\n") if line.startswith("content-range:")).split()[-1]
        start, end = (int(n) for n in span.split("/")[0].split("-"))
        assert body == full_body[start:end + 1] and 0 <= start <= end < size
