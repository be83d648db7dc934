"""Approximate MixQuery search for catalogues past a million segments: one IVF per part, stored part by part.

The exact search (:class:`~partsim_core.mixquery.exact.FaissSearcher`) reads every segment for every query; at
10^6 segments x 5 parts x 128 dimensions that is ~1.3 GB of half-precision codes per song query, about 100 ms on
one core. :class:`AnnSearcher` answers the same two questions (eq. 6.1-6.2 song retrieval, similar stems) from a
fraction of the catalogue:

* **One inverted file per part.** For every part, k-means (FAISS, spherical) on a sample of that part's unit
  vectors gives ``nlist`` centroids, and every segment goes to the list of the centroid nearest its vector of that
  part. The part's vectors are stored in list order, ``(n_segments, D)`` float32 per part, so a list is one
  contiguous block and a query over the parts ``I`` reads only those parts' vectors (a two-part query reads two).
* **Similar stems** (one part): the ``nprobe_stems`` lists whose centroids are nearest the query are scanned
  exactly (dot products of the stored unit vectors); the best ``k`` segments of other songs having that stem win.
* **Song retrieval** (eq. 6.1-6.2): for each part ``i`` of the query set, the ``nprobe`` lists nearest the averaged
  query ``y_i`` of that part are scanned and that part's best :data:`CANDIDATES_PER_K` x ``k`` segments kept; each
  candidate's eq. 6.2 distance is completed by reading the other query parts' vectors of that segment (float32),
  the minimum taken per song, and the leading songs' segments re-scored in float64 and ranked with the same
  rounding and tie rules as the exact search. A song is found when one of its segments is near the query in at
  least one part; a song whose best segment is only moderately near in every part can be missed, and a song is
  reported at the distance of its best *candidate*
  segment (never below the exact one). That is the approximation, measured as recall@100 against the exact search
  by ``benchmarks/retrieval.py`` and by the tests (on synthetic catalogues whose songs resemble their style: on
  structureless random vectors no inverted file reaches a useful recall without scanning most lists).

Both distances of an index: the lists hold the unit vectors with each row's raw norm beside them (in list order),
and the query of a part is its eq. 6.1 mean of raw embeddings ``y_i``; cosine: ``1 - v.y_i / |y_i|``, Euclidean:
``|n v - y_i| = sqrt(|y_i|^2 + n^2 - 2 n v.y_i)`` from the same scan (lists chosen by the direction of ``y_i``).

:class:`~partsim_core.mixquery.index.MixQueryIndex` picks this searcher automatically from :data:`ANN_MIN_SEGMENTS`
segments on (``search="auto"``; ``"exact"`` / ``"ann"`` force one); its API and output are the same either way.
Training the inverted files (k-means and the assignment of every row: ~1-2 minutes for 10^6 segments on 2 busy
cores) is done once: :func:`~partsim_core.mixquery.index_build.build_index` saves them (:func:`save_ann`: centroids and
the list of every row, per part) in the index folder for indexes of at least :data:`ANN_MIN_SEGMENTS` segments,
verified like the other index files, and opening the index only re-sorts the vectors into list order
(``trained``; ``benchmarks/retrieval.py``: ``ann_train_s`` 111 s vs ``ann_open_s`` 12 s at 10^6 segments, load
13-14). An index without them (built before, or smaller and forced to ``search="ann"``) trains them when opened.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partsim_core.data.cache import atomic_write_bytes
from partsim_core.errors import PartsimError
from partsim_core.mixquery.exact import _import_faiss, check_index_arrays
from partsim_core.mixquery.manifest import ANN_CENTROIDS_FILE, ANN_LISTS_FILE
from partsim_core.mixquery.search import (
    THESIS_K,
    ZERO_NORM,
    _tie_round,
    check_distance,
    check_k,
    normalise_parts,
    part_norms,
    query_means,
    song_bounds,
    unit_norms,
)

#: From this many segments on, ``search="auto"`` uses the approximate search. Below it the exact search is fast
#: enough (``benchmarks/retrieval.py``, 2 busy cores: song query p95 ~30 ms at 100,000 segments, ~113 ms at
#: 1,000,000, linear in between), and it is exact whatever the data.
ANN_MIN_SEGMENTS = 300_000

#: ``search`` choices of :class:`~partsim_core.mixquery.index.MixQueryIndex`.
SEARCH_MODES: tuple[str, ...] = ("auto", "exact", "ann")

#: k-means sample: this many rows per centroid at most (FAISS's own default is 256).
TRAIN_ROWS_PER_LIST = 32

#: Song queries keep this many times ``k`` best segments of each query part's scan as candidates.
CANDIDATES_PER_K = 80

#: Distance within which float32 scores of candidates are re-scored in float64 before ranking (float32 dot
#: products of unit vectors err by ~1e-6).
FLOAT32_MARGIN = 1e-4

#: k-means iterations.
KMEANS_ITERATIONS = 10


def use_ann(search: str, n_segments: int, threshold: int = ANN_MIN_SEGMENTS) -> bool:
    """Whether ``search`` (``auto``, ``exact`` or ``ann``) means the approximate searcher for this many segments.

    Raises:
        PartsimError: an unknown ``search``.
    """
    if search not in SEARCH_MODES:
        raise PartsimError(f"unknown search {search!r}; choose one of: {', '.join(SEARCH_MODES)}")
    return search == "ann" or (search == "auto" and n_segments >= threshold)


def default_nlist(n_segments: int) -> int:
    """Lists per part: the power of two nearest ``sqrt(n)`` (1,024 at 10^6 segments), from 1 to ``n / 8``."""
    return int(max(1, min(n_segments // 8, 2 ** round(math.log2(max(1.0, math.sqrt(n_segments)))))))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query part: 1/64 of them (16 of 1,024: ~1.6 % of the catalogue), at least 8 (or all)."""
    return int(max(min(nlist, 8), nlist // 64))


def train_part(vectors: np.ndarray, part: int, nlist: int, rng: np.random.Generator, seed: int,
               chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Train one part's inverted file: ``(centroids, lists)``, float32 ``(nlist, D)`` unit k-means centroids (FAISS,
    spherical, on a sample of the part's non-zero vectors) and int32 ``(n_segments,)`` the list of every row (its
    nearest centroid by inner product)."""
    faiss = _import_faiss()
    n, dim = vectors.shape[0], vectors.shape[2]
    sample_rows = np.sort(rng.choice(n, size=min(n, nlist * TRAIN_ROWS_PER_LIST), replace=False))
    sample = np.ascontiguousarray(vectors[sample_rows, part, :], dtype=np.float32)
    sample = sample[np.linalg.norm(sample, axis=1) > ZERO_NORM]  # absent stems carry no direction
    if sample.shape[0] < nlist:
        sample = np.concatenate([sample, rng.standard_normal((nlist, dim)).astype(np.float32)])
    kmeans = faiss.Kmeans(dim, nlist, niter=KMEANS_ITERATIONS, seed=int(seed), spherical=True,
                          max_points_per_centroid=TRAIN_ROWS_PER_LIST, min_points_per_centroid=1, verbose=False)
    kmeans.train(sample)
    del sample
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    lists = np.empty(n, dtype=np.int32)
    for first in range(0, n, chunk_rows):
        block = np.ascontiguousarray(vectors[first:first + chunk_rows, part, :], dtype=np.float32)
        lists[first:first + block.shape[0]] = quantizer.search(block, 1)[1][:, 0]
    return centroids, lists


def train_inverted_files(vectors: np.ndarray, nlist: int, seed: int = 0,
                         chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Train every part's inverted file (:func:`train_part`): ``(centroids, lists)``, float32
    ``(n_parts, nlist, D)`` and int32 ``(n_segments, n_parts)`` - what :class:`AnnSearcher` takes as ``trained``
    and what an index folder saves (:data:`~partsim_core.mixquery.manifest.ANN_FILES`)."""
    rng = np.random.default_rng(seed)
    trained = [train_part(vectors, part, nlist, rng, seed + part, chunk_rows) for part in range(vectors.shape[1])]
    return (np.stack([centroids for centroids, _ in trained]),
            np.ascontiguousarray(np.stack([lists for _, lists in trained], axis=1)))


class _PartFile:
    """One part's inverted file: centroids, list offsets, the rows in list order and the vectors stored so."""

    def __init__(self, vectors: np.ndarray, norms: np.ndarray, part: int, centroids: np.ndarray,
                 lists: np.ndarray, chunk_rows: int) -> None:
        """Store the part's vectors in the list order of ``lists`` (see :func:`train_part`)."""
        n, dim = vectors.shape[0], vectors.shape[2]
        nlist = centroids.shape[0]
        #: ``(nlist, D)`` float32 unit centroids.
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        #: Rows in list order (rows of one list in row order) and the position of every row.
        self.order = np.argsort(lists, kind="stable").astype(np.int64)
        self.position = np.empty(n, dtype=np.int64)
        self.position[self.order] = np.arange(n, dtype=np.int64)
        #: ``offsets[l]:offsets[l + 1]`` are the positions of list ``l``.
        self.offsets = np.r_[0, np.cumsum(np.bincount(lists, minlength=nlist))].astype(np.int64)
        #: ``(n_segments, D)`` float32 vectors of this part in list order.
        self.store = np.empty((n, dim), dtype=np.float32)
        for first in range(0, n, chunk_rows):
            rows = self.order[first:first + chunk_rows]
            ascending = np.argsort(rows)
            block = np.empty((rows.size, dim), dtype=np.float32)
            block[ascending] = vectors[rows[ascending], part, :]  # a memmap is read in row order
            self.store[first:first + rows.size] = block
        #: ``(n_segments,)`` float32 raw norms of this part in list order.
        self.norm_store = np.ascontiguousarray(norms[self.order, part], dtype=np.float32)

    def lists(self) -> np.ndarray:
        """int32 ``(n_segments,)``: the list of every row (what :func:`train_part` gave)."""
        lists = np.empty(self.order.size, dtype=np.int32)
        lists[self.order] = np.repeat(np.arange(self.centroids.shape[0], dtype=np.int32), np.diff(self.offsets))
        return lists

    def nbytes(self) -> int:
        return int(self.store.nbytes + self.norm_store.nbytes + self.centroids.nbytes + self.order.nbytes
                   + self.position.nbytes + self.offsets.nbytes)

    def scan(self, query: np.ndarray, probes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, float32 similarities)`` of every row in the ``probes`` lists nearest ``query``.

        Dot products by ``einsum`` (one thread, no BLAS): a multi-threaded BLAS call per query costs more in thread
        hand-offs on a busy 2-core machine than it saves (as everywhere in this module).
        """
        nlist = self.centroids.shape[0]
        if probes >= nlist:
            lists = np.arange(nlist)
        else:
            lists = np.sort(np.argpartition(-(self.centroids @ query), probes - 1)[:probes])
        starts, ends = self.offsets[lists], self.offsets[lists + 1]
        keep = ends > starts
        starts, ends = starts[keep].tolist(), ends[keep].tolist()
        positions = np.concatenate([np.arange(start, end) for start, end in zip(starts, ends)]) if starts \
            else np.empty(0, dtype=np.int64)
        similarities = np.empty(positions.size, dtype=np.float32)
        at = 0
        for start, end in zip(starts, ends):
            np.einsum("rd,d->r", self.store[start:end], query, out=similarities[at:at + end - start])
            at += end - start
        return positions, similarities


def _best(similarities: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest similarities (all when there are fewer), unordered."""
    if count >= similarities.size:
        return np.arange(similarities.size)
    return np.argpartition(-similarities, count - 1)[:count]


class AnnSearcher:
    """Approximate eq. 6.2 song retrieval and similar-stem search over one inverted file per part.

    Same methods and outputs as :class:`~partsim_core.mixquery.exact.FaissSearcher` (``search_songs``,
    ``similar_stems``, ``vectors``, ``present``, ``song_of_row``, ``shards``, ``n_segments``), thread-safe.
    """

    def __init__(self, vectors: np.ndarray, song_of_row: np.ndarray, present: np.ndarray, *,
                 normalise: bool = False, nlist: int | None = None, nprobe: int | None = None,
                 nprobe_stems: int | None = None, candidates_per_k: int = CANDIDATES_PER_K, seed: int = 0,
                 chunk_rows: int = 65536, norms: np.ndarray | None = None, distance: str = "cosine",
                 trained: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Train each part's inverted file (or take ``trained`` ones) and store the part's vectors in list order.

        Args:
            vectors: ``(n_segments, n_parts, D)`` unit-or-zero part vectors (any float array, e.g. a memmap).
            song_of_row: Song index of each row (grouped by song).
            present: ``(n_segments, n_parts)`` bools: the song has a stem of that part.
            normalise: L2-normalise each part's vector on the way in (then a normalised copy is kept).
            nlist: Lists per part (default :func:`default_nlist`).
            nprobe: Lists scanned per part of a song query (default :func:`default_nprobe`).
            nprobe_stems: Lists scanned per similar-stem query (default :func:`default_nprobe`).
            candidates_per_k: Segments kept per query part of a song query, times ``k``.
            seed: k-means seed (the samples and the initial centroids).
            chunk_rows: Rows handled at a time while building (bounds temporary copies).
            norms: ``(n_segments, n_parts)`` raw norms of the embeddings (``None``: computed from ``vectors``
                when ``normalise``, else 1 for every non-zero vector).
            distance: ``cosine`` or ``euclidean``.
            trained: ``(centroids, lists)`` of an earlier training (:meth:`trained_arrays`, e.g. saved in the index
                folder): float32 ``(n_parts, nlist, D)`` and int ``(n_segments, n_parts)``; then nothing is trained
                and ``nlist`` (if given) must agree.

        Raises:
            PartsimError: inconsistent shapes, an unknown distance, bad ``nlist`` / ``nprobe``, or ``trained``
                arrays that do not fit the vectors.
        """
        faiss = _import_faiss()
        n, n_parts, dim = check_index_arrays(vectors, song_of_row, present)
        if trained is not None:
            centroids, lists = trained
            if (np.ndim(centroids) != 3 or np.shape(centroids)[0] != n_parts or np.shape(centroids)[2] != dim
                    or np.shape(lists) != (n, n_parts)):
                raise PartsimError(f"trained inverted files (centroids {np.shape(centroids)}, lists "
                                   f"{np.shape(lists)}) do not fit vectors {vectors.shape}")
            if nlist is not None and nlist != np.shape(centroids)[1]:
                raise PartsimError(f"nlist {nlist!r} asked for, but the trained inverted files have "
                                   f"{np.shape(centroids)[1]} lists")
            nlist = int(np.shape(centroids)[1])
            if np.size(lists) and (int(np.min(lists)) < 0 or int(np.max(lists)) >= nlist):
                raise PartsimError(f"trained inverted files name lists outside 0..{nlist - 1}")
        self.nlist = default_nlist(n) if nlist is None else nlist
        if isinstance(self.nlist, bool) or not isinstance(self.nlist, (int, np.integer)) or not 1 <= self.nlist <= n:
            raise PartsimError(f"nlist must be an integer from 1 to the {n} segments, got {nlist!r}")
        self.nlist = int(self.nlist)
        self.nprobe = self._probes(nprobe, "nprobe")
        self.nprobe_stems = self._probes(nprobe_stems, "nprobe_stems")
        self.candidates_per_k = self._probes(candidates_per_k, "candidates_per_k")
        self.song_of_row = np.ascontiguousarray(song_of_row, dtype=np.int64)
        self.first_row, self.song_rows = song_bounds(self.song_of_row)
        self.present = np.ascontiguousarray(present, dtype=bool)
        self.n_parts, self.dim = n_parts, dim
        self.shards = 1
        self.distance = check_distance(distance)
        if norms is not None and np.shape(norms) != (n, n_parts):
            raise PartsimError(f"norms {np.shape(norms)} do not fit vectors {vectors.shape}")
        computed = np.empty((n, n_parts), dtype=np.float32)
        if normalise or vectors.dtype != np.float32:
            store = np.empty(vectors.shape, dtype=np.float32)
            for first in range(0, n, chunk_rows):
                block = vectors[first:first + chunk_rows]
                store[first:first + block.shape[0]] = normalise_parts(block) if normalise else block
                computed[first:first + block.shape[0]] = part_norms(block) if normalise else unit_norms(block)
            vectors = store
        elif norms is None:
            for first in range(0, n, chunk_rows):
                block = vectors[first:first + chunk_rows]
                computed[first:first + block.shape[0]] = unit_norms(block)
        #: ``(n_segments, n_parts)`` float32 raw norms: ``norms * vectors`` are the raw embeddings (eq. 6.1).
        self.norms = np.ascontiguousarray(computed if norms is None else norms, dtype=np.float32)
        #: Largest raw norm (scales the float32 error margin of the Euclidean distance).
        self.scale = float(self.norms.max()) if self.norms.size and self.norms.max() > 0 else 1.0
        #: ``(n_segments, n_parts, D)`` float32 unit-or-zero vectors in row order (the query vectors come from it).
        self.vectors = vectors
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        #: Whether the inverted files were trained here (False: taken from ``trained``).
        self.trained_here = trained is None
        if trained is None:
            trained = train_inverted_files(vectors, self.nlist, seed, chunk_rows)
        #: One inverted file per part.
        self.files = [_PartFile(vectors, self.norms, part, trained[0][part], np.asarray(trained[1][:, part]),
                                chunk_rows) for part in range(n_parts)]

    def trained_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(centroids, lists)`` of the inverted files: float32 ``(n_parts, nlist, D)`` and int32
        ``(n_segments, n_parts)``; ``AnnSearcher(..., trained=...)`` rebuilds this searcher from them without
        training."""
        centroids = np.stack([part_file.centroids for part_file in self.files])
        lists = np.stack([part_file.lists() for part_file in self.files], axis=1)
        return centroids, np.ascontiguousarray(lists)

    def _probes(self, value: int | None, name: str) -> int:
        if value is None:
            return default_nprobe(self.nlist)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise PartsimError(f"{name} must be a positive integer, got {value!r}")
        return int(value if name == "candidates_per_k" else min(value, self.nlist))

    @property
    def n_segments(self) -> int:
        """Rows in the index."""
        return int(self.vectors.shape[0])

    def memory_bytes(self) -> int:
        """Bytes of the searcher's own arrays (the per-part stores, centroids, orders), not of ``vectors``."""
        return sum(part_file.nbytes() for part_file in self.files)

    def _query(self, mean: np.ndarray) -> np.ndarray:
        """float64 scan vector of one part's eq. 6.1 mean: its direction (cosine; zero stays zero) or itself."""
        if self.distance == "euclidean":
            return mean
        length = float(np.linalg.norm(mean))
        return mean / length if length > ZERO_NORM else np.zeros_like(mean)

    def _from_similarity(self, similarity: np.ndarray, norms: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Part distances from ``v . query`` and the raw norms: ``1 - s`` (cosine) or ``|n v - y|`` (Euclidean)."""
        similarity = np.asarray(similarity, dtype=np.float64)
        if self.distance == "cosine":
            return 1.0 - similarity
        norms = np.asarray(norms, dtype=np.float64)
        return np.sqrt(np.maximum(0.0, float(query @ query) + norms ** 2 - 2.0 * norms * similarity))

    def _coarse(self, part: int, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """float32-accuracy part distances of ``rows``, read from the part's store."""
        part_file = self.files[part]
        positions = part_file.position[rows]
        similarity = np.einsum("rd,d->r", part_file.store[positions], query.astype(np.float32))
        return self._from_similarity(similarity, part_file.norm_store[positions], query)

    def _exact(self, part: int, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """float64 part distances of ``rows`` (cosine: ``1 - v.q``; Euclidean: ``|n v - y|`` literally)."""
        part_file = self.files[part]
        positions = part_file.position[rows]
        unit = part_file.store[positions].astype(np.float64)
        if self.distance == "cosine":
            return 1.0 - unit @ query
        raw = unit * part_file.norm_store[positions].astype(np.float64)[:, None]
        return np.linalg.norm(raw - query[None, :], axis=1)

    def _margin(self) -> float:
        """Distance within which float32 scores are re-scored in float64."""
        return FLOAT32_MARGIN if self.distance == "cosine" else FLOAT32_MARGIN + 1e-3 * self.scale

    def search_songs(self, query_rows: Sequence[tuple[int, int]], k: int = THESIS_K,
                     excluded_songs: Sequence[int] = ()) -> list[tuple[int, float, int]]:
        """Approximate eq. 6.1-6.2 song retrieval; output as :func:`~partsim_core.mixquery.search_songs_numpy`."""
        k = check_k(k)
        means, parts = query_means(self.vectors, self.norms, query_rows)
        excluded = np.asarray(list(excluded_songs), dtype=np.int64)
        queries = {part: self._query(means[part]) for part in parts}
        if self.distance == "cosine" and not any(np.any(query) for query in queries.values()):
            allowed = np.setdiff1d(np.arange(self.first_row.size), excluded)[:k]
            return [(int(song), 1.0, int(self.first_row[song])) for song in allowed]
        # A cosine part with a zero mean is at distance 1 from everything: it ranks nothing and is not scanned.
        scanned = [part for part in parts if self.distance == "euclidean" or np.any(queries[part])]
        found_rows, found_totals = [], []
        for part in scanned:
            part_file = self.files[part]
            positions, similarities = part_file.scan(queries[part].astype(np.float32), self.nprobe)
            rows = part_file.order[positions]
            distance = self._from_similarity(similarities, part_file.norm_store[positions], queries[part])
            if excluded.size:
                keep = ~np.isin(self.song_of_row[rows], excluded)
                rows, distance = rows[keep], distance[keep]
            best = _best(-distance, self.candidates_per_k * k)
            rows, total = rows[best], distance[best]  # this part's distance is known from the scan
            for other in parts:
                if other != part:
                    total = total + self._coarse(other, rows, queries[other])
            found_rows.append(rows)
            found_totals.append(total)
        # A row found in two parts counts twice: harmless, and cheaper than unique.
        rows, total = np.concatenate(found_rows), np.concatenate(found_totals)
        if rows.size == 0:
            return []
        # Eq. 6.2 of every candidate in float32; the best segment of each song; then the leading songs' best
        # segments (and every candidate within float32 error of them) again in float64, ranked as the exact search.
        distances = total / len(parts)
        songs = self.song_of_row[rows]
        order = np.lexsort((rows, distances, songs))
        songs_sorted = songs[order]
        firsts = order[np.r_[True, songs_sorted[1:] != songs_sorted[:-1]]]
        leading = firsts[np.lexsort((songs[firsts], distances[firsts]))][:2 * k + 16]
        cutoff = distances[leading[-1]] + self._margin()
        close = np.flatnonzero(np.isin(songs, songs[leading]) & (distances <= cutoff))
        rows, songs = rows[close], songs[close]
        exact = np.zeros(rows.size, dtype=np.float64)
        for part in parts:
            exact += self._exact(part, rows, queries[part])
        distances = _tie_round(exact / len(parts))
        order = np.lexsort((rows, distances, songs))  # per song: best distance, then earliest row
        songs_sorted = songs[order]
        firsts = order[np.r_[True, songs_sorted[1:] != songs_sorted[:-1]]]
        ranking = firsts[np.lexsort((songs[firsts], distances[firsts]))][:k]
        return [(int(songs[i]), float(distances[i]), int(rows[i])) for i in ranking]

    def similar_stems(self, row: int, part: int, k: int = THESIS_K) -> list[tuple[int, float]]:
        """Approximate similar stems; output as :func:`~partsim_core.mixquery.similar_stems_numpy`."""
        k = check_k(k)
        means, _ = query_means(self.vectors, self.norms, [(row, part)])
        query = self._query(means[part])
        own_song = self.song_of_row[row]
        if self.distance == "cosine" and not np.any(query):
            allowed = np.flatnonzero(self.present[:, part] & (self.song_of_row != own_song))
            return [(int(hit), 1.0) for hit in allowed[:k]]
        part_file = self.files[part]
        positions, similarities = part_file.scan(query.astype(np.float32), self.nprobe_stems)
        rows = part_file.order[positions]
        distance = self._from_similarity(similarities, part_file.norm_store[positions], query)
        keep = self.present[rows, part] & (self.song_of_row[rows] != own_song)
        rows, distance = rows[keep], distance[keep]
        if rows.size == 0:
            return []
        rows = rows[_best(-distance, 2 * k + 16)]
        distances = _tie_round(self._exact(part, rows, query))
        order = np.lexsort((rows, distances))[:k]
        return [(int(rows[i]), float(distances[i])) for i in order]


def save_ann(folder: Path, vectors: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Train the inverted files of ``vectors`` (:func:`train_inverted_files`, :func:`default_nlist` lists) and write
    them into an index folder, each file atomically (:data:`~partsim_core.mixquery.manifest.ANN_FILES`).

    Returns:
        The manifest's ``ann`` field (:func:`~partsim_core.mixquery.manifest.seal` adds the files' checksums).
    """
    nlist = default_nlist(int(vectors.shape[0]))
    centroids, lists = train_inverted_files(vectors, nlist, seed)
    for name, array in ((ANN_CENTROIDS_FILE, centroids), (ANN_LISTS_FILE, lists)):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write_bytes(folder / name, buffer.getvalue())
    return {"nlist": int(nlist), "seed": int(seed), "kmeans_iterations": KMEANS_ITERATIONS,
            "train_rows_per_list": TRAIN_ROWS_PER_LIST}
