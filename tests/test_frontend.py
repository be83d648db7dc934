"""The log-mel front end against librosa (the reference implementation of its conventions)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel, check_source_rate, log_mel, mel_filterbank
from partsim_core.presets import FrontendConfig, get_preset

librosa = pytest.importorskip("librosa")

PAPER = get_preset("paper").frontend
SMALL = FrontendConfig(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40, top_db=80.0)


def librosa_db(audio: np.ndarray, config: FrontendConfig) -> np.ndarray:
    """librosa's dB mel spectrogram with the settings the thesis describes (reflect-padded centred STFT)."""
    power = librosa.feature.melspectrogram(y=audio, sr=config.sample_rate, n_fft=config.n_fft,
                                           hop_length=config.hop_length, n_mels=config.n_mels, pad_mode="reflect")
    return librosa.power_to_db(power, ref=np.max, top_db=config.top_db)


def as_db(normalised: torch.Tensor, config: FrontendConfig) -> np.ndarray:
    """Undo the [0, 1] normalisation: back to dB relative to the example's maximum."""
    return normalised.double().numpy() * config.top_db - config.top_db


@pytest.mark.parametrize("preset", ["smoke", "default", "paper"])
def test_filterbank_matches_librosa_slaney(preset: str) -> None:
    config = get_preset(preset).frontend
    ours = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)
    reference = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                    htk=False, norm="slaney")
    assert ours.shape == (config.n_mels, config.n_fft // 2 + 1)
    assert np.abs(ours - reference).max() < 1e-6


def test_random_noise_matches_librosa_db() -> None:
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((2, PAPER.sample_rate))).astype(np.float32)
    ours = as_db(log_mel(audio, PAPER), PAPER)
    for index in range(2):
        reference = librosa_db(audio[index], PAPER)
        assert ours[index].shape == reference.shape
        above_floor = reference > -PAPER.top_db + 1.0
        assert above_floor.mean() > 0.9
        assert np.abs(ours[index] - reference)[above_floor].max() < 1e-3


def test_sine_matches_librosa_db_and_peaks_at_its_frequency() -> None:
    config = PAPER
    time = np.arange(config.sample_rate) / config.sample_rate
    audio = (0.5 * np.sin(2 * np.pi * 440.0 * time)).astype(np.float32)
    ours = as_db(log_mel(audio, config), config)
    reference = librosa_db(audio, config)
    above_floor = reference > -config.top_db + 1.0
    assert np.abs(ours - reference)[above_floor].max() < 1e-3
    # The loudest band is the one whose centre is nearest 440 Hz (librosa's mel band centres).
    centres = librosa.mel_frequencies(n_mels=config.n_mels + 2, fmax=config.sample_rate / 2)[1:-1]
    middle_frame = ours[:, ours.shape[1] // 2]
    assert abs(centres[int(np.argmax(middle_frame))] - 440.0) < 40.0


def test_full_precision_ignores_autocast_and_casts_to_float32() -> None:
    rng = np.random.default_rng(4)
    audio = (0.1 * rng.standard_normal((2, SMALL.sample_rate // 2))).astype(np.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = LogMel(SMALL).full_precision(torch.from_numpy(audio))
    assert ours.dtype == torch.float32
    for index in range(2):
        reference = librosa_db(audio[index].astype(np.float32), SMALL)
        above_floor = reference > -SMALL.top_db + 1.0
        assert np.abs(as_db(ours, SMALL)[index] - reference)[above_floor].max() < 1e-3


def test_check_source_rate_names_the_signals_and_both_rates() -> None:
    check_source_rate("signal source", SMALL.sample_rate, SMALL)
    with pytest.raises(PartsimError, match="validation source rate 8000 Hz differs from the front end's 16000 Hz"):
        check_source_rate("validation source", 8000, SMALL)


def test_mel_power_matches_librosa_melspectrogram() -> None:
    rng = np.random.default_rng(2)
    audio = (0.3 * rng.standard_normal(SMALL.sample_rate // 2)).astype(np.float32)
    ours = LogMel(SMALL).mel_power(torch.from_numpy(audio))[0].double().numpy()
    reference = librosa.feature.melspectrogram(y=audio, sr=SMALL.sample_rate, n_fft=SMALL.n_fft,
                                               hop_length=SMALL.hop_length, n_mels=SMALL.n_mels, pad_mode="reflect")
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-7)


def test_shapes_range_and_per_example_normalisation() -> None:
    rng = np.random.default_rng(3)
    samples = 3 * SMALL.sample_rate + 77
    audio = torch.from_numpy((rng.standard_normal((5, samples)) * [[0.01], [0.1], [1.0], [3.0], [0.5]])
                             .astype(np.float32))
    output = LogMel(SMALL)(audio)
    assert output.shape == (5, SMALL.n_mels, 1 + samples // SMALL.hop_length)
    assert output.dtype == torch.float32
    assert float(output.min()) >= 0.0 and float(output.max()) <= 1.0
    # Per-example normalisation: every example's loudest bin is exactly 1, so loudness does not matter.
    np.testing.assert_allclose(output.amax(dim=(1, 2)).numpy(), np.ones(5), atol=1e-6)
    # A 1-d input is a batch of one without the batch axis, with the same values.
    single = LogMel(SMALL)(audio[2])
    assert single.shape == output.shape[1:]
    np.testing.assert_allclose(single.numpy(), output[2].numpy(), atol=1e-6)


def test_chunked_cpu_path_equals_one_big_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    import partsim_core.frontend as frontend

    rng = np.random.default_rng(4)
    audio = torch.from_numpy((0.2 * rng.standard_normal((6, SMALL.sample_rate))).astype(np.float32))
    monkeypatch.setattr(frontend, "CPU_CHUNK_BYTES", 1)  # one example per STFT call
    one_by_one = LogMel(SMALL)(audio)
    monkeypatch.setattr(frontend, "CPU_CHUNK_BYTES", 1 << 40)  # everything in one call
    all_at_once = LogMel(SMALL)(audio)
    np.testing.assert_allclose(one_by_one.numpy(), all_at_once.numpy(), atol=1e-6)


def test_silence_gives_finite_zeros_and_floor_is_zero() -> None:
    audio = np.zeros((2, SMALL.sample_rate), dtype=np.float32)
    audio[1, : SMALL.sample_rate // 2] = np.sin(np.arange(SMALL.sample_rate // 2) * 0.3)
    output = log_mel(audio, SMALL)
    assert bool(torch.isfinite(output).all())
    assert float(output[0].abs().max()) == 0.0
    # The silent half of example 1 sits at the floor (more than top_db below its peak).
    assert float(output[1, :, -3:].max()) == 0.0


def test_float64_and_integer_input() -> None:
    rng = np.random.default_rng(5)
    audio = 0.1 * rng.standard_normal(SMALL.sample_rate)
    double = log_mel(audio, SMALL)
    assert double.dtype == torch.float64
    single = log_mel(audio.astype(np.float32), SMALL)
    np.testing.assert_allclose(double.numpy(), single.numpy(), atol=1e-4)
    as_int16 = log_mel((audio * 3000).astype(np.int16), SMALL)
    assert as_int16.dtype == torch.float32 and float(as_int16.max()) == pytest.approx(1.0)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_inf_input_is_refused(bad_value: float) -> None:
    audio = np.zeros((3, SMALL.sample_rate), dtype=np.float32)
    audio[2, 100] = bad_value
    with pytest.raises(PartsimError, match="NaN or infinite"):
        log_mel(audio, SMALL)


def test_bad_shapes_and_settings_are_refused() -> None:
    with pytest.raises(PartsimError, match="too short"):
        log_mel(np.zeros(SMALL.n_fft // 2, dtype=np.float32), SMALL)
    with pytest.raises(PartsimError, match="shaped"):
        log_mel(np.zeros((1, 2, SMALL.sample_rate), dtype=np.float32), SMALL)
    with pytest.raises(PartsimError, match="hop_length"):
        LogMel(dataclasses.replace(SMALL, hop_length=0))
    with pytest.raises(PartsimError, match="top_db"):
        LogMel(dataclasses.replace(SMALL, top_db=float("nan")))
    with pytest.raises(PartsimError, match="numpy array or torch tensor"):
        log_mel([0.0] * 2000, SMALL)


def test_read_only_memmap_input(tmp_path) -> None:
    rng = np.random.default_rng(6)
    audio = (0.1 * rng.standard_normal(SMALL.sample_rate)).astype(np.float32)
    path = tmp_path / "segment.f32"
    audio.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_memmap = log_mel(mapped, SMALL)
    np.testing.assert_array_equal(from_memmap.numpy(), log_mel(audio, SMALL).numpy())
