"""Chapter 6 search path (``partsim mixquery query``, the app) against the reference of eq. 6.1-6.2 as written
(``partsim_core.mixquery.ranking``: the mean of the RAW query embeddings, cosine or Euclidean distance), on small
random catalogues whose vectors have varied norms; and the ``distance`` an index is built for (manifest, format
version, ``--distance`` of ``mixquery index``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_mixquery_index import CATALOG_SONGS, make_catalog, tiny_backend

from partsim_core import INSTRUMENTS
from partsim_core.cli import build_parser, main
from partsim_core.cli.mixquery import index_catalog
from partsim_core.errors import PartsimError
from partsim_core.mixquery import (
    MixQueryIndex,
    StemQuery,
    build_index,
    search_songs_numpy,
    similar_stems_numpy,
)
from partsim_core.mixquery.manifest import (
    FORMAT_VERSION,
    INDEX_FILE,
    NORMS_FILE,
    record_csn_distance,
    resolve_distance,
)
from partsim_core.mixquery.ranking import CatalogEmbeddings, part_distances, rank_songs

DISTANCES = ("cosine", "euclidean")

#: Searchers of one index: the exact FAISS path (half-precision codes, one or two shards; exact float32 codes)
#: and the approximate one probing every list (then it must be exact too).
SEARCHERS = {
    "fp16": {"search": "exact", "coarse": "fp16", "shards": 1},
    "fp16-2-shards": {"search": "exact", "coarse": "fp16", "shards": 2},
    "flat": {"search": "exact", "coarse": "flat"},
    "ann-all-lists": {"search": "ann", "ann_options": {"nlist": 4, "nprobe": 4, "nprobe_stems": 4,
                                                       "candidates_per_k": 10_000}},
}


def raw_catalogue(seed: int = 0, n_songs: int = 40, dim: int = 8, max_segments: int = 8):
    """``(raw vectors, songs, segments, present)``: random directions, norms from 0.1 to 10, absent parts zero."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_segments + 1, n_songs)
    n = int(counts.sum())
    directions = rng.standard_normal((n, len(INSTRUMENTS), dim))
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    vectors = directions * np.exp(rng.uniform(np.log(0.1), np.log(10.0), (n, len(INSTRUMENTS), 1)))
    song_present = rng.random((n_songs, len(INSTRUMENTS))) > 0.2
    song_present[:, :2] = True  # every song has drums and bass: queries of those parts always work
    present = np.repeat(song_present, counts, axis=0)
    vectors[~present] = 0.0
    songs = [f"song{number:03d}" for number in range(n_songs)]
    segments = [[(10 * j, 10 * (j + 1)) for j in range(count)] for count in counts]
    return vectors.astype(np.float32), songs, segments, present


def reference(vectors, songs, segments) -> CatalogEmbeddings:
    counts = np.array([len(bounds) for bounds in segments])
    return CatalogEmbeddings(list(songs), tuple(INSTRUMENTS), vectors, np.repeat(np.arange(len(songs)), counts),
                             np.r_[0, np.cumsum(counts)[:-1]])


def query_sets(songs: list[str], segments) -> dict[str, list[StemQuery]]:
    """One stem; two segments of one part (of two songs, and of one song); three stems of two parts."""
    longest = int(np.argmax([len(bounds) for bounds in segments]))
    return {
        "one stem": [StemQuery(songs[3], "drums", 0)],
        "two songs, one part": [StemQuery(songs[1], "bass", 0), StemQuery(songs[7], "bass", len(segments[7]) - 1)],
        "two segments of one song": [StemQuery(songs[longest], "drums", 0), StemQuery(songs[longest], "drums", 1)],
        "two parts": [StemQuery(songs[2], "drums", 0), StemQuery(songs[5], "drums", 0),
                      StemQuery(songs[9], "bass", 0)],
    }


@pytest.fixture(scope="module")
def catalogue():
    return raw_catalogue()


@pytest.mark.parametrize("searcher", sorted(SEARCHERS))
@pytest.mark.parametrize("distance", DISTANCES)
def test_song_search_ranks_as_eq_6_1_written(catalogue, distance, searcher):
    vectors, songs, segments, present = catalogue
    index = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, distance=distance,
                                      **SEARCHERS[searcher])
    assert index.distance == distance and index.describe()["distance"] == distance
    embeddings = reference(vectors, songs, segments)
    assert len(query_sets(songs, segments)["two segments of one song"]) == 2
    for name, queries in query_sets(songs, segments).items():
        for k in (3, 15):
            expected = rank_songs(embeddings, queries, distance, exclude_query_songs=False)[:k]
            found = index.search_songs(queries, k=k)
            assert [(hit.song, hit.best_segment) for hit in found] == \
                [(hit.song, hit.best_segment) for hit in expected], (name, k)
            np.testing.assert_allclose([hit.distance for hit in found], [hit.distance for hit in expected],
                                       rtol=1e-5, atol=1e-5)
            rows = [index.query_row(query) for query in queries]
            plain = search_songs_numpy(index.vectors, index.song_of_row, rows, k, norms=index.norms,
                                       distance=distance)
            assert [(index.songs[song], best - index.first_row[song]) for song, _, best in plain] == \
                [(hit.song, hit.best_segment) for hit in expected], (name, k)
        excluded = index.search_songs(queries, k=10, exclude_query_songs=True)
        expected = rank_songs(embeddings, queries, distance, exclude_query_songs=True)[:10]
        assert [hit.song for hit in excluded] == [hit.song for hit in expected], name


@pytest.mark.parametrize("searcher", sorted(SEARCHERS))
@pytest.mark.parametrize("distance", DISTANCES)
def test_similar_stems_rank_as_the_part_distance(catalogue, distance, searcher):
    vectors, songs, segments, present = catalogue
    index = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, distance=distance,
                                      **SEARCHERS[searcher])
    for query in (StemQuery(songs[4], "drums", 0), StemQuery(songs[11], "bass", 0)):
        row, column = index.query_row(query)
        distances = part_distances(vectors[:, column, :], vectors[row, column].astype(np.float64), distance)
        allowed = np.flatnonzero(present[:, column] & (index.song_of_row != index.song_of_row[row]))
        expected = allowed[np.lexsort((allowed, np.round(distances[allowed], 9)))][:12]
        found = index.similar_stems(query, k=12)
        assert [int(index.first_row[index.songs.index(hit.song)]) + hit.segment for hit in found] == \
            expected.tolist()
        np.testing.assert_allclose([hit.distance for hit in found], distances[expected], rtol=1e-5, atol=1e-5)
        plain = similar_stems_numpy(index.vectors, index.song_of_row, index.present, row, column, 12,
                                    norms=index.norms, distance=distance)
        assert [hit for hit, _ in plain] == expected.tolist()


def two_dimensional_index(distance: str) -> MixQueryIndex:
    """Songs q1, q2 (the query stems), A and B in the drums part (2-d vectors; other parts zero)."""
    drums = {"q1": (10.0, 0.0), "q2": (0.0, 1.0), "A": (1.0, 0.1), "B": (1.0, 1.0)}
    vectors = np.zeros((4, len(INSTRUMENTS), 2), dtype=np.float32)
    vectors[:, 0] = np.array(list(drums.values()))
    present = np.zeros((4, len(INSTRUMENTS)), dtype=bool)
    present[:, 0] = True
    return MixQueryIndex.from_arrays(vectors, list(drums), [[(0, 10)]] * 4, 1, present=present, distance=distance,
                                     search="exact")


def test_the_query_mean_is_of_raw_embeddings_not_of_unit_vectors():
    # Raw mean of (10, 0) and (0, 1): (5, 0.5), nearly along A = (1, 0.1): cosine distance 0 to A,
    # 1 - (5 + 0.5) / (|(5, 0.5)| |(1, 1)|) = 1 - 5.5 / (5.02494 * 1.41421) = 0.226045 to B.
    # (The mean of the unit vectors, (0.5, 0.5), would put B first at distance 0.)
    hits = two_dimensional_index("cosine").search_songs([StemQuery("q1", "drums", 0), StemQuery("q2", "drums", 0)],
                                                         k=4, exclude_query_songs=True)
    assert [hit.song for hit in hits] == ["A", "B"]
    assert [hit.distance for hit in hits] == pytest.approx([0.0, 0.226045], abs=1e-5)


def test_the_euclidean_distance_sees_the_norms():
    # From (5, 0.5): |(5, 0.5) - (1, 0.1)| = |(4, 0.4)| = 4.019950, |(5, 0.5) - (1, 1)| = |(4, -0.5)| = 4.031129;
    # q2 = (0, 1): |(5, -0.5)| = 5.024938; q1 = (10, 0): |(-5, 0.5)| = 5.024938 (tie: the earlier song first).
    hits = two_dimensional_index("euclidean").search_songs([StemQuery("q1", "drums", 0),
                                                            StemQuery("q2", "drums", 0)], k=4)
    assert [hit.song for hit in hits] == ["A", "B", "q1", "q2"]
    assert [hit.distance for hit in hits] == pytest.approx([4.019950, 4.031129, 5.024938, 5.024938], abs=1e-5)
    stems = two_dimensional_index("euclidean").similar_stems(StemQuery("A", "drums", 0), k=3)
    # From (1, 0.1): B at 0.9, q2 at |(1, -0.9)| = 1.345362, q1 at |(-9, 0.1)| = 9.000556.
    assert [(hit.song, round(hit.distance, 5)) for hit in stems] == [("B", 0.9), ("q2", 1.34536), ("q1", 9.00056)]


def test_an_unknown_distance_is_refused():
    vectors, songs, segments, present = raw_catalogue(n_songs=5)
    with pytest.raises(PartsimError, match="unknown distance 'manhattan'"):
        MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, distance="manhattan")
    with pytest.raises(PartsimError, match="unknown distance 'manhattan'"):
        resolve_distance("manhattan", "csn", "smoke")


# --------------------------------------------------------------------------------------------------------------
# the index on disk and the command line
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def catalog_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    return make_catalog(tmp_path / "catalog", CATALOG_SONGS)


def test_the_distance_is_in_the_manifest_and_an_old_format_is_refused(catalog_root, tmp_path):
    out = tmp_path / "index"
    with pytest.warns(UserWarning):
        index = build_index(catalog_root, tiny_backend(), out, progress=False, distance="euclidean")
    meta = json.loads((out / INDEX_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 3 and meta["distance"] == "euclidean"
    norms = np.load(out / NORMS_FILE)
    assert norms.shape == index.vectors.shape[:2] and norms.dtype == np.float32
    assert MixQueryIndex.load(out).distance == "euclidean"
    # Another distance asked for: rebuilt, saying why.
    with pytest.warns(UserWarning):
        again = build_index(catalog_root, tiny_backend(), out, progress=False, distance="cosine")
    assert again.reused is False and "euclidean distance, cosine asked for" in again.rebuild_reason
    # An index of format 2 (unit vectors only, averaged as such): refused with the rebuild hint.
    meta = json.loads((out / INDEX_FILE).read_text())
    meta["format_version"] = 2
    (out / INDEX_FILE).write_text(json.dumps(meta))
    with pytest.raises(PartsimError, match=r"format version 2.*--out-dir \S+ --fresh"):
        MixQueryIndex.load(out)


def test_auto_distance_is_cosine_except_for_the_csn(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    assert resolve_distance("auto", "separated", "smoke")[0] == "cosine"
    assert resolve_distance("auto", "mert", "smoke")[0] == "cosine"
    assert resolve_distance("auto", "csn", "smoke")[0] == "euclidean"  # nothing recorded yet
    assert resolve_distance("cosine", "csn", "smoke") == ("cosine", "given")
    record_csn_distance("smoke", "cosine", {"split": "validation"})
    distance, why = resolve_distance("auto", "csn", "smoke")
    assert distance == "cosine" and "mixquery run --preset smoke" in why
    assert resolve_distance("auto", "csn", "default")[0] == "euclidean"  # recorded per preset


def test_index_distance_option_then_query_uses_it(capsys, catalog_root, tmp_path):
    out = tmp_path / "index"
    args = build_parser().parse_args(["mixquery", "index", "--catalog", str(catalog_root), "--out-dir", str(out),
                                      "--preset", "smoke", "--no-progress"])
    assert args.distance == "auto"
    with pytest.warns(UserWarning):
        summary = index_catalog(args, backend=tiny_backend())
    assert summary["distance"] == "euclidean" and summary["distance_source"].startswith("auto")
    args = build_parser().parse_args(["mixquery", "index", "--catalog", str(catalog_root), "--out-dir", str(out),
                                      "--preset", "smoke", "--no-progress", "--distance", "cosine"])
    with pytest.warns(UserWarning):
        summary = index_catalog(args, backend=tiny_backend())
    assert summary["distance"] == "cosine" and summary["reused"] is False
    assert index_catalog(args, backend=tiny_backend())["reused"] is True  # same distance: reused
    index = MixQueryIndex.load(out)
    assert index.distance == "cosine"
    queries = [StemQuery("Track00001", "drums", 1), StemQuery("Track00004", "piano", 0)]
    assert main(["mixquery", "query", "--index", str(out), "--stem", "Track00001:drums:1",
                 "--stem", "Track00004:piano:0", "--k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    # The untrained tiny CSN embeds every segment almost alike, so the order is float noise: compare distances.
    embeddings = CatalogEmbeddings(index.songs, index.parts, index.vectors * index.norms[:, :, None],
                                   index.song_of_row, index.first_row)
    expected = {hit.song: hit.distance for hit in rank_songs(embeddings, queries, "cosine",
                                                                exclude_query_songs=False)}
    assert len(lines) == 3
    assert [line["distance"] for line in lines] == pytest.approx([expected[line["song"]] for line in lines],
                                                                 abs=1e-6)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["mixquery", "index", "--distance", "manhattan"])


@pytest.mark.parametrize("coarse", ["fp16", "flat"])
def test_euclidean_search_stops_early_and_stays_exact(coarse):
    # 2,000+ rows and k = 5: the threshold algorithm accepts after a few hundred candidates per part.
    vectors, songs, segments, present = raw_catalogue(seed=3, n_songs=500, dim=16)
    index = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, distance="euclidean",
                                      search="exact", coarse=coarse)
    embeddings = reference(vectors, songs, segments)
    rng = np.random.default_rng(4)
    for _ in range(6):
        picks = rng.choice(len(songs), size=3, replace=False)
        queries = [StemQuery(songs[picks[0]], "drums", 0), StemQuery(songs[picks[1]], "bass", 0),
                   StemQuery(songs[picks[2]], "drums", 0)]
        expected = rank_songs(embeddings, queries, "euclidean", exclude_query_songs=False)[:5]
        found = index.search_songs(queries, k=5)
        assert [(hit.song, hit.best_segment) for hit in found] == [(hit.song, hit.best_segment) for hit in expected]
        np.testing.assert_allclose([hit.distance for hit in found], [hit.distance for hit in expected], rtol=1e-5)


def brute_force_songs(raw: np.ndarray, song_of_row: np.ndarray, query_rows, distance: str, k: int):
    """Eq. 6.1-6.2 by brute force, written out here: ``[(song, distance, best row)]`` of the ``k`` nearest songs."""
    parts = sorted({part for _, part in query_rows})
    total = np.zeros(raw.shape[0])
    for part in parts:
        mean = np.mean([raw[row, part].astype(np.float64) for row, column in query_rows if column == part], axis=0)
        stored = raw[:, part].astype(np.float64)
        if distance == "euclidean":
            total += np.sqrt(((stored - mean) ** 2).sum(axis=1))
        else:
            lengths = np.linalg.norm(stored, axis=1) * np.linalg.norm(mean)
            total += np.where(lengths > 0, 1.0 - stored @ mean / np.where(lengths > 0, lengths, 1.0), 1.0)
    total /= len(parts)
    best = {}
    for row in range(raw.shape[0]):  # rows in order: the first segment reaching a song's minimum is kept
        song = int(song_of_row[row])
        if song not in best or total[row] < best[song][0]:
            best[song] = (total[row], row)
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[0]))[:k]
    return [(song, value, row) for song, (value, row) in ranked]


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("distance", DISTANCES)
def test_exact_search_equals_brute_force_for_one_and_several_parts(distance, shards):
    # 13 dimensions: the FAISS codes are zero-padded to a multiple of 8 (the fast SIMD kernels); 3,000+ rows and
    # k = 40 make the Euclidean candidates of some multi-part queries widen twice.
    vectors, songs, segments, present = raw_catalogue(seed=7, n_songs=600, dim=13, max_segments=10)
    index = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, distance=distance,
                                      search="exact", shards=shards)
    searcher = index._searcher
    codes = [searcher._part_index(part).d for part in range(len(INSTRUMENTS))]
    codes += [faiss_index.d for _, _, faiss_index in searcher._shards]
    assert all(length % 8 == 0 for length in codes), codes
    rng = np.random.default_rng(8)
    for n_parts in (1, 2, 3, 1, 2, 3):
        parts = rng.choice(2, size=min(n_parts, 2), replace=False).tolist() + ([0] if n_parts == 3 else [])
        queries = [StemQuery(songs[int(rng.integers(len(songs)))], INSTRUMENTS[part], 0) for part in parts]
        rows = [index.query_row(query) for query in queries]
        expected = brute_force_songs(vectors, index.song_of_row, rows, distance, k=40)
        found = index.search_songs(queries, k=40)
        assert [(index.songs.index(hit.song), int(index.first_row[index.songs.index(hit.song)]) + hit.best_segment)
                for hit in found] == [(song, row) for song, _, row in expected], (distance, n_parts)
        np.testing.assert_allclose([hit.distance for hit in found], [value for _, value, _ in expected],
                                   rtol=1e-6, atol=1e-6)
