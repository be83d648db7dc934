"""Speed of MixQuery search (thesis chapter 6): exact FAISS, approximate (per-part IVF) and plain numpy on one
synthetic catalogue, in the same run.

A catalogue of ``--segments`` segments (default 100,000; ~``--per-song`` segments per song) of 5 parts x ``--dim``
(128) dimensions is generated: with ``--data clustered`` (default) every song belongs to one of ``--styles`` styles
(a direction per part), its part vectors scatter around the style's and its segments around the song's (cosine
~0.6 between a song's segments, ~0.35 between songs of one style, ~0 otherwise: catalogues of real embeddings have
such neighbourhoods); ``--data random`` gives structureless random unit vectors (the benchmark before issue 14,
where no inverted file reaches a useful recall). The vectors go into an exact
:class:`partsim_core.mixquery.MixQueryIndex` (``search="exact"``, build time = the FAISS index, normalisation
included) and, unless ``--no-ann``, an approximate one over the same vectors (``search="ann"``,
:mod:`partsim_core.mixquery.ann`: ``ann_train_s`` = k-means, assignment and storage of the five per-part inverted
files, what opening an index without saved inverted files costs; ``ann_build_s`` is the same number, its older
name). The trained inverted files are then saved as an index folder saves them and the approximate index is opened
again from them: ``ann_open_s`` = verifying and loading the files (``manifest.open_ann``, as
``MixQueryIndex.load`` does) and storing the vectors in list order, no training; ``ann_reopened_equal``: the
reopened index answers the ``--check`` queries exactly as the trained one. Then
``--queries`` random queries of each kind are timed by each method, in blocks alternated over ``--rounds`` rounds
(numpy on at most ``--numpy-queries`` of them: at 10^6 segments one numpy query takes ~1 s):

* a two-part song query (two stem queries of different parts from different songs; eq. 6.1-6.2, top ``--k``);
* a similar-stem query (one stem query, top ``--k`` segments of the same part in other songs).

The numpy references of ``partsim_core.mixquery.search`` run in float32 (a fair fast plain-numpy search). The first
``--check`` queries of each kind are compared between the exact index and the float64 reference (ranked songs /
segments equal, distances within 1e-5): ``results_equal``. Recall@k of the approximate index is the share of the
exact top ``k`` (songs; (song, segment) for stems) that it returns, averaged over all timed queries. Memory:
``peak_rss_mb`` (``ru_maxrss``), ``exact_memory_mb`` (float32 vectors + FAISS half-precision codes of the
concatenated and the per-part indices), ``ann_memory_mb`` (the per-part stores and lists; it reads query vectors
from the same float32 vectors). The load average of the machine is reported at the start and the end. Prints ONE
JSON line:

    {"segments": .., "songs": .., "parts": 5, "dim": 128, "k": 100, "queries": .., "data": "clustered",
     "build_s": .., "ann_build_s": .., "ann_train_s": .., "ann_open_s": .., "ann_reopened_equal": true,
     "faiss_p50_ms": .., "faiss_p95_ms": .., "numpy_p50_ms": .., "numpy_p95_ms": ..,
     "speedup_p95": .., "exact_p95_ms": .., "ann_p50_ms": .., "ann_p95_ms": .., "ann_recall_at_100": ..,
     "song_*" / "stem_*": (faiss|ann|numpy)_(p50|p95)_ms, speedup_p95, ann_recall_at_<k> per query kind,
     "results_equal": true, "peak_rss_mb": .., "exact_memory_mb": .., "ann_memory_mb": .., "ann_nlist": ..,
     "ann_nprobe": .., "faiss_threads": 1, "faiss_shards": .., "coarse": "fp16", "cpus": .., "loadavg": [..]}

The top-level ``faiss_*`` / ``exact_*`` (the exact index), ``ann_p50_ms`` / ``ann_p95_ms`` and ``numpy_*`` are the
two-part song query's (the thesis app's main search); ``ann_recall_at_100`` is the lower of the two kinds' recalls.
Targets (issue 14): at 10^6 segments on 2 cores ``ann_recall_at_100`` >= 0.95 and ``ann_p95_ms`` < 20; at 10^5
the exact search beats numpy at p95 and p50 (same run).

Measured (commit of issue 14, 2 cores shared with other sessions: load average 8-12 during every run, so the
latencies are inflated and noisy; default arguments unless said):

* ``--segments 1000000`` (clustered, load 12.4 -> 7.9): approximate p50/p95 13.8 / 19.5 ms (song), 1.6 / 5.8 ms
  (stem), recall@100 0.982 (song; worst query 0.90) and 0.996 (stem); exact p50/p95 98.9 / 113.4 ms (song), 23.5 /
  30.6 ms (stem); numpy (10 queries x 3 rounds) 298 / 338 ms (song), 384 / 420 ms (stem); build 33 s exact, 79 s
  approximate; memory 4.9 GB exact (float32 vectors + fp16 codes), 2.5 GB approximate (per-part stores), peak RSS
  8.9 GB (both indices and the generator).
* ``--segments 100000`` (clustered, load 9-10): exact p50/p95 18.8 / 32.3 ms vs numpy 52.0 / 75.8 ms (song), 2.3 /
  10.2 vs 54.6 / 86.1 ms (stem); approximate 6.5 / 11.5 ms, recall@100 0.989 (song), 1.0 (stem).
* ``--segments 100000 --data random --queries 30 --rounds 2``: exact 20.5 / 29.5 ms vs numpy 47.3 / 64.2 ms (song);
  the approximate index's recall@100 is only 0.21 (song) and 0.14 (stem): without neighbourhoods an inverted file
  finds little, which is why the threshold keeps such catalogues exact below 300,000 segments and why the recall
  must be checked on real embeddings before trusting the approximate search on them.

Euclidean vs cosine exact search and the saved inverted files (``--segments 100000 --distance cosine`` and
``--distance euclidean``, default arguments otherwise, one run each, the two distances one after the other):

* Before (commit 30ae4ba, load 1.2-3.1): song query p50/p95 7.9 / 14.0 ms cosine, 117.8 / 168.9 ms Euclidean
  (15x / 12x); similar stems 1.9 / 2.9 vs 18.8 / 45.3 ms. Profile (cProfile, 30 two-part Euclidean song queries):
  70 % in FAISS ``IndexScalarQuantizer_search`` on the per-part indices at ~22 ms per call where a 128-d search of
  the same 100,000 rows takes ~1.5 ms: the Euclidean codes ``[x / s, |x / s|^2]`` have 129 dimensions and FAISS's
  vectorised scalar-quantizer kernels need a multiple of 8 (129 runs a scalar loop, measured 15-18 ms vs 1.7 ms at
  136); 20 % re-scoring, which read all five parts of every candidate as a float64 ``(r, 5, D)`` array; and the
  threshold search widened 1,000 -> 4,000 candidates per part for nearly every query (it needs ~1,400-1,800).
* After (codes zero-padded to a multiple of 8, the query parts searched in parallel, one song-search loop for both
  distances starting the multi-part Euclidean search at 2x the candidates and widening by 2x, re-scoring only the
  query's parts; load 9-12, so both slower than before in absolute terms): song p50/p95 17.8 / 27.0 ms cosine,
  25.4 / 39.6 ms Euclidean (1.43x / 1.46x); stems 6.1 / 10.6 vs 6.5 / 11.0 ms; ``results_equal`` true for both.
  The inverted files at 10^5 segments: ``ann_train_s`` 7.0 / 7.2 s, ``ann_open_s`` 1.29 / 0.37 s (cosine /
  Euclidean run; recall and answers unchanged, ``ann_reopened_equal`` true).
* ``--segments 1000000 --distance cosine`` after both changes (load 13-14, heavier than the run above, so every
  latency is inflated: approximate song p50/p95 22.2 / 32.2 ms, exact 132.9 / 163.1 ms, numpy 472.6 / 550.8 ms):
  ``ann_train_s`` 110.8 s (what every opening of a large index cost before), ``ann_open_s`` 12.2 s (checksums of
  the saved files and the vectors stored in list order, ~9x less); recall@100 0.982 (song; worst query 0.90) and
  0.996 (stem), ``ann_reopened_equal`` and ``results_equal`` true; peak RSS 9.3 GB; 6.5 minutes in all.

Run: ``python benchmarks/retrieval.py [--segments 100000] [--per-song 10] [--queries 50] [--rounds 3] [--k 100]
[--data clustered|random] [--styles 64] [--no-ann] [--nlist N] [--nprobe N] [--numpy-queries N] [--threads 1]
[--shards N] [--coarse fp16|flat] [--check 5] [--distance cosine|euclidean] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.mixquery import (
    MixQueryIndex,
    StemQuery,
    search_songs_numpy,
    similar_stems_numpy,
)
from partsim_core.mixquery.manifest import ANN_FILES, array_entry, open_ann

#: Pause before each block of timed queries (seconds).
BLOCK_PAUSE_S = 0.5


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000.0
    return round(float(np.percentile(values, 50)), 3), round(float(np.percentile(values, 95)), 3)


def song_counts(segments: int, per_song: int, rng: np.random.Generator) -> list[int]:
    """Segments per song (uniform 1 .. 2 per_song - 1) summing to ``segments``."""
    counts = rng.integers(1, 2 * per_song, segments // per_song + 16).tolist()
    while sum(counts) < segments:
        counts += rng.integers(1, 2 * per_song, segments // per_song + 16).tolist()
    total, kept = 0, []
    for count in counts:
        kept.append(min(count, segments - total))
        total += kept[-1]
        if total == segments:
            return kept
    return kept


def catalogue(counts: list[int], dim: int, data: str, styles: int, rng: np.random.Generator) -> np.ndarray:
    """float32 ``(sum(counts), 5, dim)`` vectors (see the module docstring), generated song block by song block."""
    n, parts = sum(counts), len(INSTRUMENTS)
    vectors = np.empty((n, parts, dim), dtype=np.float32)
    if data == "random":
        for first in range(0, n, 65536):
            rows = min(65536, n - first)
            vectors[first:first + rows] = rng.standard_normal((rows, parts, dim), dtype=np.float32)
        return vectors
    centres = rng.standard_normal((styles, parts, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=2, keepdims=True)
    style = rng.integers(0, styles, len(counts))
    row, block = 0, 4096
    for first in range(0, len(counts), block):
        sizes = np.asarray(counts[first:first + block])
        songs = centres[style[first:first + block]] + np.float32(0.8 / np.sqrt(dim)) * rng.standard_normal(
            (sizes.size, parts, dim), dtype=np.float32)
        songs /= np.linalg.norm(songs, axis=2, keepdims=True)
        rows = int(sizes.sum())
        vectors[row:row + rows] = np.repeat(songs, sizes, axis=0) + np.float32(0.6 / np.sqrt(dim)) * \
            rng.standard_normal((rows, parts, dim), dtype=np.float32)
        row += rows
    return vectors


def exact_memory_bytes(index: MixQueryIndex) -> int:
    """float32 vectors + the FAISS codes of the exact searcher's concatenated and per-part indices."""
    searcher = index._searcher
    codes = sum(int(faiss_index.ntotal) * int(faiss_index.code_size) for _, _, faiss_index in searcher._shards)
    codes += sum(int(faiss_index.ntotal) * int(faiss_index.code_size)
                 for faiss_index in searcher._part_indices.values())
    return int(searcher.vectors.nbytes) + codes


def main(argv: list[str] | None = None) -> int:
    """Build the synthetic catalogue, time every search of both kinds, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000, help="segments in the catalog (default 100000)")
    parser.add_argument("--per-song", type=int, default=10, help="mean segments per song (1..2x-1, default 10)")
    parser.add_argument("--dim", type=int, default=128, help="dimensions per part (default 128)")
    parser.add_argument("--data", choices=["clustered", "random"], default="clustered",
                        help="synthetic vectors: songs of styles (default) or structureless random")
    parser.add_argument("--styles", type=int, default=64, help="styles of --data clustered (default 64)")
    parser.add_argument("--queries", type=int, default=50, help="timed queries of each kind (default 50)")
    parser.add_argument("--numpy-queries", type=int, default=None,
                        help="of which numpy times at most this many (default: all up to 200,000 segments, else 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (each method x queries) per kind; all timings pooled (default 3)")
    parser.add_argument("--k", type=int, default=100, help="results per query (thesis app: 100)")
    parser.add_argument("--no-ann", action="store_true", help="leave out the approximate index")
    parser.add_argument("--nlist", type=int, default=None, help="lists per part of the approximate index")
    parser.add_argument("--nprobe", type=int, default=None, help="lists scanned per query part (approximate)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (default 1)")
    parser.add_argument("--shards", type=int, default=None,
                        help="row ranges of the song-search index searched in parallel (default: one per core, "
                             "at most 4)")
    parser.add_argument("--coarse", choices=["fp16", "flat"], default="fp16",
                        help="FAISS candidate index (results are exact either way; default fp16)")
    parser.add_argument("--check", type=int, default=5,
                        help="queries of each kind also checked against the exact float64 reference (default 5)")
    parser.add_argument("--distance", choices=("cosine", "euclidean"), default="cosine",
                        help="search distance of the index (default cosine, the thesis's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.segments < 2 or min(args.per_song, args.queries, args.rounds, args.k, args.styles) < 1:
        parser.error("--segments >= 2, --per-song, --queries, --rounds, --k and --styles >= 1")
    numpy_queries = min(args.queries, args.numpy_queries if args.numpy_queries is not None
                        else (args.queries if args.segments <= 200_000 else 10))
    loadavg_start = [round(value, 2) for value in os.getloadavg()]

    rng = np.random.default_rng(args.seed)
    counts = song_counts(args.segments, args.per_song, rng)
    songs = [f"song{number:06d}" for number in range(len(counts))]
    vectors = catalogue(counts, args.dim, args.data, args.styles, rng)
    segments = [[(10 * j, 10 * (j + 1)) for j in range(count)] for count in counts]

    started = time.perf_counter()
    index = MixQueryIndex.from_arrays(vectors, songs, segments, sample_rate=1, threads=args.threads,
                                      coarse=args.coarse, shards=args.shards, search="exact",
                                      distance=args.distance)
    build_s = time.perf_counter() - started
    del vectors  # the index holds its own normalised copy
    ann = None
    ann_options = {"nlist": args.nlist, "nprobe": args.nprobe, "nprobe_stems": args.nprobe}
    if not args.no_ann:
        started = time.perf_counter()
        # Over the exact index's normalised vectors (shared, not copied).
        ann = MixQueryIndex(index.meta, index.vectors, index.present, search="ann", norms=index.norms,
                            ann_options=ann_options)
        ann_build_s = time.perf_counter() - started

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
                search_songs_numpy(index.vectors, index.song_of_row, rows, args.k, dtype=dtype, norms=index.norms,
                                   distance=args.distance)]

    def numpy_stems(query: StemQuery, dtype: type) -> list[tuple[str, int, float]]:
        row, column = index.query_row(query)
        return [(songs[index.song_of_row[hit]], int(hit - index.first_row[index.song_of_row[hit]]), distance)
                for hit, distance in similar_stems_numpy(index.vectors, index.song_of_row, index.present, row,
                                                         column, args.k, dtype=dtype, norms=index.norms,
                                                         distance=args.distance)]

    ann_open_s, reopened_equal = None, None
    if ann is not None:
        # Opening an index whose trained inverted files are saved (as build_index saves them): verify and load the
        # files (open_ann, as MixQueryIndex.load does), then store the vectors in list order - no training. The
        # trained searcher is dropped first (one copy of the stores in memory), its answers kept for comparison.
        checked = [(ann.search_songs(song_queries[number], k=args.k), ann.similar_stems(stem_queries[number], k=args.k))
                   for number in range(min(args.check, args.queries))]
        with tempfile.TemporaryDirectory() as folder:
            centroids, lists = ann._searcher.trained_arrays()
            for name, array in zip(ANN_FILES, (centroids, lists)):
                np.save(Path(folder) / name, array, allow_pickle=False)
            saved_meta = {"ann": {"nlist": int(centroids.shape[1]), "seed": 0},
                          "files": {name: array_entry(Path(folder) / name) for name in ANN_FILES}}
            del ann, centroids, lists
            started = time.perf_counter()
            trained = open_ann(Path(folder), saved_meta)
            ann = MixQueryIndex(index.meta, index.vectors, index.present, search="ann", norms=index.norms,
                                ann_options=ann_options, trained=trained)
            ann_open_s = time.perf_counter() - started
            del trained
        reopened_equal = ann.ann_trained_on_open is False and all(
            (ann.search_songs(song_queries[number], k=args.k), ann.similar_stems(stem_queries[number], k=args.k))
            == answers for number, answers in enumerate(checked))

    # Warm-up (page faults, per-part FAISS indices built on first use, BLAS threads started).
    for part in INSTRUMENTS:
        index.similar_stems(random_stem(part), k=args.k)
    index.search_songs(song_queries[0], k=args.k)
    if ann is not None:
        ann.search_songs(song_queries[0], k=args.k)
        ann.similar_stems(stem_queries[0], k=args.k)
    numpy_songs(song_queries[0], np.float32)
    numpy_stems(stem_queries[0], np.float32)

    # Blocks of consecutive queries per method, alternated over rounds, so that all see the same background load on
    # a shared machine. Not query-by-query alternation: numpy's OpenBLAS threads keep spinning for a while after a
    # matrix product and, on 2 cores, would steal the CPU from the very next FAISS call.
    runs = {
        "song_faiss": (lambda number: index.search_songs(song_queries[number], k=args.k), args.queries),
        "song_numpy": (lambda number: numpy_songs(song_queries[number], np.float32), numpy_queries),
        "stem_faiss": (lambda number: index.similar_stems(stem_queries[number], k=args.k), args.queries),
        "stem_numpy": (lambda number: numpy_stems(stem_queries[number], np.float32), numpy_queries),
    }
    if ann is not None:
        runs["song_ann"] = (lambda number: ann.search_songs(song_queries[number], k=args.k), args.queries)
        runs["stem_ann"] = (lambda number: ann.similar_stems(stem_queries[number], k=args.k), args.queries)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (run, count) in runs.items():
            # OpenBLAS worker threads busy-wait for a while after numpy's last product; let them park so that
            # every block starts on a quiet machine (else the next block's first queries lose a core to them).
            time.sleep(BLOCK_PAUSE_S)
            for number in range(count):
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
    recall: dict[str, float] = {}
    if ann is not None:
        song_recall, stem_recall = [], []
        for number in range(args.queries):
            truth = {hit.song for hit in index.search_songs(song_queries[number], k=args.k)}
            found = {hit.song for hit in ann.search_songs(song_queries[number], k=args.k)}
            song_recall.append(len(truth & found) / max(1, len(truth)))
            truth = {(hit.song, hit.segment) for hit in index.similar_stems(stem_queries[number], k=args.k)}
            found = {(hit.song, hit.segment) for hit in ann.similar_stems(stem_queries[number], k=args.k)}
            stem_recall.append(len(truth & found) / max(1, len(truth)))
        recall = {"song": float(np.mean(song_recall)), "stem": float(np.mean(stem_recall)),
                  "song_min": float(np.min(song_recall)), "stem_min": float(np.min(stem_recall))}

    result: dict[str, object] = {"segments": index.n_segments, "songs": len(songs), "parts": len(INSTRUMENTS),
                                 "dim": args.dim, "k": args.k, "queries": args.queries,
                                 "numpy_queries": numpy_queries, "rounds": args.rounds, "data": args.data,
                                 "styles": args.styles if args.data == "clustered" else None,
                                 "build_s": round(build_s, 3)}
    for kind in ("song", "stem"):
        faiss_p50, faiss_p95 = _percentiles(times[f"{kind}_faiss"])
        numpy_p50, numpy_p95 = _percentiles(times[f"{kind}_numpy"])
        result.update({f"{kind}_faiss_p50_ms": faiss_p50, f"{kind}_faiss_p95_ms": faiss_p95,
                       f"{kind}_numpy_p50_ms": numpy_p50, f"{kind}_numpy_p95_ms": numpy_p95,
                       f"{kind}_speedup_p95": round(numpy_p95 / faiss_p95, 2)})
        if ann is not None:
            ann_p50, ann_p95 = _percentiles(times[f"{kind}_ann"])
            result.update({f"{kind}_ann_p50_ms": ann_p50, f"{kind}_ann_p95_ms": ann_p95,
                           f"{kind}_ann_recall_at_{args.k}": round(recall[kind], 4),
                           f"{kind}_ann_recall_min": round(recall[f"{kind}_min"], 4)})
    result.update({"faiss_p50_ms": result["song_faiss_p50_ms"], "faiss_p95_ms": result["song_faiss_p95_ms"],
                   "exact_p50_ms": result["song_faiss_p50_ms"], "exact_p95_ms": result["song_faiss_p95_ms"],
                   "numpy_p50_ms": result["song_numpy_p50_ms"], "numpy_p95_ms": result["song_numpy_p95_ms"],
                   "speedup_p95": result["song_speedup_p95"], "results_equal": bool(equal),
                   "checked_queries": min(args.check, args.queries)})
    if ann is not None:
        result.update({"ann_p50_ms": result["song_ann_p50_ms"], "ann_p95_ms": result["song_ann_p95_ms"],
                       f"ann_recall_at_{args.k}": round(min(recall["song"], recall["stem"]), 4),
                       "ann_build_s": round(ann_build_s, 3), "ann_train_s": round(ann_build_s, 3),
                       "ann_open_s": round(ann_open_s, 3), "ann_reopened_equal": bool(reopened_equal),
                       "ann_memory_mb": round(ann._searcher.memory_bytes() / 2**20, 1),
                       "ann_nlist": ann._searcher.nlist, "ann_nprobe": ann._searcher.nprobe})
    result.update({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "exact_memory_mb": round(exact_memory_bytes(index) / 2**20, 1),
                   "faiss_threads": args.threads, "faiss_shards": index.shards, "coarse": args.coarse,
                   "distance": args.distance,
                   "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                   "loadavg": [loadavg_start, [round(value, 2) for value in os.getloadavg()]]})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
