"""Tests of the decoded-stem cache (``StemCache`` in ``partsim_core.data.cache``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from test_data_slakh import REDUX_SAMPLE, need, write_track

from partsim_core.data import slakh
from partsim_core.data.cache import StemCache
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError

RATE = 8000


def quantised(values: np.ndarray) -> np.ndarray:
    """What 16-bit flac stores for ``values`` (soundfile scales by 2**15 and rounds)."""
    return np.round(np.asarray(values, dtype=np.float64) * 32768) / 32768


@pytest.fixture()
def dataset(tmp_path):
    t = np.arange(RATE) / RATE
    write_track(
        tmp_path / "data" / "train" / "Track00001",
        {
            "S00": {"program": 128, "is_drum": True, "audio": np.full(RATE, 0.25)},
            "S01": {"program": 25, "audio": 0.25 * np.sin(2 * np.pi * 440 * t)},
            "S02": {"program": 29, "audio": np.full(RATE, -0.125)},
            "S03": {"program": 103, "audio": None, "rendered": False},
        },
        sample_rate=RATE,
    )
    return open_slakh(tmp_path / "data")


def test_group_is_sum_of_its_stems_and_missing_group_is_zeros(dataset, tmp_path):
    track = dataset.track("Track00001")
    cache = StemCache(dataset, RATE, root=tmp_path / "cache")
    t = np.arange(RATE) / RATE
    guitar = cache.get(track, "guitar")
    assert isinstance(guitar, np.memmap) and guitar.dtype == np.float32 and not guitar.flags.writeable
    expected_guitar = quantised(0.25 * np.sin(2 * np.pi * 440 * t)) + quantised(np.full(RATE, -0.125))
    np.testing.assert_allclose(guitar, expected_guitar, atol=1e-6)
    np.testing.assert_allclose(cache.get(track, "drums"), quantised(np.full(RATE, 0.25)), atol=1e-6)
    for absent in ("bass", "piano", "others"):
        part = cache.get(track, absent)
        assert part.shape == (RATE,) and not part.any() and not part.flags.writeable
    parts = cache.get_all(track)
    assert list(parts) == ["drums", "bass", "piano", "guitar", "others", "mix"]
    # The written mix is the float sum quantised once.
    np.testing.assert_allclose(parts["mix"], quantised(0.25 + 0.25 * np.sin(2 * np.pi * 440 * t) - 0.125), atol=1e-6)
    with pytest.raises(PartsimError, match="unknown part 'vocals'"):
        cache.get(track, "vocals")


def test_resampled_lengths_match_across_parts(dataset, tmp_path):
    track = dataset.track("Track00001")
    cache = StemCache(dataset, 3000, root=tmp_path / "cache")
    # 8000 -> 3000 Hz: 8000 * 3 / 8 = 3000 samples, for present and absent parts alike.
    assert {name: len(audio) for name, audio in cache.get_all(track).items()} == dict.fromkeys(
        ["drums", "bass", "piano", "guitar", "others", "mix"], 3000)
    drums = np.asarray(cache.get(track, "drums"))
    assert drums[500:2500] == pytest.approx(0.25, abs=1e-3)  # a constant stays constant away from the edges


def test_second_get_reads_the_cache_and_keys_follow_inputs(dataset, tmp_path, monkeypatch):
    track = dataset.track("Track00001")
    calls: list[str] = []
    real_load = slakh.load_audio

    def counting_load(path, sample_rate):
        calls.append(path.name)
        return real_load(path, sample_rate)

    monkeypatch.setattr(slakh, "load_audio", counting_load)
    cache = StemCache(dataset, RATE, root=tmp_path / "cache")
    first = np.array(cache.get(track, "guitar"))
    assert sorted(calls) == ["S01.flac", "S02.flac"]
    calls.clear()
    np.testing.assert_array_equal(cache.get(track, "guitar"), first)
    np.testing.assert_array_equal(StemCache(dataset, RATE, root=tmp_path / "cache").get(track, "guitar"), first)
    assert calls == []

    other_rate = StemCache(dataset, 4000, root=tmp_path / "cache")
    assert other_rate.key(track, "guitar") != cache.key(track, "guitar")
    assert cache.key(track, "guitar") != cache.key(track, "drums")

    old_key = cache.key(track, "guitar")
    stem = track.folder / "stems" / "S02.flac"
    stat = stem.stat()
    os.utime(stem, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert cache.key(track, "guitar") != old_key
    cache.get(track, "guitar")
    assert sorted(calls) == ["S01.flac", "S02.flac"]


def test_default_root_is_under_cache_root(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "env-cache"))
    cache = StemCache(dataset, RATE)
    track = dataset.track("Track00001")
    cache.get(track, "drums")
    assert cache.path(track, "drums").is_file()
    assert cache.path(track, "drums").is_relative_to(tmp_path / "env-cache" / "stems")


def test_sample_rate_mismatch_and_nan_stems_raise(tmp_path):
    write_track(tmp_path / "data" / "Track00001",
                {"S00": {"program": 33, "audio": np.zeros(RATE), "sample_rate": 16000},
                 "S01": {"program": 0, "audio": np.zeros(RATE)}}, sample_rate=RATE)
    dataset = open_slakh(tmp_path / "data")
    cache = StemCache(dataset, RATE, root=tmp_path / "cache")
    with pytest.raises(PartsimError, match="S00.flac: sample rate 16000 Hz differs"):
        cache.get(dataset.track("Track00001"), "bass")

    folder = write_track(tmp_path / "nan" / "Track00002", {"S00": {"program": 0, "audio": np.zeros(100)}})
    sf.write(folder / "stems" / "S00.wav", np.array([0.0, np.inf] * 50, dtype=np.float32), RATE, subtype="FLOAT")
    (folder / "stems" / "S00.flac").unlink()
    nan_data = open_slakh(tmp_path / "nan")
    with pytest.raises(PartsimError, match="S00.wav.*NaN or infinite"):
        StemCache(nan_data, RATE, root=tmp_path / "cache").get(nan_data.track("Track00002"), "piano")
    assert not list((tmp_path / "cache").rglob("*Track00002*"))  # nothing half-written


def test_real_sample_resampled_to_16k(tmp_path):
    dataset = open_slakh(need(REDUX_SAMPLE))
    track = dataset.track("Track00001")
    parts = StemCache(dataset, 16000, root=tmp_path / "cache").get_all(track)
    # 2 s at 44.1 kHz -> 32000 samples at 16 kHz.
    assert all(audio.shape == (32000,) for audio in parts.values())
    assert all(np.isfinite(audio).all() for audio in parts.values())


def test_bad_sample_rate_is_refused(dataset):
    with pytest.raises(PartsimError, match="sample_rate"):
        StemCache(dataset, 0)


@pytest.mark.parametrize("damage", ["truncate", "garble-header", "other-length", "other-type"])
def test_a_damaged_entry_is_decoded_again(dataset, tmp_path, damage):
    track = dataset.track("Track00001")
    cache = StemCache(dataset, RATE, root=tmp_path / "cache")
    expected = np.array(cache.get(track, "guitar"))
    path = cache.path(track, "guitar")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garble-header":
        path.write_bytes(b"\x00" * 16 + data[16:])
    elif damage == "other-length":
        np.save(path, np.zeros(RATE // 2, dtype=np.float32))
    else:
        np.save(path, np.zeros(RATE, dtype=np.float64))
    again = cache.get(track, "guitar")
    assert again.dtype == np.float32 and again.shape == (RATE,)
    np.testing.assert_array_equal(again, expected)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
