"""The pseudo-piece catalog (``partsim_core.mixquery.pseudo_plan`` and ``pseudo_catalog``): the planning rules on
hand-made ground truth, query segments by the data silence rule, the written pieces against their source stems,
reuse and keys through the artefact cache, and the refusal of a dataset without ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from partsim_core import INSTRUMENTS
from partsim_core.data.dataset import load_dataset
from partsim_core.data.slakh import open_slakh
from partsim_core.data.synth import GROUND_TRUTH_FILE
from partsim_core.errors import PartsimError
from partsim_core.mixquery import pseudo_catalog as pc
from partsim_core.mixquery import pseudo_plan as ev
from partsim_core.mixquery.ground_truth import QUERY_MIN_SECONDS, query_segments
from partsim_core.presets import SynthConfig

#: 1 train, 3 validation and 7 test songs of 6-8 s at the smoke front end's rate (no resampling): seconds to make.
TINY = SynthConfig(n_train=1, n_validation=3, n_test=7, min_seconds=6.0, max_seconds=8.0, sample_rate=16000)
TINY_SIZES = ev.EvaluationSizes(pairs_per_combination=1, relevant_per_query=3, distractors_per_side=1,
                                random_pieces=4, listeners=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny generated dataset (its handle) and its test pseudo-piece catalog, with a private PARTSIM_CACHE."""
    from partsim_core.data.synth import synthesize_dataset

    base = tmp_path_factory.mktemp("mixquery-eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(base / "cache"))
        root = synthesize_dataset(base / "data", "smoke", seed=3, jobs=1, progress=False, config=TINY)
        data = load_dataset("smoke", root)
        catalog = pc.build_pseudo_catalog(data, sizes=TINY_SIZES, seed=0, progress=False)
        yield {"root": Path(root), "data": data, "catalog": catalog, "base": base}


class OracleBackend:
    """A perfect backend: each part's vector is the one-hot of the track that part comes from (zero if absent)."""

    name = "oracle"
    preset = ""
    parts = INSTRUMENTS
    min_seconds = 1.0

    def __init__(self, catalog: pc.PseudoCatalog, sample_rate: int) -> None:
        self.catalog = catalog
        self.songs = catalog.songs
        self.dim = len(self.songs)
        self.sample_rate = sample_rate
        self.model_hash = f"oracle-{catalog.manifest['key']}"

    def embed_song(self, catalog, song) -> np.ndarray:
        out = np.zeros((len(song.segments), len(INSTRUMENTS), self.dim), dtype=np.float32)
        for column, part in enumerate(INSTRUMENTS):
            source = self.catalog.sources(song.song_id)[part]
            if source is not None:
                out[:, column, self.songs.index(source)] = 1.0
        return out


# --------------------------------------------------------------------------------------------------------------
# planning (pure)
# --------------------------------------------------------------------------------------------------------------


def hand_segments(songs: dict, seconds: dict) -> dict:
    """Query segments of hand-made songs: the 10-s grid segments (at least 3 s long) where a part plays at least
    half the time (as its audio would be non-silent there)."""
    out = {}
    for song, entry in songs.items():
        out[song] = {}
        for part, truth in entry["parts"].items():
            kept = []
            for number in range(3):
                start, end = 10.0 * number, min(10.0 * number + 10.0, seconds[song])
                played = sum(max(0.0, min(end, b) - max(start, a)) for a, b in truth["active"])
                if end - start >= QUERY_MIN_SECONDS and played >= 0.5 * (end - start):
                    kept.append(number)
            out[song][part] = kept
    return out


def hand_songs(count: int = 8) -> tuple[dict, dict]:
    """Ground-truth entries of ``count`` songs of 25 s; song k lacks part k % 5 for odd k, every guitar plays only
    in 8-25 s, and the first song's piano only in 15-25 s."""
    songs, seconds = {}, {}
    for number in range(count):
        parts = {}
        for column, part in enumerate(INSTRUMENTS):
            if number % 2 and column == number % 5:
                continue
            active = [[8.0, 25.0]] if part == "guitar" else [[0.0, 25.0]]
            if number == 0 and part == "piano":
                active = [[15.0, 25.0]]
            parts[part] = {"style": f"style{(number + column) % 3}", "program": column, "active": active}
        songs[f"Track{number + 1:05d}"] = {"parts": parts, "duration": 25.0}
        seconds[f"Track{number + 1:05d}"] = 25.0
    return songs, seconds


def test_plan_follows_the_rules():
    songs, seconds = hand_songs()
    sizes = ev.EvaluationSizes(pairs_per_combination=2, relevant_per_query=3, distractors_per_side=2,
                               random_pieces=5, max_piece_seconds=20.0)
    segments = hand_segments(songs, seconds)
    plan = ev.plan_pseudo_catalog(songs, seconds, segments, sizes, seed=4, sample_rate=100)
    assert plan == ev.plan_pseudo_catalog(songs, seconds, segments, sizes, seed=4, sample_rate=100)  # seeded
    assert plan != ev.plan_pseudo_catalog(songs, seconds, segments, sizes, seed=5, sample_rate=100)
    queries = [ev.EvaluationQuery(**query) for query in plan["queries"]]
    assert len(queries) == 2 * len(ev.PART_COMBINATIONS) and not plan["skipped_combinations"]
    for query in queries:
        assert query.song_a != query.song_b
        assert (query.part_a, query.part_b) in ev.PART_COMBINATIONS
        # Both query parts play at least half of the pieces' first 20 s (every piece is 20 s long here).
        for song, part in ((query.song_a, query.part_a), (query.song_b, query.part_b)):
            (start, end), = songs[song]["parts"][part]["active"]
            assert min(end, 20.0) - start >= 10.0
        assert ("piano", "Track00001") not in {(query.part_a, query.song_a), (query.part_b, query.song_b)}
        for song, part, segment in ((query.song_a, query.part_a, query.segment_a),
                                    (query.song_b, query.part_b, query.segment_b)):
            spans = songs[song]["parts"][part]["active"]
            start, end = 10.0 * segment, min(10.0 * segment + 10.0, 25.0)
            played = sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)
            assert played >= 0.5 * (end - start) and end - start >= QUERY_MIN_SECONDS
        own = {piece: entry for piece, entry in plan["pieces"].items() if entry["query"] == query.query_id}
        kinds = pd.Series([entry["kind"] for entry in own.values()]).value_counts().to_dict()
        assert kinds == {"relevant": 3, "distractor_a": 2, "distractor_b": 2}
        # Relevance by the definition (p from A and q from B) over all pieces: exactly the planted ones.
        relevant = {piece for piece, entry in plan["pieces"].items()
                    if (entry["sources"][query.part_a], entry["sources"][query.part_b]) == (query.song_a, query.song_b)}
        assert relevant == {piece for piece, entry in own.items() if entry["kind"] == "relevant"}
        for entry in own.values():
            sources = entry["sources"]
            others = [sources[part] for part in INSTRUMENTS if part not in (query.part_a, query.part_b)]
            assert not {query.song_a, query.song_b} & set(others)
            if entry["kind"] == "relevant":
                assert (sources[query.part_a], sources[query.part_b]) == (query.song_a, query.song_b)
            elif entry["kind"] == "distractor_a":
                assert sources[query.part_a] == query.song_a and sources[query.part_b] != query.song_b
            else:
                assert sources[query.part_b] == query.song_b and sources[query.part_a] != query.song_a
            for part, source in sources.items():
                assert source is None or part in songs[source]["parts"]
    pieces = plan["pieces"]
    assert sum(entry["kind"] == "random" for entry in pieces.values()) == 5
    assert all(entry["seconds"] == 20.0 and entry["samples"] == 2000 for entry in pieces.values())
    assert sorted(pieces) == [f"Track{ev.PIECE_NUMBER_BASE + number:05d}" for number in range(len(pieces))]


def test_plan_skips_combinations_without_a_pair_and_refuses_too_few_songs():
    songs, seconds = hand_songs(4)
    for entry in songs.values():
        entry["parts"].pop("guitar", None)
    plan = ev.plan_pseudo_catalog(songs, seconds, hand_segments(songs, seconds), ev.EvaluationSizes(pairs_per_combination=1), seed=0)
    assert set(plan["skipped_combinations"]) == {f"{a}+{b}" for a, b in ev.PART_COMBINATIONS if "guitar" in (a, b)}
    assert all(entry["sources"]["guitar"] is None for entry in plan["pieces"].values())
    with pytest.raises(PartsimError, match="at least 3"):
        ev.plan_pseudo_catalog(dict(list(songs.items())[:2]), seconds, {}, ev.EvaluationSizes(pairs_per_combination=1))
    with pytest.raises(PartsimError, match="pairs_per_combination"):
        ev.plan_pseudo_catalog(songs, seconds, hand_segments(songs, seconds), ev.EvaluationSizes(pairs_per_combination=0))



def test_query_segments_follow_the_data_silence_rule():
    rate = 100
    audio = np.zeros(25 * rate, dtype=np.float32)
    audio[12 * rate:] = 0.1  # mean power 0.01 where it plays
    assert query_segments(audio, rate) == [1, 2]  # 20-25 s: 5 s, long enough
    assert query_segments(audio[:22 * rate], rate) == [1]  # 20-22 s is shorter than QUERY_MIN_SECONDS
    assert query_segments(np.zeros(30 * rate, dtype=np.float32), rate) == []
    # The one rule: mean power below 1e-4 is silent, at 1e-4 it is not.
    assert query_segments(np.full(10 * rate, 0.01, dtype=np.float64), rate) == [0]
    assert query_segments(np.full(10 * rate, 0.0099, dtype=np.float64), rate) == []
    # A part playing 1 s of a 10-s segment at full scale is not silent by power.
    sparse = np.zeros(10 * rate, dtype=np.float32)
    sparse[:rate] = 0.5
    assert query_segments(sparse, rate) == [0]


# --------------------------------------------------------------------------------------------------------------
# the written catalog
# --------------------------------------------------------------------------------------------------------------



def int16(path: Path) -> np.ndarray:
    audio, _ = sf.read(str(path), dtype="int16")
    return audio


def test_written_pieces_hold_their_sources_excerpts(tiny):
    catalog: pc.PseudoCatalog = tiny["catalog"]
    source = open_slakh(tiny["root"])
    written = open_slakh(catalog.root)
    assert {track.track_id for track in written.tracks("test")} == set(catalog.catalog_ids)
    source_frames = {track.track_id: sf.info(str(track.mix_path)).frames for track in source.tracks("test")}
    assert catalog.songs == sorted(source_frames)
    for query in catalog.queries:
        planted = [piece for piece, entry in catalog.pieces.items()
                   if entry["query"] == query.query_id and entry["kind"] == "relevant"]
        assert len(planted) == TINY_SIZES.relevant_per_query
        assert sorted(planted) == catalog.relevant(query)  # no piece is relevant by accident
    for piece_id, entry in catalog.pieces.items():
        piece = written.track(piece_id)
        used = [song for song in entry["sources"].values() if song is not None]
        length = min(source_frames[song] for song in used)
        mix = int16(piece.mix_path)
        assert mix.shape == (length,)
        groups = piece.stems_by_group()
        assert set(groups) == {part for part, song in entry["sources"].items() if song is not None}
        total = np.zeros(length, dtype=np.float64)
        for part, stems in groups.items():
            originals = source.track(entry["sources"][part]).stems_by_group()[part]
            assert len(stems) == len(originals)
            for stem, original in zip(stems, originals):
                excerpt = int16(stem.audio_path)
                np.testing.assert_array_equal(excerpt, int16(original.audio_path)[:length])
                assert stem.program_num == original.program_num and stem.is_drum == original.is_drum
                total += excerpt
        # The mix is the stems' sum at one gain (peak -1 dBFS), rounded to 16 bits.
        gain = float(piece.metadata["overall_gain"])
        np.testing.assert_allclose(mix, total * gain, atol=1.0)
        assert np.abs(mix).max() == pytest.approx(32768 * 10 ** (-1 / 20), abs=2)
        assert piece.metadata["partsim_pseudo_piece"] == entry["sources"]
    # The test songs are the dataset's own files.
    for song in catalog.songs:
        np.testing.assert_array_equal(int16(written.track(song).mix_path), int16(source.track(song).mix_path))


def test_catalog_is_reused_and_keyed(tiny):
    first = tiny["catalog"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
        again = pc.build_pseudo_catalog(tiny["data"], sizes=TINY_SIZES, seed=0, progress=False)
        other = pc.build_pseudo_catalog(tiny["data"], sizes=TINY_SIZES, seed=1, progress=False)
        validation = pc.build_pseudo_catalog(tiny["data"], split="validation", sizes=TINY_SIZES, seed=0,
                                             progress=False)
    assert again.reused and again.root == first.root and again.manifest == first.manifest
    assert not other.reused and other.manifest["key"] != first.manifest["key"] and other.root != first.root
    # The validation catalog holds the validation songs only: never a test song.
    assert validation.manifest["source_split"] == "validation"
    test_ids = {track.track_id for track in tiny["data"].dataset.tracks("test")}
    assert set(validation.songs) == {track.track_id for track in tiny["data"].dataset.tracks("validation")}
    assert not test_ids & set(validation.songs)
    # Its location is printed relative to the cache, never as a machine path.
    assert first.summary()["location"].startswith("<cache>/mixquery-pseudo-catalog/")
    # A changed file is caught by the artefact manifest and the catalog is rebuilt.
    mix = first.root / "test" / first.catalog_ids[-1] / "mix.flac"
    mix.write_bytes(mix.read_bytes()[:-1] + bytes([mix.read_bytes()[-1] ^ 1]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
        rebuilt = pc.build_pseudo_catalog(tiny["data"], sizes=TINY_SIZES, seed=0, progress=False)
    assert not rebuilt.reused and rebuilt.manifest == first.manifest
    ground_truth = first.ground_truth()
    assert list(ground_truth.index) == [query.query_id for query in first.queries]
    assert (ground_truth["relevant"] == TINY_SIZES.relevant_per_query).all()


def test_a_dataset_without_ground_truth_is_refused(tiny, tmp_path):
    copy = tmp_path / "no-truth"
    shutil.copytree(tiny["root"], copy)
    (copy / GROUND_TRUTH_FILE).unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
        data = load_dataset("smoke", copy)
        with pytest.raises(PartsimError, match="no partsim_ground_truth.json.*generator.*Slakh2100 has no"):
            pc.build_pseudo_catalog(data, sizes=TINY_SIZES, progress=False)
    assert not (tmp_path / "cache" / pc.ARTEFACT_KIND).exists()
