"""The retrieval function of thesis 6.3.4 on raw embeddings, with the distance as a choice: eq. 6.1 as written.

* **Eq. 6.1.** For each part ``i`` in the query set, the query representation is the mean of the *raw* feature
  embeddings of its stem queries, ``y_i = (1 / N_i) sum_n x_n`` (not of their normalised versions).
* **Eq. 6.2.** The distance of a catalog segment is the mean over the query's parts ``I`` of ``d(y_i, y'_i)``;
  a song's distance is the minimum over its segments (that segment is its ``best_segment``); songs are ranked
  ascending, ties to the earlier song in catalog order.
* **d.** ``cosine`` (the thesis: ``1 - y.y' / (|y| |y'|)``, 1 when either vector is zero) or ``euclidean``
  (``|y - y'|``). The CSN is trained with Euclidean distance and its subspace norms carry whether a part is
  present, so for the CSN the distance is chosen by measured recall on validation pseudo pieces
  (:mod:`partsim_core.mixquery.run`); the other backends use the thesis's cosine.

Parts a song has no stem of are zero vectors (as in the index). The embeddings of a catalog are computed once per
backend and catalog and kept as an artefact (:func:`catalog_embeddings`, key: backend, model hash, catalog split and
segment settings, plus the catalog's audio fingerprint).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.data.artefacts import cached_artefact
from partsim_core.errors import PartsimError
from partsim_core.mixquery.backends import EmbeddingBackend, song_embeddings
from partsim_core.mixquery.catalog import Catalog
from partsim_core.mixquery.search import SongHit, StemQuery

#: Distances of eq. 6.2 this module computes; the thesis's first.
DISTANCES: tuple[str, ...] = ("cosine", "euclidean")

#: Norms at most this count as zero vectors (cosine distance 1 to everything).
ZERO_NORM = 1e-12

#: Decimals distances are rounded to before ranking, so that equal distances tie exactly (lower index first).
TIE_DECIMALS = 12

#: Bump when the stored embeddings' layout changes.
EMBEDDINGS_FORMAT = 1


@dataclass
class CatalogEmbeddings:
    """Raw embeddings of every segment and part of a catalog.

    Attributes:
        songs: Song ids in catalog order.
        parts: Parts of the columns.
        vectors: float32 ``(n_segments, n_parts, D)``, rows grouped by song; zero where the song lacks the part.
        song_of_row: Song index of every row.
        first_row: First row of every song.
    """

    songs: list[str]
    parts: tuple[str, ...]
    vectors: np.ndarray
    song_of_row: np.ndarray
    first_row: np.ndarray

    def row(self, query: StemQuery) -> tuple[int, int]:
        """``(row, part column)`` of a stem query.

        Raises:
            PartsimError: an unknown song, part or segment.
        """
        try:
            song = self.songs.index(query.song)
        except ValueError:
            raise PartsimError(f"unknown song {query.song!r} in a stem query") from None
        if query.part not in self.parts:
            raise PartsimError(f"unknown part {query.part!r}; these embeddings have {', '.join(self.parts)}")
        count = int(np.count_nonzero(self.song_of_row == song))
        if not 0 <= query.segment < count:
            raise PartsimError(f"song {query.song} has segments 0..{count - 1}, not {query.segment}")
        return int(self.first_row[song]) + int(query.segment), self.parts.index(query.part)


def catalog_embeddings(catalog: Catalog, backend: EmbeddingBackend, progress: bool = False,
                       fresh: bool = False) -> CatalogEmbeddings:
    """Raw embeddings of a catalog by ``backend`` (computed, or reused from the artefact cache).

    Raises:
        PartsimError: a catalog at another rate than the backend's, no usable song, or embeddings of the wrong
            shape or not finite (the message names the song).
    """
    if catalog.sample_rate != backend.sample_rate:
        raise PartsimError(f"catalog served at {catalog.sample_rate} Hz but backend {backend.name!r} reads "
                           f"{backend.sample_rate} Hz audio")
    config = {"format": EMBEDDINGS_FORMAT, "backend": backend.name, "model": backend.model_hash,
              "split": catalog.split, "segment_seconds": catalog.segment_seconds,
              "min_seconds": float(backend.min_seconds), "sample_rate": int(catalog.sample_rate)}

    def compute(folder: Path) -> None:
        songs, _ = catalog.plan(backend.min_seconds)
        if not songs:
            raise PartsimError(f"catalog {catalog.root.name} has no song of at least {backend.min_seconds:g} s")
        parts = tuple(backend.parts)
        blocks = []
        for song in tqdm(songs, desc=f"embedding ({backend.name})", unit="song", disable=not progress):
            raw = song_embeddings(backend, catalog, song, dtype=np.float32)
            lacking = [column for column, part in enumerate(parts)
                       if part in INSTRUMENTS and part not in song.stem_parts]
            raw[:, lacking] = 0.0
            blocks.append(raw)
        np.save(folder / "vectors.npy", np.concatenate(blocks), allow_pickle=False)
        (folder / "songs.json").write_text(json.dumps({"parts": list(parts), "songs": [
            [song.song_id, len(song.segments)] for song in songs]}), encoding="utf-8")

    folder = cached_artefact("mixquery-embeddings", config, catalog.fingerprint(), compute, fresh=fresh)
    listing = json.loads((folder / "songs.json").read_text(encoding="utf-8"))
    songs = [str(song) for song, _ in listing["songs"]]
    counts = np.array([count for _, count in listing["songs"]], dtype=np.int64)
    return CatalogEmbeddings(songs, tuple(listing["parts"]), np.load(folder / "vectors.npy", allow_pickle=False),
                             np.repeat(np.arange(len(songs)), counts), np.r_[0, np.cumsum(counts)[:-1]])


def query_means(vectors: np.ndarray, query_rows: Sequence[tuple[int, int]]) -> dict[int, np.ndarray]:
    """Eq. 6.1: ``{part column: y_i}``, the mean of the raw embeddings of the query's stems of each part.

    Raises:
        PartsimError: an empty query set.
    """
    if not query_rows:
        raise PartsimError("the query set is empty: add at least one stem query")
    grouped: dict[int, list[np.ndarray]] = {}
    for row, part in query_rows:
        grouped.setdefault(int(part), []).append(np.asarray(vectors[row, part], dtype=np.float64))
    return {part: np.mean(rows, axis=0) for part, rows in sorted(grouped.items())}


def part_distances(candidates: np.ndarray, query: np.ndarray, distance: str) -> np.ndarray:
    """``d(y, y')`` of one query vector ``(D,)`` to every row of ``candidates`` ``(n, D)``.

    Raises:
        PartsimError: an unknown distance.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    if distance == "euclidean":
        return np.linalg.norm(candidates - query[None, :], axis=1)
    if distance != "cosine":
        raise PartsimError(f"unknown distance {distance!r}; choose one of: {', '.join(DISTANCES)}")
    norms = np.linalg.norm(candidates, axis=1)
    query_norm = float(np.linalg.norm(query))
    if query_norm <= ZERO_NORM:
        return np.ones(candidates.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = candidates @ query / (norms * query_norm)
    return np.where(norms > ZERO_NORM, 1.0 - similarity, 1.0)


def segment_distances(vectors: np.ndarray, query_rows: Sequence[tuple[int, int]], distance: str = "cosine"
                      ) -> np.ndarray:
    """Eq. 6.2 for every segment row: mean over the query's parts of ``d(y_i, y'_i)``."""
    means = query_means(vectors, query_rows)
    total = np.zeros(vectors.shape[0], dtype=np.float64)
    for part, mean in means.items():
        total += part_distances(vectors[:, part, :], mean, distance)
    return np.round(total / len(means), TIE_DECIMALS)


def rank_songs(embeddings: CatalogEmbeddings, queries: Sequence[StemQuery], distance: str = "cosine",
               exclude_query_songs: bool = True) -> list[SongHit]:
    """Every song ranked by eq. 6.1-6.2 for a query set (its own songs left out when ``exclude_query_songs``)."""
    rows = [embeddings.row(query) for query in queries]
    distances = segment_distances(embeddings.vectors, rows, distance)
    minima = np.minimum.reduceat(distances, embeddings.first_row)
    excluded = {query.song for query in queries} if exclude_query_songs else set()
    order = np.lexsort((np.arange(minima.size), minima))
    hits = []
    for song in order:
        if embeddings.songs[song] in excluded:
            continue
        own = distances[embeddings.song_of_row == song]
        hits.append(SongHit(embeddings.songs[song], float(minima[song]), int(np.argmin(own))))
    return hits
