"""The thesis's MixQuery head (``partsim_core.mixquery.mert``, ``partsim train mixquery-head``): the kernel-1
convolution by hand, same-song triplets, training that separates songs without labels, saved heads, and the whole
command on a tiny dataset with a tiny random stand-in for MERT (nothing downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_mixquery_pseudo_catalog import tiny  # noqa: F401 - the tiny generated dataset fixture

from partsim_core import INSTRUMENTS
from partsim_core.baseline.separators import OracleSeparator
from partsim_core.cli import build_parser, main
from partsim_core.cli.mixquery import train_head
from partsim_core.errors import PartsimError
from partsim_core.mixquery import mert
from partsim_core.mixquery.backends import MertBackend
from partsim_core.mixquery.ranking import catalog_embeddings


class StandInMert:
    """A tiny random stand-in for MERT: frames of 32 samples at 8 kHz, one random projection + tanh per layer,
    averaged over time (the interface of ``mert.LayerFeatureModel``)."""

    sample_rate = 8000
    n_layers = 3
    dim = 6
    identity = "stand-in-0"

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.projections = torch.randn(self.n_layers, 32, self.dim, generator=generator)
        self.calls: list[list[int]] = []

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        self.calls.append([len(wave) for wave in waves])
        out = []
        for wave in waves:
            frames = torch.from_numpy(np.asarray(wave[:len(wave) // 32 * 32], dtype=np.float32)).reshape(-1, 32)
            out.append(torch.tanh(torch.einsum("tf,lfd->ltd", frames * 10, self.projections)).mean(dim=1))
        return torch.stack(out).numpy()


def test_head_is_a_kernel_1_convolution_over_the_layers():
    head = mert.MertHead(3)
    features = torch.randn(4, 3, 5)
    weight, bias = head.conv.weight.detach()[0, :, 0], head.conv.bias.detach()[0]
    expected = torch.einsum("bld,l->bd", features, weight) + bias
    torch.testing.assert_close(head(features), expected)


def test_same_song_triplets():
    songs = ["a", "a", "a", "b", "c", "c"]
    triplets = mert.same_song_triplets(songs, np.random.default_rng(0), per_segment=5)
    assert len(triplets) == 5 * 5  # every segment of a song with two segments, five times ("b" has one)
    for anchor, positive, negative in triplets:
        assert songs[anchor] == songs[positive] and anchor != positive
        assert songs[negative] != songs[anchor]
    with pytest.raises(PartsimError, match="at least two songs"):
        mert.same_song_triplets(["a", "a"], np.random.default_rng(0))
    with pytest.raises(PartsimError, match="two segments"):
        mert.same_song_triplets(["a", "b", "c"], np.random.default_rng(0))


def test_training_separates_songs_without_labels():
    # Layer 1 carries the song (a song vector plus small noise); layers 0 and 2 are loud noise.
    rng = np.random.default_rng(1)
    songs = [f"s{number}" for number in range(6) for _ in range(4)]
    centres = rng.standard_normal((6, 8))
    features = rng.standard_normal((24, 3, 8)).astype(np.float32) * 3
    features[:, 1] = np.repeat(centres, 4, axis=0) + 0.1 * rng.standard_normal((24, 8))
    # A larger step than the thesis's 5e-4 keeps the test short; the rule (same-song triplets) is the same.
    trained = mert.train_mert_head(features, songs, epochs=40, learning_rate=0.02, batch_size=16, seed=0,
                                   device="cpu")
    assert len(trained.losses) == 40 and np.mean(trained.losses[-5:]) < 0.1 * trained.losses[0]
    weights = trained.head.conv.weight.detach()[0, :, 0].abs()
    assert weights[1] > 3 * max(weights[0], weights[2])  # it learned to weight the layer that carries the song
    embedded = mert.embed_with_heads(features, trained.head)
    unit = embedded / np.linalg.norm(embedded, axis=1, keepdims=True)
    cosine = 1 - unit @ unit.T
    same = np.equal.outer(np.array(songs), np.array(songs)) & ~np.eye(24, dtype=bool)
    assert cosine[same].mean() < 0.5 * cosine[~np.equal.outer(np.array(songs), np.array(songs))].mean()
    again = mert.train_mert_head(features, songs, epochs=40, learning_rate=0.02, batch_size=16, seed=0,
                                 device="cpu")
    assert again.losses == trained.losses  # seeded
    with pytest.raises(PartsimError, match="do not match"):
        mert.train_mert_head(features[:3], songs)
    assert mert.HEAD_LEARNING_RATE == 5e-4 and mert.HEAD_EPOCHS == 100  # thesis 6.3.3


def test_layer_features_resample_and_pad():
    model = StandInMert()
    # A 200-Hz tone: resampling it to 8 kHz equals taking every second sample (up to the filter's ripple).
    audio = (0.5 * np.sin(2 * np.pi * 200 * np.arange(16000 * 3) / 16000)).astype(np.float32)
    out = mert.layer_features(model, audio, 16000, [(0, 16000), (16000, 32000), (32000, 56000)], batch_size=2)
    assert out.shape == (3, model.n_layers, model.dim)
    assert model.calls == [[8000, 8000], [12000]]  # resampled to 8 kHz; the last segment padded past the end
    np.testing.assert_allclose(out[0], model([audio[:16000][::2]])[0], atol=0.05)
    assert mert.embed_with_heads(out, None).shape == (3, model.dim)  # no head: mean over layers


def test_heads_round_trip_and_refusals(tmp_path):
    heads = {"drums": mert.MertHead(3), "bass": mert.MertHead(3)}
    mert.save_heads(tmp_path, heads, {"epochs": 1})
    loaded = mert.load_heads(tmp_path)
    features = torch.randn(2, 3, 4)
    torch.testing.assert_close(loaded["bass"](features), heads["bass"](features))
    assert mert.heads_identity(tmp_path) == mert.heads_identity(tmp_path) and mert.heads_identity(None) is None
    with pytest.raises(PartsimError, match="not a MixQuery head folder"):
        mert.load_heads(tmp_path / "none")


def test_train_command_needs_mert(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    code = main(["train", "mixquery-head", "--preset", "smoke", "--out-dir", str(tmp_path / "heads"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and ("transformers" in err or "MERT model folder" in err) and "never downloaded" in err
    assert not (tmp_path / "heads").exists()


def test_train_command_refuses_songs_of_one_segment(tiny, tmp_path, monkeypatch):  # noqa: F811
    # The tiny songs are 6-8 s: one 10-s segment each, so there is no same-song positive.
    monkeypatch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
    args = build_parser().parse_args(["train", "mixquery-head", "--preset", "smoke", "--data-root", str(tiny["root"]),
                                      "--split", "test", "--input", "ideal", "--epochs", "1", "--out-dir",
                                      str(tmp_path / "heads"), "--no-progress"])
    with pytest.raises(PartsimError, match="two segments in one song"):
        train_head(args, features_model=StandInMert())
    assert not (tmp_path / "heads").exists()


def test_train_command_trains_one_set_of_heads_per_seed(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    # In-process through main: MERT is the stand-in, and the features are three songs of two segments each (the
    # tiny songs have one 10-s segment), so only the seed loop and the folders are exercised.
    import partsim_core.cli.mixquery as command

    monkeypatch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
    rng = np.random.default_rng(0)
    songs = ["a", "a", "b", "b", "c", "c"]
    features = {"drums": (rng.standard_normal((6, StandInMert.n_layers, StandInMert.dim)), songs)}
    monkeypatch.setattr(command, "load_mert", lambda *_: StandInMert())
    monkeypatch.setattr(command, "split_features", lambda *_, **__: features)
    out = tmp_path / "heads"
    code = main(["train", "mixquery-head", "--preset", "smoke", "--data-root", str(tiny["root"]), "--split", "test",
                 "--input", "ideal", "--epochs", "2", "--device", "cpu", "--seed", "5", "--seeds", "3", "--out-dir",
                 str(out), "--no-progress"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0 and [line["seed"] for line in lines] == [5, 6, 7]
    assert [line["out_dir"] for line in lines] == [str(out / f"seed-{seed}") for seed in (5, 6, 7)]
    infos = [json.loads((out / f"seed-{seed}" / mert.HEAD_INFO).read_text()) for seed in (5, 6, 7)]
    assert [info["seed"] for info in infos] == [5, 6, 7] and all(info["epochs"] == 2 for info in infos)
    weights = [mert.load_heads(out / f"seed-{seed}")["drums"].conv.weight.detach() for seed in (5, 6, 7)]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])


@pytest.mark.slow
def test_train_mixquery_head_end_to_end_with_a_stand_in(tmp_path, monkeypatch):
    # The smoke dataset (12-16 s songs: two segments each) in a private cache, ideal stems, a stand-in for MERT.
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "heads"
    words = ["train", "mixquery-head", "--preset", "smoke", "--split", "test", "--input", "ideal", "--epochs", "3",
             "--out-dir", str(out), "--device", "cpu", "--no-progress"]
    [summary] = train_head(build_parser().parse_args(words), features_model=StandInMert())
    assert summary["seed"] == 0 and summary["parts"] and set(summary["parts"]) <= set(INSTRUMENTS)
    info = json.loads((out / mert.HEAD_INFO).read_text())
    assert info["epochs"] == 3 and info["learning_rate"] == 5e-4 and info["input"] == "ideal"
    assert all(len(info["losses"][part]) == 3 for part in summary["parts"])
    assert (out / ".partsim-output").is_file()
    with pytest.raises(PartsimError, match="--fresh"):
        train_head(build_parser().parse_args(words), features_model=StandInMert())
    # The trained heads in the MERT backend on the test split (ideal stems through the oracle separator).
    from partsim_core.data.dataset import load_dataset
    from partsim_core.mixquery.catalog import Catalog

    data = load_dataset("smoke")
    heads = mert.load_heads(out)
    backend = MertBackend(StandInMert(), OracleSeparator(), data.preset.frontend, "mert-stand-in", heads=heads)
    embedded = catalog_embeddings(Catalog(data.root, sample_rate=backend.sample_rate), backend)
    assert embedded.vectors.shape[1:] == (len(INSTRUMENTS), StandInMert.dim)
    assert np.isfinite(embedded.vectors).all() and np.abs(embedded.vectors).sum() > 0
