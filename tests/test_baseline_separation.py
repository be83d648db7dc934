"""Tests of chapter 3's source separation: the Spleeter-style U-Net (``models.SeparatorUNet``), its training task,
the backends (oracle, unet, spleeter subprocess, demucs adapter), the separated-stem cache and the BSS Eval
metrics (``partsim_core.baseline.separators``, ``.separator_training``, ``.separated_stems``, ``.bss``)."""

from __future__ import annotations

import json
import math
import pickle
import stat
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_data_slakh import write_track

from partsim_core import INSTRUMENTS
from partsim_core.baseline.bss import (
    METRIC_CLAMP_DB,
    evaluate_separation,
    separation_metrics,
)
from partsim_core.baseline.separated_stems import SeparatedSource
from partsim_core.baseline.separator_training import separator_task, train_separator
from partsim_core.baseline.separators import (
    DemucsSeparator,
    OracleSeparator,
    SpleeterSeparator,
    get_separator,
)
from partsim_core.baseline.tables import table_3_1
from partsim_core.data.artefacts import verify_manifest
from partsim_core.data.cache import StemCache, cache_root
from partsim_core.data.dataset import load_dataset
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError
from partsim_core.models import SeparatorSTFT, SeparatorUNet, SpleeterUNet

RATE = 16000  # the smoke preset's front-end rate: no resampling in the stem cache

# Programs of the slakh-utils recipe: drums 128 (is_drum), bass 32-39, piano 0-7, guitar 24-31, others = the rest.
PROGRAMS = {"drums": 128, "bass": 33, "piano": 0, "guitar": 25, "others": 81}


def part_signals(seconds: float, seed: int) -> dict[str, np.ndarray]:
    """Five easily told apart parts: noise bursts, a low sine, a mid chord, a sawtooth, a high sine."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    # Peak of the sum stays below 1 (no clipping in the written mix): 0.08 * ~5 sigma + 0.2 + 0.2 + 0.1 + 0.05.
    bursts = (np.sin(2 * np.pi * 2 * t) > 0.6) * np.clip(rng.standard_normal(t.size), -5, 5) * 0.08
    return {
        "drums": bursts,
        "bass": 0.2 * np.sin(2 * np.pi * rng.uniform(50, 90) * t),
        "piano": 0.1 * (np.sin(2 * np.pi * 262 * t) + np.sin(2 * np.pi * 330 * t)),
        "guitar": 0.1 * (2 * ((rng.uniform(180, 220) * t) % 1.0) - 1),
        "others": 0.05 * np.sin(2 * np.pi * rng.uniform(1500, 2500) * t),
    }


def write_dataset(root: Path, splits: dict[str, int], seconds: float = 4.0) -> Path:
    """A Slakh-format root with ``splits[name]`` tracks per split, one stem per part."""
    number = 1
    for split, count in splits.items():
        for _ in range(count):
            signals = part_signals(seconds, seed=number)
            stems = {f"S0{i}": {"program": PROGRAMS[part], "is_drum": part == "drums", "audio": signals[part]}
                     for i, part in enumerate(INSTRUMENTS)}
            write_track(root / split / f"Track{number:05d}", stems, sample_rate=RATE)
            number += 1
    return root


@pytest.fixture()
def tiny_root(tmp_path, monkeypatch) -> Path:
    """3 train, 1 validation, 1 test track of 4 s; the cache root moved into tmp_path."""
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    return write_dataset(tmp_path / "data", {"train": 3, "validation": 1, "test": 1})


# ------------------------------------------------------------------------------------------------------------------
# the U-Net
# ------------------------------------------------------------------------------------------------------------------


def test_stft_settings_scale_spleeter_with_the_sample_rate():
    # Spleeter at 44.1 kHz: 4096 / 1024 / 1024 bins. 22.05 kHz: half of it. 16 kHz: 4096 * 16000 / 44100 = 1486,
    # log2 = 10.54 -> 2048.
    assert SeparatorSTFT.for_sample_rate(44100) == SeparatorSTFT(4096, 1024, 1024)
    assert SeparatorSTFT.for_sample_rate(22050) == SeparatorSTFT(2048, 512, 512)
    assert SeparatorSTFT.for_sample_rate(16000) == SeparatorSTFT(2048, 512, 512)
    with pytest.raises(PartsimError, match="sample_rate"):
        SeparatorSTFT.for_sample_rate(0)


def test_one_unet_has_spleeters_layers():
    unet = SpleeterUNet(width=16)
    assert [conv.out_channels for conv in unet.encoder] == [16, 32, 64, 128, 256, 512]
    assert [conv.out_channels for conv in unet.decoder] == [256, 128, 64, 32, 16, 1]
    assert [conv.in_channels for conv in unet.decoder] == [512, 512, 256, 128, 64, 32]  # skips double the input
    assert all(conv.kernel_size == (5, 5) and conv.stride == (2, 2) for conv in (*unet.encoder, *unet.decoder))
    # Parameters counted by hand: convs 25 * in * out + out, batch norms 2 * channels, final 4x4 conv 16 + 1.
    encoder = sum(25 * i * o + o for i, o in [(1, 16), (16, 32), (32, 64), (64, 128), (128, 256), (256, 512)])
    decoder = sum(25 * i * o + o for i, o in [(512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)])
    norms = 2 * (16 + 32 + 64 + 128 + 256) + 2 * (256 + 128 + 64 + 32 + 16 + 1)
    assert sum(p.numel() for p in unet.parameters()) == encoder + decoder + norms + 17 == 9_822_308


def test_forward_shapes_and_masked_magnitudes_stay_below_the_mix():
    torch.manual_seed(0)
    model = SeparatorUNet(RATE, width=4, chunk_frames=64).eval()
    mix = torch.rand(2, 1025, 64) * 3
    estimates = model(mix)
    assert estimates.shape == (2, 5, 512, 64)
    # A sigmoid mask times the mixture: 0 <= estimate <= mixture magnitude, bin by bin.
    assert torch.all(estimates >= 0) and torch.all(estimates <= mix[:, None, :512] + 1e-6)
    with pytest.raises(PartsimError, match="frames multiple of 64"):
        model(torch.rand(1, 1025, 70))
    with pytest.raises(PartsimError, match="multiple of 64"):
        SeparatorUNet(RATE, chunk_frames=100)


def test_soft_masks_are_squared_ratios_and_average_above_the_modelled_band():
    model = SeparatorUNet(RATE, width=4, n_sources=2, chunk_frames=64)
    estimates = torch.tensor([[[3.0], [1.0]], [[4.0], [1.0]]])  # (sources=2, bins=2, frames=1)
    first = model.soft_mask(estimates, 0, total_bins=4)
    second = model.soft_mask(estimates, 1, total_bins=4)
    # 9 / 25 and 16 / 25 in bin 0, 1 / 2 each in bin 1; bins 2-3 get the frame's mean over bins 0-1.
    assert first[:, 0].tolist() == pytest.approx([9 / 25, 0.5, (9 / 25 + 0.5) / 2, (9 / 25 + 0.5) / 2], abs=1e-6)
    assert second[:, 0].tolist() == pytest.approx([16 / 25, 0.5, (16 / 25 + 0.5) / 2, (16 / 25 + 0.5) / 2],
                                                  abs=1e-6)


def test_separated_sources_sum_to_the_mix_for_any_length():
    torch.manual_seed(1)
    model = SeparatorUNet(RATE, width=4, chunk_frames=64)
    # 3.3 s = 104 frames: two chunks of 64 frames, the second zero-padded.
    mix = torch.from_numpy(part_signals(3.3, seed=0)["guitar"].astype(np.float32))
    sources = model.separate(mix)
    assert sources.shape == (5, mix.shape[0])
    assert model.training  # separate() restores the mode it found
    # Soft masks sum to 1 in every bin, so the five estimates add up to the mixture (ISTFT round trip).
    assert torch.allclose(sources.sum(dim=0), mix, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# training task and training
# ------------------------------------------------------------------------------------------------------------------


def test_task_batches_are_deterministic_picklable_and_hold_the_ideal_parts(tiny_root):
    task = separator_task(load_dataset("smoke", tiny_root))
    mix, parts = task.batch(0, 3)
    # Smoke: 3-s excerpts at 16 kHz = 94 frames -> 64 frames -> (64 - 1) * 512 samples.
    assert task.frames == 64 and mix.shape == (4, 63 * 512) and parts.shape == (4, 5, 63 * 512)
    assert torch.equal(mix, task.batch(0, 3)[0])
    assert not torch.equal(mix, task.batch(0, 4)[0]) and not torch.equal(mix, task.batch(1, 3)[0])
    clone = pickle.loads(pickle.dumps(task))
    assert torch.equal(clone.batch(0, 3)[1], parts)
    # The written mix is the sum of the stems (16-bit flac rounding on both sides).
    assert torch.allclose(parts.sum(dim=1), mix, atol=5 * 2.0 ** -15)


def test_train_separator_learns_reuses_and_separates(tiny_root):
    data = load_dataset("smoke", tiny_root)
    task = separator_task(data)
    torch.manual_seed(0)
    untrained = task.validation_loss(task.build_model().eval())

    result = train_separator(data, device="cpu", progress=False)
    assert not result.reused and len(result.history) == 1
    assert isinstance(result.model, SeparatorUNet)
    trained = task.validation_loss(result.model)
    assert math.isfinite(trained) and trained < untrained
    assert train_separator(data, device="cpu", progress=False).reused

    separator = get_separator("unet", data, device="cpu", train=False)
    assert separator.history == result.history
    assert separator.name == "unet" and separator.key.startswith("unet-")
    dataset = open_slakh(tiny_root)
    track = dataset.tracks("test")[0]
    source = SeparatedSource(separator, StemCache(dataset, RATE))
    mix = source.get(track, "mix")
    estimates = {part: source.get(track, part) for part in INSTRUMENTS}
    assert all(estimate.shape == mix.shape for estimate in estimates.values())
    assert np.allclose(sum(estimates.values()), mix, atol=1e-4)  # soft masks: parts sum to the mix
    # Separating at another rate resamples to the model's rate and back, keeping the length.
    other_rate = separator.separate(np.asarray(mix[:8000]), 8000)
    assert all(len(audio) == 8000 for audio in other_rate.values())


def test_unet_without_training_refuses_and_names_the_command(tiny_root):
    with pytest.raises(PartsimError, match="partsim train separator --preset smoke"):
        get_separator("unet", load_dataset("smoke", tiny_root), device="cpu", train=False)


def test_separator_key_follows_the_audio(tiny_root):
    # Regenerated audio (another seed or SoundFont) must not reuse a separator trained on the old audio: the
    # training key includes the audio fingerprint. Rewriting one training track's stems changes the key.
    from partsim_core.baseline.separator_training import separator_train_config

    data = load_dataset("smoke", tiny_root)
    task = separator_task(data)
    before = separator_train_config(data, task, data.preset.separator).key()
    assert separator_train_config(data, task, data.preset.separator).key() == before
    track = data.dataset.tracks("train")[0]
    audio_file = track.audio_files()[0]
    written, rate = sf.read(audio_file, dtype="float32")
    sf.write(audio_file, 0.5 * written, rate)
    changed = load_dataset("smoke", tiny_root)
    assert separator_train_config(changed, separator_task(changed), changed.preset.separator).key() != before
    # Fewer epochs (an earlier separator for the quality curve) is another run too.
    assert separator_train_config(data, task, data.preset.separator, epochs=2).key() != before


# ------------------------------------------------------------------------------------------------------------------
# choosing a backend
# ------------------------------------------------------------------------------------------------------------------


def test_bad_backend_or_option_is_refused(tiny_root):
    data = load_dataset("smoke", tiny_root)
    with pytest.raises(PartsimError, match="unknown separator backend 'open-unmix'.*oracle, unet, spleeter"):
        get_separator("open-unmix", data)
    with pytest.raises(PartsimError, match="unknown option.*demucs_model.*'oracle'"):
        get_separator("oracle", data, demucs_model="htdemucs")


def test_oracle_serves_the_ideal_stems(tiny_root):
    separator = get_separator("oracle", load_dataset("smoke", tiny_root))
    dataset = open_slakh(tiny_root)
    track = dataset.tracks("test")[0]
    written = sf.read(track.stems_by_group()["bass"][0].audio_path, dtype="float32")[0]
    assert np.array_equal(separator.separate_track(track)["bass"], written)
    source = SeparatedSource(separator, StemCache(dataset, RATE))
    assert np.array_equal(source.get(track, "bass"), written)
    assert not (cache_root() / "separated").exists()  # nothing separated or copied for the oracle
    with pytest.raises(PartsimError, match="needs the track"):
        separator.separate(written, RATE)


# ------------------------------------------------------------------------------------------------------------------
# the separated-stem cache
# ------------------------------------------------------------------------------------------------------------------


class FractionSeparator:
    """Fake separator: part i = fraction i of the mix; counts its calls."""

    name = "fraction"
    key = "fraction-test"
    fractions = {"drums": 0.1, "bass": 0.2, "piano": 0.3, "guitar": 0.15, "others": 0.25}

    def __init__(self, length_error: int = 0) -> None:
        self.calls = 0
        self.length_error = length_error

    def separate(self, mix, sample_rate):
        self.calls += 1
        mix = np.asarray(mix)
        return {part: np.resize(fraction * mix, len(mix) + self.length_error)
                for part, fraction in self.fractions.items()}


def test_separated_source_separates_each_track_once_and_caches(tiny_root, tmp_path):
    dataset = open_slakh(tiny_root)
    cache = StemCache(dataset, RATE)
    track = dataset.tracks("train")[0]
    separator = FractionSeparator()
    source = SeparatedSource(separator, cache)
    assert source.sample_rate == RATE
    mix = np.asarray(cache.get(track, "mix"))
    piano = source.get(track, "piano")
    assert np.allclose(piano, 0.3 * mix) and isinstance(piano, np.memmap) and separator.calls == 1
    assert np.allclose(source.get(track, "others"), 0.25 * mix)
    assert np.array_equal(source.get(track, "mix"), mix)
    assert separator.calls == 1  # second get: from the cache
    # A new source object (another process) reads the same files without separating.
    again = FractionSeparator()
    assert np.allclose(SeparatedSource(again, cache).get(track, "bass"), 0.2 * mix)
    assert again.calls == 0
    folder = source.folder(track)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{p}.npy" for p in INSTRUMENTS]
                                                              + ["manifest.json"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["config"]["separator"] == "fraction-test" and manifest["config"]["track"] == track.track_id
    assert verify_manifest(folder) is None
    # separate_tracks skips separated tracks.
    source.separate_tracks(dataset.tracks("train"), progress=False)
    assert separator.calls == 3
    with pytest.raises(PartsimError, match="unknown part 'vocals'"):
        source.get(track, "vocals")


def test_corrupt_separated_stems_are_recomputed(tiny_root):
    dataset = open_slakh(tiny_root)
    cache = StemCache(dataset, RATE)
    track = dataset.tracks("train")[0]
    separator = FractionSeparator()
    folder = SeparatedSource(separator, cache).folder(track)
    path = folder / "bass.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a byte of the last sample
    path.write_bytes(bytes(data))
    # A new source (another process) verifies the manifest, finds the mismatch and separates again.
    again = FractionSeparator()
    mix = np.asarray(cache.get(track, "mix"))
    assert np.allclose(SeparatedSource(again, cache).get(track, "bass"), 0.2 * mix) and again.calls == 1


def test_bad_separator_output_leaves_nothing_behind(tiny_root, tmp_path):
    dataset = open_slakh(tiny_root)
    source = SeparatedSource(FractionSeparator(length_error=-5), StemCache(dataset, RATE))
    track = dataset.tracks("train")[0]
    with pytest.raises(PartsimError, match="fraction.*drums of shape"):
        source.get(track, "drums")
    assert not any(p.name.endswith(".npy") for p in (cache_root() / "separated").rglob("*"))
    with pytest.raises(PartsimError, match="separator key"):
        SeparatedSource(FractionSeparator(), StemCache(dataset, RATE), key="../escape")


# ------------------------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------------------------


def noise_parts(samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {part: rng.standard_normal(samples) for part in INSTRUMENTS}


def test_metrics_match_hand_computed_values():
    # Independent unit-power white-noise references; estimate_i = ref_i + 0.3 noise_i + 0.2 ref_(i+1).
    # By hand: target power 1, interference 0.2^2 = 0.04, artefact 0.3^2 = 0.09; the 512-tap distortion filters
    # also absorb the share of the artefact noise lying in the spanned subspaces: 512 / n into the target's,
    # 4 * 512 / n into the interferers' (expected values for white noise of n samples).
    n = 80000
    share = 0.09 * 512 / n
    sir = 10 * math.log10((1 + share) / (0.04 + 4 * share))         # 13.75 dB (13.98 for n -> infinity)
    sar = 10 * math.log10((1 + 0.04 + 5 * share) / (0.09 - 5 * share))  # 10.79 dB (10.63)
    sdr = 10 * math.log10((1 + share) / (0.04 + 0.09 - share))      # 8.88 dB (8.86)
    references = noise_parts(n)
    noise = noise_parts(n, seed=1)
    estimates = {part: references[part] + 0.3 * noise[part] + 0.2 * references[INSTRUMENTS[(i + 1) % 5]]
                 for i, part in enumerate(INSTRUMENTS)}
    table = separation_metrics(estimates, references)
    assert list(table.index) == list(INSTRUMENTS) and (table["chunks"] == 1).all()
    assert table["sir"].to_numpy() == pytest.approx(np.full(5, sir), abs=0.25)
    assert table["sar"].to_numpy() == pytest.approx(np.full(5, sar), abs=0.25)
    assert table["sdr"].to_numpy() == pytest.approx(np.full(5, sdr), abs=0.25)


def test_more_interference_lowers_sir_and_a_perfect_estimate_is_clamped_high():
    references = noise_parts(30000)
    estimates = dict(references)
    estimates["bass"] = references["bass"] + 0.1 * references["drums"]
    estimates["piano"] = references["piano"] + 0.5 * references["drums"]
    table = separation_metrics(estimates, references)
    assert table.loc["bass", "sir"] > table.loc["piano", "sir"] + 10  # 20 dB vs 6 dB by hand
    assert table.loc["guitar", "sdr"] > 60 and table.loc["guitar", "sdr"] <= METRIC_CLAMP_DB


def test_silent_and_absent_references_are_skipped_per_chunk():
    rate = 1000
    references = noise_parts(4 * rate)
    references["piano"][: 2 * rate] = 0.0          # silent in the first two 1-s chunks
    references["guitar"] = np.zeros(4 * rate)      # silent throughout
    del references["others"]                       # absent from the track
    estimates = {part: 0.9 * signal for part, signal in references.items()} | {"others": np.zeros(4 * rate)}
    table = separation_metrics(estimates, references, sample_rate=rate, chunk_seconds=1.0, filter_length=32)
    assert table["chunks"].to_dict() == {"drums": 4, "bass": 4, "piano": 2, "guitar": 0, "others": 0}
    assert math.isnan(table.loc["guitar", "sdr"]) and math.isnan(table.loc["others", "sir"])
    with pytest.raises(PartsimError, match="one length"):
        separation_metrics({**estimates, "drums": estimates["drums"][:10]}, references)
    with pytest.raises(PartsimError, match="no estimate for part.*bass"):
        separation_metrics({"drums": estimates["drums"]}, references)


def test_evaluate_separation_averages_tracks(tiny_root, tmp_path):
    dataset = open_slakh(tiny_root)
    cache = StemCache(dataset, RATE)
    tracks = dataset.tracks("train")[:2]
    oracle = SeparatedSource(OracleSeparator(), cache)
    per_track = evaluate_separation(oracle, cache, tracks, chunk_seconds=2.0, progress=False)
    assert len(per_track) == 10 and set(per_track["track_id"]) == {t.track_id for t in tracks}
    assert (per_track["sdr"] > 60).all()  # the ideal stems against themselves
    quality = per_track.rename(columns={"track_id": "track"}).assign(split="train")
    table = table_3_1(quality)
    assert table["drums"]["sdr_train"]["value"] > 60 and math.isnan(table["drums"]["sdr_test"]["value"])


# ------------------------------------------------------------------------------------------------------------------
# spleeter (subprocess) and demucs (adapter)
# ------------------------------------------------------------------------------------------------------------------

FAKE_SPLEETER_MAIN = '''
import json, os, sys
import numpy as np
import soundfile as sf
args = sys.argv[1:]
log = os.environ.get("FAKE_SPLEETER_LOG")
if log:
    json.dump({"args": args, "model_path": os.environ.get("MODEL_PATH")}, open(log, "w"))
if os.environ.get("FAKE_SPLEETER_FAIL"):
    print("Traceback ...", file=sys.stderr)
    print("OSError: pretrained model 5stems not found", file=sys.stderr)
    sys.exit(1)
out = args[args.index("-o") + 1]
audio, rate = sf.read(args[-1], dtype="float32", always_2d=True)
os.makedirs(out, exist_ok=True)
for stem, gain in {"vocals": 0.1, "drums": 0.2, "bass": 0.3, "piano": 0.15, "other": 0.25}.items():
    sf.write(os.path.join(out, stem + ".wav"), gain * audio, rate, subtype="FLOAT")
'''


@pytest.fixture()
def fake_spleeter_python(tmp_path) -> Path:
    """A 'python' whose 'spleeter' module writes known fractions of the input (our real Python + a fake package)."""
    package = tmp_path / "fake_site" / "spleeter"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_SPLEETER_MAIN)
    python = tmp_path / "spleeter-env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{package.parent}" exec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def test_spleeter_missing_python_or_module_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("PARTSIM_SPLEETER_PYTHON", raising=False)
    with pytest.raises(PartsimError, match="needs spleeter_python=PATH.*pip install spleeter"):
        get_separator("spleeter", None)
    with pytest.raises(PartsimError, match="does not exist.*pip install spleeter"):
        SpleeterSeparator(tmp_path / "nowhere" / "python")
    # Our own Python has no spleeter module.
    with pytest.raises(PartsimError, match="cannot import spleeter.*ModuleNotFoundError.*pip install spleeter"):
        SpleeterSeparator(sys.executable)


def test_spleeter_adapter_plumbing_with_a_fake_spleeter(fake_spleeter_python, tmp_path, monkeypatch):
    log = tmp_path / "spleeter-call.json"
    monkeypatch.setenv("FAKE_SPLEETER_LOG", str(log))
    models = tmp_path / "pretrained"
    models.mkdir()
    separator = SpleeterSeparator(fake_spleeter_python, model_dir=models)
    t = np.arange(44100) / 44100
    mix = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    parts = separator.separate(mix, 44100)
    # vocals 0.1 + other 0.25 -> others; no guitar stem in Spleeter -> zeros.
    expected = {"drums": 0.2, "bass": 0.3, "piano": 0.15, "guitar": 0.0, "others": 0.35}
    for part, gain in expected.items():
        assert parts[part].dtype == np.float32 and len(parts[part]) == len(mix)
        assert np.allclose(parts[part], gain * mix, atol=1e-6), part
    call = json.loads(log.read_text())
    assert call["args"][:5] == ["separate", "-p", "spleeter:5stems", "-o", call["args"][4]]
    assert call["model_path"] == str(models.resolve())
    # At another rate the mix goes to 44.1 kHz and back: same length, same content away from the edges.
    t = np.arange(16000) / 16000
    low = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    bass = separator.separate(low, 16000)["bass"]
    assert len(bass) == 16000 and np.allclose(bass[500:-500], 0.3 * low[500:-500], atol=1e-3)
    monkeypatch.setenv("FAKE_SPLEETER_FAIL", "1")
    with pytest.raises(PartsimError, match="spleeter failed .exit 1.: OSError: pretrained model 5stems not found"):
        separator.separate(mix, 44100)


def test_demucs_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "demucs", None)  # import demucs -> ImportError, installed or not
    with pytest.raises(PartsimError, match="needs the demucs package.*pip install demucs"):
        get_separator("demucs", None)


def test_demucs_adapter_maps_sources_to_parts(monkeypatch):
    gains = {"drums": 0.2, "bass": 0.3, "other": 0.25, "vocals": 0.1, "guitar": 0.05, "piano": 0.1}

    class FakeModel(torch.nn.Module):
        sources = list(gains)
        samplerate = 44100
        audio_channels = 2

    def apply_model(model, mix, device, split, overlap, progress):
        assert mix.shape[:2] == (1, 2)
        return torch.stack([gain * mix[0] for gain in gains.values()])[None]

    def get_model(name, repo=None):
        if name != "htdemucs_6s":
            raise ValueError(f"model {name} not found")
        return FakeModel()

    demucs = types.ModuleType("demucs")
    monkeypatch.setitem(sys.modules, "demucs", demucs)
    monkeypatch.setitem(sys.modules, "demucs.apply", types.SimpleNamespace(apply_model=apply_model))
    monkeypatch.setitem(sys.modules, "demucs.pretrained", types.SimpleNamespace(get_model=get_model))
    separator = get_separator("demucs", None, device="cpu")
    t = np.arange(44100) / 44100
    mix = np.sin(2 * np.pi * 100 * t).astype(np.float32)
    mix -= mix.mean()  # zero mean: Demucs's normalisation adds the mean back to every source
    parts = separator.separate(mix, 44100)
    expected = {"drums": 0.2, "bass": 0.3, "piano": 0.1, "guitar": 0.05, "others": 0.35}
    for part, gain in expected.items():
        assert np.allclose(parts[part], gain * mix, atol=1e-5), part
    with pytest.raises(PartsimError, match="demucs model 'mdx_q' could not be loaded.*not found"):
        DemucsSeparator("mdx_q", device="cpu")
