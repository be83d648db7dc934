"""Tests of segments, the silence rule, the 10 % test filter and tempo classes (``partsim_core.data.segments``).

Expected values are worked out by hand in the comments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from test_data_slakh import REDUX_SAMPLE, need, write_track

from partsim_core.data.cache import StemCache
from partsim_core.data.segments import (
    SILENCE_THRESHOLD,
    filter_test_tracks,
    non_silent_mask,
    segment_power,
    segment_starts,
    tempo_classes,
    track_tempo,
)
from partsim_core.data.slakh import Stem, Track, open_slakh
from partsim_core.errors import PartsimError


def test_segment_starts_by_hand():
    # 10 s at 1 kHz, 3-s segments: 0, 3000, 6000 (9000 would end at 12000 > 10000: dropped).
    np.testing.assert_array_equal(segment_starts(10_000, 1000, 3.0, overlap=False), [0, 3000, 6000])
    # 50 % overlap: hop 1500 -> 0 ... 6000 (7500 would end at 10500).
    np.testing.assert_array_equal(segment_starts(10_000, 1000, 3.0, overlap=True), [0, 1500, 3000, 4500, 6000])
    np.testing.assert_array_equal(segment_starts(10_000, 1000, 5.0, overlap=False), [0, 5000])
    np.testing.assert_array_equal(segment_starts(10_000, 1000, 10.0, overlap=False), [0])
    np.testing.assert_array_equal(segment_starts(10_000, 1000, 10.0, overlap=True), [0])
    assert segment_starts(2999, 1000, 3.0, overlap=False).size == 0
    # 44.1 kHz, 3 s = 132300 samples; 60 s holds 20 segments, 39 with overlap.
    assert len(segment_starts(60 * 44100, 44100, 3.0, overlap=False)) == 20
    assert len(segment_starts(60 * 44100, 44100, 3.0, overlap=True)) == 39
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(PartsimError, match="seconds"):
            segment_starts(1000, 1000, bad, overlap=False)


def test_segment_power_and_silence_by_hand():
    audio = np.array([1, -1, 0, 0, 2, 2], dtype=np.float32)
    # squares 1,1 | 0,0 | 4,4 -> means 1, 0, 4; overlapping start 1: (1 + 0) / 2.
    np.testing.assert_allclose(segment_power(audio, np.array([0, 2, 4]), 2), [1.0, 0.0, 4.0])
    np.testing.assert_allclose(segment_power(audio, np.array([1]), 2), [0.5])
    # Amplitude 0.0101 -> power 1.0201e-4 >= 1e-4: not silent; 0.0099 -> 9.801e-5 < 1e-4: silent.
    quiet = np.concatenate([np.full(100, 0.0101), np.full(100, 0.0099), np.zeros(100)])
    np.testing.assert_array_equal(non_silent_mask(quiet, np.array([0, 100, 200]), 100), [True, False, False])
    assert SILENCE_THRESHOLD == 1e-4
    with pytest.raises(PartsimError, match="run past"):
        segment_power(audio, np.array([5]), 2)


RATE = 1000


def loud_for(seconds_on: float, total_seconds: float = 12.0) -> np.ndarray:
    """0.5 amplitude for the first ``seconds_on`` seconds, silence after."""
    audio = np.zeros(int(total_seconds * RATE))
    audio[: int(seconds_on * RATE)] = 0.5
    return audio


def test_filter_drops_tracks_with_shortest_non_silent_part(tmp_path):
    # Ten 12-s tracks (4 segments of 3 s). Drums always loud (12 s); bass loud for the seconds below:
    # non-silent bass = 3 s per loud segment. Track00004 bass 3 s (1 segment), Track00007 bass 6 s, Track00009 has
    # no bass but a piano loud 4.5 s -> segment 1 half loud (power 0.125 > 1e-4) -> 2 segments = 6 s.
    # Everything else 12 s. fraction 0.2 -> floor(2) dropped: Track00004 (3 s), then the tie at 6 s between
    # Track00007 and Track00009 is broken by track id -> Track00007.
    bass_seconds = {4: 3.0, 7: 6.0}
    for number in range(1, 11):
        stems = {"S00": {"program": 128, "is_drum": True, "audio": loud_for(12.0)}}
        if number == 9:
            stems["S01"] = {"program": 0, "audio": loud_for(4.5)}
        else:
            stems["S01"] = {"program": 33, "audio": loud_for(bass_seconds.get(number, 12.0))}
        write_track(tmp_path / "data" / "test" / f"Track{number:05d}", stems, sample_rate=RATE)
    dataset = open_slakh(tmp_path / "data")
    cache = StemCache(dataset, RATE, root=tmp_path / "cache")
    tracks = dataset.tracks("test")
    kept, table = filter_test_tracks(cache, tracks, fraction=0.2, seconds=3.0, progress=False)
    assert [t.track_id for t in kept] == [f"Track{n:05d}" for n in (1, 2, 3, 5, 6, 8, 9, 10)]
    assert table.loc["Track00004", "shortest_non_silent_s"] == 3.0
    assert table.loc["Track00004", "shortest_part"] == "bass"
    assert table.loc["Track00009", "piano"] == 6.0 and math.isnan(table.loc["Track00009", "bass"])
    assert table.loc["Track00001", "drums"] == 12.0
    assert table["drop_order"].dropna().to_dict() == {"Track00004": 1.0, "Track00007": 2.0}
    assert table["kept"].sum() == 8
    # 5-s segments: 12 s holds 2; Track00004's bass (3 s loud) fills 60 % of segment 0 -> 1 non-silent = 5 s.
    _, table5 = filter_test_tracks(cache, tracks, fraction=0.1, seconds=5.0, progress=False)
    assert table5.loc["Track00004", "bass"] == 5.0 and table5["kept"].sum() == 9


class FakeCache:
    """Stands in for StemCache: part audio whose non-silent length is the track number (in segments)."""

    sample_rate = 100

    def get(self, track: Track, part: str) -> np.ndarray:
        return loud_for_segments(track.number)


def loud_for_segments(n: int) -> np.ndarray:
    audio = np.zeros(300 * 200)
    audio[: 300 * n] = 1.0
    return audio


def test_filter_removes_ten_percent_151_to_136():
    stems = (Stem("S00", 33, False, "Bass", "Bass", "None", True, Path("S00.flac"), "bass"),)
    tracks = [Track(f"Track{n:05d}", "test", Path("."), None, stems, {}) for n in range(1, 152)]
    kept, table = filter_test_tracks(FakeCache(), tracks, progress=False)
    # floor(0.1 * 151) = 15: the 15 shortest (Track00001 .. Track00015) go.
    assert len(kept) == 136
    assert [t.number for t in kept] == list(range(16, 152))
    assert table.loc["Track00015", "bass"] == 45.0  # 15 segments of 3 s
    with pytest.raises(PartsimError, match="fraction"):
        filter_test_tracks(FakeCache(), tracks, fraction=1.5, progress=False)


def test_tempo_from_real_midi_matches_pretty_midi():
    track = open_slakh(need(REDUX_SAMPLE)).track("Track00001")
    reference = pretty_midi.PrettyMIDI(str(track.folder / "all_src.mid")).get_tempo_changes()[1][0]
    assert track_tempo(track) == pytest.approx(reference, rel=1e-9)


def test_tempo_default_and_errors(tmp_path):
    write_track(tmp_path / "Track00001", {"S00": {"program": 0, "audio": np.zeros(10)}}, tempo_bpm=None)
    write_track(tmp_path / "Track00002", {"S00": {"program": 0, "audio": np.zeros(10)}}, tempo_bpm=90.0)
    dataset = open_slakh(tmp_path)
    assert track_tempo(dataset.track("Track00001")) == 120.0  # MIDI default: 500000 us per beat
    assert track_tempo(dataset.track("Track00002")) == pytest.approx(90.0)
    (tmp_path / "Track00002" / "all_src.mid").write_bytes(b"not midi at all")
    with pytest.raises(PartsimError, match="Track00002.*all_src.mid"):
        track_tempo(dataset.track("Track00002"))
    (tmp_path / "Track00002" / "all_src.mid").unlink()
    with pytest.raises(PartsimError, match="not found"):
        track_tempo(dataset.track("Track00002"))


def test_tempo_classes_equal_population():
    # 8 tracks, 36 wanted -> max(1, 8 // 4) = 2 classes of 4: the four slowest in class 0.
    tempos = {"a": 90.0, "b": 150.0, "c": 60.0, "d": 120.0, "e": 120.0, "f": 80.0, "g": 200.0, "h": 100.0}
    assert tempo_classes(tempos) == {"c": 0, "f": 0, "a": 0, "h": 0, "d": 1, "e": 1, "b": 1, "g": 1}
    assert tempo_classes({"x": 100.0}) == {"x": 0}
    assert tempo_classes({}) == {}
    # 151 tracks, 36 classes: sizes 4 or 5 (151 = 36 * 4 + 7), ordered by tempo.
    many = {f"T{i:03d}": 60.0 + (i * 37) % 151 for i in range(151)}
    classes = tempo_classes(many, 36)
    sizes = np.bincount(list(classes.values()))
    assert len(sizes) == 36 and sizes.sum() == 151 and set(sizes) == {4, 5}
    ordered = sorted(many, key=many.get)
    assert [classes[t] for t in ordered] == sorted(classes.values())
    with pytest.raises(PartsimError, match="T000"):
        tempo_classes({"T000": math.nan})
