"""Chapter 6 (``partsim_core.mixquery``): MixQuery search against plain numpy and a literal eq. 6.1-6.2 loop, the
index on disk (round trip, refusals, atomicity) on a tiny synthetic catalog with a tiny untrained CSN, and the
backend registry's refusals."""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_slakh import write_track

from partsim_core import INSTRUMENTS
from partsim_core.csn.network import build_csn_model
from partsim_core.errors import PartsimError
from partsim_core.mixquery import (
    CSNBackend,
    MixQueryIndex,
    SongHit,
    StemHit,
    StemQuery,
    build_index,
    get_backend,
    search_songs_numpy,
    segment_bounds,
    similar_stems_numpy,
)
from partsim_core.mixquery.catalog import Catalog
from partsim_core.mixquery.manifest import (
    FORMAT_VERSION,
    INDEX_FILE,
    PRESENT_FILE,
    VECTORS_FILE,
)
from partsim_core.presets import get_preset

RATE = 16000  # the smoke preset's front-end rate: the stem cache does not resample

# Programs of the slakh-utils recipe: drums 128 (is_drum), bass 32-39, piano 0-7, guitar 24-31, others = the rest.
PROGRAMS = {"drums": 0, "bass": 33, "piano": 0, "guitar": 25, "others": 81}


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def random_index(seed: int = 0, n_songs: int = 60, dim: int = 16, max_segments: int = 9,
                 absent_share: float = 0.0, coarse: str = "fp16", shards: int | None = None) -> MixQueryIndex:
    """An in-memory index of random unit vectors (no ties), songs of 1..max_segments segments."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_segments + 1, n_songs)
    vectors = rng.standard_normal((int(counts.sum()), len(INSTRUMENTS), dim)).astype(np.float32)
    song_present = rng.random((n_songs, len(INSTRUMENTS))) >= absent_share
    song_present[:, 0] = True  # every song has drums: queries of part 0 always work
    present = np.repeat(song_present, counts, axis=0)
    vectors[~present] = 0.0
    songs = [f"song{number:03d}" for number in range(n_songs)]
    segments = [[(10 * j, 10 * (j + 1)) for j in range(count)] for count in counts]
    return MixQueryIndex.from_arrays(vectors, songs, segments, sample_rate=1, present=present, coarse=coarse,
                                     shards=shards)


def random_queries(index: MixQueryIndex, rng: np.random.Generator, parts: list[str]) -> list[StemQuery]:
    """One stem query per part in ``parts`` (repeats allowed), from random songs having that stem."""
    queries = []
    for part in parts:
        while True:
            song = index.songs[int(rng.integers(len(index.songs)))]
            if index.has_part_audio(song, part):
                break
        queries.append(StemQuery(song, part, int(rng.integers(len(index.segments(song))))))
    return queries


def rows_of(index: MixQueryIndex, queries: list[StemQuery]) -> list[tuple[int, int]]:
    return [index.query_row(query) for query in queries]


def numpy_song_hits(index: MixQueryIndex, queries: list[StemQuery], k: int, exclude: bool = False) -> list[SongHit]:
    """The numpy reference's results as SongHits."""
    rows = rows_of(index, queries)
    excluded = sorted({int(index.song_of_row[row]) for row, _ in rows}) if exclude else []
    return [SongHit(index.songs[song], distance, int(best - index.first_row[song]))
            for song, distance, best in search_songs_numpy(index.vectors, index.song_of_row, rows, k, excluded,
                                                                   norms=index.norms)]


def assert_same_songs(found: list[SongHit], expected: list[SongHit]) -> None:
    assert [hit.song for hit in found] == [hit.song for hit in expected]
    assert [hit.best_segment for hit in found] == [hit.best_segment for hit in expected]
    np.testing.assert_allclose([hit.distance for hit in found], [hit.distance for hit in expected], atol=1e-5)


def raw(index: MixQueryIndex, row: int, column: int) -> np.ndarray:
    """The raw embedding of one row and part: the stored unit vector times its stored norm."""
    return index.vectors[row, column].astype(float) * float(index.norms[row, column])


def literal_eq_6_2(index: MixQueryIndex, queries: list[StemQuery]) -> dict[str, tuple[float, int]]:
    """Eq. 6.1-6.2 written out with loops: song -> (distance, best segment). Independent of search.py."""
    def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        return 1.0 if norms == 0.0 else 1.0 - float(np.dot(a, b)) / norms

    by_part: dict[str, list[np.ndarray]] = {}
    for query in queries:
        row = int(index.first_row[index.songs.index(query.song)]) + query.segment
        column = index.parts.index(query.part)
        by_part.setdefault(query.part, []).append(raw(index, row, column))
    averaged = {part: np.mean(vectors, axis=0) for part, vectors in by_part.items()}  # eq. 6.1 (raw embeddings)
    result = {}
    for number, song in enumerate(index.songs):
        best = (np.inf, -1)
        for segment in range(len(index.segments(song))):
            row = int(index.first_row[number]) + segment
            distance = np.mean([cosine_distance(y, raw(index, row, index.parts.index(part)))
                                for part, y in averaged.items()])  # eq. 6.2
            if distance < best[0]:
                best = (float(distance), segment)
        result[song] = best
    return result


def tiny_backend(seed: int = 0) -> CSNBackend:
    """An untrained CSN of width 2 on the smoke front end (16 kHz, 64 mels)."""
    frontend = get_preset("smoke").frontend
    torch.manual_seed(seed)
    return CSNBackend(build_csn_model(frontend.n_mels, width=2), frontend, model_hash=f"tiny-csn-{seed}",
                      preset="smoke")


def song_parts(seconds: float, number: int, parts: tuple[str, ...] = INSTRUMENTS) -> dict[str, dict]:
    """Stems of one song: noise-burst drums and tones whose pitch depends on the song number."""
    rng = np.random.default_rng(number)
    t = np.arange(int(seconds * RATE)) / RATE
    signals = {
        "drums": 0.2 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * (1 + number) * t) > 0.5),
        "bass": 0.2 * np.sin(2 * np.pi * (50 + 7 * number) * t),
        "piano": 0.1 * np.sin(2 * np.pi * (260 + 13 * number) * t),
        "guitar": 0.1 * (2 * (((190 + 11 * number) * t) % 1.0) - 1),
        "others": 0.05 * np.sin(2 * np.pi * (1500 + 100 * number) * t),
    }
    return {f"S{index:02d}": {"program": PROGRAMS[part], "is_drum": part == "drums",
                              "audio": signals[part].astype(np.float32)}
            for index, part in enumerate(INSTRUMENTS) if part in parts}


def make_catalog(root: Path, songs: list[tuple[float, tuple[str, ...]]], split: str = "test") -> Path:
    """A Slakh-format root with one track per ``(seconds, parts)`` in ``split``."""
    for number, (seconds, parts) in enumerate(songs, start=1):
        write_track(root / split / f"Track{number:05d}", song_parts(seconds, number, parts), sample_rate=RATE)
    return root


#: 12 s (2 segments: 10 s + 2 s), 25 s without bass (10 + 10 + 5 s), 0.5 s (too short: skipped), 10 s exactly.
CATALOG_SONGS = [(12.0, INSTRUMENTS), (25.0, ("drums", "piano", "guitar", "others")), (0.5, INSTRUMENTS),
                 (10.0, INSTRUMENTS)]


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PARTSIM_CACHE", str(folder))
    return folder


@pytest.fixture()
def catalog_root(tmp_path, cache) -> Path:
    return make_catalog(tmp_path / "catalog", CATALOG_SONGS)


# --------------------------------------------------------------------------------------------------------------
# search maths
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("coarse", "shards"), [("fp16", 1), ("fp16", 3), ("flat", None)])
@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_song_search_equals_numpy(n_parts, coarse, shards):
    index = random_index(seed=n_parts, absent_share=0.2, coarse=coarse, shards=shards)
    rng = np.random.default_rng(100 + n_parts)
    for _ in range(15):
        parts = [str(part) for part in rng.choice(INSTRUMENTS, size=n_parts, replace=False)]
        queries = random_queries(index, rng, parts)
        for k in (1, 7, 100):
            assert_same_songs(index.search_songs(queries, k=k), numpy_song_hits(index, queries, k))
    # k beyond the catalog: every song, once.
    found = index.search_songs(queries, k=1000)
    assert sorted(hit.song for hit in found) == sorted(index.songs)


@pytest.mark.parametrize(("coarse", "shards"), [("fp16", 1), ("fp16", 4), ("flat", None)])
def test_song_search_is_exact_when_the_best_segments_crowd_into_few_songs(coarse, shards):
    # Songs of 40 near-identical segments: FAISS's first top-K segments cover few songs, so the search has to widen
    # K (and, excluding the query songs, skip their crowded segments) before the top k songs are certain.
    rng = np.random.default_rng(21)
    n_songs, per_song, dim = 150, 40, 8
    centres = rng.standard_normal((n_songs, 1, len(INSTRUMENTS), dim))
    vectors = (centres + 0.01 * rng.standard_normal((n_songs, per_song, len(INSTRUMENTS), dim))).reshape(
        n_songs * per_song, len(INSTRUMENTS), dim).astype(np.float32)
    songs = [f"s{number}" for number in range(n_songs)]
    index = MixQueryIndex.from_arrays(vectors, songs, [[(0, 1)] * per_song] * n_songs, sample_rate=1,
                                      coarse=coarse, shards=shards)
    for seed in range(4):
        queries = random_queries(index, np.random.default_rng(seed), ["drums", "bass", "bass"][:seed % 3 + 1])
        for k, exclude in ((100, False), (100, True), (149, True), (3, True)):
            assert_same_songs(index.search_songs(queries, k=k, exclude_query_songs=exclude),
                              numpy_song_hits(index, queries, k, exclude))


@pytest.mark.parametrize("coarse", ["fp16", "flat"])
def test_exact_ties_go_to_the_earlier_song_and_segment(coarse):
    # 60 songs hold an exact copy of the query's drums vector in a random segment: they all tie at distance 0, so
    # which of them are returned must follow catalog order, not FAISS's heap order.
    index = random_index(seed=13, n_songs=200, max_segments=6)
    query = StemQuery(index.songs[0], "drums", 0)
    row = index.query_row(query)[0]
    vectors = index.vectors.copy()
    rng = np.random.default_rng(13)
    copies = sorted(rng.choice(np.arange(1, 200), size=60, replace=False))
    planted_rows = {}
    for song in copies:
        segment = int(rng.integers(len(index.segments(index.songs[song]))))
        planted_rows[index.songs[song]] = segment
        vectors[int(index.first_row[song]) + segment, 0] = vectors[row, 0]
    tied = MixQueryIndex.from_arrays(vectors, index.songs, [[(0, 1)] * len(index.segments(s)) for s in index.songs],
                                     sample_rate=1, coarse=coarse)
    similar = tied.similar_stems(query, k=25)
    assert [(hit.song, hit.segment) for hit in similar] == [
        (index.songs[song], planted_rows[index.songs[song]]) for song in copies[:25]]
    assert all(hit.distance == pytest.approx(0.0, abs=1e-6) for hit in similar)
    songs = tied.search_songs([query], k=25, exclude_query_songs=True)
    assert [hit.song for hit in songs] == [index.songs[song] for song in copies[:25]]
    assert_same_songs(songs, numpy_song_hits(tied, [query], 25, exclude=True))


@pytest.mark.parametrize("coarse", ["fp16", "flat"])
def test_search_is_exact_when_distances_differ_by_less_than_the_coarse_error(coarse):
    # 600 one-segment songs whose distances to the query all lie within 1e-4 (spacing ~1e-7): FAISS's coarse
    # scores (half-precision error up to ~5e-4; float32 ~1e-7) shuffle them, so only the error margin makes the
    # search widen until the exact top k is certain.
    rng = np.random.default_rng(17)
    n_songs, dim = 600, 16
    query = rng.standard_normal(dim)
    query /= np.linalg.norm(query)
    vectors = rng.standard_normal((n_songs, len(INSTRUMENTS), dim))
    orthogonal = vectors[:, 0] - np.outer(vectors[:, 0] @ query, query)
    orthogonal /= np.linalg.norm(orthogonal, axis=1, keepdims=True)
    cosine = 0.7 - 1e-4 * rng.random(n_songs)
    cosine[0] = 1.0  # song 0 holds the query itself
    vectors[:, 0] = cosine[:, None] * query + np.sqrt(1 - cosine ** 2)[:, None] * orthogonal
    songs = [f"s{number}" for number in range(n_songs)]
    index = MixQueryIndex.from_arrays(vectors.astype(np.float32), songs, [[(0, 1)]] * n_songs, sample_rate=1,
                                      coarse=coarse)
    stem = StemQuery("s0", "drums", 0)
    for k in (20, 50):
        assert_same_songs(index.search_songs([stem], k=k, exclude_query_songs=True),
                          numpy_song_hits(index, [stem], k, exclude=True))
        row, column = index.query_row(stem)
        expected = similar_stems_numpy(index.vectors, index.song_of_row, index.present, row, column, k,
                                       norms=index.norms)
        assert [(hit.song, hit.segment) for hit in index.similar_stems(stem, k=k)] == [
            (songs[r], 0) for r, _ in expected]


def test_shards_split_the_rows_and_bad_counts_are_refused():
    # More shards than rows are clipped; the flat coarse index is never sharded.
    tiny = random_index(seed=5, n_songs=2, max_segments=1, shards=8)
    assert tiny.shards == 2
    assert random_index(seed=5, coarse="flat", shards=3).shards == 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(PartsimError, match="shards"):
            random_index(seed=5, shards=bad)


def test_a_zero_query_vector_is_at_distance_1_from_everything():
    index = random_index(seed=19, n_songs=30)
    vectors = index.vectors.copy()
    vectors[0, 2] = 0.0  # the backend gave a zero piano vector for song 0's first segment (stem present)
    zero = MixQueryIndex.from_arrays(vectors, index.songs, [[(0, 1)] * len(index.segments(s)) for s in index.songs],
                                     sample_rate=1)
    query = StemQuery(index.songs[0], "piano", 0)
    hits = zero.search_songs([query], k=5, exclude_query_songs=True)
    assert [hit.distance for hit in hits] == [1.0] * 5
    assert [(hit.song, hit.best_segment) for hit in hits] == [(song, 0) for song in index.songs[1:6]]
    assert_same_songs(hits, numpy_song_hits(zero, [query], 5, exclude=True))
    row, column = zero.query_row(query)
    assert [(hit.song, hit.segment, hit.distance) for hit in zero.similar_stems(query, k=3)] == [
        (zero.songs[zero.song_of_row[r]], int(r - zero.first_row[zero.song_of_row[r]]), d)
        for r, d in similar_stems_numpy(zero.vectors, zero.song_of_row, zero.present, row, column, 3,
                                        norms=zero.norms)]


def test_numpy_reference_and_faiss_equal_a_literal_eq_6_2_loop():
    index = random_index(seed=7, n_songs=25, dim=8, absent_share=0.3)
    rng = np.random.default_rng(7)
    for parts in (["drums"], ["drums", "bass"], ["drums", "piano", "drums"], ["others", "guitar", "bass"]):
        queries = random_queries(index, rng, parts)
        literal = literal_eq_6_2(index, queries)
        expected = sorted(literal, key=lambda song: (literal[song][0], index.songs.index(song)))
        for hits in (index.search_songs(queries, k=25), numpy_song_hits(index, queries, 25)):
            assert [hit.song for hit in hits] == expected
            for hit in hits:
                assert hit.distance == pytest.approx(literal[hit.song][0], abs=1e-6)
                assert hit.best_segment == literal[hit.song][1]


@pytest.mark.parametrize("coarse", ["fp16", "flat"])
def test_similar_stems_equal_numpy_other_songs_with_that_stem_only(coarse):
    index = random_index(seed=3, n_songs=80, absent_share=0.3, coarse=coarse)
    rng = np.random.default_rng(3)
    for part in INSTRUMENTS:
        if not any(index.has_part_audio(song, part) for song in index.songs):
            continue
        query = random_queries(index, rng, [part])[0]
        row, column = index.query_row(query)
        for k in (1, 10, 100, 10_000):
            found = index.similar_stems(query, k=k)
            expected = similar_stems_numpy(index.vectors, index.song_of_row, index.present, row, column, k,
                                       norms=index.norms)
            assert [(hit.song, hit.segment) for hit in found] == [
                (index.songs[index.song_of_row[r]], int(r - index.first_row[index.song_of_row[r]]))
                for r, _ in expected]
            np.testing.assert_allclose([hit.distance for hit in found], [d for _, d in expected], atol=1e-5)
            assert all(isinstance(hit, StemHit) for hit in found)
            assert query.song not in {hit.song for hit in found}
            assert all(index.has_part_audio(hit.song, part) for hit in found)
            distances = [hit.distance for hit in found]
            assert distances == sorted(distances)
        # Brute force over all candidates: cosine distances computed directly.
        candidates = [(song, segment) for song in index.songs if song != query.song
                      and index.has_part_audio(song, part) for segment in range(len(index.segments(song)))]
        assert len(index.similar_stems(query, k=10_000)) == len(candidates)


def test_best_segment_is_where_the_song_matches():
    index = random_index(seed=11, n_songs=40, max_segments=8)
    drums = StemQuery(index.songs[0], "drums", 0)
    bass = StemQuery(index.songs[1], "bass", 0)
    # Plant the two query stems in segment 3 of a song with at least 4 segments: its distance becomes 0 there.
    target = next(song for song in index.songs[2:] if len(index.segments(song)) >= 4)
    vectors = index.vectors.copy()
    start = int(index.first_row[index.songs.index(target)])
    vectors[start + 3, 0] = vectors[index.query_row(drums)[0], 0]
    vectors[start + 3, 1] = vectors[index.query_row(bass)[0], 1]
    planted = MixQueryIndex.from_arrays(vectors, index.songs, [[(0, 1)] * len(index.segments(s)) for s in index.songs],
                                        sample_rate=1)
    hits = planted.search_songs([drums, bass], k=5)
    assert hits[0] == SongHit(target, pytest.approx(0.0, abs=1e-6), 3)
    assert_same_songs(hits, numpy_song_hits(planted, [drums, bass], 5))


def test_query_songs_are_shown_by_default_and_excluded_on_request():
    index = random_index(seed=5, n_songs=50)
    query = StemQuery(index.songs[4], "piano", 1) if len(index.segments(index.songs[4])) > 1 else \
        StemQuery(index.songs[4], "piano", 0)
    shown = index.search_songs([query], k=10)
    # The thesis's app keeps query songs: a stem is at distance 0 from itself.
    assert shown[0].song == query.song and shown[0].best_segment == query.segment
    assert shown[0].distance == pytest.approx(0.0, abs=1e-6)
    excluded = index.search_songs([query], k=10, exclude_query_songs=True)
    assert query.song not in [hit.song for hit in excluded]
    assert_same_songs(excluded, numpy_song_hits(index, [query], 10, exclude=True))
    assert [hit.song for hit in excluded] == [hit.song for hit in shown[1:]] + [excluded[-1].song]


def test_two_queries_of_one_part_are_averaged_eq_6_1():
    index = random_index(seed=9, n_songs=30, dim=8)
    first, second = StemQuery(index.songs[0], "guitar", 0), StemQuery(index.songs[1], "guitar", 0)
    a = index.vectors[index.query_row(first)[0], 3].astype(float)
    b = index.vectors[index.query_row(second)[0], 3].astype(float)
    mean = (a + b) / 2
    # Plant the normalised average in a third song: it is then at distance 0 (and only the average does that).
    vectors = index.vectors.copy()
    vectors[int(index.first_row[2]), 3] = mean / np.linalg.norm(mean)
    planted = MixQueryIndex.from_arrays(vectors, index.songs, [[(0, 1)] * len(index.segments(s)) for s in index.songs],
                                        sample_rate=1)
    hits = planted.search_songs([first, second], k=30)
    assert hits[0].song == index.songs[2] and hits[0].distance == pytest.approx(0.0, abs=1e-6)
    # Distances of the query songs themselves: 1 - cos(mean, a) = 1 - |a + b| / 2 for unit a and b.
    by_song = {hit.song: hit.distance for hit in hits}
    assert by_song[index.songs[0]] <= 1 - np.linalg.norm(a + b) / 2 + 1e-6
    assert_same_songs(hits, numpy_song_hits(planted, [first, second], 30))


def test_unknown_song_part_segment_and_bad_queries_are_refused():
    index = random_index(seed=1, n_songs=10, absent_share=0.5)
    song = index.songs[0]
    with pytest.raises(PartsimError, match="unknown song 'nope'"):
        index.search_songs([StemQuery("nope", "drums", 0)])
    with pytest.raises(PartsimError, match="unknown part 'vocals'"):
        index.similar_stems(StemQuery(song, "vocals", 0))
    count = len(index.segments(song))
    with pytest.raises(PartsimError, match=f"has no segment {count}"):
        index.search_songs([StemQuery(song, "drums", count)])
    with pytest.raises(PartsimError, match="has no segment -1"):
        index.search_songs([StemQuery(song, "drums", -1)])
    with pytest.raises(PartsimError, match="query set is empty"):
        index.search_songs([])
    with pytest.raises(PartsimError, match="k must be a positive integer"):
        index.search_songs([StemQuery(song, "drums", 0)], k=0)
    absent = next((s, p) for s in index.songs for p in INSTRUMENTS if not index.has_part_audio(s, p))
    with pytest.raises(PartsimError, match=f"has no {absent[1]} stem"):
        index.similar_stems(StemQuery(absent[0], absent[1], 0))
    with pytest.raises(PartsimError, match="unknown song"):
        index.segments("nope")
    with pytest.raises(PartsimError, match="unknown part"):
        index.has_part_audio(song, "kazoo")
    assert index.has_part_audio(song, "mix")
    with pytest.raises(PartsimError, match="no catalog"):
        index.segment_audio(song, "mix", 0)


def test_segment_bounds_cut_10_s_from_the_start():
    assert segment_bounds(250, 10, 10.0, min_seconds=1.0) == [(0, 100), (100, 200), (200, 250)]
    assert segment_bounds(205, 10, 10.0, min_seconds=1.0) == [(0, 100), (100, 200)]  # 0.5 s rest dropped
    assert segment_bounds(200, 10, 10.0, min_seconds=1.0) == [(0, 100), (100, 200)]
    assert segment_bounds(40, 10, 10.0, min_seconds=1.0) == [(0, 40)]  # shorter than 10 s: one segment
    assert segment_bounds(9, 10, 10.0, min_seconds=1.0) == []


# --------------------------------------------------------------------------------------------------------------
# the index on disk
# --------------------------------------------------------------------------------------------------------------


def test_build_round_trip_audio_and_short_song_skip(catalog_root, tmp_path):
    backend = tiny_backend()
    out = tmp_path / "index"
    with pytest.warns(UserWarning, match="skipped 1 song.*Track00003"):
        index = build_index(catalog_root, backend, out, progress=False)
    assert index.songs == ["Track00001", "Track00002", "Track00004"]
    assert index.parts == INSTRUMENTS and index.sample_rate == RATE and index.segment_seconds == 10.0
    assert index.segments("Track00001") == [(0, 0.0, 10.0), (1, 10.0, 12.0)]
    assert index.segments("Track00002") == [(0, 0.0, 10.0), (1, 10.0, 20.0), (2, 20.0, 25.0)]
    assert index.segments("Track00004") == [(0, 0.0, 10.0)]
    assert [entry["song"] for entry in index.skipped] == ["Track00003"]
    assert not index.has_part_audio("Track00002", "bass") and index.has_part_audio("Track00002", "drums")

    # Files: format version, model hash, catalog fingerprint; unit vectors, absent parts zero.
    meta = json.loads((out / INDEX_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["model_hash"] == "tiny-csn-0"
    assert meta["backend"] == "csn" and meta["catalog"]["split"] == "test" and meta["catalog"]["fingerprint"]
    vectors = np.load(out / VECTORS_FILE)
    present = np.load(out / PRESENT_FILE)
    assert vectors.shape == (6, 5, 128) and vectors.dtype == np.float32 and present.shape == (6, 5)
    norms = np.linalg.norm(vectors, axis=2)
    np.testing.assert_allclose(norms[present], 1.0, atol=1e-5)
    assert np.all(norms[~present] == 0) and (~present).sum() == 3  # bass of Track00002's three segments

    # The stored vectors are the backend's subspaces of the mix segment, L2-normalised.
    catalog = Catalog(catalog_root, "test", RATE)
    mix = np.asarray(catalog.audio("Track00002", "mix"))[10 * RATE:20 * RATE]
    with torch.no_grad():
        raw = backend.model(backend.log_mel(torch.from_numpy(mix.copy())[None])).numpy().reshape(5, 128)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors[3, [0, 2, 3, 4]], expected[[0, 2, 3, 4]], atol=1e-5)

    # Round trip: load gives the same vectors and answers.
    loaded = MixQueryIndex.load(out, backend="csn", model_hash="tiny-csn-0")
    np.testing.assert_array_equal(loaded.vectors, vectors)
    np.testing.assert_array_equal(loaded.present, present)
    query = [StemQuery("Track00001", "drums", 1), StemQuery("Track00004", "bass", 0)]
    assert loaded.search_songs(query, k=3) == index.search_songs(query, k=3)
    assert loaded.similar_stems(query[0], k=3) == index.similar_stems(query[0], k=3)

    # Audio of a segment: the catalog's part (or mix) between the segment bounds.
    np.testing.assert_array_equal(loaded.segment_audio("Track00002", "mix", 1), mix)
    guitar = np.asarray(catalog.audio("Track00001", "guitar"))[10 * RATE:]
    last = loaded.segment_audio("Track00001", "guitar", 1)
    assert last.dtype == np.float32 and last.shape == (2 * RATE,)
    np.testing.assert_array_equal(last, guitar)
    assert not np.any(loaded.segment_audio("Track00002", "bass", 0))
    with pytest.raises(PartsimError, match="unknown part"):
        loaded.segment_audio("Track00002", "vocals", 0)

    # A second build reuses the fresh index; --rebuild builds again.
    assert build_index(catalog_root, backend, out, progress=False).reused
    with pytest.warns(UserWarning, match="skipped 1 song"):
        assert not build_index(catalog_root, backend, out, progress=False, rebuild=True).reused


def test_load_refuses_other_version_model_and_stale_catalog(catalog_root, tmp_path):
    out = tmp_path / "index"
    with pytest.warns(UserWarning):
        build_index(catalog_root, tiny_backend(), out, progress=False)
    with pytest.raises(PartsimError, match="model 'tiny-csn-0', but the current csn model is 'retrained'.*"
                                           "partsim mixquery index"):
        MixQueryIndex.load(out, model_hash="retrained")
    with pytest.raises(PartsimError, match="backend 'csn', expected 'mert'"):
        MixQueryIndex.load(out, backend="mert")
    with pytest.raises(PartsimError, match="no MixQuery index here"):
        MixQueryIndex.load(tmp_path / "nothing")

    meta_path = out / INDEX_FILE
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["format_version"] = FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PartsimError, match=f"format version {FORMAT_VERSION + 1}.*--fresh"):
        MixQueryIndex.load(out)
    meta_path.write_text(original)
    MixQueryIndex.load(out)

    # Stale: a catalog file changed after the build.
    stem = catalog_root / "test" / "Track00001" / "stems" / "S00.flac"
    info = stem.stat()
    os.utime(stem, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    with pytest.raises(PartsimError, match="stale.*changed since it was built.*partsim mixquery index --catalog"):
        MixQueryIndex.load(out)
    MixQueryIndex.load(out, check_catalog=False)
    # build_index rebuilds a stale index instead of reusing it.
    with pytest.warns(UserWarning):
        rebuilt = build_index(catalog_root, tiny_backend(), out, progress=False)
    assert not rebuilt.reused
    MixQueryIndex.load(out)


class NaNBackend:
    """A backend that fails on the second song."""

    name, model_hash, preset, parts, sample_rate, dim, min_seconds = "csn", "nan", "", INSTRUMENTS, RATE, 4, 1.0

    def __init__(self) -> None:
        self.calls = 0

    def embed_song(self, catalog, song):
        self.calls += 1
        vectors = np.ones((len(song.segments), 5, 4), dtype=np.float32)
        if self.calls == 2:
            vectors[-1, 2, 1] = np.nan
        return vectors


def test_nan_embedding_names_the_song_and_leaves_no_folder(catalog_root, tmp_path):
    out = tmp_path / "indices" / "index"
    with pytest.warns(UserWarning), pytest.raises(PartsimError, match="NaN or infinite embeddings for song "
                                                                      "Track00002"):
        build_index(catalog_root, NaNBackend(), out, progress=False)
    assert not out.exists()
    assert list((tmp_path / "indices").iterdir()) == []  # no temporary folder left either


def test_catalog_of_only_short_songs_is_an_error(tmp_path, cache):
    root = make_catalog(tmp_path / "short", [(0.4, INSTRUMENTS), (0.6, INSTRUMENTS)])
    with pytest.warns(UserWarning, match="skipped 2 song"), pytest.raises(PartsimError, match="no song of at least"):
        build_index(root, tiny_backend(), tmp_path / "index", progress=False)
    assert not (tmp_path / "index").exists()
    with pytest.raises(PartsimError, match="no tracks in split 'train'"):
        Catalog(root, "train", RATE)


# --------------------------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------------------------


def test_unknown_backend_and_mert_without_transformers_or_model(monkeypatch, tmp_path):
    with pytest.raises(PartsimError, match="unknown MixQuery backend 'magic'"):
        get_backend("magic", "smoke")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed (find_spec gives None)
    with pytest.raises(PartsimError, match="transformers is not installed.*--mert-model DIR.*never downloaded"):
        get_backend("mert", "smoke", mert_model=tmp_path)
    fake = types.ModuleType("transformers")
    fake.__spec__ = importlib.machinery.ModuleSpec("transformers", None)
    monkeypatch.setitem(sys.modules, "transformers", fake)  # as if installed
    with pytest.raises(PartsimError, match="no MERT model folder given"):
        get_backend("mert", "smoke")
    with pytest.raises(PartsimError, match="not a MERT model folder"):
        get_backend("mert", "smoke", mert_model=tmp_path)


def test_csn_backend_refuses_a_model_without_five_subspaces():
    from partsim_core.models import CSNEncoder

    with pytest.raises(PartsimError, match="5 subspaces"):
        CSNBackend(CSNEncoder(64, width=2, n_parts=3), get_preset("smoke").frontend, "x")
