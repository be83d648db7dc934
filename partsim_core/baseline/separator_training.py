"""Training our separator: the Spleeter-style U-Net learns the five parts from the train split's mixes.

Spleeter's pretrained weights cannot be downloaded here, so chapter 3's default separator is
:class:`~partsim_core.models.SeparatorUNet` trained by :func:`train_separator` through the shared training engine
(:mod:`partsim_core.training`) on the train split of the dataset in use. The run's key includes the fingerprint of
the audio it learns from (:meth:`~partsim_core.data.dataset.DatasetHandle.fingerprint`), so regenerated data
(``partsim data synth --seed 1``, another SoundFont) trains a new separator instead of silently reusing the old one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART, StemCache, stable_hash
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError
from partsim_core.models import SEPARATOR_DEPTH, SeparatorSTFT, SeparatorUNet
from partsim_core.presets import SeparatorConfig
from partsim_core.training import TrainConfig, TrainResult, artefact_dir, train
from partsim_core.training_artefacts import MODEL_FILE

#: Bump when :class:`~partsim_core.models.SeparatorUNet` or its training changes; part of the training key.
SEPARATOR_MODEL_VERSION = 1

#: Excerpts of the validation split scored after each epoch (fixed for a seed).
VALIDATION_EXCERPTS = 16


def excerpt_frames(sample_rate: int, seconds: float) -> int:
    """STFT frames of a training excerpt: the frames of ``seconds`` rounded down to a multiple of 64 (the U-Net's
    six stride-2 layers); Spleeter's T = 512 frames (11.9 s at 44.1 kHz).

    Raises:
        PartsimError: an excerpt shorter than 64 frames.
    """
    stft = SeparatorSTFT.for_sample_rate(sample_rate)
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise PartsimError(f"separator segment_seconds must be a positive number, got {seconds!r}")
    frames = stft.frames(int(round(seconds * sample_rate))) // 2 ** SEPARATOR_DEPTH * 2 ** SEPARATOR_DEPTH
    if frames == 0:
        minimum = (2 ** SEPARATOR_DEPTH - 1) * stft.hop_length / sample_rate
        raise PartsimError(f"separator segment_seconds={seconds} is too short: the U-Net needs at least "
                           f"{2 ** SEPARATOR_DEPTH} STFT frames ({minimum:.2f} s at {sample_rate} Hz)")
    return frames


class SeparatorTask:
    """Training task of the separator for :func:`partsim_core.training.train` (picklable; batches deterministic).

    A batch is ``batch_size`` random excerpts (track and start drawn from ``(seed, epoch, step)``) of the train
    tracks: the mix ``(batch, samples)`` and its five ideal parts ``(batch, 5, samples)`` from the stem cache.
    The loss is Spleeter's: for each source the mean absolute difference between the U-Net's masked magnitude and
    the ideal part's magnitude, summed over sources. Excerpts last ``(frames - 1) * hop`` samples so their STFT
    has exactly :func:`excerpt_frames` frames.

    Args:
        dataset_root: Slakh-format folder.
        train_ids: Track ids of the training tracks.
        validation_ids: Track ids scored by :meth:`validation_loss` (may be empty: no validation).
        sample_rate: Rate the model works at (the preset's front-end rate).
        config: The preset's ``separator`` section.
        seed: Seed of the excerpt draws.
        stem_root: Stem cache folder (default ``cache_root()/stems``).
    """

    def __init__(self, dataset_root: str | os.PathLike, train_ids: Sequence[str], validation_ids: Sequence[str],
                 sample_rate: int, config: SeparatorConfig, seed: int = 0, stem_root: Path | None = None) -> None:
        self.dataset_root = Path(dataset_root)
        self.train_ids = list(train_ids)
        self.validation_ids = list(validation_ids)
        self.sample_rate = int(sample_rate)
        self.config = config
        self.seed = int(seed)
        self.stem_root = stem_root
        self.stft = SeparatorSTFT.for_sample_rate(self.sample_rate)
        self.frames = excerpt_frames(self.sample_rate, config.segment_seconds)
        self.excerpt_samples = (self.frames - 1) * self.stft.hop_length
        if not self.train_ids:
            raise PartsimError(f"{self.dataset_root}: no train tracks to train the separator on")
        self._cache: StemCache | None = None
        self._lengths: dict[str, int] = {}

    def __getstate__(self) -> dict:
        # Worker processes reopen the dataset themselves (the reader's objects are large and hold file handles).
        state = dict(self.__dict__)
        state["_cache"], state["_lengths"] = None, {}
        return state

    @property
    def cache(self) -> StemCache:
        """Stem cache over the dataset (opened on first use, also in DataLoader workers)."""
        if self._cache is None:
            self._cache = StemCache(open_slakh(self.dataset_root), self.sample_rate, root=self.stem_root)
        return self._cache

    def model_config(self) -> dict:
        """Model hyper-parameters recorded in the training config (and its key)."""
        return {"architecture": "spleeter-unet", "version": SEPARATOR_MODEL_VERSION, "width": self.config.width,
                "n_sources": len(INSTRUMENTS), "sample_rate": self.sample_rate, "chunk_frames": self.frames,
                "n_fft": self.stft.n_fft, "hop_length": self.stft.hop_length, "n_bins": self.stft.n_bins}

    def build_model(self) -> SeparatorUNet:
        """A fresh :class:`SeparatorUNet` sized by the preset."""
        return SeparatorUNet(self.sample_rate, width=self.config.width, n_sources=len(INSTRUMENTS),
                             chunk_frames=self.frames)

    def _length(self, track_id: str) -> int:
        if track_id not in self._lengths:
            self._lengths[track_id] = len(self.cache.get(self.cache.dataset.track(track_id), MIX_PART))
        return self._lengths[track_id]

    def excerpts(self, rng: np.random.Generator, track_ids: Sequence[str], count: int) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
        """``count`` random excerpts: mixes ``(count, samples)`` and parts ``(count, 5, samples)`` (float32)."""
        mixes = np.zeros((count, self.excerpt_samples), dtype=np.float32)
        parts = np.zeros((count, len(INSTRUMENTS), self.excerpt_samples), dtype=np.float32)
        picks = rng.integers(0, len(track_ids), size=count)
        fractions = rng.random(count)
        for row, (pick, fraction) in enumerate(zip(picks, fractions)):
            track = self.cache.dataset.track(track_ids[pick])
            spare = max(0, self._length(track.track_id) - self.excerpt_samples)
            start = int(fraction * (spare + 1))
            for column, part in enumerate((MIX_PART, *INSTRUMENTS)):
                audio = self.cache.get(track, part)[start: start + self.excerpt_samples]
                (mixes[row] if column == 0 else parts[row, column - 1])[: len(audio)] = audio
        return torch.from_numpy(mixes), torch.from_numpy(parts)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Excerpts of step ``step`` of epoch ``epoch`` (a pure function of seed, epoch and step)."""
        rng = np.random.default_rng([self.seed, int(epoch), int(step)])
        return self.excerpts(rng, self.train_ids, self.config.batch_size)

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Spleeter's L1 loss: sum over sources of the mean |estimated - ideal| magnitude."""
        mix, parts = batch
        n_bins = self.stft.n_bins
        mix_magnitude = self.stft.spectrogram(mix).abs()[:, :n_bins]
        target = self.stft.spectrogram(parts).abs()[:, :, :n_bins]
        estimate = model(mix_magnitude).float()
        return (estimate - target).abs().mean(dim=(0, 2, 3)).sum()

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        """Mean loss on :data:`VALIDATION_EXCERPTS` fixed excerpts of the validation tracks (``None`` without)."""
        if not self.validation_ids:
            return None
        rng = np.random.default_rng([self.seed, 2**31 - 1])
        mixes, parts = self.excerpts(rng, self.validation_ids, VALIDATION_EXCERPTS)
        device = next(model.parameters()).device
        total = 0.0
        with torch.no_grad():
            for start in range(0, VALIDATION_EXCERPTS, self.config.batch_size):
                chunk = (mixes[start: start + self.config.batch_size].to(device),
                         parts[start: start + self.config.batch_size].to(device))
                total += float(self.loss(model, chunk)) * len(chunk[0])
        return total / VALIDATION_EXCERPTS


def separator_task(data: DatasetHandle, seed: int = 0) -> SeparatorTask:
    """The separator's training task on ``data``: every track of the train split (the separator is not limited to
    the part networks' ``n_train_tracks``), validation on the validation split.

    Raises:
        PartsimError: a dataset without train tracks.
    """
    train_tracks = data.dataset.tracks("train")
    if not train_tracks:
        raise PartsimError(f"{data.root}: the dataset has no 'train' split, which the separator is trained on")
    validation = [track.track_id for track in data.dataset.tracks("validation")]
    return SeparatorTask(data.root, [track.track_id for track in train_tracks], validation,
                         data.preset.frontend.sample_rate, data.preset.separator, seed=seed, stem_root=data.cache.root)


def separator_train_config(data: DatasetHandle, task: SeparatorTask, config: SeparatorConfig,
                           epochs: int | None = None, device: str = "auto", seed: int = 0) -> TrainConfig:
    """The engine config of a separator run; model, data and the audio fingerprint are part of its key.

    Args:
        epochs: ``None`` = the preset's; fewer give an earlier, weaker separator (the quality curve).
    """
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"separator epochs must be a positive integer, got {epochs!r}")
    tracks = [data.dataset.track(track_id) for track_id in task.train_ids + task.validation_ids]
    return TrainConfig(
        run_name="separator-unet", seed=seed, epochs=epochs or config.epochs, steps_per_epoch=config.steps_per_epoch,
        batch_size=config.batch_size, lr=config.lr, device=device, amp=data.preset.amp, model=task.model_config(),
        data={"dataset": str(Path(task.dataset_root).resolve()), "train_tracks": stable_hash(task.train_ids),
              "n_train_tracks": len(task.train_ids), "validation_tracks": stable_hash(task.validation_ids),
              "excerpt_samples": task.excerpt_samples, "validation_excerpts": VALIDATION_EXCERPTS,
              "audio": data.fingerprint(tracks)})


def train_separator(data: DatasetHandle, device: str = "auto", resume: bool = True, progress: bool = True,
                    seed: int = 0, epochs: int | None = None, train_missing: bool = True) -> TrainResult:
    """Train (or load the finished) separator U-Net on ``data``'s train split.

    The artefact (weights, config with seed/git commit/versions, per-epoch history) lands in
    ``cache_root()/models/separator/separator-unet-<key>/``; an identical later call reuses it, an interrupted one
    resumes from its checkpoint (``resume=False`` starts over).

    Args:
        data: the dataset (its preset's ``separator`` section sizes the run).
        device: torch device.
        resume: continue from a checkpoint / reuse a finished run (``False``: start over).
        progress: progress bars.
        seed: seed of the run.
        epochs: ``None`` = the preset's.
        train_missing: ``False`` refuses to train (a finished artefact must exist).

    Returns:
        The engine's :class:`~partsim_core.training.TrainResult` (``model`` is a :class:`SeparatorUNet`).

    Raises:
        PartsimError: missing train split, bad epochs, a checkpoint of another config, or no trained separator
            with ``train_missing=False``.
    """
    task = separator_task(data, seed=seed)
    config = separator_train_config(data, task, data.preset.separator, epochs=epochs, device=device, seed=seed)
    if not train_missing and not (artefact_dir("separator", config) / MODEL_FILE).is_file():
        raise PartsimError(f"no trained separator for preset {data.preset.name!r} on {data.root}; run "
                           f"'partsim train separator --preset {data.preset.name}' first")
    # Decode every needed stem once up front (the stem cache keeps them), so that training steps only read.
    tracks = [data.dataset.track(track_id) for track_id in task.train_ids + task.validation_ids]
    for track in tqdm(tracks, desc="stems for the separator", disable=not progress, leave=False):
        data.cache.get_all(track)
    return train(task, config, kind="separator", resume=resume, progress=progress)
