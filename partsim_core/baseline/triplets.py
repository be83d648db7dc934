"""Segments of one part over many tracks, unsupervised triplets, and the chapter-3 training task.

Thesis 3.2.2 / 3.3.1: each part signal is cut into 3-s segments with 50 % overlap; segments of the same track's
part are "similar", segments of different tracks "dissimilar". Per track the first 40 non-silent segments
(mean power >= 0.0001) are anchors; the positive is another non-silent segment of the same track's same part,
the negative a non-silent segment of another track's same part; triplet margin 0.2.

* :class:`SegmentIndex`: the non-silent segments of one part over a list of tracks (also the chapter-3 test set:
  3-s segments without overlap, :mod:`partsim_core.knn` embeds them).
* :class:`TripletSampler`: the triplets of one epoch, deterministic per (seed, epoch).
* :func:`gather`: waveforms of segment references, read from memory-mapped cached stems.
* :class:`TripletTask`: the :class:`partsim_core.training.TrainingTask` of chapter 3 (one part network), reused
  for chapter 4's pre-training targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from partsim_core.data.segments import (
    SILENCE_THRESHOLD,
    SegmentIndex,
    SignalSource,
    gather,
)
from partsim_core.data.slakh import Track
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel, check_source_rate
from partsim_core.losses import triplet_loss
from partsim_core.models import PartCNN
from partsim_core.presets import FrontendConfig, PartNetworkConfig
from partsim_core.training import VALIDATION_SEED_OFFSET, ReopensCachesWhenPickled


class TripletSampler:
    """Unsupervised triplets of one part (thesis 3.2.2, 3.3.1), drawn anew each epoch.

    * Anchors: the first ``anchors_per_track`` segments of each track of the index, i.e. the first non-silent
      ones in time (fewer when the track has fewer). Tracks with fewer than 2 non-silent segments have no
      positive and give no anchors (:attr:`skipped`), but their segments can still be negatives.
    * Positive: uniformly one of the track's *other* non-silent segments (any of them, not only anchors).
    * Negative: a uniformly chosen other track of the index, then uniformly one of its non-silent segments (so
      long tracks are not favoured).

    Every epoch uses the same anchors; positives, negatives and the order are drawn from
    ``numpy.random.default_rng([seed, epoch])``, so :meth:`triplets` is a pure function of (seed, epoch).

    Raises:
        PartsimError: fewer than two tracks in the index, no track with two segments, or a bad argument.
    """

    def __init__(self, index: SegmentIndex, anchors_per_track: int = 40, seed: int = 0) -> None:
        if isinstance(anchors_per_track, bool) or not isinstance(anchors_per_track, int) or anchors_per_track < 1:
            raise PartsimError(f"anchors_per_track must be a positive integer, got {anchors_per_track!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise PartsimError(f"seed must be a non-negative integer, got {seed!r}")
        self.index = index
        self.anchors_per_track = anchors_per_track
        self.seed = int(seed)
        counts = np.array([index.starts[track_id].size for track_id in index.track_ids], dtype=np.int64)
        self.skipped = [track_id for track_id, count in zip(index.track_ids, counts) if count < 2]
        if len(index.track_ids) < 2 or len(self.skipped) == len(index.track_ids):
            raise PartsimError(f"part {index.part!r}: triplets need at least 2 tracks with non-silent segments and "
                               f"one with at least 2 of them; found {len(index.track_ids)} track(s), "
                               f"{len(index.track_ids) - len(self.skipped)} with 2 or more segments")
        self._counts = counts
        anchor_counts = np.where(counts >= 2, np.minimum(counts, anchors_per_track), 0)
        #: Track position and segment number (within the track) of every anchor, in track order.
        self._anchor_tracks = np.repeat(np.arange(counts.size, dtype=np.int64), anchor_counts)
        self._anchor_segments = np.concatenate([np.arange(n, dtype=np.int64) for n in anchor_counts])
        # Concatenated starts and each track's offset into them: segment j of track t is flat[offset[t] + j].
        self._flat_starts = np.concatenate([index.starts[track_id] for track_id in index.track_ids])
        self._offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)

    def epoch_size(self) -> int:
        """Triplets per epoch (= number of anchors)."""
        return int(self._anchor_tracks.size)

    def triplets(self, epoch: int) -> np.ndarray:
        """The epoch's triplets, shuffled: int64 ``(n, 3, 2)``, rows anchor/positive/negative of
        ``(track position in index.track_ids, start sample)``."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise PartsimError(f"epoch must be a non-negative integer, got {epoch!r}")
        rng = np.random.default_rng([self.seed, int(epoch)])
        tracks, segments = self._anchor_tracks, self._anchor_segments
        n = tracks.size
        counts = self._counts
        # Positive: one of the other count-1 segments (skip over the anchor's own number).
        positive = np.floor(rng.random(n) * (counts[tracks] - 1)).astype(np.int64)
        positive += positive >= segments
        # Negative track: one of the other tracks (skip over the anchor's own position), then any of its segments.
        negative_tracks = np.floor(rng.random(n) * (counts.size - 1)).astype(np.int64)
        negative_tracks += negative_tracks >= tracks
        negative = np.floor(rng.random(n) * counts[negative_tracks]).astype(np.int64)
        result = np.empty((n, 3, 2), dtype=np.int64)
        result[:, 0, 0], result[:, 0, 1] = tracks, self._flat_starts[self._offsets[tracks] + segments]
        result[:, 1, 0], result[:, 1, 1] = tracks, self._flat_starts[self._offsets[tracks] + positive]
        result[:, 2, 0] = negative_tracks
        result[:, 2, 1] = self._flat_starts[self._offsets[negative_tracks] + negative]
        return result[rng.permutation(n)]



class TripletTask(ReopensCachesWhenPickled):
    """Chapter 3's :class:`~partsim_core.training.TrainingTask`: one :class:`~partsim_core.models.PartCNN` per
    part, trained with the triplet loss on that part's signal (ideal stems, separated stems, or the mix for the
    track-level baseline).

    * ``batch(epoch, step)``: triplets ``[step * B, (step + 1) * B)`` of the epoch's shuffled
      :class:`TripletSampler` triplets (``B = config.batch_size``; positions wrap around modulo the epoch size, so
      every batch is full and any step number is valid, as DDP ranks need), gathered from the source and turned
      into log-mel in one batched :class:`~partsim_core.frontend.LogMel` call: ``(anchor, positive, negative)``
      each ``(B, n_mels, frames)``. With ``mel_in_loss=True`` the batch holds the waveforms instead and
      :meth:`loss` computes the log-mel on the model's device (a GPU does it faster than the loader's CPUs).
    * ``loss``: ``triplet_loss(model(a), model(p), model(n), margin)``, the three in one forward pass.
    * ``validation_loss``: the same loss on a fixed set of triplets of the validation tracks (seeded with
      ``seed + VALIDATION_SEED_OFFSET``, epoch 0), in batches, without gradients.

    Args:
        source: Signals of the training tracks (a :class:`StemCache`, a separated source ...).
        tracks: Training tracks; only the first ``config.n_train_tracks`` are used when that is set.
        part: A group of :data:`~partsim_core.INSTRUMENTS` or ``"mix"``.
        frontend: Log-mel settings; ``frontend.sample_rate`` must equal ``source.sample_rate``.
        config: The preset's ``part_network`` section (anchors, batch size, width, margin, embedding size).
        seed: Seeds the triplets (the engine seeds the weights).
        validation: ``(source, tracks)`` of the validation split, or ``None`` for no validation.
        seconds: Segment length (the preset's ``segment_seconds``; thesis: 3 s).
        threshold: Silence threshold (the preset's ``silence_threshold``).
        silence_source: Where silence is judged for the training tracks (ideal stems when training on separated
            ones); default ``source``.
        validation_silence_source: The same for the validation tracks.
        mel_in_loss: Compute the log-mel in :meth:`loss` (on the model's device) instead of :meth:`batch`.

    The task is picklable (DataLoader workers); its per-process caches are not pickled.

    Raises:
        PartsimError: sample rates that differ, no usable track (naming the part), see :class:`SegmentIndex`.
    """

    def __init__(self, source: SignalSource, tracks: Sequence[Track], part: str, frontend: FrontendConfig,
                 config: PartNetworkConfig, seed: int, validation: tuple[SignalSource, Sequence[Track]] | None = None,
                 *, seconds: float = 3.0, threshold: float = SILENCE_THRESHOLD,
                 silence_source: SignalSource | None = None, validation_silence_source: SignalSource | None = None,
                 mel_in_loss: bool = False) -> None:
        check_source_rate("signal source", source.sample_rate, frontend)
        if config.n_train_tracks is not None:
            tracks = list(tracks)[:config.n_train_tracks]
        self.source, self.part, self.frontend, self.config, self.seed = source, part, frontend, config, int(seed)
        self.mel_in_loss = bool(mel_in_loss)
        self.index = SegmentIndex(source, tracks, part, seconds, overlap=True, threshold=threshold,
                                  silence_source=silence_source)
        self.sampler = TripletSampler(self.index, config.anchors_per_track, seed=self.seed)
        self.tracks_by_id = {track.track_id: track for track in tracks}
        self.log_mel = LogMel(frontend)
        self.validation_source = self.validation_index = self.validation_tracks_by_id = None
        self.validation_triplets: np.ndarray | None = None
        if validation is not None:
            validation_source, validation_tracks = validation
            check_source_rate("validation source", validation_source.sample_rate, frontend)
            self.validation_source = validation_source
            self.validation_index = SegmentIndex(validation_source, validation_tracks, part, seconds, overlap=True,
                                                 threshold=threshold, silence_source=validation_silence_source)
            self.validation_tracks_by_id = {track.track_id: track for track in validation_tracks}
            validation_sampler = TripletSampler(self.validation_index, config.anchors_per_track,
                                                seed=self.seed + VALIDATION_SEED_OFFSET)
            self.validation_triplets = validation_sampler.triplets(0)
        self._init_caches()

    def _init_caches(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._validation_arrays: dict[str, np.ndarray] = {}
        self._epoch_triplets: tuple[int, np.ndarray] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(epoch_size / batch_size)``: ``TrainConfig.steps_per_epoch`` for one pass over the epoch's triplets
        (under DDP, where rank ``r`` gets step ``s * world_size + r``, divide it by the world size)."""
        return math.ceil(self.sampler.epoch_size() / self.config.batch_size)

    def build_model(self) -> torch.nn.Module:
        """A fresh :class:`~partsim_core.models.PartCNN` of the preset's width and embedding size."""
        return PartCNN(self.frontend.n_mels, width=self.config.width, embedding_dim=self.config.embedding_dim)

    def triplets(self, epoch: int) -> np.ndarray:
        """The epoch's triplets (cached for the last epoch asked)."""
        if self._epoch_triplets is None or self._epoch_triplets[0] != epoch:
            self._epoch_triplets = (epoch, self.sampler.triplets(epoch))
        return self._epoch_triplets[1]

    def _waveform_batch(self, source: SignalSource, tracks_by_id: dict, index: SegmentIndex, triplets: np.ndarray,
                        arrays: dict) -> torch.Tensor:
        """Anchors, then positives, then negatives of ``triplets``: ``(3 * n, samples)``."""
        refs = np.ascontiguousarray(triplets.transpose(1, 0, 2)).reshape(-1, 2)
        return gather(source, tracks_by_id, index, refs, arrays=arrays)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(anchor, positive, negative)`` log-mels ``(B, n_mels, frames)`` (waveforms with ``mel_in_loss``)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise PartsimError(f"step must be a non-negative integer, got {step!r}")
        triplets = self.triplets(epoch)
        size = self.config.batch_size
        positions = (int(step) * size + np.arange(size)) % triplets.shape[0]
        waveforms = self._waveform_batch(self.source, self.tracks_by_id, self.index, triplets[positions],
                                         self._arrays)
        signals = waveforms if self.mel_in_loss else self.log_mel.full_precision(waveforms)
        return tuple(signals.chunk(3))  # type: ignore[return-value]

    def loss(self, model: torch.nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Triplet loss (margin ``config.margin``) of one batch; one forward pass over anchors, positives and
        negatives together."""
        signals = torch.cat(list(batch))
        inputs = self.log_mel.full_precision(signals) if self.mel_in_loss else signals
        anchor, positive, negative = model(inputs).chunk(3)
        return triplet_loss(anchor.float(), positive.float(), negative.float(), margin=self.config.margin)

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        """Mean triplet loss over the fixed validation triplets, or ``None`` without validation tracks.

        Runs in the model's current mode (the engine puts it in eval mode) without gradients, in batches of
        ``config.batch_size`` on the model's device.
        """
        if self.validation_triplets is None:
            return None
        device = next(model.parameters()).device
        total, count = 0.0, 0
        with torch.no_grad():
            for first in range(0, self.validation_triplets.shape[0], self.config.batch_size):
                chunk = self.validation_triplets[first:first + self.config.batch_size]
                waveforms = self._waveform_batch(self.validation_source, self.validation_tracks_by_id,
                                                 self.validation_index, chunk, self._validation_arrays)
                embeddings = model(self.log_mel.full_precision(waveforms.to(device)))
                anchor, positive, negative = embeddings.float().chunk(3)
                total += float(triplet_loss(anchor, positive, negative, margin=self.config.margin)) * chunk.shape[0]
                count += chunk.shape[0]
        return total / count
