"""Pseudo musical pieces, basic/additional triplets (thesis Fig. 4.3), created silences and the CSN task.

The fake source holds constant signals: track k's part j is the constant ``VALUE[k, j]`` (distinct per track and
part), so a mixed segment is a sum of known constants and its per-part mean powers are their squares.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from partsim_core import INSTRUMENTS
from partsim_core.csn.pseudo_pieces import (
    PartActivity,
    PseudoPiece,
    PseudoTripletSampler,
    TempoGroups,
    balanced_keep_probabilities,
    mix_piece,
)
from partsim_core.csn.pseudo_triplet_task import PseudoTripletConfig, PseudoTripletTask
from partsim_core.errors import PartsimError
from partsim_core.presets import FrontendConfig

RATE = 100  # 1-s segments are 100 samples, grid hop 50.
N_SAMPLES = 400  # grid starts 0, 50, ..., 300
TRACK_IDS = [f"T{k}" for k in range(8)]
# Two tempo classes of four (tempo_classes: k = min(36, 8 // 4) = 2): T0-T3 slow, T4-T7 fast.
TEMPOS = {track_id: (90.0 + k if k < 4 else 150.0 + k) for k, track_id in enumerate(TRACK_IDS)}
SLOW, FAST = set(TRACK_IDS[:4]), set(TRACK_IDS[4:])
#: VALUE[k, j]: constant of track k, part j (0.1 .. 0.85, all distinct).
VALUE = np.array([[0.1 + 0.1 * k + 0.01 * j for j in range(5)] for k in range(8)])
MISSING = {("T1", "guitar"), ("T5", "piano")}  # zeros throughout
LATE_DRUMS = "T2"  # drums silent before sample 200: non-silent starts 150 (half loud), 200, 250, 300


@dataclass(frozen=True)
class FakeTrack:
    track_id: str


class ConstantSource:
    """SignalSource of constants; ``only`` restricts which parts are non-zero (for the balance test)."""

    sample_rate = RATE

    def __init__(self, present: dict[str, set[str]] | None = None) -> None:
        self.present = present

    def get(self, track, part):
        k, j = TRACK_IDS.index(track.track_id), INSTRUMENTS.index(part)
        audio = np.full(N_SAMPLES, VALUE[k, j], dtype=np.float32)
        if (track.track_id, part) in MISSING or (self.present is not None and part not in self.present[track.track_id]):
            audio[:] = 0
        if track.track_id == LATE_DRUMS and part == "drums":
            audio[:200] = 0
        return audio


TRACKS = [FakeTrack(track_id) for track_id in TRACK_IDS]


@pytest.fixture(scope="module")
def activity() -> PartActivity:
    return PartActivity(ConstantSource(), TRACKS, seconds=1.0)


@pytest.fixture(scope="module")
def groups() -> TempoGroups:
    return TempoGroups(TRACKS, TEMPOS)


def test_pseudo_piece_labels() -> None:
    piece = PseudoPiece.from_parts({"drums": "A", "bass": "B", "guitar": "B"})
    assert piece.labels() == ("A", "B", None, "B", None)
    assert piece.present_parts() == ("drums", "bass", "guitar")
    assert piece.source("guitar") == "B" and piece.source("piano") is None
    with pytest.raises(PartsimError, match="vocals"):
        PseudoPiece.from_parts({"vocals": "A"})


def test_activity_grid(activity: PartActivity) -> None:
    assert activity.starts["T0", "drums"].tolist() == [0, 50, 100, 150, 200, 250, 300]
    assert activity.starts[LATE_DRUMS, "drums"].tolist() == [150, 200, 250, 300]
    assert not activity.has("T1", "guitar") and not activity.has("T5", "piano")
    assert activity.active("T2", "drums", 200) and not activity.active("T2", "drums", 100)
    # 8 tracks x 7 segments, minus T2's 3 silent drum segments, minus the two missing parts.
    assert activity.presence_counts().tolist() == [53, 56, 49, 49, 56]


def test_keep_probabilities_by_hand() -> None:
    assert balanced_keep_probabilities([10, 5, 2, 0, 4]) == pytest.approx([0.2, 0.4, 1.0, 1.0, 0.5])
    with pytest.raises(PartsimError):
        balanced_keep_probabilities([1, float("nan")])


def test_tempo_groups_and_fallback(groups: TempoGroups) -> None:
    assert groups.n_classes == 2
    assert set(groups.members[0]) == SLOW and set(groups.members[1]) == FAST
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = groups.draw(rng)
        assert len(set(drawn)) == 4 and (set(drawn) <= SLOW or set(drawn) <= FAST)
    # Class 0 holds one eligible track only: the pool widens to the neighbouring class.
    assert set(groups.pool(0, eligible={"T0", "T5"}, min_eligible=2)) == SLOW | FAST
    assert set(groups.pool(0, eligible={"T0", "T1"}, min_eligible=2)) == SLOW
    with pytest.raises(PartsimError, match="at least 4"):
        TempoGroups(TRACKS[:3], TEMPOS)
    with pytest.raises(PartsimError, match="no tempo"):
        TempoGroups(TRACKS, {"T0": 100.0})


def test_basic_and_additional_triplets_follow_fig_4_3(activity: PartActivity, groups: TempoGroups) -> None:
    sampler = PseudoTripletSampler(activity, groups, created_silences=False, seed=3)
    triplets = sampler.triplets(epoch=0, count=300)
    assert {t.condition for t in triplets} == set(range(5))
    for t in triplets:
        c = t.condition
        part = INSTRUMENTS[c]
        a, p, n = t.labels()
        track_a, track_d = a[c], n[c]
        assert p[c] == track_a and track_d != track_a
        others = [k for k in range(5) if k != c]
        sources_b = {a[k] for k in others} - {None}
        sources_c = {p[k] for k in others} - {None}
        assert len(sources_b) <= 1 and len(sources_c) <= 1
        assert all(a[k] == n[k] for k in others)  # anchor and negative share every other label
        used = {track_a, track_d} | sources_b | sources_c
        assert len(used) == 2 + len(sources_b) + len(sources_c)  # A, B, C, D distinct
        assert used <= SLOW or used <= FAST  # one tempo class
        # A part its source lacks is absent; every listed part exists in its source.
        for piece in t.pieces:
            for name, label in zip(INSTRUMENTS, piece.labels()):
                assert label is None or activity.has(label, name)
        # The condition part is audible where the anchor, positive and negative are cut.
        assert activity.active(track_a, part, t.starts[0]) and activity.active(track_a, part, t.starts[1])
        assert activity.active(track_d, part, t.starts[2])
        assert t.starts[0] != t.starts[1]
        # Additional triplet: (anchor, negative, positive) under another condition; anchor ~ new positive there.
        extra = t.additional()
        assert extra is not None and extra.condition != c
        assert extra.positive == t.negative and extra.negative == t.positive
        assert extra.starts == (t.starts[0], t.starts[2], t.starts[1])
        ea, ep, en = extra.labels()
        assert ea[extra.condition] == ep[extra.condition]


def test_triplets_are_deterministic_per_seed(activity: PartActivity, groups: TempoGroups) -> None:
    def draw(seed: int, epoch: int):
        return PseudoTripletSampler(activity, groups, seed=seed).triplets(epoch, 50)

    assert draw(1, 0) == draw(1, 0)
    assert draw(1, 0) != draw(1, 1)
    assert draw(1, 0) != draw(2, 0)


def test_dataset_piece_variant(activity: PartActivity) -> None:
    sampler = PseudoTripletSampler(activity, None, pseudo=False, additional=False, seed=0)
    for t in sampler.triplets(0, 100):
        a, p, n = t.labels()
        assert t.anchor == t.positive and t.starts[0] != t.starts[1]
        assert len(set(a) - {None}) == 1 and len(set(n) - {None}) == 1 and a[t.condition] != n[t.condition]
        assert t.additional() is None
    with pytest.raises(PartsimError, match="additional triplets need pseudo"):
        PseudoTripletSampler(activity, None, pseudo=False, additional=True)


def test_created_silences_balance_presence(groups: TempoGroups) -> None:
    # Unbalanced parts: drums and bass everywhere, piano in 4 tracks, guitar in 3 (2 per class), others in 2.
    present = {track_id: {"drums", "bass"} for track_id in TRACK_IDS}
    for track_id in ("T0", "T1", "T4", "T5"):
        present[track_id].add("piano")
    for track_id in ("T0", "T2", "T4"):
        present[track_id].add("guitar")
    for track_id in ("T3", "T6"):
        present[track_id].add("others")
    unbalanced = PartActivity(ConstantSource(present), TRACKS, seconds=1.0)

    def shares(created_silences: bool) -> np.ndarray:
        sampler = PseudoTripletSampler(unbalanced, groups, created_silences=created_silences, seed=0)
        counts = np.zeros(5)
        for t in sampler.triplets(0, 2000):
            for piece, start in zip(t.pieces, t.starts):
                for j, label in enumerate(piece.labels()):
                    counts[j] += label is not None and unbalanced.active(label, INSTRUMENTS[j], start)
        return counts / counts.sum()

    plain, balanced = shares(False), shares(True)
    assert np.ptp(balanced) < 0.5 * np.ptp(plain)
    assert plain.min() / plain.max() < 0.55 and balanced.min() / balanced.max() > 0.7


def test_mix_piece_by_hand() -> None:
    tracks_by_id = {track.track_id: track for track in TRACKS}
    piece = PseudoPiece.from_parts({"drums": "T0", "bass": "T3", "guitar": "T1"})  # T1 has no guitar
    mix, parts = mix_piece(ConstantSource(), tracks_by_id, piece, {"drums": 350, "bass": 0, "guitar": 0}, 100)
    expected_parts = np.zeros((5, 100))
    expected_parts[0, :50] = 0.1  # drums of T0 from 350: 50 samples left, then zero padding
    expected_parts[1, :] = 0.41
    np.testing.assert_allclose(parts, expected_parts, rtol=1e-6)
    np.testing.assert_allclose(mix[:50], 0.51, rtol=1e-6)
    np.testing.assert_allclose(mix[50:], 0.41, rtol=1e-6)
    with pytest.raises(PartsimError, match="no start sample"):
        mix_piece(ConstantSource(), tracks_by_id, piece, {"drums": 0}, 100)
    with pytest.raises(PartsimError, match="unknown track"):
        mix_piece(ConstantSource(), tracks_by_id, PseudoPiece(drums="X"), 0, 100)


FRONTEND = FrontendConfig(sample_rate=RATE, n_fft=32, hop_length=16, n_mels=4)


def _mean_norm_loss(model, batch):
    return model(batch["anchor"]).mean() + batch["powers"].sum() * 0


def _factory():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))


def _task(**overrides) -> PseudoTripletTask:
    config = PseudoTripletConfig(triplets_per_epoch=10, batch_size=4, seconds=1.0, validation_triplets=6)
    return PseudoTripletTask(ConstantSource(), TRACKS, TEMPOS, FRONTEND, config, seed=5, loss_fn=_mean_norm_loss,
                             model_factory=_factory, **overrides)


def test_task_batches_mixes_and_powers() -> None:
    task = _task(mel_in_loss=True)  # batches hold the waveforms, checkable by hand
    assert task.steps_per_epoch == 3
    batch = task.batch(0, 1)
    triplets = task.triplets(0)[4:8]
    assert batch["condition"].tolist() == [t.condition for t in triplets]
    assert batch["additional_condition"].tolist() == [t.additional_condition for t in triplets]
    for row, t in enumerate(triplets):
        for role, (name, piece, start) in enumerate(zip(("anchor", "positive", "negative"), t.pieces, t.starts)):
            # Per part: the constant over the segment, zero where absent; T2's drums start at sample 200.
            signals = np.zeros((5, 100))
            for j, label in enumerate(piece.labels()):
                if label is not None:
                    signals[j] = VALUE[TRACK_IDS.index(label), j]
                    if label == LATE_DRUMS and j == 0:
                        signals[j, :max(0, 200 - start)] = 0.0
            np.testing.assert_allclose(batch[name][row].numpy(), signals.sum(axis=0), rtol=1e-5, atol=1e-6)
            powers = (signals ** 2).mean(axis=1)
            np.testing.assert_allclose(batch["powers"][row, role].numpy(), powers, rtol=1e-5)
            assert batch["present"][row, role].tolist() == (powers > 1e-4).astype(float).tolist()
    # Same (seed, epoch, step) -> same batch, also after pickling (DataLoader workers); steps wrap around.
    again = pickle.loads(pickle.dumps(task)).batch(0, 1)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert torch.equal(task.batch(0, 0)["anchor"][:2], task.batch(0, 2)["anchor"][2:])


def test_task_mels_loss_and_validation() -> None:
    task = _task(validation=(ConstantSource(), TRACKS))
    batch = task.batch(1, 0)
    assert batch["anchor"].shape == (4, 4, 1 + 100 // 16)
    assert 0.0 <= float(batch["anchor"].min()) and float(batch["anchor"].max()) <= 1.0
    model = task.build_model()
    loss = task.loss(model, batch)
    assert loss.shape == () and torch.isfinite(loss)
    # 6 validation triplets in batches of 4 and 2: the mean is weighted by batch size.
    with torch.no_grad():
        per_batch = [float(model(task.assemble(task.validation_triplets[first:first + 4], task.validation_source,
                                               task.validation_tracks_by_id)["anchor"]).mean()) for first in (0, 4)]
    expected = (per_batch[0] * 4 + per_batch[1] * 2) / 6
    assert task.validation_loss(model) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(PartsimError, match="differs"):
        PseudoTripletTask(ConstantSource(), TRACKS, TEMPOS, FrontendConfig(sample_rate=200, n_fft=32, hop_length=16,
                          n_mels=4), PseudoTripletConfig(), 0, _mean_norm_loss, _factory)


def test_task_runs_in_the_training_engine(tmp_path) -> None:
    from partsim_core.training import TrainConfig, train

    task = _task()
    config = TrainConfig(run_name="pseudo-test", epochs=1, steps_per_epoch=task.steps_per_epoch, device="cpu")
    result = train(task, config, tmp_path / "run", progress=False)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])


def test_created_silences_also_shape_dataset_pieces(groups: TempoGroups) -> None:
    # Thesis 4.3.4: created silences balance the parts of the training data; Fig. 4.2's dataset pieces hold only
    # some parts "for the reasons explained in Section 4.3.4". Unbalanced presence: others in two tracks only.
    present = {track_id: {"drums", "bass", "piano", "guitar"} for track_id in TRACK_IDS}
    for track_id in ("T3", "T6"):
        present[track_id].add("others")
    unbalanced = PartActivity(ConstantSource(present), TRACKS, seconds=1.0)
    plain = PseudoTripletSampler(unbalanced, None, pseudo=False, additional=False, created_silences=False, seed=0)
    for t in plain.triplets(0, 50):
        for piece in (t.anchor, t.negative):
            source = piece.labels()[t.condition]
            assert all((label is not None) == unbalanced.has(source, part)
                       for part, label in zip(INSTRUMENTS, piece.labels()))
    silenced = PseudoTripletSampler(unbalanced, None, pseudo=False, additional=False, created_silences=True, seed=0)
    dropped = 0
    for t in silenced.triplets(0, 300):
        assert t.anchor == t.positive  # one piece: the same parts are kept in anchor and positive
        for piece in (t.anchor, t.negative):
            labels = piece.labels()
            source = labels[t.condition]
            assert source is not None  # the condition part is never dropped
            assert all(label in (None, source) for label in labels)
            dropped += sum(label is None and unbalanced.has(source, part)
                           for part, label in zip(INSTRUMENTS, labels))
    assert dropped > 0
