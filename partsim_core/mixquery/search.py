"""Chapter 6 retrieval maths: stem queries, eq. 6.1-6.2 song retrieval and similar-stem search, in numpy (the exact
FAISS search is :mod:`partsim_core.mixquery.exact`).

Data model (what :class:`~partsim_core.mixquery.index.MixQueryIndex` holds): ``vectors`` float32
``(n_segments, n_parts, D)``, each part's vector L2-normalised or all zero; ``norms`` float32
``(n_segments, n_parts)``, the norm of each raw embedding (``norms * vectors`` are the raw embeddings);
``song_of_row`` ``(n_segments,)`` the song index of every segment row, non-decreasing (a song's segments are
consecutive rows, in time order); ``present`` bool ``(n_segments, n_parts)``: the song has a stem of that part.

* **Distance** ``d`` (:data:`DISTANCES`, one per index): **cosine** (the thesis's) ``1 - a.b / (|a| |b|)``, where a
  zero vector has distance 1 to everything (it carries no direction), so a part a song lacks (stored as zeros)
  counts as maximally dissimilar in that part; or **Euclidean** ``|a - b|`` between raw embeddings (the CSN's
  training distance; its norms carry whether a part is present).
* **Song retrieval** (thesis 6.3.4, eq. 6.1-6.2, as :mod:`partsim_core.mixquery.ranking` writes them): the *raw*
  query embeddings of each part ``i`` in the query set are averaged (eq. 6.1, ``y_i``); the distance of a segment
  is the mean over the query's parts ``I`` of ``d(y_i, y'_i)`` (eq. 6.2); a song's distance is the minimum over
  its segments, and the segment reaching it is the song's ``best_segment`` (where playback starts, 6.2.4). Songs
  are ranked by ascending distance.
* **Similar stems** (6.2.2): the ``k`` segments of *other* songs nearest to one stem query in the same part,
  among the segments whose song has a stem of that part (a result must be a stem one can listen to).
* **Ties** (equal distances) go to the lower song index, then the lower segment row; distances come from float32
  BLAS / FAISS kernels, so bit-identical embeddings may still differ in the last bit.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partsim_core.errors import PartsimError

#: Vectors whose L2 norm is at most this count as zero (no direction): distance 1 to everything.
ZERO_NORM = 1e-12

#: Decimals distances are rounded to before ranking: float64 sums of equal embeddings that differ only by rounding
#: (~1e-16) then tie exactly and go to the lower index, in the FAISS path and the numpy reference alike.
TIE_DECIMALS = 12

#: Results of the thesis's app: 100 similar stems (6.2.2) and the top 100 songs (6.2.4).
THESIS_K = 100

#: Distances ``d`` of eq. 6.2 an index can search with; the thesis's first.
DISTANCES: tuple[str, ...] = ("cosine", "euclidean")


@dataclass(frozen=True)
class StemQuery:
    """One stem query: segment ``segment`` (0-based, 10-s steps from the start) of ``part`` in song ``song``."""

    song: str
    part: str
    segment: int


@dataclass(frozen=True)
class StemHit:
    """A similar stem: ``segment`` of ``song`` (same part as the query) at the index's ``distance`` (6.2.2)."""

    song: str
    segment: int
    distance: float


@dataclass(frozen=True)
class SongHit:
    """A retrieved song at eq. 6.2 ``distance``; ``best_segment`` is the segment that reached it (6.2.4)."""

    song: str
    distance: float
    best_segment: int


def normalise_parts(vectors: np.ndarray) -> np.ndarray:
    """Each vector along the last axis divided by its L2 norm (float32); a zero (norm <= ZERO_NORM) stays zero."""
    array = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    safe = np.where(norms > ZERO_NORM, norms, 1.0)
    return np.where(norms > ZERO_NORM, array / safe, 0.0).astype(np.float32)


def check_k(k: int) -> int:
    """``k`` as a positive int.

    Raises:
        PartsimError: ``k`` is not a positive integer.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PartsimError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_distance(distance: str) -> str:
    """``distance`` when it is one of :data:`DISTANCES`.

    Raises:
        PartsimError: another value.
    """
    if distance not in DISTANCES:
        raise PartsimError(f"unknown distance {distance!r}; choose one of: {', '.join(DISTANCES)}")
    return distance


def part_norms(vectors: np.ndarray) -> np.ndarray:
    """float32 ``(..., n_parts)`` L2 norm of every part vector (0 where it is at most :data:`ZERO_NORM`)."""
    norms = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=-1)
    return np.where(norms > ZERO_NORM, norms, 0.0).astype(np.float32)


def unit_norms(vectors: np.ndarray) -> np.ndarray:
    """The norms of already unit-or-zero vectors: 1 where a vector is non-zero, else 0 (float32)."""
    return (np.abs(np.asarray(vectors)).max(axis=-1) > 0).astype(np.float32)


def query_means(vectors: np.ndarray, norms: np.ndarray | None,
                query_rows: Sequence[tuple[int, int]]) -> tuple[np.ndarray, list[int]]:
    """Eq. 6.1 as written: the mean of the *raw* embeddings ``x_n = |x_n| v_n`` of each part's stem queries.

    Args:
        vectors: ``(n_segments, n_parts, D)`` unit-or-zero stored vectors.
        norms: ``(n_segments, n_parts)`` raw norms beside them (``None``: the vectors are the raw embeddings).
        query_rows: ``(segment row, part column)`` of every stem query.

    Returns:
        ``(means, parts)``: float64 ``(n_parts, D)`` with ``y_i`` in the rows of the query's parts and zeros
        elsewhere, and the sorted part columns ``I`` of the query set.

    Raises:
        PartsimError: an empty query set.
    """
    if not query_rows:
        raise PartsimError("the query set is empty: add at least one stem query")
    n_parts, dim = vectors.shape[1], vectors.shape[2]
    sums = np.zeros((n_parts, dim), dtype=np.float64)
    counts = np.zeros(n_parts, dtype=np.int64)
    for row, part in query_rows:
        scale = 1.0 if norms is None else float(norms[row, part])
        sums[part] += np.asarray(vectors[row, part], dtype=np.float64) * scale
        counts[part] += 1
    parts = [int(part) for part in np.flatnonzero(counts)]
    return sums / np.maximum(counts, 1)[:, None], parts


def query_blocks(vectors: np.ndarray, query_rows: Sequence[tuple[int, int]],
                 norms: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """Eq. 6.1 for the cosine distance: each part's mean raw query embedding (:func:`query_means`) as a unit (or
    zero) vector.

    Returns:
        ``(blocks, parts)``: float64 ``(n_parts, D)`` with ``y_i / |y_i|`` in the rows of the query's parts and
        zeros elsewhere (a zero average stays zero), and the sorted part columns ``I`` of the query set.

    Raises:
        PartsimError: an empty query set.
    """
    means, parts = query_means(vectors, norms, query_rows)
    lengths = np.linalg.norm(means, axis=1, keepdims=True)
    blocks = np.where(lengths > ZERO_NORM, means / np.where(lengths > ZERO_NORM, lengths, 1.0), 0.0)
    return blocks, parts


def part_rows(vectors: np.ndarray, rows, parts) -> np.ndarray:
    """float64 ``vectors[rows][:, parts]`` (``(r, |parts|, D)``), reading only those parts of those rows (a song
    query of two parts out of five gathers two fifths of what the whole rows would be)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    return np.asarray(vectors[rows[:, None], np.asarray(parts, dtype=np.int64)[None, :]], dtype=np.float64)


def euclidean_rows(vectors: np.ndarray, norms: np.ndarray | None, rows, parts,
                   means: np.ndarray) -> np.ndarray:
    """float64 ``(r, |parts|)`` Euclidean distances ``|y_i - x_i|`` of the raw embeddings ``x = |x| v`` of ``rows``.

    Literally (the difference, not ``|y|^2 + |x|^2 - 2 x.y``, which loses the small distances to cancellation),
    one part at a time and in place: a few times faster than one ``(r, |parts|, D)`` expression.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    distances = np.empty((rows.size, len(parts)), dtype=np.float64)
    for column, part in enumerate(parts):
        raw = np.asarray(vectors[rows, part], dtype=np.float64)
        if norms is not None:
            raw *= np.asarray(norms[rows, part], dtype=np.float64)[:, None]
        raw -= means[part]
        distances[:, column] = np.sqrt(np.einsum("rd,rd->r", raw, raw))
    return distances


def song_bounds(song_of_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first row, row count)`` of every song; songs are ``0 .. max`` and each must own consecutive rows.

    Raises:
        PartsimError: rows not grouped by song in order, or a song without rows.
    """
    songs = np.asarray(song_of_row)
    if songs.ndim != 1 or songs.size == 0:
        raise PartsimError("song_of_row must be a non-empty 1-d array")
    steps = np.diff(songs)
    if songs[0] != 0 or np.any((steps != 0) & (steps != 1)):
        raise PartsimError("segment rows must be grouped by song in catalog order (song indices 0, 0, 1, 1, 2...)")
    first = np.flatnonzero(np.r_[True, steps != 0])
    counts = np.diff(np.r_[first, songs.size])
    return first, counts


# --------------------------------------------------------------------------------------------------------------
# numpy references (plain, literal eq. 6.1-6.2)
# --------------------------------------------------------------------------------------------------------------


def segment_distances_numpy(vectors: np.ndarray, query_rows: Sequence[tuple[int, int]],
                            dtype: type = np.float64, norms: np.ndarray | None = None,
                            distance: str = "cosine") -> np.ndarray:
    """Eq. 6.2 for every segment: mean over the query's parts of ``d(y_i, y'_i)``, ``y_i`` the eq. 6.1 mean of the
    raw query embeddings.

    Stored vectors are unit or zero with their raw ``norms`` beside them (``None``: the vectors are the raw
    embeddings); cosine: ``1 - v.y / |y|`` (1 for a zero vector or a zero mean), Euclidean: ``|norm v - y|``.
    Computed in ``dtype`` (float64: the exact reference; float32: what a fast plain-numpy search would do).
    """
    check_distance(distance)
    total = np.zeros(vectors.shape[0], dtype=np.float64)
    if distance == "cosine":
        blocks, parts = query_blocks(vectors, query_rows, norms)
        for part in parts:
            similarity = vectors[:, part, :].astype(dtype, copy=False) @ blocks[part].astype(dtype)
            total += 1.0 - similarity
    else:
        means, parts = query_means(vectors, norms, query_rows)
        for part in parts:
            raw = vectors[:, part, :].astype(dtype, copy=True)
            if norms is not None:
                raw *= np.asarray(norms[:, part], dtype=dtype)[:, None]
            total += np.linalg.norm(raw - means[part].astype(dtype), axis=1)
    return _tie_round(total / len(parts))


def _tie_round(distances: np.ndarray) -> np.ndarray:
    """Distances rounded to :data:`TIE_DECIMALS` so that mathematically equal ones compare equal in every path."""
    return np.round(distances, TIE_DECIMALS)


def search_songs_numpy(vectors: np.ndarray, song_of_row: np.ndarray, query_rows: Sequence[tuple[int, int]],
                       k: int = THESIS_K, excluded_songs: Sequence[int] = (),
                       dtype: type = np.float64, norms: np.ndarray | None = None,
                       distance: str = "cosine") -> list[tuple[int, float, int]]:
    """Reference song retrieval: eq. 6.1-6.2 per segment, minimum per song, ascending, top ``k``.

    Args:
        vectors: ``(n_segments, n_parts, D)`` unit-or-zero part vectors.
        song_of_row: song index of each row (grouped, see :func:`song_bounds`).
        query_rows: ``(segment row, part column)`` of every stem query.
        k: songs returned (fewer when fewer songs are left).
        excluded_songs: song indices left out of the results.
        dtype: Precision of the dot products (float64 = the exact reference the FAISS path equals; float32 = the
            fast plain-numpy baseline of the benchmark, equal up to float32 rounding).
        norms: ``(n_segments, n_parts)`` raw norms of the vectors (``None``: the vectors are raw).
        distance: ``cosine`` or ``euclidean`` (:data:`DISTANCES`).

    Returns:
        ``(song index, distance, best segment row)`` per song, best first.
    """
    k = check_k(k)
    first, counts = song_bounds(song_of_row)
    distances = segment_distances_numpy(vectors, query_rows, dtype, norms, distance)
    minima = np.minimum.reduceat(distances, first)
    reached = np.flatnonzero(distances == np.repeat(minima, counts))
    # The first (earliest) segment reaching a song's minimum.
    _, first_hit = np.unique(np.asarray(song_of_row)[reached], return_index=True)
    best_rows = reached[first_hit]
    if len(excluded_songs):
        minima = minima.copy()
        minima[np.asarray(list(excluded_songs), dtype=np.int64)] = np.inf
    order = np.lexsort((np.arange(minima.size), minima))
    order = order[np.isfinite(minima[order])][:k]
    return [(int(song), float(minima[song]), int(best_rows[song])) for song in order]


def similar_stems_numpy(vectors: np.ndarray, song_of_row: np.ndarray, present: np.ndarray, row: int, part: int,
                        k: int = THESIS_K, dtype: type = np.float64, norms: np.ndarray | None = None,
                        distance: str = "cosine") -> list[tuple[int, float]]:
    """Reference similar-stem search: distance in one part to every segment of other songs having that part.

    ``dtype``, ``norms`` and ``distance`` as in :func:`search_songs_numpy`.

    Returns:
        ``(segment row, distance)``, nearest first (ties: lower row first), at most ``k``.
    """
    k = check_k(k)
    distances = segment_distances_numpy(vectors, [(row, part)], dtype, norms, check_distance(distance))
    song_of_row = np.asarray(song_of_row)
    allowed = np.asarray(present[:, part], dtype=bool) & (song_of_row != song_of_row[row])
    candidates = np.flatnonzero(allowed)
    order = candidates[np.lexsort((candidates, distances[candidates]))][:k]
    return [(int(candidate), float(distances[candidate])) for candidate in order]
