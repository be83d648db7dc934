"""Eq. 6.1-6.2 on raw embeddings (``partsim_core.mixquery.ranking``): the mean of *raw* query embeddings (not of
normalised ones), cosine and Euclidean distances by hand, minimum over segments, and the cached catalog embeddings
(parts a song lacks are zero; the embedding path is the one of ``partsim_core.embed``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_mixquery_index import CATALOG_SONGS, make_catalog, tiny_backend

from partsim_core import INSTRUMENTS
from partsim_core.data.segments import segment_starts
from partsim_core.errors import PartsimError
from partsim_core.mixquery.catalog import Catalog, segment_bounds
from partsim_core.mixquery.ranking import (
    CatalogEmbeddings,
    catalog_embeddings,
    part_distances,
    query_means,
    rank_songs,
    segment_distances,
)
from partsim_core.mixquery.search import StemQuery


def embeddings(vectors: list[list[list[float]]], counts: list[int], parts=("drums", "bass")) -> CatalogEmbeddings:
    songs = [f"S{number}" for number in range(len(counts))]
    return CatalogEmbeddings(songs, tuple(parts), np.asarray(vectors, dtype=np.float32),
                             np.repeat(np.arange(len(counts)), counts), np.r_[0, np.cumsum(counts)[:-1]])


def test_eq_6_1_averages_raw_embeddings():
    # Two drum queries of very different norms: the raw mean (5, 0.5) points along the loud one; the mean of the
    # normalised vectors would be (0.5, 0.5).
    vectors = [[[10.0, 0.0], [0, 0]], [[0.0, 1.0], [0, 0]], [[1.0, 0.1], [0, 0]], [[1.0, 1.0], [0, 0]]]
    emb = embeddings(vectors, [1, 1, 1, 1])
    means = query_means(emb.vectors, [(0, 0), (1, 0)])
    np.testing.assert_allclose(means[0], [5.0, 0.5])
    hits = rank_songs(emb, [StemQuery("S0", "drums", 0), StemQuery("S1", "drums", 0)], "cosine")
    assert [hit.song for hit in hits] == ["S2", "S3"]  # S2 is parallel to the raw mean; S3 to the normalised one
    assert hits[0].distance == pytest.approx(0.0, abs=1e-9)
    assert hits[1].distance == pytest.approx(1 - 5.5 / (np.hypot(5, 0.5) * np.sqrt(2)))
    with pytest.raises(PartsimError, match="empty"):
        query_means(emb.vectors, [])


def test_distances_by_hand():
    candidates = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [-3.0, -4.0]])
    query = np.array([3.0, 4.0])
    np.testing.assert_allclose(part_distances(candidates, query, "euclidean"), [5.0, 0.0, 5.0, 10.0])
    np.testing.assert_allclose(part_distances(candidates, query, "cosine"), [1.0, 0.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(part_distances(candidates, np.zeros(2), "cosine"), [1.0] * 4)
    with pytest.raises(PartsimError, match="unknown distance 'manhattan'"):
        part_distances(candidates, query, "manhattan")


def test_eq_6_2_mean_over_parts_and_minimum_over_segments():
    # Song S0 (query source, 1 segment), S1 with 2 segments, S2 with 1 segment; parts drums, bass.
    vectors = [[[1, 0], [0, 1]],                   # S0: the query's drums and bass
               [[0, 1], [0, 1]], [[1, 0], [1, 0]],  # S1: segment 0 matches bass, segment 1 matches drums
               [[1, 1], [0, 1]]]                   # S2
    emb = embeddings(vectors, [1, 2, 1])
    rows = [(0, 0), (0, 1)]
    distances = segment_distances(emb.vectors, rows, "euclidean")
    np.testing.assert_allclose(distances, [0.0, (np.sqrt(2) + 0) / 2, (0 + np.sqrt(2)) / 2, (1 + 0) / 2])
    hits = rank_songs(emb, [StemQuery("S0", "drums", 0), StemQuery("S0", "bass", 0)], "euclidean")
    assert [(hit.song, hit.best_segment) for hit in hits] == [("S2", 0), ("S1", 0)]  # S1: tie, earlier segment
    assert hits[0].distance == pytest.approx(0.5)
    kept = rank_songs(emb, [StemQuery("S0", "drums", 0)], "cosine", exclude_query_songs=False)
    assert kept[0].song == "S0" and kept[0].distance == pytest.approx(0.0)
    with pytest.raises(PartsimError, match="segments 0..1, not 2"):
        rank_songs(emb, [StemQuery("S1", "drums", 2)])


def test_catalog_segments_use_the_data_grid():
    rate = 1000
    for samples in (0, 2500, 10_000, 12_000, 25_000):
        full = segment_starts(samples, rate, 10.0, overlap=False)
        bounds = segment_bounds(samples, rate, 10.0, min_seconds=3.0)
        assert [start for start, _ in bounds[:len(full)]] == list(full)
        rest = samples - len(full) * 10_000
        assert len(bounds) == len(full) + (1 if rest >= 3000 else 0)


def test_catalog_embeddings_are_raw_cached_and_zero_where_a_part_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    root = make_catalog(tmp_path / "catalog", CATALOG_SONGS)
    backend = tiny_backend()
    catalog = Catalog(root, sample_rate=backend.sample_rate)
    with pytest.warns(UserWarning, match="Track00003"):
        first = catalog_embeddings(catalog, backend)
    assert first.songs == ["Track00001", "Track00002", "Track00004"]
    assert first.vectors.shape == (6, len(INSTRUMENTS), backend.dim)
    with pytest.warns(UserWarning, match="Track00003"):
        song, _ = catalog.plan(backend.min_seconds)
    raw = backend.embed_song(catalog, song[0])
    np.testing.assert_allclose(first.vectors[:2], raw, rtol=1e-5, atol=1e-6)  # raw, not normalised
    bass = INSTRUMENTS.index("bass")
    rows = first.song_of_row == 1
    assert not first.vectors[rows, bass].any() and first.vectors[rows].any()  # Track00002 has no bass
    again = catalog_embeddings(catalog, backend)  # reused from the artefact cache (no warning, same numbers)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert len(list((tmp_path / "cache" / "mixquery-embeddings").iterdir())) == 1
