"""Tests of the embedded mini-Slakh generator (``partsim_core.data.compose``, ``.music``, ``.part_patterns`` and
``partsim_core.data.synth``)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from conftest import process_running
import soundfile
import yaml

from partsim_core import INSTRUMENTS
from partsim_core.data import compose, music, part_patterns, synth
from partsim_core.data.outputs import MARKER
from partsim_core.errors import PartsimError
from partsim_core.presets import SynthConfig

SAMPLE_TRACK = Path("slakh_format_sample") / "slakh2100_flac_redux" / "train" / "Track00001"
#: Three 4-second tracks (one per split) at a low sample rate: enough for every layout rule, in about a second.
TINY = SynthConfig(n_train=1, n_validation=1, n_test=1, min_seconds=4.0, max_seconds=4.0, sample_rate=16000)
#: The real sample's normalization plays no role here; 16-bit rounding of one sample is 1/32768.
LSB = 1.0 / 32768.0


def make_tiny(out: Path, seed: int = 0, jobs: int = 1) -> Path:
    return synth.synthesize_dataset(out, "smoke", seed=seed, jobs=jobs, progress=False, config=TINY)


def track_folders(root: Path) -> list[Path]:
    return sorted((folder for split in synth.SPLITS for folder in (root / split).glob("Track*")), key=lambda f: f.name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "mini-slakh")


@pytest.fixture(scope="module")
def truth(tiny: Path) -> dict:
    return json.loads((tiny / synth.GROUND_TRUTH_FILE).read_text())


# ---------------------------------------------------------------------------------------------------- layout


def test_layout_matches_slakh_redux(tiny: Path, truth: dict) -> None:
    assert sorted(path.name for path in tiny.iterdir()) == sorted([MARKER, synth.GROUND_TRUTH_FILE, "test", "train",
                                                                   "validation"])
    assert [folder.name for folder in track_folders(tiny)] == ["Track00001", "Track00002", "Track00003"]
    assert {name: entry["split"] for name, entry in truth["tracks"].items()} == {
        "Track00001": "train", "Track00002": "validation", "Track00003": "test"}
    for folder in track_folders(tiny):
        metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
        rendered = sorted(stem for stem, entry in metadata["stems"].items() if entry["audio_rendered"])
        assert sorted(path.stem for path in (folder / "stems").glob("*.flac")) == rendered
        assert sorted(path.stem for path in (folder / "MIDI").glob("*.mid")) == rendered
        assert sorted(metadata["stems"]) == [f"S{index:02d}" for index in range(len(metadata["stems"]))]
        assert metadata["audio_dir"] == f"{folder.name}/stems" and metadata["midi_dir"] == f"{folder.name}/MIDI"
        for path in [folder / "mix.flac", *sorted((folder / "stems").glob("*.flac"))]:
            info = soundfile.info(str(path))
            assert (info.channels, info.samplerate, info.subtype, info.format) == (1, 16000, "PCM_16", "FLAC")
            assert info.frames == 4 * 16000


def test_metadata_fields_match_the_real_sample(tiny: Path, shared_dir: Path) -> None:
    sample = yaml.safe_load((shared_dir / SAMPLE_TRACK / "metadata.yaml").read_text())
    sample_rendered = next(entry for entry in sample["stems"].values() if entry["audio_rendered"])
    sample_unrendered = next(entry for entry in sample["stems"].values() if not entry["audio_rendered"])
    for folder in track_folders(tiny):
        metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
        assert set(metadata) == set(sample)
        for entry in metadata["stems"].values():
            expected = sample_rendered if entry["audio_rendered"] else sample_unrendered
            assert set(entry) == set(expected)
            for key, value in entry.items():
                assert type(value) is type(expected[key]), key
        assert len(metadata["UUID"]) == len(sample["UUID"]) and int(metadata["UUID"], 16) >= 0


def test_program_names_and_classes_follow_general_midi(tiny: Path, shared_dir: Path) -> None:
    # Independent references: pretty_midi's GM name table, and the classes the real Slakh sample writes.
    for program, name in music.GM_PROGRAM_NAMES.items():
        assert name == pretty_midi.program_to_instrument_name(program)
    sample = yaml.safe_load((shared_dir / SAMPLE_TRACK / "metadata.yaml").read_text())
    for entry in sample["stems"].values():
        assert music.instrument_class(entry["program_num"], entry["is_drum"]) == entry["inst_class"]
    for folder in track_folders(tiny):
        for entry in yaml.safe_load((folder / "metadata.yaml").read_text())["stems"].values():
            if entry["is_drum"]:
                described = (entry["program_num"], entry["inst_class"], entry["midi_program_name"])
                assert described == (128, "Drums", "Drums")
            else:
                assert entry["midi_program_name"] == pretty_midi.program_to_instrument_name(entry["program_num"])


def test_midi_files_carry_the_song(tiny: Path, truth: dict) -> None:
    for folder in track_folders(tiny):
        entry = truth["tracks"][folder.name]
        metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
        full = pretty_midi.PrettyMIDI(str(folder / "all_src.mid"))
        _, tempi = full.get_tempo_changes()
        assert tempi[0] == pytest.approx(entry["tempo"], abs=1e-3)
        rendered = [stem for stem, stem_entry in metadata["stems"].items() if stem_entry["audio_rendered"]]
        assert len(full.instruments) == len(rendered)
        for stem in rendered:
            single = pretty_midi.PrettyMIDI(str(folder / "MIDI" / f"{stem}.mid"))
            (instrument,) = single.instruments
            assert instrument.is_drum == metadata["stems"][stem]["is_drum"]
            if not instrument.is_drum:
                assert instrument.program == metadata["stems"][stem]["program_num"]
            assert 0 < len(instrument.notes) and max(note.end for note in instrument.notes) <= 4.0 + 1e-6


# ---------------------------------------------------------------------------------------------------- audio


def read(path: Path) -> np.ndarray:
    audio, _ = soundfile.read(str(path), dtype="float64")
    return audio


def test_stems_sound_where_the_ground_truth_says_the_part_plays(tiny: Path, truth: dict) -> None:
    for track_id, entry in truth["tracks"].items():
        folder = tiny / entry["split"] / track_id
        assert set(entry["parts"]) <= set(INSTRUMENTS)
        for part, part_entry in entry["parts"].items():
            for layer in part_entry["layers"]:
                audio = read(folder / "stems" / f"{layer['stem']}.flac")
                for start, end in layer["active"]:
                    span = audio[int(start * 16000):int(end * 16000)]
                    # 1e-4 is the project's silence threshold (mean power per segment, thesis ch. 3).
                    assert np.mean(span**2) > 1e-4, (track_id, part, start, end)


def test_mix_is_gain_times_sum_of_stems(tiny: Path) -> None:
    for folder in track_folders(tiny):
        metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
        stems = sum(read(path) for path in sorted((folder / "stems").glob("*.flac")))
        mix = read(folder / "mix.flac")
        assert np.max(np.abs(mix - metadata["overall_gain"] * stems)) <= LSB + 1e-12
        assert np.max(np.abs(mix)) == pytest.approx(10 ** (-1 / 20), abs=2 * LSB)  # target_peak -1 dBFS


def test_stem_loudness_is_recorded_and_normalised(tiny: Path) -> None:
    for folder in track_folders(tiny):
        metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
        for stem, entry in metadata["stems"].items():
            if not entry["audio_rendered"]:
                continue
            audio = read(folder / "stems" / f"{stem}.flac")
            assert np.max(np.abs(audio)) < 1.0
            # At most -20 dBFS (lower only when the -1 dBFS peak ceiling bites), never buried.
            assert -35.0 < entry["integrated_loudness"] <= -20.0 + 0.01


def test_gated_rms_of_a_sine_is_minus_3_dbfs() -> None:
    # Hand values: a full-scale sine has mean power 1/2, i.e. -3.01 dB. Framed by 2 s of silence on each side,
    # the 400 ms / 100 ms blocks give 17 full blocks and 6 partial ones (1/4, 1/2, 3/4 of the tone on each edge),
    # all above both gates: mean power 0.5 * (17 + 2 * 1.5) / 23, i.e. 10*log10(10/23) = -3.617 dB.
    rate = 8000
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)
    audio = np.concatenate([np.zeros(2 * rate), tone, np.zeros(2 * rate)])
    assert synth.gated_rms_dbfs(tone, rate) == pytest.approx(-3.0103, abs=0.01)
    assert synth.gated_rms_dbfs(audio, rate) == pytest.approx(10 * np.log10(10 / 23), abs=0.01)
    assert synth.gated_rms_dbfs(np.zeros(rate), rate) == float("-inf")


def single_note_song(program: int, pitch: int = 60) -> tuple[music.Song, music.Layer]:
    note = music.Note(start=0, end=2 * music.TICKS_PER_BEAT, pitch=pitch, velocity=100)
    layer = music.Layer(part="others", style="test", program=program, is_drum=False, notes=[note],
                        active_sections=[0])
    chord = music.Chord("I", 0, False)
    song = music.Song(tempo=120, key="C", mode="major", progression=("I",), progression_b=("I",),
                      sections=[music.Section("A", 0, 1, (chord,))], duration_seconds=1.0, layers=[layer])
    return song, layer


def harmonic_levels(audio: np.ndarray, rate: int, fundamental: float, count: int = 8) -> np.ndarray:
    window = audio[int(0.1 * rate):int(0.9 * rate)]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1 / rate)
    levels = []
    for harmonic in range(1, count + 1):
        band = np.abs(freqs - harmonic * fundamental) < fundamental * 0.1
        levels.append(spectrum[band].max())
    return 20 * np.log10(np.array(levels) / max(levels) + 1e-12)


def test_rendering_uses_sampled_instruments_not_oscillators() -> None:
    rate = 22050
    soundfont = synth.resolve_soundfont()
    middle_c = 440.0 * 2 ** ((60 - 69) / 12)  # 261.63 Hz, by the equal-tempered formula
    profiles, decays = {}, {}
    for program in (0, 73, 81):  # grand piano, flute, sawtooth lead
        song, layer = single_note_song(program)
        audio, preset_name = synth.render_layer(song, layer, rate, soundfont)
        assert preset_name and audio.dtype == np.float32 and audio.shape == (rate,)
        spectrum = np.abs(np.fft.rfft(audio[int(0.1 * rate):int(0.9 * rate)]))
        peak_frequency = np.fft.rfftfreq(int(0.8 * rate), 1 / rate)[np.argmax(spectrum)]
        assert min(abs(peak_frequency - h * middle_c) for h in (1, 2, 3)) < 5.0
        profiles[program] = harmonic_levels(audio, rate, middle_c)
        early = np.sqrt(np.mean(audio[int(0.05 * rate):int(0.15 * rate)] ** 2))
        late = np.sqrt(np.mean(audio[int(0.85 * rate):int(0.95 * rate)] ** 2))
        decays[program] = 20 * np.log10(early / late)
    # A pure oscillator has one partial and a flat envelope. Sampled instruments have several partials within
    # 40 dB of the strongest, a struck piano note decays while a blown flute note does not, and the harmonic
    # profiles differ by program (timbre) by more than 6 dB somewhere.
    for program in (0, 73, 81):
        assert np.sum(profiles[program] > -40) >= 3, program
    assert decays[0] > 6.0 and abs(decays[73]) < 3.0
    assert np.max(np.abs(profiles[0] - profiles[81])) > 6
    assert np.max(np.abs(profiles[73] - profiles[81])) > 6


# ---------------------------------------------------------------------------------------------------- determinism


def midi_and_metadata(root: Path) -> dict[str, bytes]:
    files = {}
    for folder in track_folders(root):
        for path in [folder / "metadata.yaml", folder / "all_src.mid", *sorted((folder / "MIDI").glob("*.mid"))]:
            files[str(path.relative_to(root))] = path.read_bytes()
    files[synth.GROUND_TRUTH_FILE] = (root / synth.GROUND_TRUTH_FILE).read_bytes()
    return files


def test_same_seed_is_byte_identical_any_worker_count(tiny: Path, tmp_path: Path) -> None:
    again = make_tiny(tmp_path / "again", seed=0, jobs=2)
    assert midi_and_metadata(again) == midi_and_metadata(tiny)


def test_different_seed_differs(tiny: Path, tmp_path: Path) -> None:
    other = midi_and_metadata(make_tiny(tmp_path / "other", seed=1))
    ours = midi_and_metadata(tiny)
    for track_id in ("Track00001", "Track00002", "Track00003"):
        name = next(name for name in ours if name.endswith(f"{track_id}/all_src.mid"))
        assert other[name] != ours[name]
    assert other[synth.GROUND_TRUTH_FILE] != ours[synth.GROUND_TRUTH_FILE]


# ------------------------------------------------------------------------------------------- completion, errors


def test_second_call_returns_at_once_and_fresh_rebuilds(tmp_path: Path) -> None:
    out = make_tiny(tmp_path / "ds")
    marker = out / synth.GROUND_TRUTH_FILE
    first = marker.stat().st_mtime_ns
    make_tiny(tmp_path / "ds")
    assert marker.stat().st_mtime_ns == first
    synth.synthesize_dataset(out, "smoke", seed=0, jobs=1, progress=False, config=TINY, fresh=True)
    assert marker.stat().st_mtime_ns != first
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ds"]  # no temporary folders left behind


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = synth.build_track
    calls = []

    def failing_build(job: synth.TrackJob) -> dict:
        calls.append(job.track_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_build(job)

    monkeypatch.setattr(synth, "build_track", failing_build)
    with pytest.raises(KeyboardInterrupt):
        make_tiny(tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_raise_partsim_error(tmp_path: Path) -> None:
    with pytest.raises(PartsimError, match="unknown preset"):
        synth.synthesize_dataset(tmp_path / "a", "huge", progress=False)
    with pytest.raises(PartsimError, match="seed"):
        synth.synthesize_dataset(tmp_path / "a", "smoke", seed=-1, progress=False, config=TINY)
    with pytest.raises(PartsimError, match="SoundFont not found"):
        synth.synthesize_dataset(tmp_path / "a", "smoke", progress=False, config=TINY, soundfont=tmp_path / "x.sf2")
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"not a soundfont")
    with pytest.raises(PartsimError, match="cannot load SoundFont"):
        synth.resolve_soundfont(broken)
    with pytest.raises(PartsimError, match="max_seconds"):
        synth.synthesize_dataset(tmp_path / "a", "smoke", progress=False,
                                 config=synth.with_overrides(TINY, max_seconds=2.0))
    foreign = tmp_path / "real-slakh"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(PartsimError, match="not a partsim-generated dataset"):
        make_tiny(foreign)
    with pytest.raises(PartsimError, match="not a partsim-generated dataset"):
        synth.synthesize_dataset(foreign, "smoke", progress=False, config=TINY, fresh=True)
    assert (foreign / "train").is_dir()
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(PartsimError, match="is a file"):
        make_tiny(afile)
    assert afile.read_text() == "keep"
    assert not (tmp_path / "a").exists()


def test_another_partsim_dataset_is_replaced_only_when_allowed(tmp_path: Path) -> None:
    out = make_tiny(tmp_path / "ds", seed=0)
    assert (out / MARKER).is_file()
    before = (out / synth.GROUND_TRUTH_FILE).read_text()
    with pytest.raises(PartsimError, match="seed 0.*--fresh"):
        synth.synthesize_dataset(out, "smoke", seed=1, jobs=1, progress=False, config=TINY, replace_other=False)
    assert (out / synth.GROUND_TRUTH_FILE).read_text() == before
    synth.synthesize_dataset(out, "smoke", seed=1, jobs=1, progress=False, config=TINY, replace_other=False,
                             fresh=True)
    assert json.loads((out / synth.GROUND_TRUTH_FILE).read_text())["generator"]["seed"] == 1
    # A dataset from before the marker existed is recognised by its ground truth; an empty folder is used.
    (out / MARKER).unlink()
    assert synth.is_generated_dataset(out)
    make_tiny(out, seed=2)
    (tmp_path / "empty").mkdir()
    assert (make_tiny(tmp_path / "empty") / synth.GROUND_TRUTH_FILE).is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ds", "empty"]


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from Linux /proc")
def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from partsim_core.data import synth
        from partsim_core.presets import SynthConfig
        config = SynthConfig(n_train=60, n_validation=0, n_test=0, min_seconds=4.0, max_seconds=4.0,
                             sample_rate=16000)
        synth.synthesize_dataset({str(tmp_path / "ds")!r}, "smoke", jobs=2, progress=False, config=config)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        children: set[int] = set()
        while time.monotonic() < deadline and parent.poll() is None:
            children |= _children(parent.pid)
            # two workers and multiprocessing's resource tracker, and the workers are rendering
            if len(children) >= 3 and list(tmp_path.glob(".ds.*.partial/train/Track*")):
                break
            time.sleep(0.2)
        assert parent.poll() is None and len(children) >= 3, "the generator did not start its workers"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(process_running(pid) for pid in children):
            time.sleep(0.2)
        assert not [pid for pid in children if process_running(pid)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in children if "children" in locals() else ():
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / "ds").exists()


def test_soundfont_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(synth.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    with pytest.raises(PartsimError, match="missing.sf2"):
        synth.resolve_soundfont()
    monkeypatch.setenv(synth.SOUNDFONT_ENV, str(synth.default_soundfont()))
    assert synth.resolve_soundfont() == synth.default_soundfont()


def test_default_dataset_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path))
    assert synth.default_dataset_root("default") == tmp_path / "datasets" / "mini-slakh-default"
    with pytest.raises(PartsimError):
        synth.default_dataset_root("nope")


# ---------------------------------------------------------------------------------------------------- composition


def test_roman_numerals_and_voicing_helpers() -> None:
    # A minor: VI is F major (A + 8 semitones), iv is D minor; G major: V is D major.
    assert compose.parse_numeral("VI", 9, "minor") == music.Chord("VI", 5, False)
    assert compose.parse_numeral("iv", 9, "minor") == music.Chord("iv", 2, True)
    assert compose.parse_numeral("V", 7, "major") == music.Chord("V", 2, False)
    assert music.nearest_pitch(0, 64) == 60 and music.nearest_pitch(7, 64) == 67
    assert music.close_voicing(music.Chord("I", 0, False), 64) == [60, 64, 67]


def test_trim_overlaps_cuts_repeated_pitches_and_song_end() -> None:
    notes = [music.Note(0, 500, 60, 90), music.Note(240, 480, 60, 80), music.Note(100, 900, 64, 70),
             music.Note(960, 1000, 67, 70)]
    assert compose.trim_overlaps(notes, end_tick=800) == [
        music.Note(0, 240, 60, 90), music.Note(100, 800, 64, 70), music.Note(240, 480, 60, 80)]


def test_composed_songs_are_varied_and_use_the_right_families() -> None:
    from partsim_core.data.slakh import group_for_program

    songs = [compose.compose_song(synth.track_rng(7, index), 12.0, 16.0) for index in range(150)]
    presence = {part: np.mean([any(layer.part == part for layer in song.layers) for song in songs])
                for part in INSTRUMENTS}
    assert presence["drums"] > 0.85 and presence["bass"] > 0.85
    assert 0.55 < presence["piano"] < 0.9 and 0.55 < presence["guitar"] < 0.9 and presence["others"] > 0.75
    for part in INSTRUMENTS:
        seen = {layer.style for song in songs for layer in song.layers if layer.part == part}
        assert seen == set(part_patterns.style_names(part)), part
    for song in songs:
        assert 70 <= song.tempo <= 170 and 12.0 <= song.duration_seconds <= 16.0
        for layer in song.layers:
            assert group_for_program(128 if layer.is_drum else layer.program, layer.is_drum) == layer.part
            assert layer.notes and all(0 <= note.start < note.end <= song.end_tick for note in layer.notes)
    assert len({song.key for song in songs}) == 12 and {song.mode for song in songs} == {"major", "minor"}
    assert any(len(layer.active_sections) < len(song.sections) for song in songs for layer in song.layers)
    assert len({layer.kit for song in songs for layer in song.layers if layer.is_drum}) >= 6


def test_midi_bytes_round_trip_through_mido() -> None:
    song = compose.compose_song(synth.track_rng(0, 0), 6.0, 6.0)
    data = compose.song_to_midi_bytes(song, range(len(song.layers)), [layer.part for layer in song.layers])
    midi = mido.MidiFile(file=io.BytesIO(data))
    assert midi.ticks_per_beat == music.TICKS_PER_BEAT and len(midi.tracks) == 1 + len(song.layers)
    for track, layer in zip(midi.tracks[1:], song.layers, strict=True):
        onsets = sum(1 for message in track if message.type == "note_on" and message.velocity > 0)
        assert onsets == len(layer.notes)


# ---------------------------------------------------------------------------------------------------- reader, preset


def test_reader_sees_the_generated_groups(tiny: Path, truth: dict) -> None:
    slakh = pytest.importorskip("partsim_core.data.slakh")
    dataset = slakh.open_slakh(tiny)
    assert dataset.variant == "redux_flac"
    assert [track.track_id for track in dataset.tracks()] == list(truth["tracks"])
    for track in dataset.tracks():
        entry = truth["tracks"][track.track_id]
        assert track.split == entry["split"]
        groups = track.stems_by_group()
        assert list(groups) == [part for part in INSTRUMENTS if part in entry["parts"]]
        for part, stems in groups.items():
            assert sorted(stem.stem_id for stem in stems) == sorted(entry["parts"][part]["stems"])


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path: Path) -> None:
    from partsim_core.data.slakh import open_slakh

    out = synth.synthesize_dataset(tmp_path / "smoke", "smoke", seed=0, progress=False)
    summary = synth.dataset_summary(out)
    assert summary["tracks"] == 24
    dataset = open_slakh(out)
    assert {split: len(dataset.tracks(split)) for split in synth.SPLITS} == {"train": 16, "validation": 4, "test": 4}
    for track in dataset.tracks():
        info = soundfile.info(str(track.mix_path))
        assert info.samplerate == 22050 and 12.0 <= info.frames / 22050 <= 16.0
