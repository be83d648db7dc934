"""The MixQuery web app (thesis ch. 6, Fig. 6.2): ``partsim mixquery serve --index DIR``.

One page with the four areas of Fig. 6.2 - (1) the song list with a filter box, (2) the chosen song's parts with
an audio player per 10-s segment and the buttons "add to query set" and "find similar", (3) the query set with
remove buttons, (4) the ranked songs, re-queried whenever the query set changes, each playable from its best
segment - served by tornado from a :class:`~partsim_core.mixquery.MixQueryIndex`. The page is plain
HTML/JS/CSS in ``static/`` (no build step, nothing loaded from outside the server).

JSON API (every error is ``{"error": "<message>"}`` with a 4xx status; never a traceback):

``GET /api/songs``
    ``{"songs": [song, ...], "parts": [part, ...], "sample_rate": int, "segment_seconds": float,
    "max_query_set": int, "max_k": int, "k": int}``.
``GET /api/songs/<song>`` (the song URL-encoded)
    ``{"song": str, "segments": [{"segment": int, "start": s, "end": s}, ...], "parts": [parts with audio],
    "mix": bool, "audio": {part: [url per segment]}}``; unknown song -> 404.
``POST /api/search`` with ``{"queries": [{"song": str, "part": str, "segment": int}, ...], "k": int}``
    ``{"results": [{"rank", "song", "distance", "best_segment", "start", "end", "segments", "audio"}, ...]}``,
    ranked by the aggregated distance of thesis eqs. (6.1)-(6.2) (``index.search_songs``); ``audio`` is the URL
    of the best segment of the mix (``null`` when the index holds no mix audio for that song). An empty query set
    gives no results. At most ``max_query_set`` queries; ``1 <= k <= max_k`` (default ``k``).
``POST /api/similar`` with ``{"song": str, "part": str, "segment": int, "k": int}``
    ``{"part": str, "results": [{"rank", "song", "part", "segment", "distance", "start", "end", "audio"}, ...]}``,
    the stems of the same part nearest to the given one (``index.similar_stems``).
``GET /audio/<song>/<part>/<segment>.wav``
    The segment as a 16-bit PCM WAV, encoded in memory from ``index.segment_audio``; ``part`` may be ``mix``.
    No file path is ever built from the URL: the song, part and segment are looked up in the index, so unknown ids
    and anything else (``..`` included) get 404. A single ``Range: bytes=a-b`` is honoured so players can seek.

Bounds: request bodies over ``max_body_bytes`` get 413 (the HTTP server also refuses bodies a little larger
before reading them); malformed JSON, missing or unknown fields and wrong types get 400; an unknown song, part
or segment inside a request body gets 400, in a URL 404. Searches and WAV encoding run in a thread pool so the
server stays responsive (FAISS releases the GIL).

Used by: ``partsim mixquery serve`` (chapter 6), tests/test_mixquery_app.py, benchmarks/mixquery_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import math
import os
import re
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np
import soundfile as sf
import tornado.httpserver
import tornado.netutil
import tornado.web

from partsim_core.errors import PartsimError

#: The page and its script and style sheet.
STATIC_DIR = Path(__file__).with_name("static")
#: Largest k a request may ask for (the thesis shows the top 100, Sec. 6.2.2 and 6.2.4).
MAX_K = 100
DEFAULT_MAX_QUERY_SET = 16
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Longest song or part name accepted inside a request body (longer ones cannot be in any index we build).
MAX_NAME_CHARS = 1024
#: Encoded WAV segments kept in memory (about 0.4 MB each at 22.05 kHz).
WAV_CACHE_SIZE = 64

# The page needs nothing but this server: no CDN, no inline script, no framing by other sites.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'; form-action 'none'")

class IndexLike(Protocol):
    """What the app needs of a :class:`~partsim_core.mixquery.MixQueryIndex` (tests pass a fake).

    Used by: :func:`make_app`.
    """

    songs: list[str]
    parts: tuple[str, ...]
    sample_rate: int
    segment_seconds: float

    def segments(self, song: str) -> list[tuple[int, float, float]]: ...  # noqa: D102
    def has_part_audio(self, song: str, part: str) -> bool: ...  # noqa: D102
    def segment_audio(self, song: str, part: str, segment: int) -> np.ndarray: ...  # noqa: D102
    def similar_stems(self, query: Any, k: int = 100) -> list: ...  # noqa: D102
    def search_songs(self, queries: list, k: int = 100) -> list: ...  # noqa: D102


class ApiError(tornado.web.HTTPError):
    """An error answered as ``{"error": message}`` with ``status``.

    Used by: the request handlers of this module.
    """

    def __init__(self, status: int, message: str) -> None:
        # log_message is %-formatted by tornado's logger: escape '%' coming from user input.
        super().__init__(status, message.replace("%", "%%"))
        self.message = message


def _stem_query(song: str, part: str, segment: int) -> Any:
    """A :class:`~partsim_core.mixquery.StemQuery` (imported late: this module lives inside that package)."""
    from partsim_core.mixquery import StemQuery

    return StemQuery(song, part, segment)


def audio_url(song: str, part: str, segment: int) -> str:
    """The URL path of one segment's WAV (every component percent-encoded).

    Used by: the API responses; tests.
    """
    return f"/audio/{quote(song, safe='')}/{quote(part, safe='')}/{int(segment)}.wav"


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio as 16-bit PCM WAV bytes, clipped to [-1, 1] (libsndfile would wrap around, not clip).

    Used by: ``GET /audio/...``; tests.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"segment audio must be mono (1-D), got shape {audio.shape}")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.nan_to_num(audio), -1.0, 1.0), int(sample_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _finite(value: float) -> float | None:
    """JSON has no NaN/inf (JSON.parse rejects them): send null instead."""
    value = float(value)
    return value if math.isfinite(value) else None


class _State:
    """The index plus the limits and the thread pool that every handler shares."""

    def __init__(self, index: IndexLike, *, max_query_set: int, max_body_bytes: int, k: int,
                 executor: ThreadPoolExecutor) -> None:
        self.index = index
        self.max_query_set = max_query_set
        self.max_body_bytes = max_body_bytes
        self.k = k
        self.executor = executor
        self.songs = list(index.songs)
        self.song_set = frozenset(self.songs)
        self.parts = tuple(index.parts)
        self.audio_parts = frozenset((*self.parts, "mix"))
        self._segments: dict[str, dict[int, tuple[float, float]]] = {}
        self.wav = functools.lru_cache(maxsize=WAV_CACHE_SIZE)(self._wav)

    def segment_table(self, song: str) -> dict[int, tuple[float, float]]:
        """``{segment: (start, end)}`` of a known song, memoised (the index does not change while serving)."""
        table = self._segments.get(song)
        if table is None:
            table = {int(n): (float(start), float(end)) for n, start, end in self.index.segments(song)}
            self._segments[song] = table  # a plain dict store: atomic under the GIL
        return table

    def _wav(self, song: str, part: str, segment: int) -> bytes:
        return encode_wav(self.index.segment_audio(song, part, segment), self.index.sample_rate)


class _BaseHandler(tornado.web.RequestHandler):
    """Security headers, JSON bodies and JSON errors for every route."""

    def initialize(self, state: _State) -> None:
        self.state = state

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"error": message}``; the traceback of a 5xx goes to the server log only."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            message = error.message
        elif isinstance(error, tornado.web.HTTPError) and status_code < 500:
            message = error.log_message or self._reason
            if error.log_message and error.args:
                try:
                    message = error.log_message % error.args
                except (TypeError, ValueError):
                    message = error.log_message
        elif status_code < 500:
            message = self._reason
        else:
            message = "internal server error (see the server log)"
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": message}))

    def json_body(self, allowed: set[str]) -> dict[str, Any]:
        """The request body as a JSON object with keys from ``allowed`` only (else :class:`ApiError` 400/413)."""
        body = self.request.body
        if len(body) > self.state.max_body_bytes:
            raise ApiError(413, f"request body of {len(body)} bytes exceeds the limit of "
                                f"{self.state.max_body_bytes} bytes")
        if not body.strip():
            raise ApiError(400, "the request body must be a JSON object, got an empty body")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise ApiError(400, f"malformed JSON: {str(error)[:200]}") from None
        if not isinstance(payload, dict):
            raise ApiError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
        unknown = sorted(str(key)[:50] for key in payload if key not in allowed)
        if unknown:
            raise ApiError(400, f"unknown field(s) {unknown}; expected some of {sorted(allowed)}")
        return payload

    def parse_k(self, payload: dict[str, Any]) -> int:
        """``payload["k"]`` (default: the app's k) as an int in ``1..MAX_K``."""
        k = payload.get("k", self.state.k)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise ApiError(400, f"k must be an integer from 1 to {MAX_K}, got {json.dumps(k)[:50]}")
        return k

    def parse_query(self, item: Any, where: str) -> tuple[str, str, int]:
        """One ``{"song", "part", "segment"}`` object checked against the index (400 when unknown)."""
        if not isinstance(item, dict):
            raise ApiError(400, f"{where} must be an object with song, part and segment")
        missing = [key for key in ("song", "part", "segment") if key not in item]
        if missing:
            raise ApiError(400, f"{where} lacks {', '.join(missing)}")
        extra = sorted(str(key)[:50] for key in item if key not in ("song", "part", "segment"))
        if extra:
            raise ApiError(400, f"{where} has unknown field(s) {extra}")
        song, part, segment = item["song"], item["part"], item["segment"]
        if not isinstance(song, str) or len(song) > MAX_NAME_CHARS:
            raise ApiError(400, f"{where}.song must be a string (a song id from /api/songs)")
        if not isinstance(part, str) or len(part) > MAX_NAME_CHARS:
            raise ApiError(400, f"{where}.part must be a string, one of {list(self.state.parts)}")
        if not isinstance(segment, int) or isinstance(segment, bool):
            raise ApiError(400, f"{where}.segment must be an integer")
        if song not in self.state.song_set:
            raise ApiError(400, f"{where}: unknown song {song[:100]!r}")
        if part not in self.state.parts:
            raise ApiError(400, f"{where}: unknown part {part[:100]!r}; expected one of {list(self.state.parts)}")
        if segment not in self.state.segment_table(song):
            raise ApiError(400, f"{where}: song {song[:100]!r} has no segment {segment}")
        return song, part, segment

    async def in_pool(self, function: Callable[..., Any], *args: Any, status: int = 400) -> Any:
        """Run ``function(*args)`` in the thread pool; a :class:`PartsimError` becomes an ``ApiError(status)``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.state.executor, functools.partial(function, *args))
        except PartsimError as error:
            raise ApiError(status, str(error)) from None

    def known_song(self, song: str) -> str:
        """``song`` when the index holds it, else 404."""
        if song not in self.state.song_set:
            raise ApiError(404, f"unknown song {song[:100]!r}")
        return song


class _PageHandler(_BaseHandler):
    """``GET /``: the page (read once at start-up)."""

    def initialize(self, state: _State, page: bytes) -> None:  # type: ignore[override]
        super().initialize(state)
        self.page = page

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(self.page)


class _StaticHandler(tornado.web.StaticFileHandler):
    """``/static/...``: tornado's file handler (it refuses paths outside ``static/``) with our headers."""

    def set_default_headers(self) -> None:
        _BaseHandler.set_default_headers(self)  # type: ignore[arg-type]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # tornado answers 403 for paths outside static/ (e.g. with '..') and for folders: not found, as any other.
        if status_code == 403:
            status_code = 404
            self.set_status(404)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": "not found" if status_code == 404 else self._reason}))


class _NotFoundHandler(_BaseHandler):
    """Every other URL: 404 as JSON."""

    def prepare(self) -> None:
        raise ApiError(404, f"not found: {self.request.path[:200]}")


class _SongsHandler(_BaseHandler):
    """``GET /api/songs``."""

    def get(self) -> None:
        index = self.state.index
        self.finish({"songs": self.state.songs, "parts": list(self.state.parts),
                     "sample_rate": int(index.sample_rate), "segment_seconds": float(index.segment_seconds),
                     "max_query_set": self.state.max_query_set, "max_k": MAX_K, "k": self.state.k})


class _SongHandler(_BaseHandler):
    """``GET /api/songs/<song>``."""

    async def get(self, song: str) -> None:
        song = self.known_song(song)
        state = self.state

        def describe() -> dict[str, Any]:
            table = state.segment_table(song)
            with_audio = [part for part in state.parts if state.index.has_part_audio(song, part)]
            mix = bool(state.index.has_part_audio(song, "mix"))
            audio = {part: [audio_url(song, part, n) for n in table] for part in (*with_audio, *(["mix"] * mix))}
            return {"song": song, "segments": [{"segment": n, "start": start, "end": end}
                                               for n, (start, end) in table.items()],
                    "parts": with_audio, "mix": mix, "audio": audio}

        self.finish(await self.in_pool(describe, status=404))


class _SearchHandler(_BaseHandler):
    """``POST /api/search``: songs ranked for a query set (thesis Sec. 6.3.4, step 4)."""

    async def post(self) -> None:
        payload = self.json_body({"queries", "k"})
        queries = payload.get("queries")
        if not isinstance(queries, list):
            raise ApiError(400, "'queries' must be a list of {song, part, segment} objects")
        if len(queries) > self.state.max_query_set:
            raise ApiError(400, f"the query set holds {len(queries)} stem queries; at most "
                                f"{self.state.max_query_set} are allowed")
        k = self.parse_k(payload)
        parsed = [self.parse_query(item, f"queries[{i}]") for i, item in enumerate(queries)]
        if not parsed:
            self.finish({"results": []})
            return
        state = self.state

        def search() -> list[dict[str, Any]]:
            hits = state.index.search_songs([_stem_query(*query) for query in parsed], k=k)
            results = []
            for rank, hit in enumerate(hits, start=1):
                segment = int(hit.best_segment)
                start, end = state.segment_table(hit.song).get(segment, (None, None))
                results.append({"rank": rank, "song": hit.song, "distance": _finite(hit.distance),
                                "best_segment": segment, "start": start, "end": end,
                                "segments": len(state.segment_table(hit.song)),
                                "audio": (audio_url(hit.song, "mix", segment)
                                          if state.index.has_part_audio(hit.song, "mix") else None)})
            return results

        self.finish({"results": await self.in_pool(search)})


class _SimilarHandler(_BaseHandler):
    """``POST /api/similar``: the nearest stems of the same part (thesis Sec. 6.2.2, step 2-2)."""

    async def post(self) -> None:
        payload = self.json_body({"song", "part", "segment", "k"})
        k = self.parse_k(payload)
        song, part, segment = self.parse_query({key: value for key, value in payload.items() if key != "k"},
                                               "the request")
        state = self.state

        def similar() -> list[dict[str, Any]]:
            hits = state.index.similar_stems(_stem_query(song, part, segment), k=k)
            results = []
            for rank, hit in enumerate(hits, start=1):
                n = int(hit.segment)
                start, end = state.segment_table(hit.song).get(n, (None, None))
                results.append({"rank": rank, "song": hit.song, "part": part, "segment": n,
                                "distance": _finite(hit.distance), "start": start, "end": end,
                                "audio": audio_url(hit.song, part, n)})
            return results

        self.finish({"part": part, "results": await self.in_pool(similar)})


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _AudioHandler(_BaseHandler):
    """``GET /audio/<song>/<part>/<segment>.wav``: looked up in the index, never on disk by name."""

    async def get(self, song: str, part: str, segment_text: str) -> None:
        self.known_song(song)
        if part not in self.state.audio_parts:
            raise ApiError(404, f"unknown part {part[:100]!r}")
        if not segment_text.isdigit() or len(segment_text) > 9:
            raise ApiError(404, f"unknown segment {segment_text[:20]!r}")
        segment = int(segment_text)
        state = self.state
        if segment not in (await self.in_pool(state.segment_table, song, status=404)):
            raise ApiError(404, f"song {song[:100]!r} has no segment {segment}")
        if not await self.in_pool(state.index.has_part_audio, song, part, status=404):
            raise ApiError(404, f"song {song[:100]!r} has no {part} audio")
        data = await self.in_pool(state.wav, song, part, segment, status=404)
        self.set_header("Content-Type", "audio/wav")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Cache-Control", "private, max-age=3600")
        match = _RANGE.fullmatch(self.request.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            size = len(data)
            if match.group(1):
                first = int(match.group(1))
                last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # "bytes=-N": the last N bytes
                first, last = max(size - int(match.group(2)), 0), size - 1
            if first >= size or first > last:
                self.set_status(416)
                self.set_header("Content-Range", f"bytes */{size}")
                self.finish()
                return
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {first}-{last}/{size}")
            data = data[first:last + 1]
        self.finish(data)


def make_app(index: IndexLike, *, max_query_set: int = DEFAULT_MAX_QUERY_SET,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, k: int = MAX_K,
             workers: int | None = None) -> tornado.web.Application:
    """The MixQuery tornado application over ``index`` (routes and API: see the module docstring).

    Args:
        index: a loaded :class:`~partsim_core.mixquery.MixQueryIndex` (or anything with its attributes).
        max_query_set: most stem queries one search may hold.
        max_body_bytes: largest accepted request body (larger: 413).
        k: results returned when a request does not say (``1..MAX_K``).
        workers: threads for searches and WAV encoding (default ``min(4, cpu count)``).

    Returns:
        The application; ``app.settings["mixquery_executor"]`` is its thread pool (shut it down when done) and
        ``app.settings["mixquery_max_body_bytes"]`` the body limit for the HTTP server.

    Used by: :func:`serve`, :class:`BackgroundServer`, tests/test_mixquery_app.py, benchmarks/mixquery_load.py.
    """
    if not 1 <= k <= MAX_K:
        raise PartsimError(f"k must be from 1 to {MAX_K}, got {k}")
    if max_query_set < 1 or max_body_bytes < 1024:
        raise PartsimError(f"max_query_set must be >= 1 and max_body_bytes >= 1024, got {max_query_set} and "
                           f"{max_body_bytes}")
    page_path = STATIC_DIR / "index.html"
    if not page_path.is_file():
        raise PartsimError(f"the MixQuery page {page_path} is missing: reinstall partsim (package data)")
    executor = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                  thread_name_prefix="mixquery")
    state = _State(index, max_query_set=max_query_set, max_body_bytes=max_body_bytes, k=k, executor=executor)
    args = {"state": state}
    handlers = [
        (r"/", _PageHandler, {**args, "page": page_path.read_bytes()}),
        (r"/static/(.*)", _StaticHandler, {"path": str(STATIC_DIR)}),
        (r"/api/songs", _SongsHandler, args),
        (r"/api/songs/([^/]+)", _SongHandler, args),
        (r"/api/search", _SearchHandler, args),
        (r"/api/similar", _SimilarHandler, args),
        (r"/audio/([^/]+)/([^/]+)/([^/]+)\.wav", _AudioHandler, args),
    ]
    return tornado.web.Application(
        handlers, default_handler_class=_NotFoundHandler, default_handler_args=args,
        serve_traceback=False, debug=False, compress_response=True,
        mixquery_executor=executor, mixquery_max_body_bytes=max_body_bytes, mixquery_state=state)


def _http_server(app: tornado.web.Application) -> tornado.httpserver.HTTPServer:
    """An HTTP server with bounded bodies and timeouts for ``app``."""
    limit = int(app.settings.get("mixquery_max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    # Somewhat above the app's own limit, so a slightly-too-large body gets the app's clear 413 message while a
    # huge one is refused before it is read.
    return tornado.httpserver.HTTPServer(app, max_body_size=2 * limit + 4096, max_buffer_size=4 * limit + 65536,
                                         idle_connection_timeout=60, body_timeout=30)


class BackgroundServer:
    """Serve an app on a loopback port from a daemon thread with its own event loop (tests and benchmarks).

    Example::

        with BackgroundServer(make_app(index)) as server:
            urllib.request.urlopen(server.url + "api/songs")

    Used by: tests/test_mixquery_app.py, benchmarks/mixquery_load.py.
    """

    def __init__(self, app: tornado.web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        return f"http://{self.host}:{self.port}/"

    def start(self) -> BackgroundServer:
        """Start serving; returns once the port is bound."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True,
                                        name="mixquery-server")
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise PartsimError(f"could not serve on {self.host}:{self.port}: {self._error}")
        return self

    async def _main(self) -> None:
        try:
            sockets = tornado.netutil.bind_sockets(self.port, self.host)
            self.port = sockets[0].getsockname()[1]
            server = _http_server(self.app)
            server.add_sockets(sockets)
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        except BaseException as error:  # noqa: BLE001 - reported by start()
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def stop(self) -> None:
        """Stop serving and shut the app's thread pool down."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        executor = self.app.settings.get("mixquery_executor")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False,
          *, k: int = MAX_K) -> None:
    """Load the index in ``index_dir`` and serve the MixQuery app until interrupted (Ctrl-C).

    Binds ``127.0.0.1`` unless told otherwise; any other address serves the index's audio to the network.

    Raises:
        PartsimError: no index there (or one :meth:`MixQueryIndex.load` refuses), or the port is taken.

    Used by: ``partsim mixquery serve`` (chapter 6).
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise PartsimError(f"MixQuery index folder {index_dir} does not exist; build one with "
                           f"'partsim mixquery index --out {index_dir}'")
    from partsim_core.mixquery import MixQueryIndex

    serve_index(MixQueryIndex.load(index_dir), host=host, port=port, open_browser=open_browser, k=k,
                source=str(index_dir))


def serve_index(index: IndexLike, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False, *,
                k: int = MAX_K, source: str = "memory") -> None:
    """Serve the MixQuery app over an already loaded index until interrupted (Ctrl-C).

    Prints ``... at http://HOST:PORT/ ...`` to stderr once listening (``port=0`` picks a free port).

    Used by: :func:`serve`, benchmarks/mixquery_load.py (a synthetic index in a child process).
    """
    app = make_app(index, k=k)
    try:
        sockets = tornado.netutil.bind_sockets(port, host)
    except OSError as error:
        app.settings["mixquery_executor"].shutdown(wait=False)
        raise PartsimError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another --port "
                           f"or --host") from None
    port = sockets[0].getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"partsim mixquery serve: warning: listening on {host}, not loopback: anyone who can reach this "
              f"machine can use the app and hear the indexed audio", file=sys.stderr)
    print(f"partsim mixquery serve: {len(index.songs)} songs, parts {', '.join(index.parts)} from {source} "
          f"at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)

    async def main() -> None:
        server = _http_server(app)
        server.add_sockets(sockets)
        if open_browser:
            webbrowser.open(url)
        try:
            await asyncio.Event().wait()  # until Ctrl-C cancels the task
        finally:
            server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("partsim mixquery serve: stopped", file=sys.stderr)
    finally:
        app.settings["mixquery_executor"].shutdown(wait=False, cancel_futures=True)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _k(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_K:
        raise argparse.ArgumentTypeError(f"k must be from 1 to {MAX_K}, got {value}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    """``partsim mixquery serve``: serve until Ctrl-C.

    Used by: the parser of :func:`add_serve_parser`.
    """
    serve(args.index, host=args.host, port=args.port, open_browser=args.open, k=args.k)
    return 0


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``mixquery`` group's sub-command parsers.

    Used by: partsim_core/cli/mixquery.py.
    """
    parser = subparsers.add_parser(
        "serve",
        help="serve the MixQuery web app (thesis Fig. 6.2) for an index in a browser",
        description=(
            "Serve the MixQuery web app over an index built by 'partsim mixquery index': choose a song, listen to "
            "its parts in 10-s segments, add segments to the query set (or find similar stems first), and get "
            "songs ranked by the aggregated part-level distance (thesis eqs. 6.1-6.2), each playable from its "
            "best segment. Serves only the indexed audio; binds 127.0.0.1 unless --host says otherwise. "
            "Ctrl-C stops it."
        ),
    )
    parser.add_argument("--index", required=True, metavar="DIR", help="index folder (from 'partsim mixquery index')")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the "
                             "app and its audio to the network)")
    parser.add_argument("--port", type=_port, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    parser.add_argument("--k", type=_k, default=MAX_K,
                        help=f"songs and similar stems listed per search (1-{MAX_K}, default {MAX_K})")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")
    parser.set_defaults(func=run_serve)
    return parser


__all__: Sequence[str] = ("ApiError", "BackgroundServer", "IndexLike", "MAX_K", "add_serve_parser", "audio_url",
                          "encode_wav", "make_app", "run_serve", "serve", "serve_index")
