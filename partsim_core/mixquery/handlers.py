"""Request handlers of the MixQuery web app and :func:`make_app` (the API is described in
:mod:`partsim_core.mixquery.app`, which serves it).

Every handler first runs the guard (:class:`~partsim_core.mixquery.request_guard.RequestGuard`): the ``Host``
allow-list (403) and the body limit from ``Content-Length`` (413) before any body is read; bodies are streamed
and only ``max_body_bytes`` of them kept. POST endpoints then require JSON (415) from the server's own origin
(403). Error answers are ``{"error": message}`` with server paths scrubbed (:func:`scrub_paths`).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np
import soundfile as sf
import tornado.web

from partsim_core.errors import PartsimError
from partsim_core.mixquery.request_guard import (
    LOOPBACK_HOSTS,
    WILDCARD_HOSTS,
    ApiError,
    RequestGuard,
    host_name,
)
from partsim_core.mixquery.search import StemQuery

#: The page and its script and style sheet.
STATIC_DIR = Path(__file__).with_name("static")
#: Largest k a request may ask for (the thesis shows the top 100, Sec. 6.2.2 and 6.2.4).
MAX_K = 100
DEFAULT_MAX_QUERY_SET = 16
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Most bytes of one request body the HTTP server reads at all (beyond max_body_bytes they are dropped unread).
STREAMED_BODY_LIMIT = 1 << 30
#: Longest song or part name accepted inside a request body (longer ones cannot be in any index we build).
MAX_NAME_CHARS = 1024
#: Encoded WAV segments kept in memory (about 0.4 MB each at 22.05 kHz).
WAV_CACHE_SIZE = 64

# The page needs nothing but this server: no CDN, no inline script, no framing by other sites.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'; form-action 'none'")

_log = logging.getLogger("partsim.mixquery.handlers")


class IndexLike(Protocol):
    """What the app needs of a :class:`~partsim_core.mixquery.MixQueryIndex` (tests pass a fake).
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


def audio_url(song: str, part: str, segment: int) -> str:
    """The URL path of one segment's WAV (every component percent-encoded).
    """
    return f"/audio/{quote(song, safe='')}/{quote(part, safe='')}/{int(segment)}.wav"


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio as 16-bit PCM WAV bytes, clipped to [-1, 1] (libsndfile would wrap around, not clip).
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
                 executor: ThreadPoolExecutor, allowed_hosts: frozenset[str]) -> None:
        self.index = index
        self.allowed_hosts = allowed_hosts
        self.server_paths = _server_paths(index)
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


def _server_paths(index: Any) -> tuple[str, ...]:
    """Folders whose names must not appear in answers: the index's, its catalogue's, this package's, home, temp."""
    paths = {str(STATIC_DIR.parent.parent.parent), str(Path.home()), tempfile.gettempdir(), os.getcwd(), sys.prefix}
    folder = getattr(index, "folder", None)
    if folder:
        paths.add(str(folder))
    meta = getattr(index, "meta", None)
    catalog = meta.get("catalog") if isinstance(meta, dict) else None
    if isinstance(catalog, dict) and catalog.get("root"):
        paths.add(str(catalog["root"]))
    return tuple(sorted((path.rstrip("/") for path in paths if len(path) > 1), key=len, reverse=True))


def scrub_paths(message: str, paths: Sequence[str]) -> str:
    """``message`` with every server path under one of ``paths`` replaced by ``<server path>``."""
    for path in paths:
        message = re.sub(re.escape(path) + r"[^\s'\",;)]*", "<server path>", message)
    return message


@tornado.web.stream_request_body
class _BaseHandler(RequestGuard, tornado.web.RequestHandler):
    """Security headers, the guard, JSON bodies and JSON errors for every route."""

    def initialize(self, state: _State) -> None:
        self.state = state

    def prepare(self) -> None:
        self._guard()

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"error": message}`` without server paths; the traceback of a 5xx goes to the server log only."""
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
        self.clear_header("Content-Range")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": scrub_paths(message, self.state.server_paths)}))

    def check_post(self) -> None:
        """A POST must be JSON (415) from this server's own page or a non-browser client (403)."""
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise ApiError(415, f"send the request body as Content-Type: application/json, not "
                                f"{content_type[:100]!r}")
        origin = self.request.headers.get("Origin")
        own = f"{self.request.protocol}://{self.request.host}".lower()
        if origin is not None and origin.strip().lower() != own:
            raise ApiError(403, f"requests from origin {origin[:100]!r} are refused; this API serves its own page")
        if self.request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
            raise ApiError(403, "cross-site requests are refused; this API serves its own page")

    def json_body(self, allowed: set[str]) -> dict[str, Any]:
        """The request body as a JSON object with keys from ``allowed`` only (else :class:`ApiError` 4xx)."""
        self.check_post()
        body = self._checked_body()
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

    head = get


#: A static file name: printable ASCII, no folder part (the page's files sit directly in ``static/``).
_STATIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}", flags=re.ASCII)


@tornado.web.stream_request_body
class _StaticHandler(RequestGuard, tornado.web.StaticFileHandler):
    """``/static/<name>``: tornado's file handler (it refuses paths outside ``static/``) with our headers and guard;
    a name that is not a plain file name (a folder part, NUL or other control bytes, non-ASCII) is not found."""

    def prepare(self) -> None:
        self._guard()

    def set_default_headers(self) -> None:
        _BaseHandler.set_default_headers(self)  # type: ignore[arg-type]

    async def get(self, path: str, include_body: bool = True) -> None:
        if not _STATIC_NAME.fullmatch(path) or path.startswith("."):
            raise ApiError(404, "not found")
        await super().get(path, include_body=include_body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = error.message if isinstance(error, ApiError) else None
        # tornado answers 403 for paths outside static/ (e.g. with '..') and for folders: not found, as any other.
        if status_code == 403 and message is None:
            status_code = 404
            self.set_status(404)
        if message is None:
            message = "not found" if status_code == 404 else self._reason
            if status_code >= 500:
                message = "internal server error (see the server log)"
        self.clear_header("Content-Range")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": message}))


class _NotFoundHandler(_BaseHandler):
    """Every other URL: 404 as JSON."""

    def prepare(self) -> None:
        self._guard()
        raise ApiError(404, f"not found: {self.request.path[:200]}")


class _SongsHandler(_BaseHandler):
    """``GET /api/songs``."""

    def get(self) -> None:
        index = self.state.index
        self.finish({"songs": self.state.songs, "parts": list(self.state.parts),
                     "sample_rate": int(index.sample_rate), "segment_seconds": float(index.segment_seconds),
                     "max_query_set": self.state.max_query_set, "max_k": MAX_K, "k": self.state.k,
                     "distance": str(getattr(index, "distance", "cosine"))})

    head = get


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

    head = get


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
            hits = state.index.search_songs([StemQuery(*query) for query in parsed], k=k)
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
            hits = state.index.similar_stems(StemQuery(song, part, segment), k=k)
            results = []
            for rank, hit in enumerate(hits, start=1):
                n = int(hit.segment)
                start, end = state.segment_table(hit.song).get(n, (None, None))
                results.append({"rank": rank, "song": hit.song, "part": part, "segment": n,
                                "distance": _finite(hit.distance), "start": start, "end": end,
                                "audio": audio_url(hit.song, part, n)})
            return results

        self.finish({"part": part, "results": await self.in_pool(similar)})


#: A single byte range (at most 18 digits per bound: larger values are absurd for a WAV segment).
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", flags=re.ASCII)
#: A segment number in an audio URL: ASCII digits only (``str.isdigit`` also accepts e.g. superscripts).
_SEGMENT = re.compile(r"[0-9]{1,9}", flags=re.ASCII)


class _AudioHandler(_BaseHandler):
    """``GET /audio/<song>/<part>/<segment>.wav``: looked up in the index, never on disk by name."""

    async def get(self, song: str, part: str, segment_text: str) -> None:
        self.known_song(song)
        if part not in self.state.audio_parts:
            raise ApiError(404, f"unknown part {part[:100]!r}")
        if not _SEGMENT.fullmatch(segment_text):
            raise ApiError(404, f"unknown segment {segment_text[:20]!r}")
        segment = int(segment_text)
        state = self.state
        if segment not in (await self.in_pool(state.segment_table, song, status=404)):
            raise ApiError(404, f"song {song[:100]!r} has no segment {segment}")
        if not await self.in_pool(state.index.has_part_audio, song, part, status=404):
            raise ApiError(404, f"song {song[:100]!r} has no {part} audio")
        try:
            data = await asyncio.get_running_loop().run_in_executor(
                state.executor, functools.partial(state.wav, song, part, segment))
        except Exception:  # noqa: BLE001 - a catalogue file gone or unreadable: the server log says which
            _log.warning("audio of %r / %s / %d unavailable", song, part, segment, exc_info=True)
            raise ApiError(404, f"the {part} audio of song {song[:100]!r} segment {segment} is not available "
                                f"(its catalogue file is missing or unreadable on the server)") from None
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

    head = get


def make_app(index: IndexLike, *, max_query_set: int = DEFAULT_MAX_QUERY_SET,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, k: int = MAX_K,
             workers: int | None = None, allowed_hosts: Sequence[str] = ()) -> tornado.web.Application:
    """The MixQuery tornado application over ``index`` (routes and API: see the module docstring).

    Args:
        index: a loaded :class:`~partsim_core.mixquery.MixQueryIndex` (or anything with its attributes).
        max_query_set: most stem queries one search may hold.
        max_body_bytes: largest accepted request body (larger: 413).
        k: results returned when a request does not say (``1..MAX_K``).
        workers: threads for searches and WAV encoding (default ``min(4, cpu count)``).
        allowed_hosts: host names (or addresses) accepted in the ``Host`` header besides :data:`LOOPBACK_HOSTS`:
            the bound address and the ``--allow-host`` names (a wildcard address is not a host name: ignored).

    Returns:
        The application; ``app.settings["mixquery_executor"]`` is its thread pool (shut it down when done) and
        ``app.settings["mixquery_max_body_bytes"]`` the body limit for the HTTP server.
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
    hosts = frozenset(host_name(host) for host in (*LOOPBACK_HOSTS, *allowed_hosts)) - WILDCARD_HOSTS
    state = _State(index, max_query_set=max_query_set, max_body_bytes=max_body_bytes, k=k, executor=executor,
                   allowed_hosts=hosts)
    args = {"state": state}
    handlers = [
        (r"/", _PageHandler, {**args, "page": page_path.read_bytes()}),
        (r"/static/(.*)", _StaticHandler, {"path": str(STATIC_DIR)}),  # name checked by the handler
        (r"/api/songs", _SongsHandler, args),
        (r"/api/songs/([^/]+)", _SongHandler, args),
        (r"/api/search", _SearchHandler, args),
        (r"/api/similar", _SimilarHandler, args),
        (r"/audio/([^/]+)/([^/]+)/([^/]+)\.wav", _AudioHandler, args),
    ]
    return tornado.web.Application(
        handlers, default_handler_class=_NotFoundHandler, default_handler_args=args,
        serve_traceback=False, debug=False, compress_response=True, xheaders=False,
        mixquery_executor=executor, mixquery_max_body_bytes=max_body_bytes, mixquery_state=state)


