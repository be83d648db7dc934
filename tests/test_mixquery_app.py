"""Tests of the MixQuery web app (thesis ch. 6, Fig. 6.2): JSON API, security bounds, browser, load.

Most tests run the app over :class:`FakeMixQueryIndex`, a small in-test double with the attributes of
``partsim_core.mixquery.MixQueryIndex`` whose search is a plain-numpy transcription of thesis eqs. (6.1)-(6.2).
The server runs in a background thread (:class:`~partsim_core.mixquery.app.BackgroundServer`) and is spoken to
with ``http.client``, which sends paths such as ``/audio/../..`` as they are (a browser would normalise them).
The last tests build a real index (generated mini-Slakh songs, a tiny untrained CSN, ``build_index``,
``MixQueryIndex.load``) and run the API checks, the headless-Chromium session and the load generator on it.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlparse

import numpy as np
import pytest
import soundfile as sf

from partsim_core.errors import PartsimError
from partsim_core.mixquery import StemQuery
from partsim_core.mixquery.app import (
    MAX_K,
    BackgroundServer,
    add_serve_parser,
    audio_url,
    encode_wav,
    make_app,
    serve,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]


# ---------------------------------------------------------------------------------------------------------------
# The test double
# ---------------------------------------------------------------------------------------------------------------


class FakeStemHit(NamedTuple):
    song: str
    segment: int
    distance: float


class FakeSongHit(NamedTuple):
    song: str
    distance: float
    best_segment: int


class FakeMixQueryIndex:
    """A tiny stand-in for ``MixQueryIndex``: random unit embeddings, sine-tone audio, numpy search.

    ``search_songs`` follows thesis eqs. (6.1)-(6.2): average the stem queries of each part, take the cosine
    distance to every segment of that part, average over the parts in the query set, keep each song's best segment.
    Songs lacking a part's audio are skipped for queries on that part (their distance there is +inf).
    """

    parts = ("drums", "bass", "piano", "guitar", "others")
    sample_rate = 8000
    segment_seconds = 1.0

    def __init__(self, n_songs: int = 8, dim: int = 6, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        # One awkward name: spaces, a slash, '..', HTML and non-ASCII must survive URLs and the page.
        self.songs = [f"Track{i:05d}" for i in range(n_songs - 1)] + ["Odd/..name <b>&amp; ünï"]
        self._n_segments = {song: 3 + i % 3 for i, song in enumerate(self.songs)}
        self._missing = {(self.songs[1], "guitar")}  # one song without a guitar part
        self._emb = {}
        for song in self.songs:
            for part in self.parts:
                vectors = rng.normal(size=(self._n_segments[song], dim))
                self._emb[song, part] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    # -- lookups -------------------------------------------------------------------------------------------------
    def _check(self, song: str, part: str | None = None, segment: int | None = None) -> None:
        if song not in self._n_segments:
            raise PartsimError(f"unknown song {song!r}")
        if part is not None and part not in (*self.parts, "mix"):
            raise PartsimError(f"unknown part {part!r}")
        if segment is not None and not 0 <= segment < self._n_segments[song]:
            raise PartsimError(f"song {song!r} has no segment {segment}")

    def segments(self, song: str) -> list[tuple[int, float, float]]:
        self._check(song)
        n = self._n_segments[song]
        total = n * self.segment_seconds - 0.25  # the last segment is shorter
        return [(i, i * self.segment_seconds, min((i + 1) * self.segment_seconds, total)) for i in range(n)]

    def has_part_audio(self, song: str, part: str) -> bool:
        self._check(song, part)
        return (song, part) not in self._missing

    def segment_audio(self, song: str, part: str, segment: int) -> np.ndarray:
        self._check(song, part, segment)
        if (song, part) in self._missing:
            raise PartsimError(f"song {song!r} has no {part} audio")
        _, start, end = self.segments(song)[segment]
        t = np.arange(int(round((end - start) * self.sample_rate))) / self.sample_rate
        frequency = 110.0 * (1 + self.songs.index(song)) + 20.0 * (self.parts + ("mix",)).index(part) + segment
        # Loud enough to be clipped at the peaks: the WAV encoder must clip, not wrap around.
        return (1.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)

    # -- search --------------------------------------------------------------------------------------------------
    def _embedding(self, query: Any) -> np.ndarray:
        self._check(query.song, query.part, query.segment)
        if query.part == "mix":
            raise PartsimError("the mix cannot be a stem query")
        if (query.song, query.part) in self._missing:
            raise PartsimError(f"song {query.song!r} has no {query.part} part")
        return self._emb[query.song, query.part][query.segment]

    def similar_stems(self, query: Any, k: int = 100) -> list[FakeStemHit]:
        target = self._embedding(query)
        hits = [FakeStemHit(song, i, float(1.0 - vector @ target))
                for song in self.songs if (song, query.part) not in self._missing
                for i, vector in enumerate(self._emb[song, query.part])
                if (song, i) != (query.song, query.segment)]
        return sorted(hits, key=lambda hit: (hit.distance, hit.song, hit.segment))[:k]

    def search_songs(self, queries: list[Any], k: int = 100) -> list[FakeSongHit]:
        by_part: dict[str, list[np.ndarray]] = {}
        for query in queries:
            by_part.setdefault(query.part, []).append(self._embedding(query))
        hits = []
        for song in self.songs:
            per_part = []
            for part, vectors in by_part.items():
                if (song, part) in self._missing:
                    per_part.append(np.full(self._n_segments[song], np.inf))
                    continue
                y = np.mean(vectors, axis=0)  # eq. (6.1)
                targets = self._emb[song, part]
                per_part.append(1.0 - targets @ y / (np.linalg.norm(targets, axis=1) * np.linalg.norm(y)))
            distance = np.mean(per_part, axis=0)  # eq. (6.2), per segment
            best = int(np.argmin(distance))
            if np.isfinite(distance[best]):
                hits.append(FakeSongHit(song, float(distance[best]), best))
        return sorted(hits, key=lambda hit: (hit.distance, hit.song))[:k]


class FakeExplodingIndex(FakeMixQueryIndex):
    """Raises a :class:`PartsimError` (a user error) or a RuntimeError (a bug) from the search."""

    def search_songs(self, queries: list[Any], k: int = 100) -> list[FakeSongHit]:
        if any(query.segment == 1 for query in queries):
            raise PartsimError("the index refuses segment 1 (test)")
        raise RuntimeError("secret internal detail /etc/shadow")


# ---------------------------------------------------------------------------------------------------------------
# A server over the fake, and a raw HTTP client
# ---------------------------------------------------------------------------------------------------------------

MAX_QUERY_SET = 4
MAX_BODY = 4096


@pytest.fixture(scope="module")
def fake_index() -> FakeMixQueryIndex:
    return FakeMixQueryIndex()


@pytest.fixture(scope="module")
def server(fake_index: FakeMixQueryIndex) -> Iterator[BackgroundServer]:
    with BackgroundServer(make_app(fake_index, max_query_set=MAX_QUERY_SET, max_body_bytes=MAX_BODY, k=10)) as srv:
        yield srv


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request(server: BackgroundServer, method: str, path: str, body: bytes | str | Any = None,
             headers: dict[str, str] | None = None, reset_after_status: bool = False) -> Reply:
    """One request with the path sent verbatim (no normalisation of '..').

    ``reset_after_status``: a connection reset while reading the body, after the status line arrived, gives an
    empty body instead of an error (a server that refuses a request before reading its body closes the socket
    with the body unread, and the kernel may then reset the connection under the client's read).
    """
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    headers = dict(headers or {})
    if method == "POST":
        headers.setdefault("Content-Type", "application/json")  # what the page's fetch sends
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        try:
            content = response.read()
        except ConnectionResetError:
            if not reset_after_status:
                raise
            content = b""
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, content)
    finally:
        connection.close()


def _assert_json_error(reply: Reply, status: int, *fragments: str) -> str:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    message = reply.json()["error"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message and "File \"" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def _q(song: str, part: str, segment: int) -> dict[str, Any]:
    return {"song": song, "part": part, "segment": segment}


# ---------------------------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------------------------


def test_song_list_and_song_details(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    listing = _request(server, "GET", "/api/songs").json()
    assert listing["songs"] == fake_index.songs
    assert listing["parts"] == list(fake_index.parts)
    assert listing["max_query_set"] == MAX_QUERY_SET and listing["k"] == 10 and listing["max_k"] == MAX_K
    for song in fake_index.songs:
        reply = _request(server, "GET", f"/api/songs/{quote(song, safe='')}")
        assert reply.status == 200, reply.body
        info = reply.json()
        assert info["song"] == song
        assert [(s["segment"], s["start"], s["end"]) for s in info["segments"]] == fake_index.segments(song)
        expected_parts = [p for p in fake_index.parts if (song, p) not in fake_index._missing]
        assert info["parts"] == expected_parts and info["mix"] is True
        assert set(info["audio"]) == {*expected_parts, "mix"}
        assert info["audio"]["bass"] == [f"/audio/{quote(song, safe='')}/bass/{n}.wav"
                                         for n, _, _ in fake_index.segments(song)]
    assert "guitar" not in _request(server, "GET", f"/api/songs/{fake_index.songs[1]}").json()["parts"]


def test_audio_is_the_index_segment_as_16_bit_wav(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    for song, part, segment in [(fake_index.songs[0], "mix", 0), (fake_index.songs[2], "piano", 2),
                                (fake_index.songs[-1], "drums", 1)]:
        reply = _request(server, "GET", audio_url(song, part, segment))
        assert reply.status == 200, reply.body
        assert reply.headers["content-type"] == "audio/wav"
        audio, rate = sf.read(io.BytesIO(reply.body), dtype="float32")
        assert sf.info(io.BytesIO(reply.body)).subtype == "PCM_16"
        expected = np.clip(fake_index.segment_audio(song, part, segment), -1, 1)
        assert rate == fake_index.sample_rate and audio.shape == expected.shape
        np.testing.assert_allclose(audio, expected, atol=2.0 / 32768)
        assert audio.max() > 0.99 and audio.min() < -0.99  # clipped at full scale, not wrapped around


def test_audio_range_requests(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    path = audio_url(fake_index.songs[0], "bass", 1)
    full = _request(server, "GET", path).body
    part = _request(server, "GET", path, headers={"Range": "bytes=10-109"})
    assert part.status == 206 and part.body == full[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(full)}"
    tail = _request(server, "GET", path, headers={"Range": "bytes=-16"})
    assert tail.status == 206 and tail.body == full[-16:]
    beyond = _request(server, "GET", path, headers={"Range": f"bytes={len(full)}-"})
    assert beyond.status == 416


def test_encode_wav_refuses_multichannel_audio() -> None:
    with pytest.raises(ValueError, match="mono"):
        encode_wav(np.zeros((2, 100), dtype=np.float32), 8000)


def test_path_traversal_and_unknown_ids_get_404(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    song = quote(fake_index.songs[0], safe="")
    # app.py sits one folder above static/: a traversal that worked would serve its source.
    assert (REPO_ROOT / "partsim_core" / "mixquery" / "app.py").is_file()
    paths = [
        "/audio/../../etc/passwd", "/audio/..%2F..%2Fetc%2Fpasswd/mix/0.wav", f"/audio/{song}/../0.wav",
        f"/audio/{song}/mix/../../app.py", "/audio/%2e%2e/mix/0.wav", f"/audio/{song}/..%2f..%2fapp.py/0.wav",
        f"/audio/{song}/mix/..%2F0.wav", "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/app.py",
        "/static/../../pyproject.toml", "/../partsim_core/mixquery/app.py",
        "/audio/Track99999/mix/0.wav", f"/audio/{song}/vocals/0.wav", f"/audio/{song}/mix/99.wav",
        f"/audio/{song}/mix/-1.wav", f"/audio/{song}/mix/1e3.wav", f"/audio/{song}/mix/0.mp3",
        f"/audio/{quote(fake_index.songs[1])}/guitar/0.wav", "/api/songs/nosuch", "/api/songs/..",
        "/api/nothing", "/etc/passwd",
    ]
    for path in paths:
        reply = _request(server, "GET", path)
        _assert_json_error(reply, 404)
        assert b"def make_app" not in reply.body and b"root:" not in reply.body and b"[project]" not in reply.body


def test_search_returns_the_index_ranking(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    a, b = fake_index.songs[0], fake_index.songs[3]
    queries = [_q(a, "drums", 0), _q(b, "bass", 1), _q(b, "drums", 2)]
    reply = _request(server, "POST", "/api/search", {"queries": queries, "k": 5})
    assert reply.status == 200, reply.body
    results = reply.json()["results"]
    expected = fake_index.search_songs([StemQuery(**q) for q in queries], k=5)
    assert [r["song"] for r in results] == [hit.song for hit in expected]
    assert [r["best_segment"] for r in results] == [hit.best_segment for hit in expected]
    np.testing.assert_allclose([r["distance"] for r in results], [hit.distance for hit in expected], rtol=1e-12)
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    for r in results:
        segment = fake_index.segments(r["song"])[r["best_segment"]]
        assert (r["start"], r["end"]) == segment[1:]
        assert r["audio"] == f"/audio/{quote(r['song'], safe='')}/mix/{r['best_segment']}.wav"
        assert r["segments"] == len(fake_index.segments(r["song"]))
    # The app's default k (10) applies when the request does not say; an empty query set gives no results.
    default = _request(server, "POST", "/api/search", {"queries": queries}).json()["results"]
    assert len(default) == min(10, len(fake_index.songs))
    assert _request(server, "POST", "/api/search", {"queries": []}).json() == {"results": []}


def test_similar_returns_the_index_neighbours(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    song = fake_index.songs[-1]
    reply = _request(server, "POST", "/api/similar", {**_q(song, "others", 1), "k": 7})
    assert reply.status == 200, reply.body
    data = reply.json()
    expected = fake_index.similar_stems(StemQuery(song, "others", 1), k=7)
    assert data["part"] == "others"
    assert [(h["song"], h["segment"]) for h in data["results"]] == [(e.song, e.segment) for e in expected]
    np.testing.assert_allclose([h["distance"] for h in data["results"]], [e.distance for e in expected])
    assert all(h["audio"] == audio_url(h["song"], "others", h["segment"]) for h in data["results"])


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe\x00garbage", "malformed JSON"),
    (b"", "empty body"),
    (b"[]", "JSON object"),
    (b"[" * 2000 + b"]" * 2000, "JSON"),  # nesting deeper than the decoder's recursion limit, within the size limit
    ({"k": 3}, "'queries' must be a list"),
    ({"queries": "drums"}, "'queries' must be a list"),
    ({"queries": [], "verbose": True}, "unknown field"),
    ({"queries": [["Track00000", "drums", 0]]}, "queries[0] must be an object"),
    ({"queries": [{"song": "Track00000", "part": "drums"}]}, "lacks segment"),
    ({"queries": [{"song": "Track00000", "part": "drums", "segment": "0"}]}, "segment must be an integer"),
    ({"queries": [{"song": "Track00000", "part": "drums", "segment": True}]}, "segment must be an integer"),
    ({"queries": [{"song": "Track00000", "part": "drums", "segment": 0.5}]}, "segment must be an integer"),
    ({"queries": [{"song": 7, "part": "drums", "segment": 0}]}, "song must be a string"),
    ({"queries": [{"song": "Track00000", "part": "drums", "segment": 0, "x": 1}]}, "unknown field"),
    ({"queries": [_q("NoSuchSong", "drums", 0)]}, "unknown song 'NoSuchSong'"),
    ({"queries": [_q("Track00000", "vocals", 0)]}, "unknown part 'vocals'"),
    ({"queries": [_q("Track00000", "mix", 0)]}, "unknown part 'mix'"),
    ({"queries": [_q("Track00000", "drums", 42)]}, "no segment 42"),
    ({"queries": [_q("Track00000", "drums", 0)], "k": 0}, "k must be an integer from 1 to 100"),
    ({"queries": [_q("Track00000", "drums", 0)], "k": 101}, "k must be"),
    ({"queries": [_q("Track00000", "drums", 0)], "k": "5"}, "k must be"),
    ({"queries": [_q("Track00000", "drums", 0)], "k": 1e400}, "k must be"),
])
def test_malformed_search_requests_get_400(server: BackgroundServer, body: Any, fragment: str) -> None:
    _assert_json_error(_request(server, "POST", "/api/search", body), 400, fragment)


def test_malformed_similar_requests_get_400(server: BackgroundServer) -> None:
    _assert_json_error(_request(server, "POST", "/api/similar", {"song": "Track00000", "part": "drums"}), 400,
                       "lacks segment")
    _assert_json_error(_request(server, "POST", "/api/similar", {**_q("Track00000", "drums", 0), "k": -1}), 400,
                       "k must be")
    _assert_json_error(_request(server, "POST", "/api/similar", {**_q("Track00001", "guitar", 0)}), 400,
                       "no guitar part")  # the index's PartsimError, passed on as a 4xx
    _assert_json_error(_request(server, "GET", "/api/similar"), 405)


def test_query_set_and_body_are_bounded(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    queries = [_q(fake_index.songs[0], part, 0) for part in fake_index.parts][:MAX_QUERY_SET + 1]
    assert len(queries) == MAX_QUERY_SET + 1
    _assert_json_error(_request(server, "POST", "/api/search", {"queries": queries}), 400,
                       f"at most {MAX_QUERY_SET}")
    assert _request(server, "POST", "/api/search", {"queries": queries[:MAX_QUERY_SET]}).status == 200
    # Just over the app's limit: a clear 413; far over it: the HTTP server refuses before reading the body.
    padded = json.dumps({"queries": queries[:1]}) + " " * MAX_BODY
    _assert_json_error(_request(server, "POST", "/api/search", padded), 413, f"limit of {MAX_BODY} bytes")
    huge = json.dumps({"queries": queries[:1]}) + " " * (10 * MAX_BODY)
    try:
        status = _request(server, "POST", "/api/search", huge).status
    except (ConnectionError, http.client.HTTPException):
        status = None  # closed without an answer: refused as well
    assert status in (None, 400, 413)


def test_index_errors_become_4xx_and_bugs_500_without_traceback() -> None:
    index = FakeExplodingIndex()
    with BackgroundServer(make_app(index)) as srv:
        user_error = _request(srv, "POST", "/api/search", {"queries": [_q(index.songs[0], "drums", 1)]})
        _assert_json_error(user_error, 400, "the index refuses segment 1 (test)")
        bug = _request(srv, "POST", "/api/search", {"queries": [_q(index.songs[0], "drums", 0)]})
        message = _assert_json_error(bug, 500)
        assert "secret" not in message and b"shadow" not in bug.body
        assert _request(srv, "GET", "/api/songs").status == 200  # still serving


def test_page_and_static_files_are_served_with_a_strict_policy(server: BackgroundServer) -> None:
    page = _request(server, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.body.decode()
    for area in ("area-songs", "area-song", "area-query-set", "area-results"):  # the four areas of Fig. 6.2
        assert f'data-testid="{area}"' in html
    for name in ("app.js", "app.css"):
        assert f"/static/{name}" in html
        reply = _request(server, "GET", f"/static/{name}")
        assert reply.status == 200 and reply.body == (REPO_ROOT / "partsim_core/mixquery/static" / name).read_bytes()
    # No CDN, no remote script or style, no inline script.
    assert "//" not in "".join(line for line in html.splitlines() if "src=" in line or "href=" in line)
    assert "<script>" not in html


def test_make_app_validates_its_limits(fake_index: FakeMixQueryIndex) -> None:
    with pytest.raises(PartsimError, match="k must be"):
        make_app(fake_index, k=0)
    with pytest.raises(PartsimError, match="max_query_set"):
        make_app(fake_index, max_query_set=0)


def test_serve_parser_defaults_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="partsim mixquery")
    add_serve_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--index", "idx"])
    assert (args.index, args.host, args.port, args.k, args.open) == ("idx", "127.0.0.1", 8765, 100, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve"])  # --index is required
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--index", "x", "--k", "500"])
    assert "k must be from 1 to 100" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["serve", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for option in ("--index", "--host", "--port", "--k", "--open", "127.0.0.1", "--allow-host", "--search"):
        assert option in text
    args = parser.parse_args(["serve", "--index", "x", "--allow-host", "a.lan", "--allow-host", "b", "--search",
                              "ann"])
    assert (args.allow_host, args.search) == (["a.lan", "b"], "ann")
    assert parser.parse_args(["serve", "--index", "x"]).search == "auto"


def test_serve_refuses_a_missing_index(tmp_path: Path) -> None:
    with pytest.raises(PartsimError, match="no_index"):
        serve(tmp_path / "no_index")


# ---------------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------------


def _load_benchmark_module():
    spec = importlib.util.spec_from_file_location("mixquery_load", REPO_ROOT / "benchmarks" / "mixquery_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fifty_concurrent_clients_get_no_errors(fake_index: FakeMixQueryIndex, capsys) -> None:
    load = _load_benchmark_module()
    with BackgroundServer(make_app(fake_index, k=10)) as srv:
        result = load.run_load(srv.url, clients=50, requests=20, max_queries=4, k=10, seed=0)
    with capsys.disabled():
        print(f"\nMixQuery load (fake index, server thread in-process): {json.dumps(result)}")
    assert result["clients"] == 50 and result["requests"] == 1000
    assert result["errors"] == 0, result["first_errors"]
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]


# ---------------------------------------------------------------------------------------------------------------
# End to end in headless Chromium
# ---------------------------------------------------------------------------------------------------------------

_SONGS_SHOWN = "[...document.querySelectorAll('[data-testid=result-item]')].map(e => e.dataset.song)"


def _wait_for_results(page, expected: list[str]) -> None:
    """Wait until area 4 lists exactly ``expected`` (song ids, in order)."""
    page.wait_for_function(f"expected => JSON.stringify({_SONGS_SHOWN}) === JSON.stringify(expected)",
                           arg=expected, timeout=15_000)
    assert page.evaluate(_SONGS_SHOWN) == expected


def run_browser_session(base_url: str, index: Any, song_a: str, part_a: str, song_b: str, part_b: str,
                        k: int) -> None:
    """Drive the page like a user: two songs' parts into the query set, results change, play, similar, remove.

    ``index`` is the one the server serves; every expectation comes from its own search functions.
    """
    from playwright.sync_api import sync_playwright

    seg_a, seg_b = index.segments(song_a)[0][0], index.segments(song_b)[-1][0]
    first = [hit.song for hit in index.search_songs([StemQuery(song_a, part_a, seg_a)], k=k)]
    both_hits = index.search_songs([StemQuery(song_a, part_a, seg_a), StemQuery(song_b, part_b, seg_b)], k=k)
    both = [hit.song for hit in both_hits]
    assert first != both, "test precondition: the second part must change the ranking"
    host = urlparse(base_url).hostname

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
            page.on("console", lambda message: errors.append(f"console: {message.text}")
                    if message.type == "error" else None)
            page.on("request", lambda request: requests.append(request.url))
            page.goto(base_url, wait_until="load")
            page.wait_for_selector("body[data-ready=true]", timeout=15_000)

            # (1) the song list, and its filter
            songs = page.get_by_test_id("song-item")
            assert songs.count() == len(index.songs)
            assert [songs.nth(i).inner_text() for i in range(songs.count())] == list(index.songs)
            needle = song_b[-4:].lower()
            page.get_by_test_id("song-filter").fill(needle)
            assert page.locator("[data-testid=song-item]:visible").count() == \
                sum(needle in song.lower() for song in index.songs)
            page.get_by_test_id("song-filter").fill("")
            assert page.locator("[data-testid=song-item]:visible").count() == len(index.songs)

            # (2) song A: its parts, one player per segment; add one part's segment to the query set
            songs.nth(index.songs.index(song_a)).click()
            page.wait_for_function("song => document.querySelector('[data-testid=song-title]').textContent === song",
                                   arg=song_a)
            rows = page.get_by_test_id("part-row")
            shown_parts = [rows.nth(i).get_attribute("data-part") for i in range(rows.count())]
            expected_parts = [p for p in index.parts if index.has_part_audio(song_a, p)]
            assert shown_parts == (["mix"] if index.has_part_audio(song_a, "mix") else []) + expected_parts
            row = page.locator(f"[data-testid=part-row][data-part={part_a}]")
            assert row.get_by_test_id("segment-audio").count() == len(index.segments(song_a))
            segment_player = row.get_by_test_id("segment-audio").first
            segment_player.evaluate("a => { window.__segmentPlayed = false; "
                                    "a.addEventListener('playing', () => { window.__segmentPlayed = true; }); "
                                    "return a.play(); }")
            page.wait_for_function("() => window.__segmentPlayed", timeout=15_000)
            add_a = row.locator(f"[data-testid=add-to-query][data-segment='{seg_a}']")
            add_a.click()
            assert page.get_by_test_id("query-item").count() == 1
            assert "added" in add_a.get_attribute("class")
            # (3) + (4): the results follow the query set
            _wait_for_results(page, first)

            # song B: another part; the ranking changes to the index's ranking of both
            songs.nth(index.songs.index(song_b)).click()
            page.wait_for_function("song => document.querySelector('[data-testid=song-title]').textContent === song",
                                   arg=song_b)
            row_b = page.locator(f"[data-testid=part-row][data-part={part_b}]")
            row_b.locator(f"[data-testid=add-to-query][data-segment='{seg_b}']").click()
            assert page.get_by_test_id("query-item").count() == 2
            _wait_for_results(page, both)
            distances = page.evaluate("[...document.querySelectorAll('[data-testid=result-item]')]"
                                      ".map(e => Number(e.dataset.distance))")
            np.testing.assert_allclose(distances, [hit.distance for hit in both_hits], rtol=1e-9)

            # play the top result: the player loads the best segment of its mix and plays
            player = page.get_by_test_id("result-player")
            player.evaluate("p => { window.__played = false; p.addEventListener('playing', () => "
                            "{ window.__played = true; }); }")
            page.get_by_test_id("play-result").first.click()
            page.wait_for_function("() => window.__played && "
                                   "document.querySelector('[data-testid=result-player]').currentTime > 0",
                                   timeout=15_000)
            top = both_hits[0]
            assert player.evaluate("p => p.src") == base_url.rstrip("/") + audio_url(top.song, "mix",
                                                                                        top.best_segment)
            assert player.evaluate("p => p.paused") is False

            # find similar: the index's nearest stems of that part, and one of them joins the query set
            row_b.locator(f"[data-testid=find-similar][data-segment='{seg_b}']").click()
            similar = index.similar_stems(StemQuery(song_b, part_b, seg_b), k=k)
            expected_similar = [[hit.song, str(hit.segment)] for hit in similar]
            page.wait_for_function(
                "expected => JSON.stringify([...document.querySelectorAll('[data-testid=similar-item]')]"
                ".map(e => [e.dataset.song, e.dataset.segment])) === JSON.stringify(expected)",
                arg=expected_similar, timeout=15_000)
            page.get_by_test_id("add-similar").first.click()
            assert page.get_by_test_id("query-item").count() == 3
            three = [StemQuery(song_a, part_a, seg_a), StemQuery(song_b, part_b, seg_b),
                     StemQuery(similar[0].song, part_b, similar[0].segment)]
            _wait_for_results(page, [hit.song for hit in index.search_songs(three, k=k)])

            # remove song A's part: the ranking is recomputed from the remaining two
            page.get_by_test_id("remove-query").first.click()
            assert page.get_by_test_id("query-item").count() == 2
            _wait_for_results(page, [hit.song for hit in index.search_songs(three[1:], k=k)])
            assert not add_a.is_visible() or "added" not in (add_a.get_attribute("class") or "")

            page.wait_for_timeout(200)  # let late console errors arrive
            assert not errors, errors
            remote = [url for url in requests if urlparse(url).scheme not in ("data", "blob")
                      and urlparse(url).hostname != host]
            assert not remote, f"requests leave the server: {remote}"
        finally:
            browser.close()


@pytest.mark.browser
def test_browser_two_songs_results_change_and_play(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium'); the browser test needs it")
    run_browser_session(server.url, fake_index, fake_index.songs[0], "drums", fake_index.songs[-1], "bass", k=10)


def test_names_from_the_index_are_inserted_as_text_only() -> None:
    # The page builds every element with textContent/setAttribute; innerHTML with index data would allow XSS.
    script = (REPO_ROOT / "partsim_core/mixquery/static/app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


# ---------------------------------------------------------------------------------------------------------------
# End to end over a real index: a generated mini-Slakh, a tiny untrained CSN, build_index, MixQueryIndex.load
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_index_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An index folder over 5 generated test songs of 12-14 s (16 kHz), embedded by an untrained tiny CSN.

    The CSN's output bias is zeroed: untrained, it would otherwise dominate every vector and put all songs at
    nearly the same distance, and the tests need rankings that differ between query sets.
    """
    import torch

    from partsim_core.data import synth
    from partsim_core.mixquery import CSNBackend, build_index
    from partsim_core.models import CSNEncoder
    from partsim_core.presets import FrontendConfig, SynthConfig

    tmp = tmp_path_factory.mktemp("mixquery")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tmp / "cache"))  # decoded stems of this catalog stay in tmp
        config = SynthConfig(n_train=1, n_validation=1, n_test=5, min_seconds=12.0, max_seconds=14.0,
                             sample_rate=16000)
        root = synth.synthesize_dataset(tmp / "data", "smoke", seed=0, jobs=1, progress=False, config=config)
        torch.manual_seed(0)
        model = CSNEncoder(n_mels=32, width=4, subspace_dim=8)
        with torch.no_grad():
            model.projection.bias.zero_()
        frontend = FrontendConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32)
        build_index(root, CSNBackend(model, frontend, model_hash="tiny-untrained-test"), tmp / "index",
                    split="test", progress=False)
        yield tmp / "index"


@pytest.fixture(scope="module")
def real_server(real_index_dir: Path) -> Iterator[tuple[BackgroundServer, Any]]:
    from partsim_core.mixquery import MixQueryIndex

    index = MixQueryIndex.load(real_index_dir)
    with BackgroundServer(make_app(index, k=10)) as srv:
        yield srv, index


def _two_songs_that_change_the_ranking(index: Any) -> tuple[str, str, str, str]:
    """(song A, part A, song B, part B): A's first and B's last segment, such that adding B's part changes the
    ranking A's part alone gives (a precondition of the browser test, found rather than assumed)."""
    song_a = index.songs[0]
    part_a = next(part for part in index.parts if index.has_part_audio(song_a, part))
    alone = [hit.song for hit in index.search_songs([StemQuery(song_a, part_a, 0)], k=10)]
    for song_b in index.songs[1:][::-1]:
        last = index.segments(song_b)[-1][0]
        for part_b in index.parts:
            if part_b != part_a and index.has_part_audio(song_b, part_b):
                both = index.search_songs([StemQuery(song_a, part_a, 0), StemQuery(song_b, part_b, last)], k=10)
                if [hit.song for hit in both] != alone:
                    return song_a, part_a, song_b, part_b
    raise AssertionError("no pair of parts changes the ranking of this index")


def test_real_index_api_matches_the_index(real_server: tuple[BackgroundServer, Any]) -> None:
    srv, index = real_server
    assert _request(srv, "GET", "/api/songs").json()["songs"] == index.songs
    song_a, part_a, song_b, part_b = _two_songs_that_change_the_ranking(index)
    queries = [_q(song_a, part_a, 0), _q(song_b, part_b, index.segments(song_b)[-1][0])]
    results = _request(srv, "POST", "/api/search", {"queries": queries, "k": 5}).json()["results"]
    expected = index.search_songs([StemQuery(**q) for q in queries], k=5)
    assert [(r["song"], r["best_segment"]) for r in results] == [(h.song, h.best_segment) for h in expected]
    np.testing.assert_allclose([r["distance"] for r in results], [h.distance for h in expected], rtol=1e-12)
    similar = _request(srv, "POST", "/api/similar", {**queries[0], "k": 3}).json()["results"]
    expected_similar = index.similar_stems(StemQuery(**queries[0]), k=3)
    assert [(h["song"], h["segment"]) for h in similar] == [(e.song, e.segment) for e in expected_similar]
    # The served WAV is the catalog audio of that segment (16-bit rounding aside).
    for part, segment in (("mix", 0), ("mix", 1), (part_b, 0)):
        reply = _request(srv, "GET", audio_url(song_b, part, segment))
        assert reply.status == 200, reply.body
        audio, rate = sf.read(io.BytesIO(reply.body), dtype="float32")
        reference = np.clip(index.segment_audio(song_b, part, segment), -1, 1)
        assert rate == index.sample_rate == 16000 and audio.shape == reference.shape
        np.testing.assert_allclose(audio, reference, atol=2.0 / 32768)
        if (part, segment) == ("mix", 0):
            assert np.abs(reference).max() > 0.01  # real music, not silence
    _assert_json_error(_request(srv, "GET", f"/audio/{song_a}/../../index.json"), 404)
    _assert_json_error(_request(srv, "GET", f"/audio/{song_a}/mix/{len(index.segments(song_a))}.wav"), 404)


@pytest.mark.browser
def test_browser_on_a_real_index(real_server: tuple[BackgroundServer, Any]) -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (Debian package 'chromium'); the browser test needs it")
    srv, index = real_server
    song_a, part_a, song_b, part_b = _two_songs_that_change_the_ranking(index)
    run_browser_session(srv.url, index, song_a, part_a, song_b, part_b, k=10)


def test_load_benchmark_serves_a_real_index_from_a_child_process(real_index_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    load = _load_benchmark_module()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(real_index_dir.parent / "cache"))
        code = load.main(["--index", str(real_index_dir), "--clients", "5", "--requests", "4", "--k", "10"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and line["errors"] == 0 and line["requests"] == 20 and line["server"] == "process"
    assert line["songs"] == 5 and line["p95_ms"] >= line["p50_ms"] > 0


# ---------------------------------------------------------------------------------------------------------------
# Closed to other sites, malformed requests (issue 12 item 3)
# ---------------------------------------------------------------------------------------------------------------


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0,
                half_close: bool = False) -> tuple[int | None, bytes]:
    """Send raw bytes (request line and headers as given, then ``body``) and return (status, whole answer).

    ``status`` is None when the server closed the connection without an answer. ``half_close`` shuts the sending
    side after the body (for requests that may announce more body than they send).
    """
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head + b"\r\n" + body)
            if half_close:  # nothing more comes: a server waiting for more body sees the end (and may close)
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer (and close) before all of the body is sent
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks), head.startswith(b"HEAD ")):
                    break
        except OSError:
            pass
    answer = b"".join(chunks)
    if not answer.startswith(b"HTTP/1."):
        return None, answer
    return int(answer.split(b" ", 2)[1]), answer


def _complete(answer: bytes, to_head: bool) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
    if to_head or status in (b"204", b"304") or status.startswith(b"1"):
        return True  # no body follows
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


EVIL_HOSTS = ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example", "[::2]",
              "", "127.0.0.1 evil"]


@pytest.mark.parametrize("host", EVIL_HOSTS)
def test_other_hosts_get_403_and_no_data(server: BackgroundServer, fake_index: FakeMixQueryIndex, host) -> None:
    song = fake_index.songs[0]
    for method, path, body in [("GET", "/", None), ("GET", "/api/songs", None), ("GET", "/static/app.js", None),
                               ("GET", f"/api/songs/{song}", None), ("GET", audio_url(song, "mix", 0), None),
                               ("HEAD", "/api/songs", None), ("GET", "/nothing", None),
                               ("POST", "/api/search", {"queries": [_q(song, "drums", 0)]})]:
        # A malformed Host gets tornado's 400 and an immediate close, before the POST body is read: the status
        # arrives, the body read may be reset (no data either way).
        reply = _request(server, method, path, body, headers={"Host": host}, reset_after_status=True)
        assert reply.status in (400, 403), (host, path, reply.status)  # 400: tornado refuses a malformed Host
        assert song.encode() not in reply.body and b"RIFF" not in reply.body
        if method != "HEAD" and reply.status == 403:
            _assert_json_error(reply, 403, "does not answer for host")


def test_localhost_loopback_and_allowed_hosts_are_answered(fake_index: FakeMixQueryIndex) -> None:
    with BackgroundServer(make_app(fake_index, allowed_hosts=["MixQuery.lan", "0.0.0.0"])) as srv:
        for host in ("localhost", f"localhost:{srv.port}", f"127.0.0.1:{srv.port}", f"[::1]:{srv.port}",
                     "mixquery.lan", f"mixquery.LAN:{srv.port}"):
            assert _request(srv, "GET", "/api/songs", headers={"Host": host}).status == 200, host
        assert _request(srv, "GET", "/api/songs", headers={"Host": "0.0.0.0"}).status == 403


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx", "json"])
def test_posts_need_a_json_content_type(server: BackgroundServer, fake_index: FakeMixQueryIndex,
                                        content_type) -> None:
    body = json.dumps({"queries": [_q(fake_index.songs[0], "drums", 0)]}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", "/api/search", body=body, headers=headers)
        response = connection.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
    _assert_json_error(reply, 415, "application/json")
    similar = _request(server, "POST", "/api/similar", {**_q(fake_index.songs[0], "drums", 0)},
                       headers={"Content-Type": content_type or ""})
    _assert_json_error(similar, 415)
    ok = _request(server, "POST", "/api/search", body, headers={"Content-Type": "Application/JSON; charset=UTF-8"})
    assert ok.status == 200


def test_posts_from_another_origin_get_403(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    body = {"queries": [_q(fake_index.songs[0], "drums", 0)]}
    own = f"http://127.0.0.1:{server.port}"
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": f"http://localhost:{server.port}"}, {"Origin": f"https://127.0.0.1:{server.port}"},
                    {"Origin": own, "Sec-Fetch-Site": "cross-site"}):
        _assert_json_error(_request(server, "POST", "/api/search", body, headers=headers), 403)
        _assert_json_error(_request(server, "POST", "/api/similar", body["queries"][0], headers=headers), 403)
    for headers in ({"Origin": own}, {"Origin": own, "Sec-Fetch-Site": "same-origin"}, {}):
        assert _request(server, "POST", "/api/search", body, headers=headers).status == 200


def test_head_works_wherever_get_does(server: BackgroundServer, fake_index: FakeMixQueryIndex) -> None:
    song = quote(fake_index.songs[-1], safe="")
    for path in ("/", "/api/songs", f"/api/songs/{song}", f"/audio/{song}/mix/0.wav", "/static/app.js",
                 "/static/app.css"):
        get = _request(server, "GET", path, headers={"Accept-Encoding": "identity"})
        head = _request(server, "HEAD", path, headers={"Accept-Encoding": "identity"})
        assert get.status == head.status == 200, (path, head.status)
        assert head.body == b"" and head.headers["content-type"] == get.headers["content-type"]
        assert int(head.headers["content-length"]) == len(get.body)
    assert _request(server, "HEAD", "/api/songs/nosuch").status == 404


@pytest.mark.parametrize("path", ["/api/search", "/api/similar", "/api/songs", "/", "/static/app.js", "/nothing",
                                  "/audio/x/mix/0.wav"])
def test_every_oversized_body_gets_413_before_it_is_read(server: BackgroundServer, path: str) -> None:
    for length in (MAX_BODY + 1, 10 * MAX_BODY, 10**12):
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\n").encode()
        status, answer = raw_request(server.port, head, b"{" * 100)  # most of the body is never sent
        assert status == 413, (path, length, answer[:300])
        assert b"exceeds the limit" in answer and b"Traceback" not in answer
    # A chunked body is counted as it arrives.
    chunk = b" " * 1000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2 * MAX_BODY // 1000)) + b"0\r\n\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n").encode()
    status, answer = raw_request(server.port, head, body)
    # An unknown path is answered (404) from the headers alone, before any of the body is read.
    assert status == (404 if path == "/nothing" else 413), (path, answer[:300])


def test_malformed_paths_headers_and_ranges_get_4xx(server: BackgroundServer,
                                                    fake_index: FakeMixQueryIndex) -> None:
    song = quote(fake_index.songs[0], safe="")
    for path in ["/static/app.js%00", "/static/%00", "/static/%00/../app.js", "/static/app%00.js", "/static/",
                 "/static/.", "/static/%2e%2e%2fapp.py", "/static/%ff", f"/audio/{song}/mix/%D9%A1.wav",
                 f"/audio/{song}/mix/%C2%B2.wav", f"/audio/{song}/mix/%EF%BC%91.wav", f"/audio/{song}/mix/%00.wav",
                 f"/audio/{song}/mi%00x/0.wav", "/api/songs/%ff%fe", "/api/songs/%00", "/%00", "/api/songs/" + "a" * 5000]:
        reply = _request(server, "GET", path)
        assert 400 <= reply.status < 500, (path, reply.status)
        _assert_json_error(reply, reply.status)
    audio = audio_url(fake_index.songs[0], "mix", 0)
    size = len(_request(server, "GET", audio).body)
    for value in ["bytes=" + "9" * 5000 + "-", "bytes=99999999999999999999-", "bytes=-99999999999999999999",
                  "bytes=5-2", "bytes=0-1,3-4", "bytes=-0", "bytes=\u0661-\u0662", "bytes=\u00b2-", "pages=0-1",
                  "bytes=--1", "bytes=1-" + "9" * 30, f"bytes={size}-{size + 5}", "bytes= 1-2"]:
        reply = _request(server, "GET", audio, headers={"Range": value.encode("utf-8").decode("latin-1")})
        assert reply.status in (200, 206, 416), (value, reply.status)
        if reply.status == 206:
            first, last = (int(n) for n in reply.headers["content-range"].split()[1].split("/")[0].split("-"))
            assert len(reply.body) == last - first + 1 <= size
    for head in [b"GET /api/songs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n",
                 b"GET /api/songs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n",
                 b"GET /api/songs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1, 2\r\n",
                 b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n",
                 b"GET / HTTP/1.1\r\nno colon\r\n", b"BREW /api/songs HTTP/1.1\r\nHost: 127.0.0.1\r\n"]:
        status, answer = raw_request(server.port, head)
        assert status is None or 400 <= status < 500, (head, answer[:200])
    assert _request(server, "GET", "/api/songs").status == 200  # still serving


class FakeVanishingIndex(FakeMixQueryIndex):
    """Its catalogue's audio files are gone: reading raises as the catalogue would, naming a server path."""

    def segment_audio(self, song: str, part: str, segment: int) -> np.ndarray:
        if segment == 0:
            raise FileNotFoundError(2, "No such file or directory", f"{REPO_ROOT}/secret/catalog/{song}/mix.flac")
        raise PartsimError(f"cannot decode {Path.home()}/data/{song}/stems/S01.flac")


def test_audio_of_a_vanished_catalogue_file_is_404_without_server_paths() -> None:
    index = FakeVanishingIndex()
    with BackgroundServer(make_app(index)) as srv:
        for segment in (0, 1):
            reply = _request(srv, "GET", audio_url(index.songs[0], "mix", segment))
            message = _assert_json_error(reply, 404, "not available")
            assert str(REPO_ROOT) not in message and str(Path.home()) not in message and "secret" not in message


def test_a_catalogue_deleted_while_serving_gives_404(real_index_dir: Path, tmp_path: Path) -> None:
    import shutil

    from partsim_core.mixquery import MixQueryIndex

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))  # nothing decoded yet: the files must be read
        index = MixQueryIndex.load(real_index_dir)
        song = index.songs[0]
        track = index.catalog().root / "test" / song
        with BackgroundServer(make_app(index)) as srv:
            moved = tmp_path / "moved"
            shutil.move(track, moved)
            try:
                reply = _request(srv, "GET", audio_url(song, "mix", 0))
            finally:
                shutil.move(moved, track)
            message = _assert_json_error(reply, 404)
            assert str(track) not in message and str(tmp_path) not in message
            assert _request(srv, "GET", "/api/songs").status == 200
