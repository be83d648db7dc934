"""The Data chapter's tables (``partsim_core.data.summary``) on a hand-made dataset; expected values by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data_slakh import write_track

from partsim_core.data import summary
from partsim_core.data.dataset import load_dataset

RATE = 16000  # the smoke preset's analysis rate: no resampling in the stem cache


def loud_for(seconds_on: float, total_seconds: float = 6.0) -> np.ndarray:
    audio = np.zeros(int(total_seconds * RATE), dtype=np.float32)
    audio[: int(seconds_on * RATE)] = 0.5
    return audio


@pytest.fixture
def handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Train: 2 tracks (drums 6 s + bass 3 s loud; drums only). Test: 1 track (drums + piano 6 s). 6-s tracks."""
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    drums = {"program": 128, "is_drum": True, "audio": loud_for(6.0)}
    write_track(root / "train" / "Track00001", {"S00": drums, "S01": {"program": 33, "audio": loud_for(3.0)}},
                sample_rate=RATE)
    write_track(root / "train" / "Track00002", {"S00": drums}, sample_rate=RATE)
    write_track(root / "test" / "Track00003", {"S00": drums, "S01": {"program": 0, "audio": loud_for(6.0)},
                                               "S02": {"program": 1, "audio": loud_for(1.0)}}, sample_rate=RATE)
    return load_dataset("smoke", root)


def test_split_and_stem_tables(handle) -> None:
    assert summary.present_splits(handle) == ["train", "test"]  # no validation tracks
    table = summary.split_table(handle)
    assert table.loc["train", "tracks"] == 2 and table.loc["test", "tracks"] == 1 and table.loc["total", "tracks"] == 3
    assert table.loc["total", "minutes of audio"] == pytest.approx(18 / 60)  # three 6-s mixes
    assert table.loc["train", "with bass"] == 1 and table.loc["test", "with piano"] == 1
    assert table.loc["total", "with drums"] == 3
    stems = summary.stem_counts(handle)
    assert stems.loc["test", "piano"] == 2 and stems.loc["train", "drums"] == 2 and stems.loc["test", "bass"] == 0


def test_part_durations_follow_the_silence_rule(handle) -> None:
    durations = summary.part_durations(handle).set_index(["track", "part"])
    # 3-s segments: bass loud for the first 3 s of 6 -> 1 non-silent segment = 3 s, half of the track.
    assert durations.loc[("Track00001", "bass"), "non-silent seconds"] == 3.0
    assert durations.loc[("Track00001", "bass"), "share playing"] == 0.5
    assert durations.loc[("Track00003", "piano"), "non-silent seconds"] == 6.0
    assert ("Track00002", "bass") not in durations.index
    minutes = summary.non_silent_minutes(summary.part_durations(handle), summary.present_splits(handle))
    assert minutes.loc["train", "drums"] == pytest.approx(12 / 60) and minutes.loc["train", "bass"] == 0.05


def test_filter_counts_clips_and_results(handle) -> None:
    assert summary.filtered_test_counts(handle) == {"before": 1, "kept": 1, "removed": 0}  # floor(0.1 * 1) = 0
    test_track = handle.test_tracks[0]
    clips = summary.listening_clips(handle.cache, [test_track])
    assert list(clips) == ["mix", "drums", "bass", "piano", "guitar", "others"]
    assert clips["bass"]["Track00003"] is None and clips["guitar"]["Track00003"] is None
    assert len(clips["piano"]["Track00003"]) == 6 * RATE
    results = summary.data_results(handle)
    assert results["tracks"] == {"train": 2, "test": 1} and results["sample_rate"] == RATE


def test_style_tables() -> None:
    assert summary.style_tables(None) is None
    truth = {"tracks": {"Track00002": {"split": "train", "tempo": 100, "key": "C", "mode": "major",
                                       "parts": {"drums": {"style": "rock"}}},
                        "Track00001": {"split": "test", "tempo": 90, "key": "A", "mode": "minor",
                                       "parts": {"drums": {"style": "rock"}, "bass": {"style": "walk"}}}}}
    per_track, per_style = summary.style_tables(truth)
    assert list(per_track.index) == ["Track00001", "Track00002"]
    assert per_track.loc["Track00002", "bass"] == "-" and per_track.loc["Track00001", "key"] == "A minor"
    assert per_style.loc["rock", "drums"] == 2 and per_style.loc["walk", "bass"] == 1
    assert per_style.loc["walk", "drums"] == 0
