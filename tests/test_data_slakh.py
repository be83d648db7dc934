"""Tests of the Slakh-format reader (``partsim_core.data.slakh``) on the real samples in ../shared and on tiny
synthetic roots. ``write_track`` here is also used by the cache, segments and CLI tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
import yaml

from partsim_core.data.slakh import (
    GROUPS,
    Stem,
    Track,
    group_for_program,
    load_audio,
    open_slakh,
)
from partsim_core.errors import PartsimError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLES = SHARED / "slakh_format_sample"
REDUX_SAMPLE = SAMPLES / "slakh2100_flac_redux"
BABY_SAMPLE = SAMPLES / "babyslakh_16k"
REDUX_JSON = SAMPLES / "slakh-utils" / "redux.json"
BAND_YAML = SAMPLES / "slakh-utils" / "band.yaml"


def need(path: Path) -> Path:
    """Skip the test when a shared sample is absent."""
    if not path.exists():
        pytest.skip(f"shared sample {path.name} not found beside the repository (../shared)")
    return path


def write_track(
    folder: Path,
    stems: dict[str, dict],
    sample_rate: int = 8000,
    mix: bool = True,
    tempo_bpm: float | None = 120.0,
    extension: str = ".flac",
) -> Path:
    """Write a minimal Slakh track folder.

    ``stems`` maps stem ids to ``{"program": int, "is_drum": bool, "audio": array | None, "rendered": bool,
    "sample_rate": int}`` (audio ``None`` = no file). The mix is the sum of the stems.
    """
    (folder / "stems").mkdir(parents=True, exist_ok=True)
    metadata = {"audio_dir": f"{folder.name}/stems", "midi_dir": f"{folder.name}/MIDI", "stems": {}}
    total = None
    for stem_id, spec in stems.items():
        metadata["stems"][stem_id] = {
            "audio_rendered": spec.get("rendered", spec.get("audio") is not None),
            "inst_class": spec.get("inst_class", "Test"),
            "is_drum": spec.get("is_drum", False),
            "midi_program_name": "Test Program",
            "plugin_name": spec.get("plugin_name", "test.nkm"),
            "program_num": spec["program"],
        }
        audio = spec.get("audio")
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            sf.write(folder / "stems" / f"{stem_id}{extension}", audio, spec.get("sample_rate", sample_rate))
            total = audio.copy() if total is None else total + audio
    (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    if mix and total is not None:
        sf.write(folder / f"mix{extension}", total, sample_rate)
    midi = mido.MidiFile(ticks_per_beat=96)
    track = mido.MidiTrack()
    if tempo_bpm is not None:
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    track.append(mido.Message("note_on", note=60, velocity=64, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=96))
    midi.tracks.append(track)
    midi.save(folder / "all_src.mid")
    return folder


def band_recipe() -> dict[int, str]:
    """program_num -> group from the official band.yaml (residuals = others)."""
    recipe = yaml.safe_load(need(BAND_YAML).read_text())
    assert recipe["Mixing key"] == "program_num"
    return {int(program): name.lower() for name, programs in recipe["Recipes"].items() for program in programs}


def test_grouping_matches_official_band_yaml():
    recipe = band_recipe()
    assert set(recipe.values()) == {"piano", "guitar", "bass", "drums"}
    for program in range(129):
        assert group_for_program(program, program == 128) == recipe.get(program, "others"), program
    # A drum stem is drums whatever program number it carries.
    assert group_for_program(0, True) == "drums"
    assert group_for_program(128, False) == "drums"


def test_redux_sample_tracks_stems_and_groups():
    dataset = open_slakh(need(REDUX_SAMPLE))
    assert dataset.variant == "redux_flac"
    assert [t.track_id for t in dataset.tracks()] == ["Track00001"]
    assert [t.track_id for t in dataset.tracks("train")] == ["Track00001"]
    assert dataset.tracks("test") == []
    track = dataset.track("Track00001")
    assert track.number == 1 and track.split == "train"
    assert track.mix_path == REDUX_SAMPLE / "train" / "Track00001" / "mix.flac"

    metadata = yaml.safe_load((track.folder / "metadata.yaml").read_text())
    assert [s.stem_id for s in track.stems] == sorted(metadata["stems"])
    s06 = next(s for s in track.stems if s.stem_id == "S06")
    assert s06.audio_path is None and s06.audio_rendered is False and s06.plugin_name == "None"
    assert s06.program_num == 103 and s06.group == "others"

    # Count stems with files per group independently: files on disk + band.yaml recipe.
    recipe = band_recipe()
    expected: dict[str, set[str]] = {}
    for stem_file in (track.folder / "stems").glob("S*.flac"):
        info = metadata["stems"][stem_file.stem]
        program = 128 if info["is_drum"] else info["program_num"]
        expected.setdefault(recipe.get(program, "others"), set()).add(stem_file.stem)
    grouped = track.stems_by_group()
    assert list(grouped) == [g for g in GROUPS if g in expected]
    assert {g: {s.stem_id for s in stems} for g, stems in grouped.items()} == expected


def test_babyslakh_files_decide_and_metadata_less_track_is_reported():
    dataset = open_slakh(need(BABY_SAMPLE))
    assert dataset.variant == "babyslakh"
    track = dataset.track("Track00001")
    assert track.split == "train"  # numeric rule: 1-1500 train
    assert track.mix_path is not None and track.mix_path.suffix == ".wav"
    with_files = {s.stem_id for s in track.stems if s.audio_path is not None}
    assert with_files == {p.stem for p in (track.folder / "stems").glob("*.wav")}
    assert all(not s.audio_rendered for s in track.stems)
    assert [p["file"] for p in dataset.problems] == [str(BABY_SAMPLE / "Track00007" / "metadata.yaml")]
    with pytest.raises(PartsimError, match="Track00007"):
        dataset.track("Track00007")


def test_original_layout_with_redux_json(tmp_path):
    redux = json.loads(need(REDUX_JSON).read_text())
    assert redux["Track00049"]["action"] == "omit" and redux["Track00001"]["action"] is None
    assert redux["Track01602"]["action"] is None and redux["Track01900"]["action"] is None
    one = {"S00": {"program": 33, "audio": np.zeros(800)}}
    for track_id in ("Track00001", "Track00049", "Track01602", "Track01900"):
        write_track(tmp_path / track_id, one)
    (tmp_path / "README.txt").write_text("not a track")

    plain = open_slakh(tmp_path)
    assert plain.variant == "original"
    assert {t.track_id: t.split for t in plain.tracks()} == {
        "Track00001": "train", "Track00049": "train", "Track01602": "validation", "Track01900": "test"}
    with_redux = open_slakh(tmp_path, redux_json=REDUX_JSON)
    assert [t.track_id for t in with_redux.tracks("omitted")] == ["Track00049"]
    assert [t.track_id for t in with_redux.tracks("train")] == ["Track00001"]
    assert with_redux.split_counts() == {"train": 1, "validation": 1, "test": 1, "omitted": 1}


def test_split_folders_extra_files_and_wav_audio_dir_variants(tmp_path):
    write_track(tmp_path / "test" / "Track00003", {"S00": {"program": 0, "audio": np.ones(800) * 0.1}})
    drum = {"program": 128, "is_drum": True, "audio": np.ones(800) * 0.1}
    write_track(tmp_path / "train" / "Track00002", {"S00": drum})
    (tmp_path / "partsim_ground_truth.json").write_text("{}")
    dataset = open_slakh(tmp_path)
    assert [(t.track_id, t.split) for t in dataset.tracks()] == [("Track00002", "train"), ("Track00003", "test")]
    assert dataset.track("Track00002").stems[0].group == "drums"
    # A split folder given directly as the root keeps its split.
    assert open_slakh(tmp_path / "test").track("Track00003").split == "test"


def test_unusable_roots_raise_naming_the_path(tmp_path):
    with pytest.raises(PartsimError, match="not found"):
        open_slakh(tmp_path / "missing")
    with pytest.raises(PartsimError, match="no TrackXXXXX"):
        open_slakh(tmp_path)
    with pytest.raises(PartsimError, match="unknown split"):
        open_slakh(need(REDUX_SAMPLE)).tracks("dev")


@pytest.mark.parametrize(
    "text, message",
    [("stems: [unclosed\n", "malformed YAML"), ("audio_dir: stems\n", "no 'stems'"),
     ("stems:\n  S00: {is_drum: false}\n", "program_num")],
)
def test_malformed_metadata_raises_naming_the_file(tmp_path, text, message):
    folder = write_track(tmp_path / "Track00001", {"S00": {"program": 0, "audio": np.zeros(800)}})
    (folder / "metadata.yaml").write_text(text)
    with pytest.raises(PartsimError, match=message) as caught:
        open_slakh(tmp_path)
    assert str(folder / "metadata.yaml") in str(caught.value)
    lenient = open_slakh(tmp_path, strict=False)
    assert lenient.tracks() == [] and lenient.problems[0]["file"] == str(folder / "metadata.yaml")


def test_load_audio_resamples_and_downmixes(tmp_path):
    rate = 48000
    t = np.arange(rate) / rate
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    stereo = np.stack([left, left + 0.2], axis=1)  # mean = sine + 0.1
    sf.write(tmp_path / "tone.flac", stereo, rate, subtype="PCM_24")
    audio = load_audio(tmp_path / "tone.flac", 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.shape == (16000,)
    middle = audio[2000:14000]  # away from filter edges
    assert np.mean(middle) == pytest.approx(0.1, abs=1e-3)
    spectrum = np.abs(np.fft.rfft(middle - middle.mean()))
    assert np.argmax(spectrum) * 16000 / len(middle) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean((middle - 0.1) ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_load_audio_rejects_corrupt_nan_and_missing(tmp_path):
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(PartsimError, match="nan.wav.*NaN"):
        load_audio(tmp_path / "nan.wav", 8000)
    sf.write(tmp_path / "good.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 8000), 8000)
    data = (tmp_path / "good.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(PartsimError, match="cut.flac"):
        load_audio(tmp_path / "cut.flac", 8000)
    with pytest.raises(PartsimError, match="absent.flac"):
        load_audio(tmp_path / "absent.flac", 8000)


def test_track_is_hashable_and_stems_by_group_skips_missing_files(tmp_path):
    stems = (
        Stem("S00", 33, False, "Bass", "Bass", "None", True, None, "bass"),
        Stem("S01", 0, False, "Piano", "Piano", "p.nkm", True, tmp_path / "S01.flac", "piano"),
    )
    track = Track("Track00010", "train", tmp_path, None, stems, {"stems": {}})
    assert track.number == 10
    assert {track: 1}[track] == 1
    assert list(track.stems_by_group()) == ["piano"]


def test_shared_samples_copy_is_independent(tmp_path):
    """The reader follows audio_dir 'TrackXXXXX/stems' relative to the split folder."""
    copy = tmp_path / "redux"
    shutil.copytree(need(REDUX_SAMPLE), copy)
    track = open_slakh(copy).track("Track00001")
    assert all(s.audio_path is None or s.audio_path.parent == copy / "train" / "Track00001" / "stems"
               for s in track.stems)


def test_full_original_numbering_with_official_redux_gives_published_split_sizes(tmp_path):
    """2100 metadata-only track folders + the official redux.json -> 1289 / 270 / 151 (+ 390 omitted)."""
    redux_json = need(REDUX_JSON)
    metadata = yaml.safe_dump({"stems": {"S00": {"program_num": 0, "is_drum": False, "audio_rendered": True}}})
    for number in range(1, 2101):
        folder = tmp_path / f"Track{number:05d}"
        folder.mkdir()
        (folder / "metadata.yaml").write_text(metadata)
    dataset = open_slakh(tmp_path, redux_json=redux_json)
    assert dataset.split_counts() == {"train": 1289, "validation": 270, "test": 151, "omitted": 390}
    assert open_slakh(tmp_path).split_counts() == {"train": 1500, "validation": 375, "test": 225, "omitted": 0}
