"""Simulated listening test over a hand-made embedded dataset, and stimulus extraction from a real Slakh folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from partsim_core.errors import PartsimError
from partsim_core.perceptual import (
    SimulationConfig,
    extract_from_slakh,
    load_abx,
    read_sample_configs,
    simulate_listening_test,
    within_between,
)

RATE = 4000


def make_dataset(root: Path, n_tracks: int = 5, seconds: float = 11.0) -> Path:
    """Ground truth + silent mixes: tracks 1-2 share every style/program, the others differ in all of them."""
    tracks = {}
    for number in range(1, n_tracks + 1):
        track_id = f"Track{number:05d}"
        family = "a" if number <= 2 else f"b{number}"
        parts = {part: {"style": f"{part}-{family}", "program": 1 if family == "a" else 10 + number,
                        "stems": ["S00"]}
                 for part in ("drums", "bass", "piano", "guitar", "others")}
        tracks[track_id] = {"split": "test", "tempo": 120.0 if family == "a" else 60.0 + 20 * number,
                            "key": "C" if family == "a" else "F#", "mode": "major", "parts": parts}
        folder = root / "test" / track_id
        folder.mkdir(parents=True)
        soundfile.write(str(folder / "mix.flac"), np.zeros(int(seconds * RATE), np.float32), RATE)
    (root / "partsim_ground_truth.json").write_text(json.dumps({"generator": {"name": "hand-made"},
                                                                "tracks": tracks}))
    return root


def test_simulation_is_deterministic_and_loadable(tmp_path: Path) -> None:
    data_root = make_dataset(tmp_path / "data")
    config = SimulationConfig(n_evaluation_sets=3, listeners=8, sessions_parts_only=1, sessions_complete=2)
    first = simulate_listening_test(data_root, tmp_path / "sim1", seed=3, config=config)
    second = simulate_listening_test(data_root, tmp_path / "sim2", seed=3, config=config)
    for name in ("csvs/inst_sim_abx_answers.csv", "sample_configs/dict_triplet_sim02.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    other = simulate_listening_test(data_root, tmp_path / "sim3", seed=4, config=config)
    answers = "csvs/inst_sim_abx_answers.csv"
    assert (other / answers).read_bytes() != (first / answers).read_bytes()

    data = load_abx(first)
    sessions = 3 * (1 + 2)
    assert len(data.catch_trials) == 2 * sessions
    # Phase 1: 4 triplets x 5 parts x 2 types = 40 per session; phase 2 adds mix: 48.
    assert len(data.responses) == 3 * 40 + 6 * 48
    assert data.responses["complete"].sum() == 6 * 48
    assert (data.responses["answer_overall"] != "N/A").all()
    # At most two N/A among timbre, rhythm, melody.
    na = sum((data.responses[f"answer_{p}"] == "N/A").astype(int) for p in ("timbre", "rhythm", "melody"))
    assert na.max() <= 2
    # Every stimulus in the answers is described by the configs (X, A, B, Y, C at 5 s x 4000 Hz).
    configs = read_sample_configs(first / "sample_configs")
    files = set(data.responses["reference"]) | set(data.responses["sample_a"]) | set(data.responses["sample_b"])
    assert files <= set(configs["path"])
    assert set(configs["index_e"] - configs["index_s"]) == {5 * RATE}
    split_total = len(load_abx(first, "xab").responses) + len(load_abx(first, "xyc").responses)
    assert split_total == len(data.responses)


def test_simulated_listeners_follow_ground_truth(tmp_path: Path) -> None:
    data_root = make_dataset(tmp_path / "data")
    config = SimulationConfig(n_evaluation_sets=20, listeners=30, sessions_parts_only=0, sessions_complete=4)
    responses = load_abx(simulate_listening_test(data_root, tmp_path / "sim", seed=0, config=config)).responses
    # Same-track segments are identical in style: chosen far more often than the other track.
    overall = within_between(responses).set_index(["na", "perspective", "category"])
    assert overall.loc[("including_na", "overall", "mix"), "percent"] > 70
    # xab with X from the shared family and exactly one candidate from it: that candidate should win overall.
    xab = responses[(responses["set_type"] == "xab") & responses["track_x"].isin([1, 2])]
    one_match = xab[xab["track_a"].isin([1, 2]) ^ xab["track_b"].isin([1, 2])]
    assert len(one_match) > 20
    chose_family = one_match["chosen_track_overall"].isin([1, 2]).mean()
    assert chose_family > 0.7


def test_simulation_needs_enough_tracks(tmp_path: Path) -> None:
    data_root = make_dataset(tmp_path / "data", n_tracks=3)
    with pytest.raises(PartsimError, match="needs at least 4"):
        simulate_listening_test(data_root, tmp_path / "sim")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PartsimError, match="partsim_ground_truth.json not found"):
        simulate_listening_test(empty, tmp_path / "sim")
    with pytest.raises(PartsimError, match="inside the input"):
        simulate_listening_test(data_root, data_root / "sim")
    assert not (tmp_path / "sim").exists() and not (data_root / "sim").exists()


def test_extract_from_real_slakh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "slakh_format_sample" / "slakh2100_flac_redux"
    if not root.is_dir():
        pytest.skip("../shared/slakh_format_sample is not beside the repository")
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    folder = root / "train" / "Track00001"
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
    # Guitar by the band.yaml recipe: program 24-31, not a drum stem; summed by hand from the flac files.
    expected = None
    for stem_id, stem in metadata["stems"].items():
        path = folder / "stems" / f"{stem_id}.flac"
        if 24 <= stem["program_num"] <= 31 and not stem["is_drum"] and path.is_file():
            audio, rate = soundfile.read(str(path), dtype="float32")
            expected = audio if expected is None else expected + audio
    assert expected is not None and rate == 44100
    entry = {"ID": 1, "seg": 0, "filename": "X_1-0.wav", "sr": 44100, "index_s": 22050, "index_e": 44100}
    configs_dir = tmp_path / "sample_configs"
    configs_dir.mkdir()
    (configs_dir / "d.json").write_text(json.dumps({"0": {"0": {"test2": {"guitar": {
        "X": entry, "A": dict(entry, filename="A_1-1.wav"), "B": dict(entry, filename="B_1-2.wav")}}}}}))
    configs = read_sample_configs(configs_dir)
    stimuli = extract_from_slakh(configs, root, progress=False)
    np.testing.assert_allclose(stimuli["set0/0/guitar/X_1-0.wav"], expected[22050:44100], atol=1e-5)
    mix = extract_from_slakh(configs, root, source="mix", progress=False)
    mix_audio, _ = soundfile.read(str(folder / "mix.flac"), dtype="float32")
    np.testing.assert_allclose(mix["set0/0/guitar/X_1-0.wav"], mix_audio[22050:44100], atol=1e-5)
