"""Load test of the MixQuery web app: many concurrent clients issuing searches on loopback.

``--clients`` threads (default 50) each open one keep-alive HTTP connection and, once all are connected, send
``--requests`` (default 20) ``POST /api/search`` requests with random query sets of 1 to ``--max-queries`` stems
(drawn with ``--seed`` from the songs, parts with audio and segments the server lists). A request counts as an error
when it raises or its status is not 200 or its body is not a JSON object with ``results``. Prints ONE JSON line:

    {"clients": 50, "requests": 1000, "errors": 0, "p50_ms": .., "p95_ms": .., "max_ms": .., "wall_s": ..,
     "requests_per_s": .., "server": "process" | "thread" | "url", "songs": ..}

The server is started here in a separate Python process (default; ``--server thread`` runs it in this process,
where the clients share its GIL) over either an index folder (``--index DIR``) or a synthetic in-memory index of
the thesis's size (``--synthetic 3108``: 3,108 songs of ``--segments`` 10-s segments with random ``--dim``-wide
vectors per part, :meth:`MixQueryIndex.from_arrays`; searches only, it has no audio), or an already running server
is given with ``--url``.

Run: ``python benchmarks/mixquery_load.py (--index DIR | --synthetic SONGS | --url URL) [--clients 50]
[--requests 20] [--max-queries 4] [--k 100] [--seed 0] [--server process|thread] [--segments 24] [--dim 128]``.

Used by: tests/test_mixquery_app.py (the load test), the MixQuery chapter's reported latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import numpy as np


def _get_json(host: str, port: int, path: str) -> Any:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def query_pool(base_url: str, max_songs: int = 200) -> list[dict[str, Any]]:
    """Every (song, part with audio, segment) of up to ``max_songs`` songs, as the server lists them.

    Used by: :func:`run_load`.
    """
    url = urlparse(base_url)
    songs = _get_json(url.hostname, url.port, "/api/songs")["songs"][:max_songs]
    pool = []
    for song in songs:
        info = _get_json(url.hostname, url.port, f"/api/songs/{quote(song, safe='')}")
        pool += [{"song": song, "part": part, "segment": seg["segment"]}
                 for part in info["parts"] for seg in info["segments"]]
    if not pool:
        raise RuntimeError(f"{base_url} lists no segment with part audio to query")
    return pool


def run_load(base_url: str, *, clients: int = 50, requests: int = 20, max_queries: int = 4, k: int = 100,
             seed: int = 0, timeout_s: float = 60.0) -> dict[str, Any]:
    """Send ``clients * requests`` searches from ``clients`` concurrent threads; latency percentiles and errors.

    Args:
        base_url: ``http://host:port/`` of a MixQuery server.
        clients: concurrent client threads, one keep-alive connection each.
        requests: searches per client.
        max_queries: largest query set drawn (1 to this many stems per search).
        k: results asked for per search.
        seed: seed of the query sets.
        timeout_s: socket timeout of each request.

    Returns:
        ``{"clients", "requests", "errors", "p50_ms", "p95_ms", "max_ms", "wall_s", "requests_per_s",
        "first_errors"}``.

    Used by: :func:`main`, tests/test_mixquery_app.py.
    """
    url = urlparse(base_url)
    pool = query_pool(base_url)
    rng = random.Random(seed)
    bodies = [[json.dumps({"queries": rng.sample(pool, rng.randint(1, min(max_queries, len(pool)))),
                           "k": k}).encode() for _ in range(requests)] for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start_together = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
        try:
            connection.connect()
        except OSError as error:
            errors[i].append(f"connect: {error}")
        try:
            start_together.wait(timeout=120)
        except threading.BrokenBarrierError:
            errors[i].append("the clients never all started")
            return
        for body in bodies[i]:
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/search", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                latencies[i].append(time.perf_counter() - started)
                if response.status != 200:
                    errors[i].append(f"status {response.status}: {payload[:200]!r}")
                elif not isinstance(json.loads(payload).get("results"), list):
                    errors[i].append(f"no results list: {payload[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError) as error:
                errors[i].append(f"{type(error).__name__}: {error}")
                connection.close()  # reconnects on the next request
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        start_together.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass  # counted as errors by the clients
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    all_ms = np.array([value for values in latencies for value in values]) * 1000.0
    all_errors = [error for found in errors for error in found]
    sent = clients * requests
    return {"clients": clients, "requests": sent, "errors": len(all_errors),
            "p50_ms": round(float(np.percentile(all_ms, 50)), 2) if all_ms.size else None,
            "p95_ms": round(float(np.percentile(all_ms, 95)), 2) if all_ms.size else None,
            "max_ms": round(float(all_ms.max()), 2) if all_ms.size else None,
            "wall_s": round(wall, 3), "requests_per_s": round(sent / wall, 1) if wall > 0 else None,
            "first_errors": all_errors[:5]}


def synthetic_index(songs: int, segments: int = 24, dim: int = 128, seed: int = 0) -> Any:
    """An in-memory :class:`~partsim_core.mixquery.MixQueryIndex` of random vectors (no audio): ``songs`` songs
    of ``segments`` 10-s segments at 22.05 kHz, five parts of ``dim`` dimensions.

    Used by: :func:`main` (``--synthetic``).
    """
    from partsim_core.mixquery import MixQueryIndex

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((songs * segments, 5, dim), dtype=np.float32)
    rate, length = 22050, 10 * 22050
    bounds = [[(j * length, (j + 1) * length) for j in range(segments)]] * songs
    return MixQueryIndex.from_arrays(vectors, [f"Synth{i:05d}" for i in range(songs)], bounds, rate)


def _server_process(args: argparse.Namespace, stack: ExitStack) -> str:
    """Start this script with ``--serve`` (the same index options) in a child process; its URL, read from the
    line :func:`~partsim_core.mixquery.app.serve_index` prints."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--k", str(args.k), "--seed", str(args.seed)]
    command += (["--index", str(args.index)] if args.index else
                ["--synthetic", str(args.synthetic), "--segments", str(args.segments), "--dim", str(args.dim)])
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    stack.callback(lambda: (child.terminate(), child.wait(30)))
    for line in child.stderr:
        found = re.search(r"at (http://\S+/)", line)
        if found:
            # Keep draining stderr so the child never blocks on a full pipe.
            threading.Thread(target=child.stderr.read, daemon=True).start()
            return found.group(1)
        sys.stderr.write(line)
    raise RuntimeError(f"the server process exited ({child.wait()}) without printing its URL")


def _load_index(args: argparse.Namespace) -> Any:
    if args.index:
        from partsim_core.mixquery import MixQueryIndex

        return MixQueryIndex.load(args.index)
    return synthetic_index(args.synthetic, args.segments, args.dim, args.seed)


def main(argv: list[str] | None = None) -> int:
    """Start (or find) a server, run the load, print one JSON line; exit 1 when any request failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", type=Path, help="MixQuery index folder to serve")
    where.add_argument("--synthetic", type=int, metavar="SONGS", help="serve a random in-memory index of SONGS songs")
    where.add_argument("--url", help="an already running server, e.g. http://127.0.0.1:8765/")
    parser.add_argument("--server", choices=("process", "thread"), default="process",
                        help="serve from a child process (default) or a thread of this one")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process's mode
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="searches per client")
    parser.add_argument("--max-queries", type=int, default=4, help="largest query set (stems) per search")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, default=24, help="--synthetic: segments per song (24 = 4 min)")
    parser.add_argument("--dim", type=int, default=128, help="--synthetic: dimensions per part")
    args = parser.parse_args(argv)

    if args.serve:
        from partsim_core.mixquery.app import serve_index

        source = str(args.index) if args.index else f"a synthetic index ({args.synthetic} songs)"
        serve_index(_load_index(args), port=0, k=args.k, source=source)
        return 0
    with ExitStack() as stack:
        if args.url:
            base_url, server = args.url.rstrip("/") + "/", "url"
        elif args.server == "process":
            base_url, server = _server_process(args, stack), "process"
        else:
            from partsim_core.mixquery.app import BackgroundServer, make_app

            running = stack.enter_context(BackgroundServer(make_app(_load_index(args), k=args.k)))
            base_url, server = running.url, "thread"
        url = urlparse(base_url)
        songs = len(_get_json(url.hostname, url.port, "/api/songs")["songs"])
        result = run_load(base_url, clients=args.clients, requests=args.requests, max_queries=args.max_queries,
                          k=args.k, seed=args.seed)
    result.update(server=server, songs=songs)
    if not result["first_errors"]:
        del result["first_errors"]
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
