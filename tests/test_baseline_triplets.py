"""Segments, unsupervised triplets (thesis 3.2.2, 3.3.1), gather and the chapter-3 TripletTask.

Expected segments are worked out by hand from tiny signals whose silent stretches are known.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
from test_data_slakh import REDUX_SAMPLE, need, write_track

from partsim_core.baseline.triplets import (
    SegmentIndex,
    TripletSampler,
    TripletTask,
    gather,
)
from partsim_core.data.cache import StemCache
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError
from partsim_core.frontend import log_mel
from partsim_core.presets import FrontendConfig, PartNetworkConfig


@dataclass(frozen=True)
class FakeTrack:
    track_id: str


class FakeSource:
    """A SignalSource over fixed arrays: ``signals[track_id]`` for every part."""

    def __init__(self, signals: dict[str, np.ndarray], sample_rate: int = 10) -> None:
        self.signals = {key: np.asarray(value, dtype=np.float32) for key, value in signals.items()}
        self.sample_rate = sample_rate
        self.calls: list[tuple[str, str]] = []

    def get(self, track, part):
        self.calls.append((track.track_id, part))
        return self.signals[track.track_id]


def _piecewise(length: int, loud: list[tuple[int, int]], level: float = 1.0) -> np.ndarray:
    audio = np.zeros(length)
    for first, end in loud:
        audio[first:end] = level
    return audio


# 1-s segments at 10 Hz: 10 samples, hop 5 with overlap.
# A: loud in [15, 25) and [45, 60). Overlapping starts 0..50; a segment is non-silent when any loud sample falls
#    in it (mean power 0.5 or 1, far above 1e-4): starts 10, 15, 20 (first stretch) and 40, 45, 50.
# B: 40 samples at 0.5 (power 0.25): starts 0, 5, ..., 30, all non-silent.
# C: 12 samples at 1: one segment (start 0) -> no positive possible, but a valid negative.
# D: 8 samples: shorter than a segment.  E: zeros.  F: 0.005 (power 2.5e-5 < 1e-4): silent.
SIGNALS = {
    "A": _piecewise(60, [(15, 25), (45, 60)]),
    "B": np.full(40, 0.5),
    "C": np.ones(12),
    "D": np.ones(8),
    "E": np.zeros(40),
    "F": np.full(40, 0.005),
}
A_STARTS = [10, 15, 20, 40, 45, 50]
B_STARTS = [0, 5, 10, 15, 20, 25, 30]
TRACKS = [FakeTrack(name) for name in "ABCDEF"]


def _index(**options) -> SegmentIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SegmentIndex(FakeSource(SIGNALS), TRACKS, "bass", seconds=1.0, overlap=True, **options)


def test_index_keeps_non_silent_segments_and_counts_skipped_tracks():
    with pytest.warns(UserWarning, match="shorter than one 1-s segment: D"):
        index = SegmentIndex(FakeSource(SIGNALS), TRACKS, "bass", seconds=1.0, overlap=True)
    assert index.length == 10
    assert index.track_ids == ["A", "B", "C"]
    assert index.starts["A"].tolist() == A_STARTS
    assert index.starts["B"].tolist() == B_STARTS
    assert index.starts["C"].tolist() == [0]
    assert index.skipped == {"missing_part": [], "silent": ["E", "F"], "too_short": ["D"]}
    assert len(index) == 6 + 7 + 1
    refs = index.refs()
    assert refs.dtype == np.int64 and refs.shape == (14, 2)
    assert refs[:6].tolist() == [[0, s] for s in A_STARTS]
    assert refs[-1].tolist() == [2, 0]


def test_index_without_overlap_threshold_and_max_per_track():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # No overlap: starts 0, 10, ..., 50 for A; [10, 20) and [20, 30) each hold 5 loud samples, [40, 50) 5.
        plain = SegmentIndex(FakeSource(SIGNALS), TRACKS[:2], "bass", seconds=1.0, overlap=False)
        # Threshold 0.6: half-loud A segments (power 0.5) and all of B (0.25) become silent.
        strict = SegmentIndex(FakeSource(SIGNALS), TRACKS[:2], "bass", seconds=1.0, overlap=True, threshold=0.6)
        capped = SegmentIndex(FakeSource(SIGNALS), TRACKS[:2], "bass", seconds=1.0, overlap=True, max_per_track=2)
    assert plain.starts["A"].tolist() == [10, 20, 40, 50]
    assert strict.starts["A"].tolist() == [15, 45, 50] and strict.skipped["silent"] == ["B"]
    assert capped.starts["A"].tolist() == [10, 15] and capped.starts["B"].tolist() == [0, 5]


def test_silence_is_judged_on_the_silence_source():
    loud = FakeSource({"A": np.ones(60), "B": np.full(40, 0.5)})
    ideal = FakeSource(SIGNALS)
    index = SegmentIndex(loud, TRACKS[:2], "bass", seconds=1.0, overlap=True, silence_source=ideal)
    assert index.starts["A"].tolist() == A_STARTS
    # The waveforms still come from the signal source.
    waveforms = gather(loud, {"A": TRACKS[0]}, index, np.array([[0, 10]]))
    assert torch.equal(waveforms, torch.ones(1, 10))


def test_no_usable_track_names_the_part():
    with pytest.raises(PartsimError, match="'piano'"):
        SegmentIndex(FakeSource(SIGNALS), TRACKS[4:], "piano", seconds=1.0, overlap=True)


def test_tracks_lacking_the_part_are_skipped_without_reading_them(tmp_path):
    rate = 100
    write_track(tmp_path / "data" / "train" / "Track00001",
                {"S00": {"program": 33, "audio": np.full(300, 0.5)}}, sample_rate=rate)      # bass only
    write_track(tmp_path / "data" / "train" / "Track00002",
                {"S00": {"program": 33, "audio": np.full(300, 0.25)},
                 "S01": {"program": 0, "audio": np.full(300, 0.5)}}, sample_rate=rate)       # bass + piano
    dataset = open_slakh(tmp_path / "data")
    cache = StemCache(dataset, rate, root=tmp_path / "cache")
    index = SegmentIndex(cache, dataset.tracks("train"), "piano", seconds=1.0, overlap=True)
    assert index.skipped["missing_part"] == ["Track00001"]
    # 300 samples, 100-sample segments, hop 50: starts 0, 50, ..., 200, all loud.
    assert index.track_ids == ["Track00002"] and index.starts["Track00002"].tolist() == [0, 50, 100, 150, 200]
    mix = SegmentIndex(cache, dataset.tracks("train"), "mix", seconds=1.0, overlap=False)
    assert mix.track_ids == ["Track00001", "Track00002"]


def test_anchors_are_the_first_non_silent_segments_of_each_track():
    sampler = TripletSampler(_index(), anchors_per_track=4, seed=3)
    # A: 4 anchors (of 6), B: 4 (of 7), C: none (one segment, no positive).
    assert sampler.epoch_size() == 8 and sampler.skipped == ["C"]
    triplets = sampler.triplets(0)
    assert triplets.shape == (8, 3, 2) and triplets.dtype == np.int64
    anchors = sorted(map(tuple, triplets[:, 0].tolist()))
    assert anchors == sorted([(0, s) for s in A_STARTS[:4]] + [(1, s) for s in B_STARTS[:4]])


def test_positives_are_other_segments_of_the_same_track_negatives_of_another():
    index = _index()
    starts_by_position = [set(index.starts[track_id].tolist()) for track_id in index.track_ids]
    sampler = TripletSampler(index, anchors_per_track=40, seed=0)
    assert sampler.epoch_size() == 6 + 7
    positives_of_a, negative_tracks = set(), set()
    for epoch in range(60):
        for (anchor_track, anchor), (positive_track, positive), (negative_track, negative) in sampler.triplets(epoch):
            assert positive_track == anchor_track and positive != anchor
            assert positive in starts_by_position[positive_track]
            assert negative_track != anchor_track and negative in starts_by_position[negative_track]
            negative_tracks.add(int(negative_track))
            if anchor_track == 0 and anchor == 10:
                positives_of_a.add(int(positive))
    # Every other non-silent segment of A serves as a positive, not only the anchors; C serves as a negative.
    assert positives_of_a == set(A_STARTS) - {10}
    assert negative_tracks == {0, 1, 2}


def test_triplets_are_deterministic_per_seed_and_epoch():
    index = _index()
    first = TripletSampler(index, anchors_per_track=40, seed=5)
    again = TripletSampler(index, anchors_per_track=40, seed=5)
    other_seed = TripletSampler(index, anchors_per_track=40, seed=6)
    np.testing.assert_array_equal(first.triplets(2), again.triplets(2))
    assert not np.array_equal(first.triplets(2), first.triplets(3))
    assert not np.array_equal(first.triplets(2), other_seed.triplets(2))


def test_sampler_needs_two_tracks_and_one_with_two_segments():
    with pytest.raises(PartsimError, match="'bass'"):
        TripletSampler(SegmentIndex(FakeSource(SIGNALS), TRACKS[:1], "bass", 1.0, True))
    with pytest.raises(PartsimError, match="anchors_per_track"):
        TripletSampler(_index(), anchors_per_track=0)


def test_gather_returns_the_exact_samples():
    ramps = {"A": np.arange(60) / 100.0 + 0.1, "B": -np.arange(40) / 100.0 - 0.1}
    source = FakeSource(ramps)
    index = SegmentIndex(source, TRACKS[:2], "bass", seconds=1.0, overlap=True)
    tracks_by_id = {track.track_id: track for track in TRACKS[:2]}
    arrays: dict = {}
    waveforms = gather(source, tracks_by_id, index, np.array([[0, 15], [1, 30], [0, 0]]), arrays=arrays)
    expected = np.stack([ramps["A"][15:25], ramps["B"][30:40], ramps["A"][0:10]]).astype(np.float32)
    np.testing.assert_array_equal(waveforms.numpy(), expected)
    assert waveforms.dtype == torch.float32
    # The array cache opens each track once.
    calls = len(source.calls)
    gather(source, tracks_by_id, index, np.array([[0, 5], [1, 0]]), arrays=arrays)
    assert len(source.calls) == calls
    with pytest.raises(PartsimError, match="past"):
        gather(source, tracks_by_id, index, np.array([[1, 35]]))


# -- TripletTask ---------------------------------------------------------------------------------------------

FRONTEND = FrontendConfig(sample_rate=1000, n_fft=64, hop_length=32, n_mels=16)
CONFIG = PartNetworkConfig(n_train_tracks=None, anchors_per_track=5, batch_size=8, epochs=1, width=4)


def _noise_source(names: str, seed: int) -> tuple[FakeSource, list[FakeTrack]]:
    rng = np.random.default_rng(seed)
    return FakeSource({name: 0.3 * rng.standard_normal(2000) for name in names}, sample_rate=1000), \
        [FakeTrack(name) for name in names]


def _task(**options) -> TripletTask:
    source, tracks = _noise_source("PQRS", 0)
    return TripletTask(source, tracks, "drums", FRONTEND, options.pop("config", CONFIG), seed=1, seconds=0.5,
                       **options)


def test_task_batch_is_the_log_mel_of_the_epoch_triplets_in_order():
    task = _task()
    # 2000 samples, 500-sample segments, hop 250: 7 segments per track; 4 tracks x 5 anchors = 20 triplets.
    assert task.sampler.epoch_size() == 20 and task.steps_per_epoch == 3
    triplets = task.sampler.triplets(0)
    anchor, positive, negative = task.batch(0, 2)
    assert anchor.shape == positive.shape == negative.shape == (8, 16, 1 + 500 // 32)
    positions = [16, 17, 18, 19, 0, 1, 2, 3]  # the last step wraps around to stay a full batch
    signals = task.source.signals
    for column, got in enumerate((anchor, positive, negative)):
        waveforms = np.stack([signals[task.index.track_ids[t]][s:s + 500] for t, s in triplets[positions, column]])
        torch.testing.assert_close(got, log_mel(waveforms, FRONTEND))


def test_task_loss_is_the_triplet_loss_of_the_embeddings():
    task = _task()
    torch.manual_seed(0)
    model = task.build_model().eval()
    batch = task.batch(0, 0)
    with torch.no_grad():
        a, p, n = (model(x) for x in batch)
        expected = torch.clamp((a - p).pow(2).sum(1).sqrt() - (a - n).pow(2).sum(1).sqrt() + 0.2, min=0).mean()
        torch.testing.assert_close(task.loss(model, batch), expected)
        # Computing the log-mel inside the loss (on the model's device) gives the same value.
        waveform_task = _task(mel_in_loss=True)
        waveforms = waveform_task.batch(0, 0)
        assert waveforms[0].shape == (8, 500)
        torch.testing.assert_close(waveform_task.loss(model, waveforms), expected)


def test_task_is_picklable_and_gives_the_same_batches():
    task = _task()
    first = task.batch(1, 1)
    clone = pickle.loads(pickle.dumps(task))
    assert all(torch.equal(x, y) for x, y in zip(clone.batch(1, 1), first))


def test_validation_loss_is_fixed_and_optional():
    validation = _noise_source("VWXY", 1)
    task = _task(validation=validation)
    torch.manual_seed(0)
    model = task.build_model().eval()
    first, second = task.validation_loss(model), task.validation_loss(model)
    assert first == second and 0.0 <= first < 2.2  # unit embeddings: distances in [0, 2]
    assert _task().validation_loss(model) is None


def test_task_uses_the_first_n_train_tracks_and_checks_rates():
    config = PartNetworkConfig(n_train_tracks=2, anchors_per_track=5, batch_size=8, epochs=1, width=4)
    assert _task(config=config).index.track_ids == ["P", "Q"]
    source, tracks = _noise_source("PQ", 0)
    source.sample_rate = 2000
    with pytest.raises(PartsimError, match="2000 Hz"):
        TripletTask(source, tracks, "drums", FRONTEND, CONFIG, seed=0)


# -- real Slakh sample ------------------------------------------------------------------------------------------


def test_real_sample_segments_match_a_numpy_reference(tmp_path):
    dataset = open_slakh(need(REDUX_SAMPLE))
    track = dataset.track("Track00001")
    cache = StemCache(dataset, 44100, root=tmp_path / "cache")
    # The 2-s excerpt is shorter than one 3-s segment: skipped with a warning, and then nothing is left.
    with pytest.warns(UserWarning, match="Track00001"), pytest.raises(PartsimError, match="'guitar'"):
        SegmentIndex(cache, [track], "guitar", seconds=3.0, overlap=True)
    # 0.25-s segments: reference = the guitar stems summed with soundfile + numpy, mean power per segment. The
    # guitar enters after ~0.8 s; the drums of this excerpt are silent throughout.
    guitar = sum(sf.read(stem.audio_path, dtype="float32")[0].astype(np.float64)
                 for stem in track.stems_by_group()["guitar"])
    length, hop = 11025, 11025 // 2
    starts = np.arange(0, guitar.size - length + 1, hop)
    expected = [s for s in starts if np.mean(guitar[s:s + length] ** 2) >= 1e-4]
    assert 0 < len(expected) < len(starts)
    index = SegmentIndex(cache, [track], "guitar", seconds=0.25, overlap=True)
    assert index.starts["Track00001"].tolist() == expected
    with pytest.raises(PartsimError, match="'drums'.*1 silent"):
        SegmentIndex(cache, [track], "drums", seconds=0.25, overlap=True)


def test_task_trains_with_the_engine_identically_with_a_loader_worker(tmp_path):
    # The engine's DataLoader workers receive a pickled copy of the task: the weights must not depend on it. Only
    # rounding may differ: a worker runs torch with one thread, which changes the log-mel's last bit (~6e-8).
    from partsim_core.training import TrainConfig, train

    task = _task(validation=_noise_source("VWXY", 1))
    weights = []
    for workers in (0, 1):
        config = TrainConfig(run_name="sampling-test", seed=0, epochs=2, steps_per_epoch=task.steps_per_epoch,
                             batch_size=CONFIG.batch_size, device="cpu", num_workers=workers)
        result = train(task, config, out_dir=tmp_path / f"workers{workers}", progress=False)
        assert [row["epoch"] for row in result.history] == [1, 2]
        assert all(0.0 <= row["val_loss"] < 2.2 for row in result.history)
        weights.append(result.model.state_dict())
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-4, atol=1e-5)


def test_default_engine_training_leaves_lapack_usable(tmp_path):
    # Regression: a prefetch thread making batches (log-mel) while the model trained corrupted later LAPACK calls
    # on this machine's BLAS (fast_bss_eval's lu_solve failed on its pivots). The default engine must not.
    from partsim_core.training import TrainConfig, train

    task = _task(validation=_noise_source("VWXY", 1))
    for workers in (0, 1):  # in-process batches, then a loader worker process (forked)
        config = TrainConfig(run_name="lapack-test", seed=0, epochs=2, steps_per_epoch=task.steps_per_epoch,
                             batch_size=CONFIG.batch_size, device="cpu", num_workers=workers)
        train(task, config, out_dir=tmp_path / f"run{workers}", progress=False)
    # The BSS metrics solve 512-tap distortion filters by LU (the call that failed).
    from partsim_core import INSTRUMENTS
    from partsim_core.baseline.bss import separation_metrics

    rng = np.random.default_rng(0)
    references = {part: rng.standard_normal(20000).astype(np.float32) for part in INSTRUMENTS}
    estimates = {part: audio + 0.1 * rng.standard_normal(20000).astype(np.float32)
                 for part, audio in references.items()}
    table = separation_metrics(estimates, references)
    assert np.isfinite(np.asarray(table["sdr"], dtype=float)).all()
