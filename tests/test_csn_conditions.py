"""Chapter 4 conditions (``partsim_core.csn.conditions``): registry, loss, pre-training targets, smoke training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from partsim_core import INSTRUMENTS
from partsim_core.cli import main
from partsim_core.csn.conditions import (
    CONDITIONS,
    EXTRA_CONDITIONS,
    SWITCHES,
    get_condition,
    train_condition,
)
from partsim_core.csn.network import CSNLoss, CSNModel
from partsim_core.csn.pretraining import pretraining_segments, pretraining_targets
from partsim_core.data.cache import stable_hash
from partsim_core.errors import PartsimError
from partsim_core.presets import FrontendConfig

TABLE_4_2 = Path(__file__).resolve().parents[1] / "data" / "thesis_tables" / "table_4_2.csv"


def test_registry_matches_thesis_table_4_2():
    with TABLE_4_2.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["row"] for row in rows] == [c.row for c in CONDITIONS.values()]
    for row in rows:
        condition = get_condition(row["row"])
        assert condition.is_baseline == (row["baseline"] == "w/")
        for switch in SWITCHES:
            # "w/†" marks basic triplets without pseudo pieces (Fig. 4.2); still "basic on".
            assert getattr(condition, switch) == row[switch].startswith("w/"), (row["row"], switch)
        if row["basic"] == "w/†":
            assert not condition.psd
    assert get_condition("I") is CONDITIONS["i"] and get_condition("(b)").pretraining_only
    with pytest.raises(PartsimError, match="unknown condition"):
        get_condition("z")
    # j is Table 4.3's "w/pre, wo/norm" row: (i) without the norm loss, not a row of Table 4.2.
    extra = get_condition("j")
    assert "j" not in CONDITIONS
    assert (extra.norm, extra.psd, extra.basic, extra.add, extra.pre) == (False, True, True, True, True)


def _batch() -> dict[str, torch.Tensor]:
    return {"condition": torch.tensor([0, 1]), "additional_condition": torch.tensor([2, -1]),
            "present": torch.tensor([[[1, 0, 1, 0, 0]] * 3, [[0, 1, 0, 0, 0]] * 3], dtype=torch.float32)}


def _embeddings() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2 rows, 5 subspaces of 2 dims; distances worked out by hand in the test."""
    anchor, positive, negative = (torch.zeros(2, 10) for _ in range(3))
    # Row 0, condition 0 (dims 0-1): d(a,p) = 1, d(a,n) = 0.5 -> basic 1 - 0.5 + 0.2 = 0.7.
    positive[0, 0] = 1.0
    negative[0, 1] = 0.5
    # Row 0, additional condition 2 (dims 4-5) on (a, n, p): d(a,n) = 2, d(a,p) = 0 -> 2 - 0 + 0.2 = 2.2.
    negative[0, 4] = 2.0
    # Row 1, condition 1 (dims 2-3): d(a,p) = 0, d(a,n) = 0.1 -> 0.1; its additional condition is -1 (ignored),
    # although (a, n, p) in subspace 0 would give a large loss: n and p differ there.
    negative[1, 3] = 0.1
    positive[1, 0] = 5.0
    return anchor, positive, negative


def test_loss_basic_and_additional_rows():
    anchor, positive, negative = _embeddings()
    basic = CSNLoss(additional=False, norm=False).from_embeddings(anchor, positive, negative, _batch())
    assert float(basic) == pytest.approx((0.7 + 0.1) / 2)
    both = CSNLoss(additional=True, norm=False).from_embeddings(anchor, positive, negative, _batch())
    # The additional term is the mean over the one row that has an additional condition (row 0): 2.2.
    assert float(both) == pytest.approx((0.7 + 0.1) / 2 + 2.2)


def test_loss_norm_term_is_scaled_by_lambda():
    anchor, positive, negative = _embeddings()
    model = CSNModel(n_mels=16, width=2)
    with torch.no_grad():
        model.norm_loss.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 1.0, 0.0]))
    batch = _batch()
    basic = CSNLoss(norm=False).from_embeddings(anchor, positive, negative, batch)
    loss_01 = CSNLoss(norm=True, norm_weight=0.1).from_embeddings(anchor, positive, negative, batch, model)
    loss_1 = CSNLoss(norm=True, norm_weight=1.0).from_embeddings(anchor, positive, negative, batch, model)
    # Reference norm loss by hand: BCE of sigmoid(log(norm + 1e-6) + b) against presence, mean over the three roles.
    total = 0.0
    for role, embedding in enumerate((anchor, positive, negative)):
        norms = embedding.reshape(2, 5, 2).norm(dim=-1).numpy().astype(np.float64)
        p = 1 / (1 + np.exp(-(np.log(norms + 1e-6) + np.array([0.5, -0.5, 0.0, 1.0, 0.0]))))
        q = batch["present"][:, role].numpy()
        total += float(np.mean(-(q * np.log(p) + (1 - q) * np.log(1 - p))))
    norm = total / 3
    assert float((loss_1 - basic).detach()) == pytest.approx(norm, rel=1e-4)
    assert float((loss_01 - basic).detach()) == pytest.approx(0.1 * norm, rel=1e-4)
    # The bias is a model parameter, so it gets a gradient through the loss.
    loss_1.backward()
    assert model.norm_loss.bias.grad is not None and float(model.norm_loss.bias.grad.abs().sum()) > 0
    with pytest.raises(PartsimError, match="CSNModel"):
        CSNLoss(norm=True).from_embeddings(anchor, positive, negative, batch, torch.nn.Linear(1, 1))


class _ConstantNetwork(torch.nn.Module):
    """Stands in for a chapter-3 network: returns ``value`` in every dimension of a 4-d embedding."""

    embedding_dim = 4

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.full((mel.shape[0], 4), self.value)


class _Track:
    """A fake track with the given parts."""

    def __init__(self, track_id: str, parts: set[str]) -> None:
        self.track_id, self.parts = track_id, parts

    def stems_by_group(self) -> dict[str, list]:
        return {part: [] for part in self.parts}


class _Source:
    """1-s signals at 8 kHz: part j of every track is a constant (j + 1) / 10, except the silences given."""

    sample_rate = 8000

    def __init__(self, silent: dict[tuple[str, str], tuple[int, int]]) -> None:
        self.silent = silent

    def get(self, track: _Track, part: str) -> np.ndarray:
        audio = np.full(8000, (INSTRUMENTS.index(part) + 1) / 10, dtype=np.float32)
        if (track.track_id, part) in self.silent:
            first, last = self.silent[track.track_id, part]
            audio[first:last] = 0.0
        return audio


class _Data:
    """The few handle attributes the pre-training helpers read."""

    def __init__(self, tracks: list[_Track], source: _Source) -> None:
        from types import SimpleNamespace

        self.train_tracks, self.cache = tracks, source
        self.tracks_by_id = {track.track_id: track for track in tracks}
        self.preset = SimpleNamespace(frontend=FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16),
                                      segment_seconds=0.5, silence_threshold=1e-4, name="fake")

    def fingerprint(self, tracks: list[_Track]) -> str:
        return stable_hash([track.track_id for track in tracks] + [sorted(self.cache.silent)])


def test_pretraining_segments_and_targets_by_hand():
    # 1-s tracks, 0.5-s segments at 50 % overlap: starts 0, 2000, 4000. T1 has no guitar; T0's bass is silent in
    # its first half (segments at 0 and 2000 are silent: both overlap it for at least half... only 0 is wholly
    # silent, 2000 keeps power (0.2^2)/2 = 0.02 >= 1e-4) and T1's every part is silent at the end.
    tracks = [_Track("T0", set(INSTRUMENTS)), _Track("T1", set(INSTRUMENTS) - {"guitar"})]
    silent = {("T0", "bass"): (0, 4000)}
    silent.update({("T1", part): (4000, 8000) for part in INSTRUMENTS})
    data = _Data(tracks, _Source(silent))
    refs, present, indices = pretraining_segments(data, tracks)
    assert refs == [("T0", 0), ("T0", 2000), ("T0", 4000), ("T1", 0), ("T1", 2000)]
    expected = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1],
                         [1, 1, 1, 0, 1], [1, 1, 1, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(present, expected)
    networks = {part: _ConstantNetwork(float(index + 1)) for index, part in enumerate(INSTRUMENTS)}
    networks["piano"] = None  # no training track has piano: zero block everywhere
    targets = pretraining_targets(data, refs, indices, networks, batch_size=2)
    assert targets.shape == (5, 5, 4)
    values = expected * np.array([1, 2, 0, 4, 5], dtype=np.float32)
    np.testing.assert_allclose(targets.numpy(), np.repeat(values[:, :, None], 4, axis=2))


def test_table_4_3_first_row_is_its_own_condition():
    # Thesis Table 4.3's first row "wo/pre, wo/norm": pseudo pieces + basic + add, no norm loss, no pre-training.
    first = get_condition("k")
    assert (first.psd, first.basic, first.add, first.norm, first.pre) == (True, True, True, False, False)
    assert not first.is_baseline and first.letter in EXTRA_CONDITIONS
    middle = get_condition("j")
    assert (middle.psd, middle.basic, middle.add, middle.norm, middle.pre) == (True, True, True, False, True)
    # (g) has the norm loss: it is not Table 4.3's first row.
    assert get_condition("g").norm


def test_cli_conditions_json_lists_every_condition_with_switches(capsys):
    assert main(["csn", "conditions", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["letter"] for entry in listed] == list("abcdefghijk")
    by_letter = {entry["letter"]: entry for entry in listed}
    assert by_letter["k"]["table"] == "4.3" and by_letter["i"]["table"] == "4.2"
    for entry in listed:
        condition = get_condition(entry["letter"])
        assert all(entry[switch] == getattr(condition, switch) for switch in SWITCHES)
        # Created silences are part of every triplet-trained condition's data (thesis 4.3.4), none of (a), (b).
        assert entry["created_silences"] == (entry["letter"] not in "ab")


# ---------------------------------------------------------------------------------------------------------------
# Smoke training (embedded smoke dataset, private cache)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_root():
    from partsim_core.data.dataset import resolve_dataset_root

    return resolve_dataset_root("smoke", "")


@pytest.mark.slow
def test_smoke_condition_trains_then_is_reused(smoke_root, tmp_path, monkeypatch):
    from partsim_core.data.dataset import load_dataset

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    data = load_dataset("smoke", str(smoke_root))
    first = train_condition("g", data, device="cpu", progress=False)
    assert not first.reused and len(first.history) == 1
    assert np.isfinite(first.history[0]["train_loss"])
    assert isinstance(first.model, CSNModel)
    # A second handle of the same data reuses the trained model.
    again = train_condition("g", load_dataset("smoke", str(smoke_root)), device="cpu", progress=False)
    assert again.reused and again.out_dir == first.out_dir
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    with pytest.raises(PartsimError, match="chapter-3 baseline"):
        train_condition("a", data)


@pytest.mark.slow
def test_smoke_pretraining_is_shared(smoke_root, tmp_path, monkeypatch):
    from partsim_core.data.dataset import load_dataset

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    data = load_dataset("smoke", str(smoke_root))
    pretrained = train_condition("b", data, device="cpu", progress=False)
    assert not pretrained.reused
    assert pretrained.history and all(np.isfinite(entry["val_loss"]) for entry in pretrained.history)
    trained = train_condition("h", data, device="cpu", progress=False)
    assert not trained.reused
    assert train_condition("b", data, device="cpu", progress=False).reused
    # The pre-training's target networks were trained on the pre-training tracks only (thesis 4.4.1).
    config = json.loads((pretrained.out_dir / "config.json").read_text())
    assert config["config"]["data"]["targets"] == "pretraining"
    assert pretrained.out_dir != trained.out_dir and pretrained.out_dir.parent == trained.out_dir.parent


def test_cli_conditions_and_bad_condition(capsys):
    assert main(["csn", "conditions"]) == 0
    out = capsys.readouterr().out
    assert "(i)" in out and "pre" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "csn", "--condition", "z"])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def smoke_handle():
    from partsim_core.data.dataset import load_dataset

    return load_dataset("smoke")


def test_pretraining_target_networks_train_on_the_pretraining_pieces(smoke_handle, monkeypatch):
    # Thesis 4.4.1: the target networks are trained on the same pre-training pieces; chapter 3's networks (every
    # training track) remain an option.
    import dataclasses
    from types import SimpleNamespace

    from partsim_core.csn import pretraining

    calls = []

    def fake_train(data, part, kind, **options):
        calls.append((part, kind, [track.track_id for track in data.train_tracks]))
        return SimpleNamespace(model=torch.nn.Identity(), out_dir=Path(part), history=[])

    monkeypatch.setattr(pretraining, "train_part_network", fake_train)
    csn = dataclasses.replace(smoke_handle.preset.csn, pretrain_tracks=3)
    first_three = [track.track_id for track in smoke_handle.train_tracks[:3]]
    pretraining.target_networks(smoke_handle, csn, "pretraining")
    assert [call[0] for call in calls] == list(INSTRUMENTS)
    assert all(kind == "ideal" and tracks == first_three for _, kind, tracks in calls)
    calls.clear()
    pretraining.target_networks(smoke_handle, csn, "chapter3")
    assert all(tracks == [t.track_id for t in smoke_handle.train_tracks] for _, _, tracks in calls)
    with pytest.raises(PartsimError, match="pre-training targets"):
        pretraining.target_networks(smoke_handle, csn, "mix")


def test_triplet_training_never_stops_early_and_drops_parts(smoke_handle):
    # The thesis trains a fixed number of epochs (4.4.1): no early stopping, under the paper preset too; created
    # silences are in every triplet-trained condition's data (4.3.4), dataset pieces included.
    from partsim_core.csn.conditions import condition_setup
    from partsim_core.presets import get_preset

    for letter in ("c", "g"):
        task, config = condition_setup(get_condition(letter), smoke_handle, get_preset("paper").csn)
        assert config.early_stopping_patience is None and config.epochs == 1000
        assert task.config.created_silences and task.sampler.created_silences


# ---------------------------------------------------------------------------------------------------------------
# The norm loss's bias exists only where the norm loss is used (DistributedDataParallel needs every parameter used)
# ---------------------------------------------------------------------------------------------------------------


def _triplet_batch(n_mels: int = 16, size: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    present = torch.tensor([[1.0, 0, 1, 1, 0], [0, 1, 1, 0, 1], [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]])[:size]
    return {"anchor": torch.rand(size, n_mels, 20, generator=generator),
            "positive": torch.rand(size, n_mels, 20, generator=generator),
            "negative": torch.rand(size, n_mels, 20, generator=generator),
            "condition": torch.tensor([0, 2, 3, 4])[:size], "additional_condition": torch.tensor([-1, 0, 2, 1])[:size],
            "present": present[:, None, :].expand(size, 3, 5).contiguous()}


@pytest.mark.parametrize("norm", [False, True])
def test_every_parameter_of_a_condition_model_gets_a_gradient(norm):
    model = CSNModel(n_mels=16, width=2, norm=norm)
    names = [name for name, _ in model.named_parameters()]
    assert any(name.startswith("norm_loss.") for name in names) == norm
    assert (model.norm_loss is not None) == norm
    loss = CSNLoss(additional=True, norm=norm)(model, _triplet_batch())
    loss.backward()
    unused = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert unused == []


def test_condition_models_carry_the_bias_only_with_the_norm_loss(smoke_handle, tmp_path):
    from types import SimpleNamespace

    from partsim_core.csn.conditions import condition_setup
    from partsim_core.csn.pretraining import PretrainingTask
    from partsim_core.training_artefacts import MODEL_FILE

    csn = smoke_handle.preset.csn
    n_mels = smoke_handle.preset.frontend.n_mels
    # A finished pre-training run written before the bias was left out: it holds an all-zero bias.
    old = CSNModel(n_mels, csn.width)
    torch.save({"key": "old", "state_dict": old.state_dict()}, tmp_path / MODEL_FILE)
    for letter in "cdefghijk":
        condition = get_condition(letter)
        task, _config = condition_setup(condition, smoke_handle, csn, pretrained_dir=tmp_path)
        model = task.build_model()
        assert (model.norm_loss is not None) == condition.norm, letter
        if condition.pre:
            for name, value in model.encoder.state_dict().items():
                assert torch.equal(value, old.encoder.state_dict()[name]), (letter, name)
        if condition.norm:
            assert torch.equal(model.norm_loss.bias.detach(), torch.zeros(5))
    pretraining = PretrainingTask.build_model(SimpleNamespace(frontend=smoke_handle.preset.frontend,
                                                              width=csn.width))
    assert pretraining.norm_loss is None


def test_a_model_without_norm_loss_loads_an_untrained_bias_only():
    with_bias = CSNModel(n_mels=16, width=2)
    without = CSNModel(n_mels=16, width=2, norm=False)
    without.load_state_dict(with_bias.state_dict())          # a checkpoint of such a run written before the change
    for name, value in without.state_dict().items():
        assert torch.equal(value, with_bias.state_dict()[name])
    assert "norm_loss.bias" not in without.state_dict()
    with torch.no_grad():
        with_bias.norm_loss.bias.fill_(0.5)                  # a trained bias cannot be silently dropped
    with pytest.raises(RuntimeError, match="norm_loss.bias"):
        without.load_state_dict(with_bias.state_dict())
    with pytest.raises(RuntimeError, match="norm_loss.bias"):
        CSNModel(n_mels=16, width=2).load_state_dict(without.state_dict())


def _ddp_worker(rank: int, world: int, port: int, norm: bool) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(CSNModel(16, 2, norm=norm))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = CSNLoss(additional=True, norm=False)      # condition (k)'s loss: no norm loss
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, _triplet_batch()).backward()
            optimizer.step()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_condition_without_norm_loss_trains_under_ddp_with_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, False), nprocs=2, join=True)


class _ConstantCSN(torch.nn.Module):
    """Outputs ``value`` in every one of the 640 dimensions (a parameter, so the task can find its device)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.value * torch.ones(mel.shape[0], 640)


def test_pretraining_reports_a_validation_loss_on_the_validation_split(smoke_handle):
    # Issue 13: every model shows train and validation loss per epoch, the pre-training included.
    from partsim_core.csn.pretraining import PretrainingTask, pretraining_validation

    csn = smoke_handle.preset.csn
    networks = {part: None for part in INSTRUMENTS}  # every target block zero -> the normalised target is zero
    validation = pretraining_validation(smoke_handle, csn, networks, seed=0)
    refs, _targets, present = validation
    validation_ids = {track.track_id for track in smoke_handle.validation_tracks}
    assert 0 < len(refs) <= csn.validation_triplets and {ref[0] for ref in refs} <= validation_ids
    assert pretraining_validation(smoke_handle, csn, networks, seed=0)[0] == refs  # fixed, not redrawn
    assert present.shape == (len(refs), len(INSTRUMENTS))
    train_refs = [(smoke_handle.train_tracks[0].track_id, 0)]
    task = PretrainingTask(smoke_handle.cache, smoke_handle.tracks_by_id, train_refs, torch.zeros(1, 5, 128),
                           torch.ones(1, 5), smoke_handle.preset.frontend, csn.width, 3, 0,
                           int(smoke_handle.preset.segment_seconds * smoke_handle.cache.sample_rate),
                           validation=validation)
    model = _ConstantCSN(0.5).train()
    # MSE of a constant 0.5 against a zero target: 0.25 in every batch (batches of 3, the last one shorter).
    assert task.validation_loss(model) == pytest.approx(0.25)
    assert model.training  # the task restores the mode it found
    assert PretrainingTask(smoke_handle.cache, smoke_handle.tracks_by_id, train_refs, torch.zeros(1, 5, 128),
                           torch.ones(1, 5), smoke_handle.preset.frontend, csn.width, 3, 0, 100
                           ).validation_loss(model) is None
