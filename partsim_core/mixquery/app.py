"""The MixQuery web app (thesis ch. 6, Fig. 6.2): ``partsim mixquery serve --index DIR``.

One page with the four areas of Fig. 6.2 - (1) the song list with a filter box, (2) the chosen song's parts with
an audio player per 10-s segment and the buttons "add to query set" and "find similar", (3) the query set with
remove buttons, (4) the ranked songs, re-queried whenever the query set changes, each playable from its best
segment - served by tornado from a :class:`~partsim_core.mixquery.MixQueryIndex`. The page is plain
HTML/JS/CSS in ``static/`` (no build step, nothing loaded from outside the server).

JSON API (every error is ``{"error": "<message>"}`` with a 4xx status; never a traceback):

``GET /api/songs``
    ``{"songs": [song, ...], "parts": [part, ...], "sample_rate": int, "segment_seconds": float,
    "max_query_set": int, "max_k": int, "k": int, "distance": "cosine" | "euclidean"}`` (``distance``: the d of
    eq. 6.2 the index was built for; every search uses it).
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

Closed to other sites (a DNS-rebinding page must not read the catalogue or its audio): every request whose
``Host`` is not on the allow-list (``localhost``, the loopback addresses, the bound address and the names added
with ``--allow-host``) gets 403; the POST endpoints need ``Content-Type: application/json`` (415 otherwise, so a
cross-site "simple" form or ``text/plain`` request cannot reach them) and refuse an ``Origin`` other than the
server's own (403), as well as ``Sec-Fetch-Site: cross-site``. ``HEAD`` works wherever ``GET`` does.

Bounds: every request body over ``max_body_bytes`` gets 413 - checked from ``Content-Length`` before the body is
read, and while a chunked body streams in; malformed JSON, missing or unknown fields and wrong types get 400; an
unknown song, part or segment inside a request body gets 400, in a URL 404; a malformed path (NUL bytes, non-ASCII
digits), header or ``Range`` gets a 4xx, and audio that cannot be read (e.g. a catalogue file deleted while
serving) 404. Error messages never show server paths. Searches and WAV encoding run in a thread pool so the
server stays responsive (FAISS releases the GIL). The handlers live in :mod:`partsim_core.mixquery.handlers`;
this module serves them. The index may use the exact or the approximate search (``--search``,
:mod:`partsim_core.mixquery.ann`): the API is the same.
"""


from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import webbrowser
from collections.abc import Sequence
from pathlib import Path

import tornado.httpserver
import tornado.netutil
import tornado.web

from partsim_core.errors import PartsimError
from partsim_core.mixquery import MixQueryIndex
from partsim_core.mixquery.handlers import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_K,
    STREAMED_BODY_LIMIT,
    IndexLike,
    audio_url,
    encode_wav,
    make_app,
)
from partsim_core.mixquery.request_guard import LOOPBACK_HOSTS, WILDCARD_HOSTS


def _http_server(app: tornado.web.Application) -> tornado.httpserver.HTTPServer:
    """An HTTP server with bounded bodies and timeouts for ``app``."""
    limit = int(app.settings.get("mixquery_max_body_bytes", DEFAULT_MAX_BODY_BYTES))
    # Every handler streams its body (only max_body_bytes are kept) and answers 413 from Content-Length before
    # reading it, so the server-wide limit only bounds how long a refused body is drained (and body_timeout).
    return tornado.httpserver.HTTPServer(app, max_body_size=STREAMED_BODY_LIMIT, max_buffer_size=4 * limit + 65536,
                                         idle_connection_timeout=60, body_timeout=30)


class BackgroundServer:
    """Serve an app on a loopback port from a daemon thread with its own event loop (tests and benchmarks).

    Example::

        with BackgroundServer(make_app(index)) as server:
            urllib.request.urlopen(server.url + "api/songs")
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
          *, k: int = MAX_K, allow_hosts: Sequence[str] = (), search: str = "auto") -> None:
    """Load the index in ``index_dir`` and serve the MixQuery app until interrupted (Ctrl-C).

    Binds ``127.0.0.1`` unless told otherwise; any other address serves the index's audio to the network.

    Raises:
        PartsimError: no index there (or one :meth:`MixQueryIndex.load` refuses), or the port is taken.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise PartsimError(f"MixQuery index folder {index_dir} does not exist; build one with "
                           f"'partsim mixquery index --out-dir {index_dir}'")

    serve_index(MixQueryIndex.load(index_dir, search=search), host=host, port=port, open_browser=open_browser,
                k=k, source=str(index_dir), allow_hosts=allow_hosts)


def serve_index(index: IndexLike, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False, *,
                k: int = MAX_K, source: str = "memory", allow_hosts: Sequence[str] = ()) -> None:
    """Serve the MixQuery app over an already loaded index until interrupted (Ctrl-C).

    Prints ``... at http://HOST:PORT/ ...`` to stderr once listening (``port=0`` picks a free port).
    """
    app = make_app(index, k=k, allowed_hosts=(host, *allow_hosts))
    try:
        sockets = tornado.netutil.bind_sockets(port, host)
    except OSError as error:
        app.settings["mixquery_executor"].shutdown(wait=False)
        raise PartsimError(f"cannot listen on {host}:{port} ({error.strerror or error}); choose another --port "
                           f"or --host") from None
    port = sockets[0].getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if host not in LOOPBACK_HOSTS:
        print(f"partsim mixquery serve: warning: listening on {host}, not loopback: anyone who can reach this "
              f"machine can use the app and hear the indexed audio", file=sys.stderr)
    if host in WILDCARD_HOSTS and not allow_hosts:
        print("partsim mixquery serve: note: requests are answered only for localhost; add the names or "
              "addresses clients use with --allow-host", file=sys.stderr)
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
    """
    serve(args.index, host=args.host, port=args.port, open_browser=args.open, k=args.k,
          allow_hosts=args.allow_host or (), search=args.search)
    return 0


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``mixquery`` group's sub-command parsers.
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
    parser.add_argument("--allow-host", action="append", metavar="NAME",
                        help="also answer requests whose Host header names NAME (repeatable); by default only "
                             "localhost, the loopback addresses and --host are answered, which keeps other web "
                             "sites (DNS rebinding) out")
    parser.add_argument("--search", choices=("auto", "exact", "ann"), default="auto",
                        help="exact search, approximate (FAISS IVF, per part) or auto: approximate from "
                             "the size threshold of partsim_core.mixquery.ann on; default: %(default)s")
    parser.add_argument("--open", action="store_true", help="open the page in the default web browser")
    parser.set_defaults(func=run_serve)
    return parser


__all__: Sequence[str] = ("BackgroundServer", "IndexLike", "MAX_K", "add_serve_parser", "audio_url",
                          "encode_wav", "make_app", "run_serve", "serve", "serve_index")
