"""The separators of chapter 3: one interface, four backends.

Thesis 3.3.1 separates every track into instrumental parts with the pre-trained Spleeter. A :class:`Separator`
maps a mix to ``{drums, bass, piano, guitar, others}`` (mono float32 arrays of the mix's length, in
:data:`~partsim_core.INSTRUMENTS` order). Backends (:data:`BACKENDS`):

- ``oracle`` (:class:`OracleSeparator`): the ideal stems, the "proposed (ideal)" row. It needs the *track*, not
  only its mix: :class:`~partsim_core.baseline.separated_stems.SeparatedSource` serves it straight from the stem
  cache, and :meth:`OracleSeparator.separate_track` serves a single track.
- ``unet`` (:class:`UNetSeparator`): our PyTorch re-implementation of Spleeter's U-Net
  (:class:`~partsim_core.models.SeparatorUNet`), trained by
  :func:`~partsim_core.baseline.separator_training.train_separator` on the train split of the dataset in use,
  because Spleeter's pretrained weights cannot be downloaded here. The default.
- ``spleeter`` (:class:`SpleeterSeparator`): the real Spleeter 5-stems model, run as a subprocess with the Python
  of a separate environment (Spleeter needs numpy<2 and Python<3.12; it is never imported here).
- ``demucs`` (:class:`DemucsSeparator`): Demucs (e.g. ``htdemucs_6s``, which has guitar and piano) when it is
  installed and its weights are available locally.

Every separator has a ``key`` naming its outputs in the separated-stem cache; the U-Net's key is its training
run's key, which includes the fingerprint of the audio it was trained on.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import soundfile
import torch

from partsim_core import INSTRUMENTS
from partsim_core.baseline.separator_training import train_separator
from partsim_core.data.cache import StemCache, stable_hash
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.slakh import Track, resample
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError
from partsim_core.models import SeparatorUNet

#: Separation backends, in the order the chapter discusses them.
BACKENDS: tuple[str, ...] = ("oracle", "unet", "spleeter", "demucs")

#: Environment variable naming the Spleeter environment's Python when ``spleeter_python`` is not given.
SPLEETER_PYTHON_ENV = "PARTSIM_SPLEETER_PYTHON"

#: Spleeter's 5-stems outputs and the part each one goes to (Spleeter has no guitar stem: guitar is zeros).
SPLEETER_5STEMS: dict[str, str] = {"vocals": "others", "drums": "drums", "bass": "bass", "piano": "piano",
                                   "other": "others"}

#: Sample rate of the Spleeter and Demucs pretrained models.
PRETRAINED_SAMPLE_RATE = 44100

SPLEETER_INSTALL_HINT = (
    "install Spleeter in its own environment (it needs Python 3.8-3.11 and numpy<2), e.g. "
    "'python3.10 -m venv ~/spleeter-env && ~/spleeter-env/bin/pip install spleeter', put the pretrained "
    "5stems model in a folder (pass it as spleeter_model_dir, Spleeter's MODEL_PATH) and pass "
    "spleeter_python=~/spleeter-env/bin/python (or set PARTSIM_SPLEETER_PYTHON); or use backend 'unet'")

DEMUCS_INSTALL_HINT = (
    "install it with 'pip install demucs' and make its weights available locally (the torch hub cache "
    "~/.cache/torch/hub/checkpoints, or a folder of <signature>.th files passed as demucs_repo); or use backend "
    "'unet'")


def check_backend(backend: str) -> str:
    """Validate a separator backend name before any work.

    Raises:
        PartsimError: ``backend`` is not one of :data:`BACKENDS`.
    """
    if backend not in BACKENDS:
        raise PartsimError(f"unknown separator backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


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


class UNetSeparator:
    """Separates with a trained :class:`SeparatorUNet` (our Spleeter); resamples to and from the model's rate.

    Args:
        model: trained weights.
        key: names the outputs in the separated-stem cache (``unet-<training key>``).
        device: where the model runs.
        history: the training run's per-epoch losses (for the chapter's JSON).
    """

    name = "unet"

    def __init__(self, model: SeparatorUNet, key: str, device: str | torch.device = "auto",
                 history: list[dict] | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.key = key
        self.history = list(history or [])

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Five estimated parts of ``mix`` (mono, any length, at ``sample_rate``)."""
        audio = _check_mix(mix, sample_rate)
        at_model_rate = resample(audio, int(sample_rate), self.model.sample_rate)
        # A copy: the stem cache hands out read-only memmaps, which torch cannot wrap.
        waveform = torch.from_numpy(np.array(at_model_rate, dtype=np.float32)).to(self.device)
        estimates = self.model.separate(waveform).cpu().numpy()
        return {part: _fit_length(resample(estimates[i], self.model.sample_rate, int(sample_rate)), len(audio))
                for i, part in enumerate(INSTRUMENTS)}


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


_BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "oracle": (),
    "unet": ("train", "seed", "epochs", "progress", "resume"),
    "spleeter": ("spleeter_python", "spleeter_params", "spleeter_model_dir"),
    "demucs": ("demucs_model", "demucs_repo"),
}


def get_separator(backend: str, data: DatasetHandle | None, device: str = "auto", **options: Any) -> Separator:
    """The separator of ``backend`` for chapter 3 (see :data:`BACKENDS`) on the dataset ``data`` (which the
    pretrained backends, ``spleeter`` and ``demucs``, do not need: ``None`` is accepted for them).

    * ``oracle``: ideal stems from ``data``'s stem cache.
    * ``unet``: our U-Net trained on ``data``'s train split, trained first via
      :func:`~partsim_core.baseline.separator_training.train_separator` when no finished artefact exists (options:
      ``train=False`` refuses to train, ``seed``, ``epochs`` (``None`` = the preset's; fewer epochs give a weaker
      separator for the quality curve), ``progress``, ``resume=False`` trains anew).
    * ``spleeter``: options ``spleeter_python`` (default ``$PARTSIM_SPLEETER_PYTHON``), ``spleeter_params``
      (default ``spleeter:5stems``), ``spleeter_model_dir``.
    * ``demucs``: options ``demucs_model`` (default ``htdemucs_6s``), ``demucs_repo``.

    Raises:
        PartsimError: unknown backend or option; a backend that is not installed or lacks weights (the message
            says how to install them); ``train=False`` without a trained U-Net.
    """
    check_backend(backend)
    unknown = sorted(set(options) - set(_BACKEND_OPTIONS[backend]))
    if unknown:
        allowed = ", ".join(_BACKEND_OPTIONS[backend]) or "none"
        raise PartsimError(f"unknown option(s) {', '.join(unknown)} for backend {backend!r} (allowed: {allowed})")
    if data is None and backend in ("oracle", "unet"):
        raise PartsimError(f"backend {backend!r} needs the dataset (a DatasetHandle from load_dataset)")
    if backend == "oracle":
        return OracleSeparator(data.cache)
    if backend == "unet":
        result = train_separator(data, device=device, seed=int(options.get("seed", 0)),
                                 epochs=options.get("epochs"), progress=bool(options.get("progress", True)),
                                 train_missing=bool(options.get("train", True)),
                                 resume=bool(options.get("resume", True)))
        return UNetSeparator(result.model, key=f"unet-{result.out_dir.name.rsplit('-', 1)[-1]}", device=device,
                             history=result.history)
    if backend == "spleeter":
        python = options.get("spleeter_python") or os.environ.get(SPLEETER_PYTHON_ENV)
        if not python:
            raise PartsimError(f"backend 'spleeter' needs spleeter_python=PATH (or ${SPLEETER_PYTHON_ENV}); "
                               f"{SPLEETER_INSTALL_HINT}")
        return SpleeterSeparator(python, params=options.get("spleeter_params") or "spleeter:5stems",
                                 model_dir=options.get("spleeter_model_dir"))
    return DemucsSeparator(options.get("demucs_model") or "htdemucs_6s", repo=options.get("demucs_repo"),
                           device=device)
