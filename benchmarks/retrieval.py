"""Speed of MixQuery search (thesis chapter 6): FAISS against plain numpy on one random catalog, in the same run.

A catalog of ``--segments`` segments (default 100,000; ~``--per-song`` segments per song) of 5 parts x 128
dimensions of random unit vectors is put into a :class:`partsim_core.mixquery.MixQueryIndex` (the build time is
that of the FAISS index, normalisation included). Then ``--queries`` random queries of each kind are timed, each by
FAISS (the index's methods) and by the numpy references of ``partsim_core.mixquery.search`` in float32 (a fair fast
plain-numpy search), in blocks alternated over ``--rounds`` rounds:

* a two-part song query (two stem queries of different parts from different songs; eq. 6.1-6.2, top ``--k``);
* a similar-stem query (one stem query, top ``--k`` segments of the same part in other songs).

The first ``--check`` queries of each kind are then compared with the exact float64 reference (ranked songs /
segments equal, distances within 1e-5): ``results_equal``. Peak memory is ``ru_maxrss``. Prints ONE JSON line:

    {"segments": .., "songs": .., "parts": 5, "dim": 128, "k": 100, "queries": .., "build_s": ..,
     "faiss_p50_ms": .., "faiss_p95_ms": .., "numpy_p50_ms": .., "numpy_p95_ms": .., "speedup_p95": ..,
     "song_*": (the same for the two-part song query), "stem_*": (for the similar-stem query),
     "results_equal": true, "peak_rss_mb": .., "faiss_threads": 1, "faiss_shards": .., "coarse": "fp16",
     "cpus": ..}

The top-level ``faiss_*`` / ``numpy_*`` / ``speedup_p95`` are the two-part song query's (the thesis app's main
search); the target is ``faiss_p95_ms`` < 20 ms at 100,000 segments on 2 cores, and faster than numpy.

Run: ``python benchmarks/retrieval.py [--segments 100000] [--per-song 10] [--queries 50] [--rounds 3] [--k 100]
[--threads 1] [--shards N] [--coarse fp16|flat] [--check 5] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.mixquery import MixQueryIndex, StemQuery, search_songs_numpy, similar_stems_numpy

#: Pause before each block of timed queries (seconds).
BLOCK_PAUSE_S = 0.5


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000.0
    return round(float(np.percentile(values, 50)), 3), round(float(np.percentile(values, 95)), 3)


def main(argv: list[str] | None = None) -> int:
    """Build the random catalog, time both searches of both kinds, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000, help="segments in the catalog (default 100000)")
    parser.add_argument("--per-song", type=int, default=10, help="mean segments per song (1..2x-1, default 10)")
    parser.add_argument("--dim", type=int, default=128, help="dimensions per part (default 128)")
    parser.add_argument("--queries", type=int, default=50, help="timed queries of each kind (default 50)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (FAISS x queries, numpy x queries) per kind; all timings pooled (default 3)")
    parser.add_argument("--k", type=int, default=100, help="results per query (thesis app: 100)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (default 1)")
    parser.add_argument("--shards", type=int, default=None,
                        help="row ranges of the song-search index searched in parallel (default: one per core, "
                             "at most 4)")
    parser.add_argument("--coarse", choices=["fp16", "flat"], default="fp16",
                        help="FAISS candidate index (results are exact either way; default fp16)")
    parser.add_argument("--check", type=int, default=5,
                        help="queries of each kind also checked against the exact float64 reference (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.segments < 2 or min(args.per_song, args.queries, args.rounds, args.k) < 1:
        parser.error("--segments >= 2, --per-song, --queries, --rounds and --k >= 1")

    rng = np.random.default_rng(args.seed)
    counts = []
    while sum(counts) < args.segments:
        counts.append(int(rng.integers(1, 2 * args.per_song)))
    counts[-1] -= sum(counts) - args.segments
    counts = [count for count in counts if count > 0]
    songs = [f"song{number:06d}" for number in range(len(counts))]
    vectors = rng.standard_normal((args.segments, len(INSTRUMENTS), args.dim), dtype=np.float32)
    segments = [[(10 * j, 10 * (j + 1)) for j in range(count)] for count in counts]

    started = time.perf_counter()
    index = MixQueryIndex.from_arrays(vectors, songs, segments, sample_rate=1, threads=args.threads,
                                      coarse=args.coarse, shards=args.shards)
    build_s = time.perf_counter() - started
    del vectors  # the index holds its own normalised copy

    def random_stem(part: str) -> StemQuery:
        song = int(rng.integers(len(songs)))
        return StemQuery(songs[song], part, int(rng.integers(counts[song])))

    song_queries, stem_queries = [], []
    for _ in range(args.queries):
        first, second = rng.choice(len(INSTRUMENTS), size=2, replace=False)
        song_queries.append([random_stem(INSTRUMENTS[first]), random_stem(INSTRUMENTS[second])])
        stem_queries.append(random_stem(INSTRUMENTS[int(rng.integers(len(INSTRUMENTS)))]))

    def numpy_songs(queries: list[StemQuery], dtype: type) -> list[tuple[str, float, int]]:
        rows = [index.query_row(query) for query in queries]
        return [(songs[song], distance, int(best - index.first_row[song])) for song, distance, best in
                search_songs_numpy(index.vectors, index.song_of_row, rows, args.k, dtype=dtype)]

    def numpy_stems(query: StemQuery, dtype: type) -> list[tuple[str, int, float]]:
        row, column = index.query_row(query)
        return [(songs[index.song_of_row[hit]], int(hit - index.first_row[index.song_of_row[hit]]), distance)
                for hit, distance in similar_stems_numpy(index.vectors, index.song_of_row, index.present, row,
                                                         column, args.k, dtype=dtype)]

    # Warm-up (page faults, per-part FAISS indices built on first use, BLAS threads started).
    for part in INSTRUMENTS:
        index.similar_stems(random_stem(part), k=args.k)
    index.search_songs(song_queries[0], k=args.k)
    numpy_songs(song_queries[0], np.float32)
    numpy_stems(stem_queries[0], np.float32)

    # Blocks of consecutive queries per method, alternated over rounds, so that both see the same background load on
    # a shared machine. Not query-by-query alternation: numpy's OpenBLAS threads keep spinning for a while after a
    # matrix product and, on 2 cores, would steal the CPU from the very next FAISS call.
    runs = {
        "song_faiss": lambda number: index.search_songs(song_queries[number], k=args.k),
        "song_numpy": lambda number: numpy_songs(song_queries[number], np.float32),
        "stem_faiss": lambda number: index.similar_stems(stem_queries[number], k=args.k),
        "stem_numpy": lambda number: numpy_stems(stem_queries[number], np.float32),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            # OpenBLAS worker threads busy-wait for a while after numpy's last product; let them park so that
            # every block starts on a quiet machine (else the next block's first queries lose a core to them).
            time.sleep(BLOCK_PAUSE_S)
            for number in range(args.queries):
                tick = time.perf_counter()
                run(number)
                times[name].append(time.perf_counter() - tick)
    equal = True
    for number in range(min(args.check, args.queries)):
        found_songs = index.search_songs(song_queries[number], k=args.k)
        found_stems = index.similar_stems(stem_queries[number], k=args.k)
        exact_songs = numpy_songs(song_queries[number], np.float64)
        exact_stems = numpy_stems(stem_queries[number], np.float64)
        equal &= [(h.song, h.best_segment) for h in found_songs] == [(s, b) for s, _, b in exact_songs]
        equal &= bool(np.allclose([h.distance for h in found_songs], [d for _, d, _ in exact_songs], atol=1e-5))
        equal &= [(h.song, h.segment) for h in found_stems] == [(s, g) for s, g, _ in exact_stems]
        equal &= bool(np.allclose([h.distance for h in found_stems], [d for _, _, d in exact_stems], atol=1e-5))

    result: dict[str, object] = {"segments": index.n_segments, "songs": len(songs), "parts": len(INSTRUMENTS),
                                 "dim": args.dim, "k": args.k, "queries": args.queries, "rounds": args.rounds,
                                 "build_s": round(build_s, 3)}
    for kind in ("song", "stem"):
        faiss_p50, faiss_p95 = _percentiles(times[f"{kind}_faiss"])
        numpy_p50, numpy_p95 = _percentiles(times[f"{kind}_numpy"])
        result.update({f"{kind}_faiss_p50_ms": faiss_p50, f"{kind}_faiss_p95_ms": faiss_p95,
                       f"{kind}_numpy_p50_ms": numpy_p50, f"{kind}_numpy_p95_ms": numpy_p95,
                       f"{kind}_speedup_p95": round(numpy_p95 / faiss_p95, 2)})
    result.update({"faiss_p50_ms": result["song_faiss_p50_ms"], "faiss_p95_ms": result["song_faiss_p95_ms"],
                   "numpy_p50_ms": result["song_numpy_p50_ms"], "numpy_p95_ms": result["song_numpy_p95_ms"],
                   "speedup_p95": result["song_speedup_p95"], "results_equal": bool(equal),
                   "checked_queries": min(args.check, args.queries),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "faiss_threads": args.threads, "faiss_shards": index.shards, "coarse": args.coarse,
                   "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
