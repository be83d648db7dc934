"""Chapter 6 (MixQuery) past a million segments: the approximate index (``partsim_core.mixquery.ann``).

On small synthetic catalogues with structure (songs of one style resemble each other, a song's segments resemble
the song): recall against the exact search, exactly the exact answers when every list is probed, the automatic
switch at the size threshold, and the same API (index methods, errors, CLI, app) on either searcher.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_mixquery_index import CATALOG_SONGS, make_catalog, tiny_backend

import partsim_core.mixquery.ann as ann_module
import partsim_core.mixquery.index_build as index_build_module
from partsim_core import INSTRUMENTS
from partsim_core.cli import main as partsim_main
from partsim_core.errors import PartsimError
from partsim_core.mixquery import (
    MixQueryIndex,
    StemQuery,
    build_index,
    search_songs_numpy,
    similar_stems_numpy,
)
from partsim_core.mixquery.ann import (
    ANN_MIN_SEGMENTS,
    AnnSearcher,
    default_nlist,
    default_nprobe,
    use_ann,
)
from partsim_core.mixquery.manifest import (
    ANN_CENTROIDS_FILE,
    ANN_FILES,
    ANN_LISTS_FILE,
    INDEX_FILE,
    index_problem,
    manifest_checksum,
    seal,
    verify_index,
)


def clustered(n_songs: int = 600, styles: int = 8, dim: int = 16, seed: int = 0, max_segments: int = 12):
    """``(vectors, songs, segments, present)``: songs of a style share a direction per part, segments vary."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_segments + 1, n_songs)
    style = rng.integers(0, styles, n_songs)
    centre = rng.standard_normal((styles, len(INSTRUMENTS), dim))
    centre /= np.linalg.norm(centre, axis=2, keepdims=True)
    song = centre[style] + 0.8 / np.sqrt(dim) * rng.standard_normal((n_songs, len(INSTRUMENTS), dim))
    song /= np.linalg.norm(song, axis=2, keepdims=True)
    vectors = np.repeat(song, counts, axis=0) + 0.6 / np.sqrt(dim) * rng.standard_normal(
        (int(counts.sum()), len(INSTRUMENTS), dim))
    song_present = rng.random((n_songs, len(INSTRUMENTS))) > 0.1
    song_present[:, 0] = True
    present = np.repeat(song_present, counts, axis=0)
    vectors[~present] = 0.0
    songs = [f"song{number:04d}" for number in range(n_songs)]
    segments = [[(10 * j, 10 * (j + 1)) for j in range(count)] for count in counts]
    return vectors.astype(np.float32), songs, segments, present


@pytest.fixture(scope="module")
def pair():
    """The same catalogue as an exact and an approximate index (64 lists per part, 16 probed)."""
    vectors, songs, segments, present = clustered()
    exact = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, search="exact")
    ann = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, search="ann",
                                    ann_options={"nlist": 64, "nprobe": 16, "nprobe_stems": 16})
    return exact, ann


def queries(index: MixQueryIndex, rng: np.random.Generator, count: int) -> list[list[StemQuery]]:
    found = []
    while len(found) < count:
        parts = rng.choice(len(INSTRUMENTS), size=int(rng.integers(1, 4)), replace=False)
        query = []
        for part in parts:
            song = index.songs[int(rng.integers(len(index.songs)))]
            if index.has_part_audio(song, INSTRUMENTS[part]):
                query.append(StemQuery(song, INSTRUMENTS[part], int(rng.integers(len(index.segments(song))))))
        if query:
            found.append(query)
    return found


def test_recall_against_the_exact_search(pair) -> None:
    exact, ann = pair
    assert (exact.search_mode, ann.search_mode) == ("exact", "ann")
    rng = np.random.default_rng(1)
    song_recall, stem_recall = [], []
    for query in queries(exact, rng, 30):
        truth = {hit.song for hit in exact.search_songs(query, k=20)}
        found = ann.search_songs(query, k=20)
        song_recall.append(len(truth & {hit.song for hit in found}) / 20)
        # A song found is reported at its eq. 6.2 distance over the segments scanned: never below the truth.
        distances = {hit.song: hit.distance for hit in exact.search_songs(query, k=len(exact.songs))}
        assert all(hit.distance >= distances[hit.song] - 1e-9 for hit in found)
        truth_stems = {(hit.song, hit.segment) for hit in exact.similar_stems(query[0], k=20)}
        stem_recall.append(len(truth_stems & {(h.song, h.segment) for h in ann.similar_stems(query[0], k=20)}) / 20)
    assert np.mean(song_recall) >= 0.9 and np.mean(stem_recall) >= 0.9, (np.mean(song_recall), np.mean(stem_recall))


def test_probing_every_list_and_keeping_every_candidate_gives_exactly_the_exact_answers() -> None:
    vectors, songs, segments, present = clustered(n_songs=200, seed=3)
    ann = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, search="ann",
                                    ann_options={"nlist": 16, "nprobe": 16, "nprobe_stems": 16,
                                                 "candidates_per_k": 10**6})
    rng = np.random.default_rng(2)
    for query in queries(ann, rng, 20):
        rows = [ann.query_row(stem) for stem in query]
        reference = search_songs_numpy(ann.vectors, ann.song_of_row, rows, k=15, norms=ann.norms)
        found = ann.search_songs(query, k=15)
        assert [(hit.song, hit.best_segment) for hit in found] == \
            [(ann.songs[song], int(best - ann.first_row[song])) for song, _, best in reference]
        np.testing.assert_allclose([hit.distance for hit in found], [d for _, d, _ in reference], atol=1e-6)
        row, column = rows[0]
        stems = similar_stems_numpy(ann.vectors, ann.song_of_row, ann.present, row, column, k=15,
                                    norms=ann.norms)
        assert [(hit.song, hit.segment) for hit in ann.similar_stems(query[0], k=15)] == \
            [(ann.songs[ann.song_of_row[r]], int(r - ann.first_row[ann.song_of_row[r]])) for r, _ in stems]


def test_the_threshold_switches_between_exact_and_approximate() -> None:
    vectors, songs, segments, present = clustered(n_songs=60)
    n = vectors.shape[0]
    assert not use_ann("auto", ANN_MIN_SEGMENTS - 1) and use_ann("auto", ANN_MIN_SEGMENTS)
    assert use_ann("ann", 10) and not use_ann("exact", 10**9)
    below = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, ann_threshold=n + 1)
    at = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, ann_threshold=n)
    forced = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, search="exact",
                                       ann_threshold=1)
    assert (below.search_mode, at.search_mode, forced.search_mode) == ("exact", "ann", "exact")
    assert at.describe()["search"] == "ann" and below.describe()["search"] == "exact"
    with pytest.raises(PartsimError, match="unknown search 'fast'"):
        MixQueryIndex.from_arrays(vectors, songs, segments, 1, search="fast")
    with pytest.raises(PartsimError, match="nprobe must be a positive integer"):
        AnnSearcher(at.vectors, at.song_of_row, at.present, nprobe=0)
    with pytest.raises(PartsimError, match="nlist must be"):
        AnnSearcher(at.vectors, at.song_of_row, at.present, nlist=n + 1)
    assert default_nlist(10**6) == 1024 and default_nprobe(1024) == 16 and default_nprobe(16) == 8


def test_same_api_and_errors_on_either_searcher(pair) -> None:
    exact, ann = pair
    song = exact.songs[3]
    lacking = next(s for s in exact.songs if not exact.has_part_audio(s, "bass"))
    for index in (exact, ann):
        hits = index.search_songs([StemQuery(song, "drums", 0)], k=7, exclude_query_songs=True)
        assert len(hits) == 7 and song not in {hit.song for hit in hits}
        assert [hit.distance for hit in hits] == sorted(hit.distance for hit in hits)
        stems = index.similar_stems(StemQuery(song, "drums", 0), k=5)
        assert len(stems) == 5 and all(hit.song != song for hit in stems)
        assert all(0 <= hit.segment < len(index.segments(hit.song)) for hit in stems)
        for bad, message in [(StemQuery("nosuch", "drums", 0), "unknown song"),
                             (StemQuery(song, "vocals", 0), "unknown part"),
                             (StemQuery(song, "drums", 99), "no segment 99"),
                             (StemQuery(lacking, "bass", 0), "no bass stem")]:
            with pytest.raises(PartsimError, match=message):
                index.search_songs([bad])
        with pytest.raises(PartsimError, match="query set is empty"):
            index.search_songs([])
        with pytest.raises(PartsimError, match="k must be a positive integer"):
            index.similar_stems(StemQuery(song, "drums", 0), k=0)
        everything = index.search_songs([StemQuery(song, "drums", 0)], k=10**6)
        assert 0 < len(everything) <= len(index.songs)


def test_zero_query_vectors_rank_in_catalogue_order() -> None:
    vectors, songs, segments, present = clustered(n_songs=40, seed=5)
    vectors[0, 0] = 0.0  # the first segment's drums carry no direction
    for search in ("exact", "ann"):
        index = MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, search=search,
                                          ann_options={"nlist": 4} if search == "ann" else None)
        hits = index.search_songs([StemQuery(songs[0], "drums", 0)], k=3)
        assert [(hit.song, hit.distance) for hit in hits] == [(song, 1.0) for song in songs[:3]]


def test_from_arrays_refuses_non_finite_vectors() -> None:
    vectors, songs, segments, present = clustered(n_songs=20)
    vectors[5, 2, 3] = np.nan
    with pytest.raises(PartsimError, match="NaN or infinite"):
        MixQueryIndex.from_arrays(vectors, songs, segments, 1, present=present, search="ann")


def test_cli_and_app_work_the_same_on_an_approximate_index(tmp_path, monkeypatch, capsys) -> None:
    from test_mixquery_app import _request

    from partsim_core.mixquery.app import BackgroundServer, make_app

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    catalog = make_catalog(tmp_path / "catalog", CATALOG_SONGS)
    with pytest.warns(UserWarning, match="skipped"):
        build_index(catalog, tiny_backend(), tmp_path / "index", progress=False)
    lines = {}
    for search in ("exact", "ann"):
        code = partsim_main(["mixquery", "query", "--index", str(tmp_path / "index"), "--search", search,
                             "--stem", "Track00001:drums:1", "--stem", "Track00004:bass:0", "--k", "3"])
        assert code == 0
        lines[search] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Three songs of six segments: every list is probed, so the answers are the exact ones.
    assert lines["ann"] == lines["exact"] and len(lines["exact"]) == 3
    index = MixQueryIndex.load(tmp_path / "index", search="ann")
    assert index.search_mode == "ann"
    with BackgroundServer(make_app(index, k=3)) as server:
        body = {"queries": [{"song": "Track00001", "part": "drums", "segment": 1}]}
        results = _request(server, "POST", "/api/search", body).json()["results"]
        expected = index.search_songs([StemQuery("Track00001", "drums", 1)], k=3)
        assert [(r["song"], r["best_segment"]) for r in results] == [(h.song, h.best_segment) for h in expected]
        similar = _request(server, "POST", "/api/similar", {**body["queries"][0], "k": 2}).json()["results"]
        assert [(h["song"], h["segment"]) for h in similar] == \
            [(h.song, h.segment) for h in index.similar_stems(StemQuery("Track00001", "drums", 1), k=2)]


@pytest.fixture()
def saved(tmp_path, monkeypatch):
    """A tiny catalogue's index built with its approximate search's inverted files saved (threshold 1)."""
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    catalog = make_catalog(tmp_path / "catalog", CATALOG_SONGS)
    with pytest.warns(UserWarning, match="skipped"):
        build_index(catalog, tiny_backend(), tmp_path / "index", progress=False, ann_threshold=1)
    return catalog, tmp_path / "index"


def _no_training(*args, **kwargs):
    raise AssertionError("the inverted files were trained")


def test_opening_an_index_loads_its_saved_inverted_files_instead_of_training(saved, monkeypatch, tmp_path):
    catalog, folder = saved
    meta = json.loads((folder / INDEX_FILE).read_text())
    assert meta["ann"]["nlist"] >= 1 and all(name in meta["files"] for name in ANN_FILES)
    assert verify_index(folder) == meta
    queries = [StemQuery("Track00001", "drums", 1), StemQuery("Track00004", "bass", 0)]
    expected = MixQueryIndex.load(folder, search="exact").search_songs(queries, k=3)
    monkeypatch.setattr(ann_module, "train_part", _no_training)
    index = MixQueryIndex.load(folder, search="ann")
    assert index.search_mode == "ann" and index.ann_trained_on_open is False
    assert index.search_songs(queries, k=3) == expected  # one list, all probed: the exact answers
    assert MixQueryIndex.load(folder, search="exact").ann_trained_on_open is None
    # Another nlist asked for: trained anew (here: refused by the patch, which shows it).
    with pytest.raises(AssertionError, match="trained"):
        MixQueryIndex.load(folder, search="ann", ann_options={"nlist": 2})
    # An index built without them (below the threshold, or before they were saved) still opens: trained on open.
    with pytest.warns(UserWarning, match="skipped"):
        build_index(catalog, tiny_backend(), tmp_path / "small", progress=False)
    assert "ann" not in json.loads((tmp_path / "small" / INDEX_FILE).read_text())
    assert not any((tmp_path / "small" / name).exists() for name in ANN_FILES)
    monkeypatch.undo()
    old = MixQueryIndex.load(tmp_path / "small", search="ann")
    assert old.ann_trained_on_open is True and old.search_songs(queries, k=3) == expected


def test_a_damaged_saved_inverted_file_is_refused_and_rebuilt(saved, monkeypatch):
    catalog, folder = saved
    lists = folder / ANN_LISTS_FILE
    data = bytearray(lists.read_bytes())
    data[-1] ^= 0xFF
    lists.write_bytes(bytes(data))
    with pytest.raises(PartsimError, match=r"ann_lists\.npy: checksum .* altered or damaged.*--fresh"):
        MixQueryIndex.load(folder, search="ann")
    with pytest.raises(PartsimError, match=r"ann_lists\.npy: checksum"):
        MixQueryIndex.load(folder, search="exact")  # never silently used, whichever search is asked for
    assert "ann_lists.npy" in index_problem(folder)
    with pytest.warns(UserWarning, match="skipped"):
        rebuilt = build_index(catalog, tiny_backend(), folder, progress=False, ann_threshold=1)
    assert rebuilt.reused is False and "ann_lists.npy" in rebuilt.rebuild_reason
    assert index_problem(folder) is None
    # A file of another shape in its place (e.g. from another index): refused, naming it.
    good = (folder / ANN_CENTROIDS_FILE).read_bytes()
    np.save(folder / ANN_CENTROIDS_FILE, np.zeros((5, 3, 4), dtype=np.float32))
    with pytest.raises(PartsimError, match=r"ann_centroids\.npy: \d+ bytes, but index\.json records"):
        MixQueryIndex.load(folder)
    # Lists outside 0..nlist-1 under a manifest re-sealed to match them: refused by the range check.
    (folder / ANN_CENTROIDS_FILE).write_bytes(good)
    meta = json.loads((folder / INDEX_FILE).read_text())
    np.save(lists, np.full(np.load(lists).shape, meta["ann"]["nlist"], dtype=np.int32))
    (folder / INDEX_FILE).write_text(json.dumps(seal(meta, folder)))
    with pytest.raises(PartsimError, match=r"ann_lists\.npy: names lists outside 0\.\."):
        MixQueryIndex.load(folder)


def test_partsim_mixquery_index_saves_and_rebuilds_the_inverted_files(tmp_path, monkeypatch):
    from partsim_core.cli import build_parser
    from partsim_core.cli.mixquery import index_catalog

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(index_build_module, "ANN_MIN_SEGMENTS", 1)
    catalog = make_catalog(tmp_path / "catalog", CATALOG_SONGS)
    out = tmp_path / "index"
    args = build_parser().parse_args(["mixquery", "index", "--catalog", str(catalog), "--out-dir", str(out),
                                      "--preset", "smoke", "--no-progress", "--distance", "cosine"])
    with pytest.warns(UserWarning):
        assert index_catalog(args, backend=tiny_backend())["reused"] is False
    assert all((out / name).is_file() for name in ANN_FILES)
    assert index_catalog(args, backend=tiny_backend())["reused"] is True
    centroids = out / ANN_CENTROIDS_FILE
    centroids.write_bytes(centroids.read_bytes()[:-4])  # truncated
    with pytest.warns(UserWarning):
        assert index_catalog(args, backend=tiny_backend())["reused"] is False  # rebuilt, not used
    assert index_problem(out) is None
    monkeypatch.setattr(ann_module, "train_part", _no_training)
    assert MixQueryIndex.load(out, search="ann").ann_trained_on_open is False


@pytest.mark.parametrize(("change", "message"), [
    ({"nlist": 0}, r"field 'ann' must give the integers 'nlist'"),
    ({"seed": "zero"}, r"field 'ann' must give the integers 'nlist'"),
    ({"nlist": 2}, r"'files\.ann_centroids\.npy' must give blake2b, size, shape \[5, 2, \d+\]"),
])
def test_a_manifest_whose_ann_field_does_not_fit_is_refused(saved, change, message):
    _, folder = saved
    meta = json.loads((folder / INDEX_FILE).read_text())
    meta["ann"].update(change)
    meta["checksum"] = manifest_checksum(meta)  # consistent, so the field itself must be checked
    (folder / INDEX_FILE).write_text(json.dumps(meta))
    with pytest.raises(PartsimError, match=message):
        MixQueryIndex.load(folder, search="ann")
