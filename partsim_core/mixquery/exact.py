"""The exact FAISS search of a MixQuery index: song retrieval (eq. 6.1-6.2) and similar stems, equal to the numpy
references of :mod:`partsim_core.mixquery.search`.

Why one FAISS search covers any combination of parts: with unit part vectors ``v_i`` and unit averaged queries
``q_i = y_i / |y_i|``, ``mean_{i in I} (1 - q_i.v_i) = 1 - <Q, V>`` where ``Q`` concatenates ``q_i / |I|`` for
``i in I`` and zeros elsewhere and ``V`` concatenates the ``v_i``. So the segment distances are ``1 -`` the inner
products of one inner-product index over the concatenated vectors (:class:`FaissSearcher`: half-precision codes by
default, or exact ``IndexFlatIP``). FAISS returns the top ``K`` segments; they are re-scored exactly (float64),
aggregated (min per song), and ``K`` grows until the ``k``-th song is closer, by more than the coarse index's
worst-case error, than every segment left out (then no song outside the candidates can enter the top ``k``, and
every top song's best segment is among the candidates), or every segment is in. So results equal
:func:`search_songs_numpy` (the plain numpy computation of eq. 6.2), which the tests check.

The Euclidean distance (``distance="euclidean"``) is searched on per-part inner-product indices of the codes
``[x / s, |x / s|^2]`` of the raw embeddings ``x`` (``s``: the largest norm of the index), since
``[2 y / s, -1] . [x / s, |x / s|^2] = (|y|^2 - |y - x|^2) / s^2`` (the identity
``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b``): one part's nearest rows in FAISS are its Euclidean nearest rows. A song
query over several parts runs the threshold algorithm: every query part's ``K`` nearest rows are re-scored exactly,
and a row outside them all is at least the mean of the parts' ``K``-th distances away (less the coarse error), so
``K`` grows until the ``k``-th song is closer than that. Results are exact as for the cosine distance.

Speed of the Euclidean search (``benchmarks/retrieval.py --distance euclidean``): its per-part codes have ``D + 1``
dimensions, and FAISS's scalar-quantizer kernels are vectorised only for a multiple of 8 - 129 dimensions ran a
scalar loop ~10x slower - so codes are zero-padded to :data:`SIMD_WIDTH`; the query parts are searched in parallel,
start with :data:`CANDIDATE_GROWTH` times the cosine search's candidates (the threshold bound needs ~1.5x more) and
only the query's parts of the candidates are read for the re-scoring. At 10^5 segments it is within ~1.5x of the
cosine search (it was ~15x slower).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from partsim_core.errors import PartsimError
from partsim_core.mixquery.search import (
    THESIS_K,
    ZERO_NORM,
    _tie_round,
    check_distance,
    check_k,
    euclidean_rows,
    normalise_parts,
    part_norms,
    part_rows,
    query_means,
    song_bounds,
    unit_norms,
)

#: Margin (in distance) by which the k-th result must beat every segment FAISS left out before the candidate set
#: is trusted; float32 inner products of unit vectors err by far less (~1e-7), so results stay exact.
EXACTNESS_MARGIN = 1e-4

#: The same margin for the half-precision coarse index: its inner products of unit vectors err by at most
#: 2^-11 ~ 4.9e-4 (rounding to half precision) plus ~4e-5 (float32 accumulation over 640 dims).
FP16_MARGIN = 1e-3

#: Coarse FAISS indices of :class:`FaissSearcher`.
COARSE_INDICES: tuple[str, ...] = ("fp16", "flat")

#: FAISS's SIMD scalar-quantizer kernels need a code length that is a multiple of this; any other length falls back
#: to a scalar loop ~10x slower (measured: 100,000 fp16 codes of 129 dimensions 15-18 ms per search, of 136 1.7 ms).
#: Each part's codes are zero-padded to it (zeros change no inner product).
SIMD_WIDTH = 8

#: Factor by which a song search widens its candidates when they do not yet prove the top ``k`` (2: the Euclidean
#: threshold search typically needs ~1.5x the first count on 10^5 clustered segments, where 4 read ~2.7x too many).
CANDIDATE_GROWTH = 2

#: Most shards of the song-search index by default (see :func:`default_shards`).
MAX_DEFAULT_SHARDS = 4


def default_shards() -> int:
    """Shards of the song-search index when not given: one per CPU core, at most :data:`MAX_DEFAULT_SHARDS`."""
    return max(1, min(MAX_DEFAULT_SHARDS, os.cpu_count() or 1))


def check_index_arrays(vectors: np.ndarray, song_of_row: np.ndarray, present: np.ndarray) -> tuple[int, int, int]:
    """``(segments, parts, dim)`` of an index's arrays, checked to fit one another (exact and approximate alike).

    Raises:
        PartsimError: ``vectors`` not shaped (segments > 0, parts, dim), or ``song_of_row`` / ``present`` of
            other lengths.
    """
    if vectors.ndim != 3 or vectors.shape[0] == 0:
        raise PartsimError(f"vectors must be shaped (segments, parts, dim), got {vectors.shape}")
    n, n_parts, dim = vectors.shape
    if np.shape(song_of_row) != (n,) or np.shape(present) != (n, n_parts):
        raise PartsimError(f"song_of_row {np.shape(song_of_row)} / present {np.shape(present)} do not fit "
                           f"vectors {vectors.shape}")
    return n, n_parts, dim


def _import_faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise PartsimError("MixQuery search needs the faiss-cpu package: pip install faiss-cpu") from None
    return faiss


class FaissSearcher:
    """Exact FAISS search over one catalog's vectors: song retrieval (eq. 6.2) and similar stems.

    FAISS finds candidates, which are re-scored exactly (float64 from the float32 vectors) and accepted only when
    provably complete (see the module docstring), so the results never depend on the coarse index. Two coarse
    indices (``coarse``):

    * ``"fp16"`` (default): ``IndexScalarQuantizer`` with half-precision codes over the concatenated part vectors
      (and, built on first use of each part, one over that part's vectors for similar stems). A search reads half
      the memory of a float32 one and is about twice as fast (measured on 2 shared cores, 100,000 x 640 dims: ~10
      vs ~20 ms per query); its inner products err by at most 2^-11 (half-precision rounding of unit vectors,
      Cauchy-Schwarz) + float32 accumulation, under :data:`FP16_MARGIN`. The float32 vectors are kept as given
      (e.g. the index file's memory map) for the re-scoring.
    * ``"flat"``: ``IndexFlatIP`` (exact float32); margin :data:`EXACTNESS_MARGIN`.

    Per-part indices for similar stems read a fifth of the memory of a search over the concatenation.

    ``distance="euclidean"``: the codes are ``[x / s, |x / s|^2]`` per part (see the module docstring); songs and
    stems are both searched on the per-part indices (no concatenated index is built, ``shards`` is 1; a song
    query's parts are searched in parallel threads instead, when ``shards`` - by default one per core - is above
    1), and the coarse error bound is scaled by the norms of the query and of the codes (Cauchy-Schwarz).

    Every part's codes are zero-padded to a multiple of :data:`SIMD_WIDTH` dimensions (FAISS's vectorised kernels;
    the Euclidean codes have ``D + 1``), and both distances run one song-search loop (:meth:`search_songs`) over
    their own candidates (:meth:`_song_candidates`).

    Shards and threads: FAISS parallelises a flat or scalar-quantizer search over *queries*, so one query runs on
    one OpenMP thread whatever ``threads`` says (default 1; extra OpenMP threads only spin; set with
    ``faiss.omp_set_num_threads`` before each search, per calling thread). To use several cores for one song query
    the fp16 concatenated index is split into ``shards`` contiguous row ranges (default :func:`default_shards`: one
    per core, at most 4) searched in parallel Python threads (FAISS releases the GIL) and merged - the top ``K``
    of the union of each shard's top ``K`` is the global top ``K``, so exactness is unchanged. Measured on 2 idle
    cores at 100,000 x 640: p95 ~14 ms with one shard, ~7-9 ms with two. The ``flat`` coarse index is never
    sharded. Searches are thread-safe; the lazy per-part indices are built
    under a lock.

    """

    def __init__(self, vectors: np.ndarray, song_of_row: np.ndarray, present: np.ndarray, threads: int = 1,
                 normalise: bool = False, coarse: str = "fp16", chunk_rows: int = 8192,
                 shards: int | None = None, norms: np.ndarray | None = None, distance: str = "cosine") -> None:
        """Build the concatenated index.

        Args:
            vectors: ``(n_segments, n_parts, D)`` unit-or-zero part vectors (any float array, e.g. a memmap; added
                to FAISS chunk by chunk).
            song_of_row: song index of each row (grouped by song, see :func:`song_bounds`).
            present: ``(n_segments, n_parts)`` bools: the song has a stem of that part.
            threads: OpenMP threads for FAISS searches.
            normalise: L2-normalise each part's vector on the way in (for vectors not yet unit-or-zero; then a
                normalised float32 copy is kept).
            coarse: ``"fp16"`` or ``"flat"`` (see the class docstring).
            chunk_rows: rows added to FAISS at a time (bounds temporary copies).
            shards: row ranges of the fp16 song-search index searched in parallel (None: :func:`default_shards`;
                ignored, i.e. 1, for ``coarse="flat"``).
            norms: ``(n_segments, n_parts)`` raw norms of the embeddings (``None``: computed from ``vectors``
                when ``normalise``, else 1 for every non-zero vector).
            distance: ``cosine`` or ``euclidean`` (:data:`DISTANCES`).

        Raises:
            PartsimError: inconsistent shapes, an unknown ``coarse`` or ``distance``, or ``threads`` / ``shards``
                not a positive integer.
        """
        faiss = _import_faiss()
        n, n_parts, dim = check_index_arrays(vectors, song_of_row, present)
        for name, value in (("threads", threads), ("shards", 1 if shards is None else shards)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PartsimError(f"{name} must be a positive integer, got {value!r}")
        if coarse not in COARSE_INDICES:
            raise PartsimError(f"unknown coarse index {coarse!r}; choose one of: {', '.join(COARSE_INDICES)}")
        self.distance = check_distance(distance)
        self.threads = threads
        self.coarse = coarse
        self.margin = FP16_MARGIN if coarse == "fp16" else EXACTNESS_MARGIN
        self.song_of_row = np.ascontiguousarray(song_of_row, dtype=np.int64)
        self.first_row, self.song_rows = song_bounds(self.song_of_row)
        self.present = np.ascontiguousarray(present, dtype=bool)
        self.n_parts, self.dim = n_parts, dim
        if norms is not None and np.shape(norms) != (n, n_parts):
            raise PartsimError(f"norms {np.shape(norms)} do not fit vectors {vectors.shape}")
        store = vectors
        if normalise or vectors.dtype != np.float32:
            store = np.empty(vectors.shape, dtype=np.float32)
            computed = np.empty((n, n_parts), dtype=np.float32)
            for first in range(0, n, chunk_rows):
                block = vectors[first:first + chunk_rows]
                store[first:first + block.shape[0]] = normalise_parts(block) if normalise else block
                computed[first:first + block.shape[0]] = part_norms(block) if normalise else unit_norms(block)
            if norms is None:
                norms = computed
        elif norms is None:
            norms = np.concatenate([unit_norms(vectors[first:first + chunk_rows])
                                    for first in range(0, n, chunk_rows)])
        #: ``(n_segments, n_parts, D)`` float32 unit-or-zero vectors (the exact re-scoring reads them).
        self.vectors = store
        #: ``(n_segments, n_parts)`` float32 raw norms: ``norms * vectors`` are the raw embeddings (eq. 6.1).
        self.norms = np.ascontiguousarray(norms, dtype=np.float32)
        #: Euclidean features are scaled by the largest norm, so that every FAISS code lies in the unit ball.
        self.scale = float(self.norms.max()) if self.norms.size and self.norms.max() > 0 else 1.0
        #: Code length of one part: ``D`` (cosine) or ``D + 1`` (Euclidean), padded to :data:`SIMD_WIDTH`.
        self._feature_dim = -(-(dim if self.distance == "cosine" else dim + 1) // SIMD_WIDTH) * SIMD_WIDTH
        faiss.omp_set_num_threads(self.threads)
        n_shards = 1 if coarse == "flat" else min(n, default_shards() if shards is None else shards)
        edges = np.linspace(0, n, n_shards + 1).round().astype(np.int64)
        #: ``[(first row, end row, FAISS index)]`` of the concatenated unit vectors, searched in parallel (cosine
        #: only: the Euclidean song search reads the per-part indices, see :meth:`_song_candidates`).
        self._shards = [(int(start), int(end), self._new_index(n_parts * self._feature_dim))
                        for start, end in zip(edges[:-1], edges[1:])] if self.distance == "cosine" else []
        self.shards = max(1, len(self._shards))
        # Threads of the cosine shards, or of the Euclidean song search's query parts (searched in parallel when
        # more than one shard is asked for, by default with more than one core).
        self._pool = ThreadPoolExecutor(max_workers=4 * n_shards) if n_shards > 1 else None
        for start, end, index in self._shards:
            for first in range(start, end, chunk_rows):
                stop = min(first + chunk_rows, end)
                index.add(self._features(slice(first, stop), list(range(n_parts))).reshape(stop - first, -1))
        self._part_indices: dict[int, object] = {}
        self._lock = threading.Lock()
        mean_rows = n / self.first_row.size
        # Enough candidates for k songs of mean_rows segments in one FAISS pass when a song's segments are alike
        # (real catalogues: one widening step fewer there; little extra cost when they are not).
        self._initial_k_factor = max(2, math.ceil(mean_rows))

    def _features(self, rows, parts: list[int]) -> np.ndarray:
        """float32 ``(r, |parts|, F)`` FAISS codes of ``rows``: the unit vectors (cosine), or ``[x / s, |x / s|^2]``
        of the raw embeddings ``x`` scaled by :attr:`scale` (Euclidean: an inner product with ``[2 y / s, -1]`` is
        ``(|y|^2 - |y - x|^2) / s^2``), zero-padded to :attr:`_feature_dim` (see :data:`SIMD_WIDTH`)."""
        unit = np.asarray(self.vectors[rows], dtype=np.float32)[:, parts, :]
        codes = np.zeros((unit.shape[0], len(parts), self._feature_dim), dtype=np.float32)
        if self.distance == "cosine":
            codes[:, :, :self.dim] = unit
            return codes
        scaled = np.asarray(self.norms[rows], dtype=np.float32)[:, parts] / np.float32(self.scale)
        codes[:, :, :self.dim] = unit * scaled[:, :, None]
        codes[:, :, self.dim] = scaled ** 2
        return codes

    def _new_index(self, dim: int):
        faiss = _import_faiss()
        if self.coarse == "flat":
            return faiss.IndexFlatIP(dim)
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:  # pragma: no cover - fp16 codes need no training
            index.train(np.zeros((1, dim), dtype=np.float32))
        return index

    @property
    def n_segments(self) -> int:
        """Rows in the index."""
        return int(self.vectors.shape[0])

    def _part_index(self, part: int):
        with self._lock:
            index = self._part_indices.get(part)
            if index is None:
                index = self._new_index(self._feature_dim)
                for first in range(0, self.n_segments, 65536):
                    stop = min(first + 65536, self.n_segments)
                    index.add(self._features(slice(first, stop), [part]).reshape(stop - first, -1))
                self._part_indices[part] = index
            return index

    def _selector(self, allowed: np.ndarray | None):
        """``(SearchParameters or None, bitmap kept alive)`` restricting a search to ``allowed`` rows."""
        if allowed is None:
            return None, None
        faiss = _import_faiss()
        bitmap = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(allowed.size, faiss.swig_ptr(bitmap))
        return faiss.SearchParameters(sel=selector), (bitmap, selector)

    def _search(self, index, query: np.ndarray, count: int, params) -> tuple[np.ndarray, np.ndarray]:
        faiss = _import_faiss()
        faiss.omp_set_num_threads(self.threads)
        similarities, ids = index.search(query[None, :].astype(np.float32), count, params=params)
        keep = ids[0] >= 0
        return ids[0][keep], similarities[0][keep].astype(np.float64)

    def _shard_selectors(self, allowed: np.ndarray | None) -> list[tuple[int, object, object]]:
        """Per shard: ``(allowed rows, SearchParameters or None, objects kept alive)``, built once per query."""
        selectors = []
        for start, end, _index in self._shards:
            local = None if allowed is None else allowed[start:end]
            available = end - start if local is None else int(local.sum())
            params, keep_alive = self._selector(local) if available else (None, None)
            selectors.append((available, params, keep_alive))
        return selectors

    def _search_shards(self, query: np.ndarray, count: int,
                       selectors: list[tuple[int, object, object]]) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` best allowed rows of the concatenated index (all shards, in parallel), largest inner
        product first: ``(rows, inner products)``."""

        def search_one(number: int) -> tuple[np.ndarray, np.ndarray]:
            start, _end, index = self._shards[number]
            available, params, _keep_alive = selectors[number]
            if available == 0:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
            rows, similarities = self._search(index, query, min(count, available), params)
            return rows + start, similarities

        found = self._parallel(search_one, list(range(len(self._shards))))
        if len(found) == 1:
            return found[0]
        rows = np.concatenate([rows for rows, _ in found])
        similarities = np.concatenate([similarities for _, similarities in found])
        order = np.lexsort((rows, -similarities))[:count]
        return rows[order], similarities[order]

    def _coarse_query(self, means: np.ndarray, parts: list[int]) -> tuple[np.ndarray, float]:
        """The FAISS query of eq. 6.1 means over ``parts`` and the worst-case error of its coarse inner products.

        Cosine: ``q_i / |I|`` (unit ``q_i``; inner product ``1 - D``). Euclidean: ``[2 y_i / s, -1]`` (inner
        product ``sum_i (|y_i|^2 - d_i^2) / s^2``; searched one part at a time). The error is the index's margin
        times ``|query|`` times the largest code norm (Cauchy-Schwarz).
        """
        query = np.zeros((self.n_parts, self._feature_dim), dtype=np.float64)
        if self.distance == "cosine":
            lengths = np.linalg.norm(means, axis=1, keepdims=True)
            blocks = np.where(lengths > ZERO_NORM, means / np.where(lengths > ZERO_NORM, lengths, 1.0), 0.0)
            query[parts, :self.dim] = blocks[parts] / len(parts)
            return query.reshape(-1), self.margin
        query[parts, :self.dim] = 2.0 * means[parts] / self.scale
        query[parts, self.dim] = -1.0
        # The codes of one part have norm at most sqrt(2) (|x / s| <= 1): the error of a part's inner product.
        return query.reshape(-1), self.margin * float(np.linalg.norm(query)) * math.sqrt(2) * len(parts)

    def _exact(self, rows: np.ndarray, parts: list[int], means: np.ndarray) -> np.ndarray:
        """float64 eq. 6.2 distances of ``rows`` (rounded for ties)."""
        if self.distance == "euclidean":
            return _tie_round(euclidean_rows(self.vectors, self.norms, rows, parts, means).mean(axis=1))
        lengths = np.linalg.norm(means[parts], axis=1, keepdims=True)
        blocks = np.where(lengths > ZERO_NORM, means[parts] / np.where(lengths > ZERO_NORM, lengths, 1.0), 0.0)
        candidate = part_rows(self.vectors, rows, parts)
        return _tie_round(1.0 - np.einsum("rpd,pd->r", candidate, blocks) / len(parts))

    def _parallel(self, function: Callable, items: list) -> list:
        """``[function(item) for item in items]``, on the pool's threads when there is one (FAISS releases the GIL);
        the calling thread runs the first item itself (one thread hand-off fewer per query)."""
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        others = [self._pool.submit(function, item) for item in items[1:]]
        return [function(items[0])] + [future.result() for future in others]

    def _lower_bound(self, similarity: float, means: np.ndarray, parts: list[int], margin: float) -> float:
        """Smallest eq. 6.2 distance a row whose coarse inner product is at most ``similarity + margin`` can have.

        Cosine: ``1 - similarity - margin``. Euclidean: the squared distances ``d_i^2`` of such a row sum to at
        least ``S = s^2 (sum_i |y_i / s|^2 - similarity - margin)``, and ``mean_i d_i >= sqrt(S) / |I|``.
        """
        if self.distance == "cosine":
            return 1.0 - similarity - margin
        squared = float(np.sum((means[parts] / self.scale) ** 2)) - similarity - margin
        return self.scale * math.sqrt(max(0.0, squared)) / len(parts)

    def _song_candidates(self, means: np.ndarray, parts: list[int], allowed: np.ndarray | None,
                         n_allowed: int) -> Callable[[int], tuple[np.ndarray, float, bool]]:
        """``candidates(K)`` of a song query: ``(rows, bound, exhausted)`` - candidate rows found with ``K``, a lower
        bound of the eq. 6.2 distance of every allowed row outside them, and whether they are all the allowed rows.

        Cosine: the ``K`` best rows of the concatenated index (inner product ``1 - D``, so the bound is one minus
        the ``K``-th inner product less the coarse error). Euclidean (the threshold algorithm): the union of each
        query part's ``K`` nearest rows in its own index, searched in parallel; a row outside the union is, in
        every part ``i``, at least as far as that part's ``K``-th row (less the coarse error), so
        ``D >= mean_i frontier_i``.
        """
        if self.distance == "cosine":
            query, margin = self._coarse_query(means, parts)
            selectors = self._shard_selectors(allowed)

            def concatenated(count: int) -> tuple[np.ndarray, float, bool]:
                rows, similarities = self._search_shards(query, count, selectors)
                bound = self._lower_bound(float(similarities[-1]), means, parts, margin) if rows.size else math.inf
                return rows, bound, rows.size < count or count >= n_allowed

            return concatenated
        params, keep_alive = self._selector(allowed)
        queries = {}
        for part in parts:
            full, margin = self._coarse_query(means, [part])
            queries[part] = (full.reshape(self.n_parts, self._feature_dim)[part], margin)

        def per_part(count: int, _keep_alive: object = keep_alive) -> tuple[np.ndarray, float, bool]:
            def search_part(part: int) -> tuple[np.ndarray, np.ndarray]:
                return self._search(self._part_index(part), queries[part][0], count, params)

            found = self._parallel(search_part, parts)
            frontier = [self._lower_bound(float(similarities[-1]), means, [part], queries[part][1])
                        for part, (rows, similarities) in zip(parts, found) if rows.size]
            exhausted = count >= n_allowed or any(rows.size < count for rows, _ in found)
            return (np.unique(np.concatenate([rows for rows, _ in found])),
                    float(np.mean(frontier)) if frontier else math.inf, exhausted)

        return per_part

    def search_songs(self, query_rows: Sequence[tuple[int, int]], k: int = THESIS_K,
                     excluded_songs: Sequence[int] = ()) -> list[tuple[int, float, int]]:
        """Eq. 6.1-6.2 song retrieval; same output as :func:`search_songs_numpy`.

        Candidates (:meth:`_song_candidates`) are re-scored exactly (float64, over the query's parts only) and
        ranked; their number grows by :data:`CANDIDATE_GROWTH` until the ``k``-th song is closer than every
        segment left out, or every allowed segment is in.
        """
        k = check_k(k)
        means, parts = query_means(self.vectors, self.norms, query_rows)
        allowed = None
        if len(excluded_songs):
            allowed = ~np.isin(self.song_of_row, np.asarray(list(excluded_songs), dtype=np.int64))
        n_allowed = self.n_segments if allowed is None else int(allowed.sum())
        if n_allowed == 0:
            return []
        if self.distance == "cosine" and not np.any(np.linalg.norm(means[parts], axis=1) > ZERO_NORM):
            # Only zero query vectors: every segment is at distance 1, ties go to catalog order.
            songs = np.flatnonzero(np.bincount(self.song_of_row[allowed] if allowed is not None
                                               else self.song_of_row, minlength=self.first_row.size))[:k]
            return [(int(song), 1.0, int(self.first_row[song])) for song in songs]
        candidates = self._song_candidates(means, parts, allowed, n_allowed)
        count = max(2 * k + 64, k * self._initial_k_factor)
        if self.distance == "euclidean" and len(parts) > 1:
            # The threshold bound of several parts is looser than a concatenated index's: each part needs more
            # rows (~1.5x at 10^5 clustered segments, two parts), so start one widening step further.
            count *= CANDIDATE_GROWTH
        count = min(n_allowed, count)
        while True:
            rows, bound, exhausted = candidates(count)
            distances = self._exact(rows, parts, means)
            songs = self.song_of_row[rows]
            order = np.lexsort((rows, distances, songs))  # per song: best distance, then earliest row
            songs_sorted = songs[order]
            firsts = order[np.r_[True, songs_sorted[1:] != songs_sorted[:-1]]]
            ranking = firsts[np.lexsort((songs[firsts], distances[firsts]))]
            if exhausted or (ranking.size >= k and distances[ranking[k - 1]] < bound):
                return [(int(songs[i]), float(distances[i]), int(rows[i])) for i in ranking[:k]]
            count = min(n_allowed, count * CANDIDATE_GROWTH)

    def similar_stems(self, row: int, part: int, k: int = THESIS_K) -> list[tuple[int, float]]:
        """Similar stems of one segment's part; same output as :func:`similar_stems_numpy`."""
        k = check_k(k)
        means, parts = query_means(self.vectors, self.norms, [(row, part)])
        allowed = self.present[:, part] & (self.song_of_row != self.song_of_row[row])
        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return []
        if self.distance == "cosine" and not float(np.linalg.norm(means[part])) > ZERO_NORM:
            return [(int(row), 1.0) for row in np.flatnonzero(allowed)[:k]]  # a zero query: all at distance 1
        full, margin = self._coarse_query(means, parts)
        query = full.reshape(self.n_parts, self._feature_dim)[part]
        params, _keep_alive = self._selector(allowed)
        index = self._part_index(part)
        count = min(n_allowed, k + 16)
        while True:
            rows, similarities = self._search(index, query, count, params)
            distances = self._exact(rows, parts, means)
            order = np.lexsort((rows, distances))
            exhausted = rows.size < count or count >= n_allowed
            if exhausted or distances[order[min(k, order.size) - 1]] < self._lower_bound(
                    float(similarities[-1]), means, parts, margin):
                return [(int(rows[i]), float(distances[i])) for i in order[:k]]
            count = min(n_allowed, count * 4)
