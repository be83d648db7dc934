"""Source separation for chapter 3: one interface, four backends, a cache of separated stems, and BSS Eval metrics.

Thesis 3.3.1 separates every track into instrumental parts with the pre-trained Spleeter and trains one network
per part on the estimates; Table 3.1 reports the separation quality with ``fast_bss_eval``. Here:

* :class:`Separator` - ``separate(mix, sample_rate) -> {drums, bass, piano, guitar, others}`` (mono float32 arrays
  of the mix's length, in :data:`~partsim_core.INSTRUMENTS` order). Backends (:data:`BACKENDS`):

  - ``oracle`` (:class:`OracleSeparator`): the ideal stems, the "proposed (ideal)" row. It needs the *track*, not
    only its mix: :class:`SeparatedSource` short-circuits to the stem cache for it, and
    :meth:`OracleSeparator.separate_track` serves a single track.
  - ``unet`` (:class:`UNetSeparator`): our PyTorch re-implementation of Spleeter's U-Net
    (:class:`~partsim_core.models.SeparatorUNet`), trained by :func:`train_separator` on the train split of the
    dataset in use, because Spleeter's pretrained weights cannot be downloaded here. The default.
  - ``spleeter`` (:class:`SpleeterSeparator`): the real Spleeter 5-stems model, run as a subprocess with the
    Python of a separate environment (Spleeter needs numpy<2 and Python<3.12; it is never imported here).
  - ``demucs`` (:class:`DemucsSeparator`): Demucs (e.g. ``htdemucs_6s``, which has guitar and piano) when it is
    installed and its weights are available locally.

* :class:`SeparatedSource` - a signal source (``.sample_rate``, ``.get(track, part)``, like
  :class:`~partsim_core.data.cache.StemCache`) serving separated stems: each track's mix is separated once and
  the five outputs are cached as ``.npy`` under ``cache_root()/separated/<separator key>/<track>-<mix key>/``.

* :func:`separation_metrics` / :func:`evaluate_separation` - SDR, SIR and SAR per part (Table 3.1).

Used by chapter 3 (``partsim_core.baseline.run``, ``notebooks/ch3_separation_baseline``, ``partsim train separator``)
and chapter 6.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import soundfile
import torch
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART, StemCache, atomic_directory, cache_root, stable_hash
from partsim_core.data.segments import SILENCE_THRESHOLD
from partsim_core.data.slakh import Track, open_slakh, resample
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError
from partsim_core.models import SEPARATOR_DEPTH, SeparatorSTFT, SeparatorUNet
from partsim_core.presets import SeparatorConfig, get_preset

#: Separation backends, in the order the chapter discusses them.
BACKENDS: tuple[str, ...] = ("oracle", "unet", "spleeter", "demucs")

#: Bump when the layout or content of cached separated stems changes; part of every :class:`SeparatedSource` key.
SEPARATED_CACHE_FORMAT_VERSION = 1

#: Bump when :class:`~partsim_core.models.SeparatorUNet` or its training changes; part of the training key.
SEPARATOR_MODEL_VERSION = 1

#: Excerpts of the validation split scored after each epoch (fixed for a seed).
VALIDATION_EXCERPTS = 16

#: Environment variable naming the Spleeter environment's Python when ``spleeter_python`` is not given.
SPLEETER_PYTHON_ENV = "PARTSIM_SPLEETER_PYTHON"

#: Spleeter's 5-stems outputs and the part each one goes to (Spleeter has no guitar stem: guitar is zeros).
SPLEETER_5STEMS: dict[str, str] = {"vocals": "others", "drums": "drums", "bass": "bass", "piano": "piano",
                                   "other": "others"}

#: Sample rate of the Spleeter and Demucs pretrained models.
PRETRAINED_SAMPLE_RATE = 44100

#: |dB| at which SDR/SIR/SAR are clamped: a perfect estimate (+inf) or an all-zero one (-inf) stays averageable.
METRIC_CLAMP_DB = 100.0

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

SPLEETER_INSTALL_HINT = (
    "install Spleeter in its own environment (it needs Python 3.8-3.11 and numpy<2), e.g. "
    "'python3.10 -m venv ~/spleeter-env && ~/spleeter-env/bin/pip install spleeter', put the pretrained "
    "5stems model in a folder (pass it as spleeter_model_dir, Spleeter's MODEL_PATH) and pass "
    "spleeter_python=~/spleeter-env/bin/python (or set PARTSIM_SPLEETER_PYTHON); or use backend 'unet'")

DEMUCS_INSTALL_HINT = (
    "install it with 'pip install demucs' and make its weights available locally (the torch hub cache "
    "~/.cache/torch/hub/checkpoints, or a folder of <signature>.th files passed as demucs_repo); or use backend "
    "'unet'")


@runtime_checkable
class Separator(Protocol):
    """What every backend offers. ``key`` names its outputs in the :class:`SeparatedSource` cache."""

    name: str
    key: str

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Five mono float32 signals of ``len(mix)`` samples, keyed by :data:`~partsim_core.INSTRUMENTS`."""


def _check_mix(mix: Any, sample_rate: int) -> np.ndarray:
    """The mix as a 1-D finite float32 array, or a PartsimError naming the problem."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise PartsimError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    audio = np.asarray(mix, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise PartsimError(f"a mix to separate must be a non-empty mono signal, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise PartsimError("the mix to separate contains NaN or infinite samples")
    return audio


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``length`` samples (resampling round trips may differ by a few)."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) >= length:
        return np.ascontiguousarray(audio[:length])
    return np.concatenate([audio, np.zeros(length - len(audio), dtype=np.float32)])


# --------------------------------------------------------------------------------------------------------------
# oracle
# --------------------------------------------------------------------------------------------------------------


class OracleSeparator:
    """The ideal stems ("perfect separation", thesis 3.3.1's "proposed (ideal)").

    A mix alone does not say which stems it came from, so :meth:`separate` refuses; :class:`SeparatedSource`
    serves the oracle straight from its :class:`StemCache` (no copy), and :meth:`separate_track` returns the five
    parts of one track.
    """

    name = "oracle"
    key = "oracle"

    def __init__(self, cache: StemCache | None = None) -> None:
        """Args: cache: where :meth:`separate_track` reads the ideal parts (optional for use in a SeparatedSource)."""
        self.cache = cache

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Always raises: the oracle needs the track (use :meth:`separate_track` or :class:`SeparatedSource`)."""
        raise PartsimError("the oracle separator needs the track, not only its mix: use "
                           "OracleSeparator.separate_track(track) or a SeparatedSource")

    def separate_track(self, track: Track) -> dict[str, np.ndarray]:
        """The five ideal parts of ``track`` at the cache's sample rate."""
        if self.cache is None:
            raise PartsimError("OracleSeparator.separate_track needs a StemCache (OracleSeparator(cache))")
        return {part: self.cache.get(track, part) for part in INSTRUMENTS}


# --------------------------------------------------------------------------------------------------------------
# unet: training
# --------------------------------------------------------------------------------------------------------------


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


def separator_task(preset: str, data_root: str | os.PathLike = "", seed: int = 0) -> SeparatorTask:
    """The training task of ``preset`` on the dataset at ``data_root`` (the preset's embedded one when empty).

    Raises:
        PartsimError: unknown preset, or a dataset without train tracks.
    """
    from partsim_core.data.dataset import resolve_dataset_root

    settings = get_preset(preset)
    root = resolve_dataset_root(preset, data_root)
    dataset = open_slakh(root)
    train_tracks = dataset.tracks("train")
    if not train_tracks:
        raise PartsimError(f"{root}: the dataset has no 'train' split, which the separator is trained on")
    validation = [track.track_id for track in dataset.tracks("validation")]
    return SeparatorTask(root, [track.track_id for track in train_tracks], validation,
                         settings.frontend.sample_rate, settings.separator, seed=seed)


def separator_train_config(task: SeparatorTask, config: SeparatorConfig, device: str = "auto",
                           seed: int = 0) -> Any:
    """The engine config of a separator run (model and data parameters are part of its key)."""
    from partsim_core.training import TrainConfig

    return TrainConfig(
        run_name="separator-unet", seed=seed, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
        batch_size=config.batch_size, lr=config.lr, device=device, model=task.model_config(),
        data={"dataset": str(task.dataset_root.resolve()), "train_tracks": stable_hash(task.train_ids),
              "n_train_tracks": len(task.train_ids), "validation_tracks": stable_hash(task.validation_ids),
              "excerpt_samples": task.excerpt_samples, "validation_excerpts": VALIDATION_EXCERPTS})


def train_separator(preset: str, data_root: str | os.PathLike = "", device: str = "auto", resume: bool = True,
                    progress: bool = True, seed: int = 0) -> Any:
    """Train (or load the finished) separator U-Net of ``preset`` on the train split of the dataset.

    ``partsim train separator`` calls this. The artefact (weights, config with seed/git commit/versions, history)
    lands in ``cache_root()/models/separator/separator-unet-<key>/``; an identical later call reuses it, an
    interrupted one resumes from its checkpoint (``resume=False`` starts over).

    Returns:
        The engine's :class:`~partsim_core.training.TrainResult` (``model`` is a :class:`SeparatorUNet`).

    Raises:
        PartsimError: unknown preset, missing train split, or a checkpoint of another config.
    """
    from partsim_core.training import train

    settings = get_preset(preset)
    task = separator_task(preset, data_root, seed=seed)
    config = separator_train_config(task, settings.separator, device=device, seed=seed)
    # Decode every needed stem once up front (the stem cache keeps them), so that training steps only read.
    cache = task.cache
    tracks = [cache.dataset.track(track_id) for track_id in task.train_ids + task.validation_ids]
    for track in tqdm(tracks, desc="stems for the separator", disable=not progress, leave=False):
        cache.get_all(track)
    return train(task, config, kind="separator", resume=resume, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# unet: separation
# --------------------------------------------------------------------------------------------------------------


class UNetSeparator:
    """Separates with a trained :class:`SeparatorUNet` (our Spleeter); resamples to and from the model's rate."""

    name = "unet"

    def __init__(self, model: SeparatorUNet, key: str, device: str | torch.device = "auto") -> None:
        """Args: model: trained weights; key: names the outputs in the cache (e.g. ``unet-<training key>``);
        device: where the model runs."""
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.key = key

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Five estimated parts of ``mix`` (mono, any length, at ``sample_rate``)."""
        audio = _check_mix(mix, sample_rate)
        at_model_rate = resample(audio, int(sample_rate), self.model.sample_rate)
        # A copy: the stem cache hands out read-only memmaps, which torch cannot wrap.
        waveform = torch.from_numpy(np.array(at_model_rate, dtype=np.float32)).to(self.device)
        estimates = self.model.separate(waveform).cpu().numpy()
        return {part: _fit_length(resample(estimates[i], self.model.sample_rate, int(sample_rate)), len(audio))
                for i, part in enumerate(INSTRUMENTS)}


# --------------------------------------------------------------------------------------------------------------
# spleeter (subprocess in its own environment)
# --------------------------------------------------------------------------------------------------------------


class SpleeterSeparator:
    """Spleeter's pretrained 5-stems model, run by another environment's Python as a subprocess.

    Each call writes the mix (resampled to 44.1 kHz, as stereo) to a temporary wav file, runs ``<python> -m
    spleeter separate -p <params> -o <dir> -c wav -f {instrument}.{codec} <file>`` and reads back vocals, drums,
    bass, piano and other. Parts: drums, bass and piano as they are, ``others = vocals + other``, and guitar is
    zeros (Spleeter has no guitar stem; its guitar lands in "other"). Spleeter is never imported in this process.

    Args:
        python: The Spleeter environment's Python executable.
        params: Spleeter model descriptor (``spleeter:5stems``) or a params file.
        model_dir: Folder holding the pretrained models (set as Spleeter's ``MODEL_PATH``); without it Spleeter
            looks in ``./pretrained_models`` and tries to download, which fails offline.
        timeout: Seconds one call may take.

    Raises:
        PartsimError: the Python is missing or not executable, or Spleeter is not importable by it.
    """

    name = "spleeter"

    def __init__(self, python: str | os.PathLike, params: str = "spleeter:5stems",
                 model_dir: str | os.PathLike | None = None, timeout: float = 3600.0) -> None:
        self.python = Path(python).expanduser()
        if not self.python.is_file():
            raise PartsimError(f"spleeter_python {str(self.python)!r} does not exist; {SPLEETER_INSTALL_HINT}")
        if not os.access(self.python, os.X_OK):
            raise PartsimError(f"spleeter_python {str(self.python)!r} is not executable; {SPLEETER_INSTALL_HINT}")
        self.params = params
        self.model_dir = Path(model_dir).expanduser().resolve() if model_dir else None
        if self.model_dir is not None and not self.model_dir.is_dir():
            raise PartsimError(f"spleeter_model_dir {str(self.model_dir)!r} is not a folder; it should hold "
                               "Spleeter's pretrained model folders (e.g. 5stems/)")
        self.timeout = timeout
        probe = self._run(["-c", "import spleeter"], timeout=120)
        if probe.returncode != 0:
            raise PartsimError(f"spleeter_python {str(self.python)!r} cannot import spleeter "
                               f"({_last_line(probe.stderr)}); {SPLEETER_INSTALL_HINT}")
        self.key = "spleeter-" + stable_hash({"python": str(self.python.resolve()), "params": params,
                                              "model_dir": str(self.model_dir)})

    def _run(self, arguments: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
        environment = dict(os.environ)
        # Our own environment's packages must not leak into Spleeter's interpreter.
        environment.pop("PYTHONPATH", None)
        environment.pop("PYTHONHOME", None)
        if self.model_dir is not None:
            environment["MODEL_PATH"] = str(self.model_dir)
        try:
            return subprocess.run([str(self.python), *arguments], capture_output=True, text=True, timeout=timeout,
                                  env=environment, cwd=cwd)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PartsimError(f"spleeter_python {str(self.python)!r} could not run: {error}") from None

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Five parts of ``mix`` estimated by Spleeter (see the class docstring for the mapping)."""
        audio = _check_mix(mix, sample_rate)
        with tempfile.TemporaryDirectory(prefix="partsim-spleeter-") as scratch:
            scratch_dir = Path(scratch)
            source = scratch_dir / "mix.wav"
            at_model_rate = resample(audio, int(sample_rate), PRETRAINED_SAMPLE_RATE)
            soundfile.write(source, np.stack([at_model_rate, at_model_rate], axis=1), PRETRAINED_SAMPLE_RATE,
                            subtype="FLOAT")
            out = scratch_dir / "out"
            result = self._run(["-m", "spleeter", "separate", "-p", self.params, "-o", str(out), "-c", "wav",
                                "-f", "{instrument}.{codec}", str(source)], timeout=self.timeout, cwd=scratch_dir)
            if result.returncode != 0:
                raise PartsimError(f"spleeter failed (exit {result.returncode}): {_last_line(result.stderr)}; "
                                   f"{SPLEETER_INSTALL_HINT}")
            parts = {part: np.zeros(len(audio), dtype=np.float32) for part in INSTRUMENTS}
            for stem, part in SPLEETER_5STEMS.items():
                path = out / f"{stem}.wav"
                if not path.is_file():
                    raise PartsimError(f"spleeter wrote no {path.name} (is '{self.params}' a 5-stems model?); "
                                       f"found: {sorted(p.name for p in out.glob('*'))}")
                stem_audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
                mono = stem_audio.mean(axis=1, dtype=np.float32)
                parts[part] = parts[part] + _fit_length(resample(mono, rate, int(sample_rate)), len(audio))
        return parts


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


# --------------------------------------------------------------------------------------------------------------
# demucs (in-process, when installed)
# --------------------------------------------------------------------------------------------------------------


class DemucsSeparator:
    """A pretrained Demucs model (``htdemucs_6s`` has drums, bass, guitar, piano, vocals, other).

    Sources named drums/bass/piano/guitar go to that part, all others (vocals, other) are summed into "others";
    a part the model lacks (guitar and piano for 4-source models) is zeros. The mix is resampled to the model's
    rate, duplicated to its channels, normalised as Demucs's own CLI does, and separated with ``apply_model``
    (split into overlapping chunks).

    Args:
        model: Demucs model name (signature), e.g. ``htdemucs_6s``.
        repo: Folder with the model's weight files (``get_model(name, repo=...)``); default: Demucs's download
            cache, which must already hold them here (no internet).
        device: Where the model runs.

    Raises:
        PartsimError: Demucs not importable, or the model/weights not found.
    """

    name = "demucs"

    def __init__(self, model: str = "htdemucs_6s", repo: str | os.PathLike | None = None,
                 device: str | torch.device = "auto") -> None:
        try:
            from demucs.apply import apply_model
            from demucs.pretrained import get_model
        except ImportError as error:
            raise PartsimError(f"backend 'demucs' needs the demucs package ({error}); {DEMUCS_INSTALL_HINT}") \
                from None
        self._apply_model = apply_model
        self.device = resolve_device(device)
        repo_path = Path(repo).expanduser().resolve() if repo else None
        if repo_path is not None and not repo_path.is_dir():
            raise PartsimError(f"demucs_repo {str(repo_path)!r} is not a folder of Demucs weight files")
        try:
            self.model = get_model(model, repo=repo_path) if repo_path else get_model(model)
        except Exception as error:  # Demucs raises its own types (ModelLoadingError, HTTP errors, ...)
            raise PartsimError(f"demucs model {model!r} could not be loaded ({' '.join(str(error).split())}); "
                               f"{DEMUCS_INSTALL_HINT}") from None
        self.model.to(self.device).eval()
        self.model_name = model
        self.key = "demucs-" + stable_hash({"model": model, "repo": str(repo_path)})

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Five parts of ``mix`` estimated by the Demucs model."""
        audio = _check_mix(mix, sample_rate)
        rate = int(getattr(self.model, "samplerate", PRETRAINED_SAMPLE_RATE))
        channels = int(getattr(self.model, "audio_channels", 2))
        wav = torch.from_numpy(resample(audio, int(sample_rate), rate))[None].repeat(channels, 1)
        reference = wav.mean(0)
        offset, scale = reference.mean(), reference.std().clamp_min(1e-8)
        with torch.inference_mode():
            sources = self._apply_model(self.model, ((wav - offset) / scale)[None], device=self.device,
                                        split=True, overlap=0.25, progress=False)[0]
        sources = (sources * scale + offset).float().mean(dim=1).cpu().numpy()   # (sources, samples), mono
        parts = {part: np.zeros(len(audio), dtype=np.float32) for part in INSTRUMENTS}
        for name, estimate in zip(self.model.sources, sources):
            part = name if name in INSTRUMENTS and name != "others" else "others"
            parts[part] = parts[part] + _fit_length(resample(estimate, rate, int(sample_rate)), len(audio))
        return parts


# --------------------------------------------------------------------------------------------------------------
# choosing a backend
# --------------------------------------------------------------------------------------------------------------

_BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "oracle": (),
    "unet": ("train", "seed", "progress"),
    "spleeter": ("spleeter_python", "spleeter_params", "spleeter_model_dir"),
    "demucs": ("demucs_model", "demucs_repo"),
}


def get_separator(backend: str, preset: str, data_root: str | os.PathLike = "", device: str = "auto",
                  **options: Any) -> Separator:
    """The separator of ``backend`` for chapter 3 (see :data:`BACKENDS`).

    * ``oracle``: ideal stems from the stem cache of the dataset at the preset's front-end rate.
    * ``unet``: the trained U-Net of ``preset`` on this dataset, trained first via :func:`train_separator` when
      no finished artefact exists (options: ``train=False`` refuses to train, ``seed``, ``progress``).
    * ``spleeter``: options ``spleeter_python`` (default ``$PARTSIM_SPLEETER_PYTHON``), ``spleeter_params``
      (default ``spleeter:5stems``), ``spleeter_model_dir``.
    * ``demucs``: options ``demucs_model`` (default ``htdemucs_6s``), ``demucs_repo``.

    Raises:
        PartsimError: unknown backend, preset or option; a backend that is not installed or lacks weights (the
            message says how to install them).
    """
    if backend not in BACKENDS:
        raise PartsimError(f"unknown separation backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    settings = get_preset(preset)
    unknown = sorted(set(options) - set(_BACKEND_OPTIONS[backend]))
    if unknown:
        allowed = ", ".join(_BACKEND_OPTIONS[backend]) or "none"
        raise PartsimError(f"unknown option(s) {', '.join(unknown)} for backend {backend!r} (allowed: {allowed})")
    if backend == "oracle":
        from partsim_core.data.dataset import resolve_dataset_root

        root = resolve_dataset_root(preset, data_root)
        return OracleSeparator(StemCache(open_slakh(root), settings.frontend.sample_rate))
    if backend == "unet":
        return _unet_separator(preset, data_root, device, train=bool(options.get("train", True)),
                               seed=int(options.get("seed", 0)), progress=bool(options.get("progress", True)))
    if backend == "spleeter":
        python = options.get("spleeter_python") or os.environ.get(SPLEETER_PYTHON_ENV)
        if not python:
            raise PartsimError(f"backend 'spleeter' needs spleeter_python=PATH (or ${SPLEETER_PYTHON_ENV}); "
                               f"{SPLEETER_INSTALL_HINT}")
        return SpleeterSeparator(python, params=options.get("spleeter_params") or "spleeter:5stems",
                                 model_dir=options.get("spleeter_model_dir"))
    return DemucsSeparator(options.get("demucs_model") or "htdemucs_6s", repo=options.get("demucs_repo"),
                           device=device)


def _unet_separator(preset: str, data_root: str | os.PathLike, device: str, train: bool,
                    seed: int, progress: bool = True) -> UNetSeparator:
    from partsim_core.training import MODEL_FILE, artefact_dir

    task = separator_task(preset, data_root, seed=seed)
    config = separator_train_config(task, get_preset(preset).separator, device=device, seed=seed)
    if not train and not (artefact_dir("separator", config) / MODEL_FILE).is_file():
        raise PartsimError(f"no trained separator for preset {preset!r} on {task.dataset_root}; run "
                           f"'partsim train separator --preset {preset}' first")
    result = train_separator(preset, data_root, device=device, seed=seed, progress=progress)
    return UNetSeparator(result.model, key=f"unet-{config.key()}", device=device)


# --------------------------------------------------------------------------------------------------------------
# cached separated stems
# --------------------------------------------------------------------------------------------------------------


class SeparatedSource:
    """A signal source over separated stems, for the samplers and the evaluation (like a :class:`StemCache`).

    ``get(track, part)`` separates the track's whole mix on first use (the separator chunks long tracks itself)
    and caches the five outputs as ``.npy`` in one atomically written folder
    ``<root>/<key>/<track_id>-<mix cache key>/`` (the mix key changes when the audio or the rate changes); later
    calls, also from other processes, memory-map them. ``get(track, "mix")`` returns the mix itself. With an
    :class:`OracleSeparator` every part comes straight from ``cache`` (nothing separated or copied).

    Args:
        separator: Any :class:`Separator`.
        cache: Stem cache giving the mixes (and the oracle's parts); fixes :attr:`sample_rate`.
        key: Name of the outputs in the cache; default ``separator.key``.
        root: Cache folder; default ``cache_root()/separated``.
    """

    def __init__(self, separator: Separator, cache: StemCache, key: str | None = None,
                 root: Path | None = None) -> None:
        key = key if key is not None else getattr(separator, "key", None)
        if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key):
            raise PartsimError(f"separator key must be letters, digits, '.', '_' or '-', got {key!r}")
        self.separator = separator
        self.cache = cache
        self.key = key
        self.sample_rate = cache.sample_rate
        self.root = Path(root) if root is not None else cache_root() / "separated"

    def folder(self, track: Track) -> Path:
        """Where the separated parts of ``track`` are (or will be) cached."""
        mix_key = self.cache.key(track, MIX_PART)
        return self.root / f"{self.key}-v{SEPARATED_CACHE_FORMAT_VERSION}" / f"{track.track_id}-{mix_key}"

    def is_separated(self, track: Track) -> bool:
        """True when ``track``'s parts are in the cache (always for the oracle)."""
        return isinstance(self.separator, OracleSeparator) or all(
            (self.folder(track) / f"{part}.npy").is_file() for part in INSTRUMENTS)

    def get(self, track: Track, part: str) -> np.ndarray:
        """Separated ``part`` of ``track`` (read-only float32 memmap), or the mix for ``part == "mix"``.

        Raises:
            PartsimError: unknown part, or a separator output that is not five finite signals of the mix's length.
        """
        if part == MIX_PART:
            return self.cache.get(track, MIX_PART)
        if part not in INSTRUMENTS:
            raise PartsimError(f"unknown part {part!r}; expected one of {', '.join((*INSTRUMENTS, MIX_PART))}")
        if isinstance(self.separator, OracleSeparator):
            return self.cache.get(track, part)
        path = self.folder(track) / f"{part}.npy"
        if not path.is_file():
            self._separate(track)
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def separate_tracks(self, tracks: Sequence[Track], progress: bool = True) -> None:
        """Separate every track not yet in the cache (with a progress bar)."""
        todo = [track for track in tracks if not self.is_separated(track)]
        for track in tqdm(todo, desc=f"separating ({self.separator.name})", disable=not progress, leave=False):
            self._separate(track)

    def _separate(self, track: Track) -> None:
        mix = np.asarray(self.cache.get(track, MIX_PART))
        outputs = self.separator.separate(mix, self.sample_rate)
        missing = [part for part in INSTRUMENTS if part not in outputs]
        if missing:
            raise PartsimError(f"separator {self.separator.name!r} returned no {', '.join(missing)} for "
                               f"{track.track_id}")
        arrays = {}
        for part in INSTRUMENTS:
            audio = np.asarray(outputs[part], dtype=np.float32)
            if audio.shape != mix.shape or not np.all(np.isfinite(audio)):
                raise PartsimError(f"separator {self.separator.name!r} returned a {part} of shape {audio.shape} "
                                   f"(or with NaN) for {track.track_id}; expected {mix.shape} finite samples")
            arrays[part] = audio
        with atomic_directory(self.folder(track)) as folder:
            for part, audio in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, audio, allow_pickle=False)
                (folder / f"{part}.npy").write_bytes(buffer.getvalue())
            (folder / "separation.json").write_text(json.dumps(
                {"separator": self.separator.name, "key": self.key, "track": track.track_id,
                 "sample_rate": self.sample_rate}, indent=2) + "\n")

    def clear(self) -> None:
        """Delete every cached output of this separator key."""
        shutil.rmtree(self.root / f"{self.key}-v{SEPARATED_CACHE_FORMAT_VERSION}", ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# separation quality (Table 3.1)
# --------------------------------------------------------------------------------------------------------------


def _bss_eval(references: np.ndarray, estimates: np.ndarray, filter_length: int) -> tuple[np.ndarray, ...]:
    """fast_bss_eval's SDR/SIR/SAR of ``(n_src, samples)`` arrays, through its torch back end.

    fast_bss_eval 0.1.4's numpy back end fails under numpy 2 (``np.linalg.solve`` broadcasting changed); its
    torch back end computes the same metrics. A (nearly) singular reference correlation matrix is retried with
    diagonal loading, as the package recommends.
    """
    import fast_bss_eval

    ref = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float64))
    est = torch.from_numpy(np.ascontiguousarray(estimates, dtype=np.float64))
    try:
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(ref, est, filter_length=filter_length,
                                                       compute_permutation=False)
    except RuntimeError:  # torch.linalg.LinAlgError: singular system (e.g. a pure tone)
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(ref, est, filter_length=filter_length,
                                                       compute_permutation=False, load_diag=1e-6)
    return sdr.numpy(), sir.numpy(), sar.numpy()


def separation_metrics(estimates: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                       sample_rate: int | None = None, chunk_seconds: float = 10.0,
                       silence_threshold: float = SILENCE_THRESHOLD, filter_length: int = 512) -> pd.DataFrame:
    """SDR, SIR and SAR (dB) of one track's estimated parts against its ideal parts (thesis Table 3.1).

    How it is computed: the signals are cut into non-overlapping chunks of ``chunk_seconds`` (the last partial one
    dropped; a signal shorter than one chunk, or ``sample_rate=None``, is one chunk). In each chunk the parts
    whose reference is non-silent (mean power >= ``silence_threshold``, the thesis's silence rule) are evaluated
    together with ``fast_bss_eval.bss_eval_sources`` (distortion filters of ``filter_length`` taps; the other
    non-silent references are the interference); silent or absent references are skipped. A part's value is the
    mean over the chunks where it was evaluated. Infinite values (a perfect or an all-zero estimate) are clamped
    to +-:data:`METRIC_CLAMP_DB`; SIR is undefined (NaN, left out of its mean) in a chunk where no other part
    plays and where the estimate is all zeros.

    Args:
        estimates: Part -> estimated signal (all :data:`~partsim_core.INSTRUMENTS` present in ``references``).
        references: Part -> ideal signal; parts may be missing (absent from the track).
        sample_rate: Rate of the signals (needed to cut chunks).
        chunk_seconds: Chunk length (museval uses 1 s windows; longer chunks give steadier filters).
        silence_threshold: Mean power below which a reference chunk is silent.
        filter_length: Taps of the allowed distortion filter (bss_eval's default 512).

    Returns:
        One row per part in :data:`~partsim_core.INSTRUMENTS` order (index ``part``) with columns ``sdr``,
        ``sir``, ``sar`` (NaN when never evaluated) and ``chunks`` (chunks evaluated).

    Raises:
        PartsimError: a reference without estimate, signals of different lengths, or non-finite samples.
    """
    parts = [part for part in INSTRUMENTS if part in references]
    unknown = sorted(set(references) - set(INSTRUMENTS))
    if unknown:
        raise PartsimError(f"unknown part(s) {', '.join(unknown)} in the references; expected {INSTRUMENTS}")
    missing = [part for part in parts if part not in estimates]
    if missing:
        raise PartsimError(f"no estimate for part(s) {', '.join(missing)}")
    reference = {part: np.asarray(references[part], dtype=np.float64) for part in parts}
    estimate = {part: np.asarray(estimates[part], dtype=np.float64) for part in parts}
    lengths = {len(signal) for signal in (*reference.values(), *estimate.values())}
    if len(lengths) > 1 or any(signal.ndim != 1 for signal in (*reference.values(), *estimate.values())):
        raise PartsimError(f"estimates and references must be mono signals of one length, got lengths "
                           f"{sorted(lengths)}")
    for name, signals in (("estimate", estimate), ("reference", reference)):
        for part, signal in signals.items():
            if not np.all(np.isfinite(signal)):
                raise PartsimError(f"the {part} {name} contains NaN or infinite samples")
    length = lengths.pop() if lengths else 0
    if parts and length == 0:
        raise PartsimError("estimates and references are empty signals")
    chunk = length if sample_rate is None else max(1, int(round(chunk_seconds * sample_rate)))
    starts = list(range(0, length - chunk + 1, chunk)) if length >= chunk else [0]
    chunk = min(chunk, length)
    values: dict[str, dict[str, list[float]]] = {part: {"sdr": [], "sir": [], "sar": []} for part in parts}
    for start in starts if parts else []:
        window = slice(start, start + chunk)
        active = [part for part in parts if np.mean(reference[part][window] ** 2) >= silence_threshold]
        if not active:
            continue
        refs = np.stack([reference[part][window] for part in active])
        ests = np.stack([estimate[part][window] for part in active])
        sdr, sir, sar = _bss_eval(refs, ests, min(filter_length, chunk))
        for i, part in enumerate(active):
            zero_estimate = not np.any(ests[i])
            values[part]["sdr"].append(float(np.clip(np.nan_to_num(sdr[i], nan=-METRIC_CLAMP_DB),
                                                     -METRIC_CLAMP_DB, METRIC_CLAMP_DB)))
            values[part]["sar"].append(float(np.clip(np.nan_to_num(sar[i], nan=-METRIC_CLAMP_DB),
                                                     -METRIC_CLAMP_DB, METRIC_CLAMP_DB)))
            undefined_sir = len(active) == 1 or zero_estimate or np.isnan(sir[i])
            values[part]["sir"].append(math.nan if undefined_sir else
                                       float(np.clip(sir[i], -METRIC_CLAMP_DB, METRIC_CLAMP_DB)))
    rows = []
    for part in INSTRUMENTS:
        metrics = values.get(part, {"sdr": [], "sir": [], "sar": []})
        row = {"part": part, "chunks": len(metrics["sdr"])}
        for name in ("sdr", "sir", "sar"):
            finite = [value for value in metrics[name] if not math.isnan(value)]
            row[name] = float(np.mean(finite)) if finite else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["part", "sdr", "sir", "sar", "chunks"]).set_index("part")


def evaluate_separation(separated: Any, reference: StemCache, tracks: Sequence[Track], chunk_seconds: float = 10.0,
                        silence_threshold: float = SILENCE_THRESHOLD, progress: bool = True) -> pd.DataFrame:
    """Per-track separation quality of a :class:`SeparatedSource` (or any signal source) against the ideal parts.

    Returns:
        Long table with columns ``track_id``, ``part``, ``sdr``, ``sir``, ``sar``, ``chunks`` (one row per track and
        part whose reference was non-silent in at least one chunk). :func:`average_separation_metrics` turns it
        into Table 3.1's per-part averages.
    """
    rows = []
    for track in tqdm(tracks, desc="separation metrics", disable=not progress, leave=False):
        estimates = {part: separated.get(track, part) for part in INSTRUMENTS}
        references = {part: reference.get(track, part) for part in INSTRUMENTS}
        table = separation_metrics(estimates, references, sample_rate=reference.sample_rate,
                                   chunk_seconds=chunk_seconds, silence_threshold=silence_threshold)
        for part, row in table.iterrows():
            if row["chunks"] > 0:
                rows.append({"track_id": track.track_id, "part": part, **row.to_dict()})
    return pd.DataFrame(rows, columns=["track_id", "part", "sdr", "sir", "sar", "chunks"])


def average_separation_metrics(per_track: pd.DataFrame) -> pd.DataFrame:
    """Table 3.1's "average separation performance": per part, the mean over tracks of each track's mean (dB).

    Returns:
        Index ``part`` (:data:`~partsim_core.INSTRUMENTS` order, parts never evaluated omitted), columns ``sdr``,
        ``sir``, ``sar``, ``tracks``.
    """
    grouped = per_track.groupby("part")
    table = grouped[["sdr", "sir", "sar"]].mean()
    table["tracks"] = grouped["track_id"].nunique()
    order = [part for part in INSTRUMENTS if part in table.index]
    return table.loc[order]
