"""Batched log-mel front end in torch (thesis 3.3.1): the input of every model in the book.

The thesis converts each segment to a dB-scaled mel spectrogram (44.1 kHz, window 2048, hop 512, 128 mel bins) and
normalises it to [0, 1]. This module reproduces librosa's conventions exactly, without calling librosa at run time:

* a centred, reflect-padded, periodic-Hann STFT and its power spectrum (``librosa.feature.melspectrogram`` with
  ``pad_mode="reflect"``, librosa's default before 0.10 and torch's usual choice; the thesis does not say.
  librosa >= 0.10 pads with zeros by default, which changes only the frames within n_fft / 2 of either end);
* the Slaney mel filterbank of ``librosa.filters.mel(htk=False, norm="slaney")``;
* ``librosa.power_to_db(S, ref=np.max, top_db=top_db)`` with ``amin = 1e-10``, ``ref`` taken per example.

It runs on whatever device the audio tensor is on: a batched ``torch.stft`` and one matrix product with the cached
filterbank, split into bands (on a GPU the whole batch at once; on the CPU in cache-sized groups, ~4x faster there).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import torch

from partsim_core.errors import PartsimError
from partsim_core.presets import FrontendConfig

#: Smallest power before taking the logarithm (librosa's ``amin``).
POWER_FLOOR = 1e-10
#: On the CPU, examples go through the STFT in groups whose complex spectrum stays under this size (cache-sized).
CPU_CHUNK_BYTES = 4 * 1024 * 1024
#: Groups of adjacent mel filters multiplied separately with the FFT bins they cover (see ``_cached_filterbank``).
FILTERBANK_BANDS = 4

_FILTERBANK_CACHE: dict[tuple, torch.Tensor] = {}
_WINDOW_CACHE: dict[tuple, torch.Tensor] = {}
_CACHE_LOCK = threading.Lock()


def hz_to_mel_slaney(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as ``librosa.hz_to_mel(htk=False)``."""
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = frequencies >= min_log_hz
    mels = np.where(above, min_log_mel + np.log(np.maximum(frequencies, min_log_hz) / min_log_hz) / logstep, mels)
    return mels


def mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`, as ``librosa.mel_to_hz(htk=False)``."""
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    frequencies = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = mels >= min_log_mel
    frequencies = np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), frequencies)
    return frequencies


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank, shape ``(n_mels, 1 + n_fft // 2)``, float64.

    Same construction as ``librosa.filters.mel(sr, n_fft, n_mels, htk=False, norm="slaney")``: triangles between
    ``n_mels + 2`` points equally spaced on the Slaney mel scale, each scaled by ``2 / bandwidth`` so that every
    filter has (approximately) constant energy per Hz.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    fft_frequencies = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_points = np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2)
    mel_frequencies = mel_to_hz_slaney(mel_points)
    bandwidths = np.diff(mel_frequencies)
    ramps = mel_frequencies[:, None] - fft_frequencies[None, :]
    lower = -ramps[:-2] / bandwidths[:-1, None]
    upper = ramps[2:] / bandwidths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_frequencies[2:n_mels + 2] - mel_frequencies[:n_mels]))[:, None]
    return weights


def _validate_config(config: FrontendConfig) -> None:
    """Refuse settings that cannot give a spectrogram, naming the offending value."""
    if not isinstance(config, FrontendConfig):
        raise PartsimError(f"front end needs a FrontendConfig, got {type(config).__name__}")
    for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
        value = getattr(config, name)
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise PartsimError(f"front end setting {name}={value!r} must be a positive integer")
    if not np.isfinite(config.top_db) or config.top_db <= 0:
        raise PartsimError(f"front end setting top_db={config.top_db!r} must be a positive finite number")


def _cached_filterbank(config: FrontendConfig, device: torch.device,
                       dtype: torch.dtype) -> list[tuple[int, int, torch.Tensor]]:
    """The mel filterbank on ``device`` as bands ``(first bin, end bin, weights (bins, mels of the band))``.

    Built once per (settings, device, dtype). Why bands: each mel filter is non-zero over a few FFT bins only, so
    splitting the mels into :data:`FILTERBANK_BANDS` groups, each multiplied with just the bins it covers, does the
    same sums with ~4x fewer multiplications than the dense ``(n_mels, n_fft // 2 + 1)`` matrix.
    """
    key = (config.sample_rate, config.n_fft, config.n_mels, str(device), dtype)
    with _CACHE_LOCK:
        cached = _FILTERBANK_CACHE.get(key)
        if cached is None:
            # float32 like librosa's default dtype, so that both round the same way.
            weights = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels).astype(np.float32)
            cached = []
            for mels in np.array_split(np.arange(config.n_mels), min(FILTERBANK_BANDS, config.n_mels)):
                band = weights[mels]
                covered = np.flatnonzero(band.any(axis=0))
                first, end = (int(covered[0]), int(covered[-1]) + 1) if covered.size else (0, 1)
                block = np.ascontiguousarray(band[:, first:end].T)
                cached.append((first, end, torch.as_tensor(block, device=device).to(dtype)))
            _FILTERBANK_CACHE[key] = cached
        return cached


def _cached_window(n_fft: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Periodic Hann window (``scipy.signal.get_window("hann", n_fft)``, librosa's default) on ``device``."""
    key = (n_fft, str(device), dtype)
    with _CACHE_LOCK:
        cached = _WINDOW_CACHE.get(key)
        if cached is None:
            cached = torch.hann_window(n_fft, periodic=True, dtype=torch.float64).to(device=device, dtype=dtype)
            _WINDOW_CACHE[key] = cached
        return cached


class LogMel(torch.nn.Module):
    """Waveforms ``(batch, samples)`` to normalised log-mel spectrograms ``(batch, n_mels, frames)`` in [0, 1].

    Steps, each matching librosa: centred reflect-padded Hann STFT (window ``n_fft``, hop ``hop_length``), power
    spectrum, Slaney mel filterbank, ``10 log10(max(S, 1e-10))`` relative to the example's maximum, floored at
    ``-top_db``. Frames are ``1 + samples // hop_length``.

    Normalisation to [0, 1] (our reading of the thesis's "normalized to the range [0, 1]", 3.3.1): per example,
    ``db = power_to_db(S, ref=max(S), top_db)`` lies in ``[-top_db, 0]``; we return ``(db + top_db) / top_db``, so
    the loudest time-frequency bin of each segment is 1 and everything ``top_db`` or more below it is 0. An all-zero
    (silent) example gives all zeros, never NaN.

    A 1-d input ``(samples,)`` is treated as a batch of one and the batch axis is dropped again on output.
    The module has no trainable parameters; the filterbank is cached per (settings, device).
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        _validate_config(config)
        self.config = config

    def extra_repr(self) -> str:
        c = self.config
        return f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, hop_length={c.hop_length}, n_mels={c.n_mels}, " \
               f"top_db={c.top_db}"

    def _chunk_size(self, batch: int, samples: int, device: torch.device) -> int:
        """Examples per STFT call: the whole batch on a GPU; on the CPU, as many as keep the spectrum in cache.

        Why: on the CPU the batched STFT is limited by memory bandwidth, not arithmetic. Measured on 2 cores (paper
        settings, 64 x 3 s): one call for the whole batch took ~190 ms, one example per call ~50 ms (librosa: ~190 ms).
        """
        if device.type != "cpu":
            return max(1, batch)
        frames = 1 + samples // self.config.hop_length
        spectrum_bytes = frames * (self.config.n_fft // 2 + 1) * 8
        return max(1, min(batch, CPU_CHUNK_BYTES // max(1, spectrum_bytes)))

    def _mel_chunks(self, audio: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first example, mel power (chunk, n_mels, frames))`` over a 2-d float batch."""
        config = self.config
        samples = audio.shape[-1]
        if samples <= config.n_fft // 2:
            # Reflect padding needs more samples than the pad width.
            raise PartsimError(f"audio of {samples} samples is too short for the front end (n_fft={config.n_fft}); "
                               f"need more than {config.n_fft // 2}")
        window = _cached_window(config.n_fft, audio.device, audio.dtype)
        bands = _cached_filterbank(config, audio.device, audio.dtype)
        chunk = self._chunk_size(audio.shape[0], samples, audio.device)
        for start in range(0, audio.shape[0], chunk):
            piece = audio[start:start + chunk]
            # torch.stft returns (chunk, freq, frames) laid out frame-major: transposing gives a contiguous view.
            spectrum = torch.stft(piece, n_fft=config.n_fft, hop_length=config.hop_length, win_length=config.n_fft,
                                  window=window, center=True, pad_mode="reflect", normalized=False, onesided=True,
                                  return_complex=True).transpose(1, 2)
            power = spectrum.real.square() + spectrum.imag.square()
            mel = torch.cat([torch.matmul(power[..., first:end], weights) for first, end, weights in bands],
                            dim=-1).transpose(1, 2)
            # Checking the small output is cheaper than scanning the input; NaN/inf samples always reach it.
            if not bool(torch.isfinite(mel).all()):
                bad = "NaN or infinite" if not bool(torch.isfinite(piece).all()) else "too large (power overflows)"
                raise PartsimError(f"front end input example(s) {start}..{start + piece.shape[0] - 1} contain "
                                   f"{bad} samples")
            yield start, mel

    def mel_power(self, audio: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram ``(batch, n_mels, frames)`` (``librosa.feature.melspectrogram``, reflect padding).

        Raises:
            PartsimError: on NaN or infinite samples, or audio shorter than ``n_fft // 2 + 1`` samples.
        """
        audio = self._as_batch(audio)[0]
        return torch.cat([mel for _, mel in self._mel_chunks(audio)])

    def _normalised_db(self, mel: torch.Tensor) -> torch.Tensor:
        """``(power_to_db(mel, ref=max, top_db) + top_db) / top_db`` per example; silent examples -> 0."""
        top_db = float(self.config.top_db)
        peak = mel.amax(dim=(-2, -1), keepdim=True)
        # 10 log10(max(S, amin) / max(ref, amin)) equals librosa's difference of logs, with one log instead of two.
        normalised = torch.log10(torch.clamp(mel, min=POWER_FLOOR) / torch.clamp(peak, min=POWER_FLOOR))
        normalised.mul_(10.0 / top_db).add_(1.0).clamp_(min=0.0)
        # librosa gives 0 dB everywhere for an all-silent example (ref = amin); we put silence at the floor.
        return normalised.masked_fill_(peak <= POWER_FLOOR, 0.0)

    def _as_batch(self, audio: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Validate ``audio`` and return it as a 2-d float tensor, plus whether the input was 1-d."""
        if not torch.is_tensor(audio):
            raise PartsimError(f"front end expects a torch tensor, got {type(audio).__name__}")
        squeeze = audio.dim() == 1
        if squeeze:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise PartsimError(f"front end expects audio shaped (batch, samples) or (samples,), got "
                               f"{tuple(audio.shape)}")
        if audio.shape[0] == 0:
            raise PartsimError("front end got an empty batch (0 examples)")
        if audio.is_complex():
            raise PartsimError("front end expects real-valued audio, got a complex tensor")
        if audio.dtype not in (torch.float32, torch.float64):
            audio = audio.to(torch.float32)
        return audio, squeeze

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel spectrogram in [0, 1]; see the class docstring.

        Raises:
            PartsimError: on NaN or infinite samples, a non 1-d/2-d input, or audio shorter than ``n_fft // 2 + 1``.
        """
        audio, squeeze = self._as_batch(audio)
        frames = 1 + audio.shape[-1] // self.config.hop_length
        output = torch.empty((audio.shape[0], self.config.n_mels, frames), dtype=audio.dtype, device=audio.device)
        # Normalising chunk by chunk keeps each chunk's data in cache (the whole point of chunking on the CPU).
        for start, mel in self._mel_chunks(audio):
            output[start:start + mel.shape[0]] = self._normalised_db(mel)
        return output.squeeze(0) if squeeze else output

    def full_precision(self, audio: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on ``audio`` as float32 with autocast off on its device: inside a training step under
        mixed precision the dB scale still needs full precision."""
        with torch.autocast(audio.device.type, enabled=False):
            return self(audio.float())


def check_source_rate(what: str, sample_rate: int, config: FrontendConfig) -> None:
    """Refuse signals whose rate is not the front end's.

    Args:
        what: The signals, as the message names them (e.g. ``"signal source"``, ``"validation source"``).
        sample_rate: Their rate in Hz.
        config: The front end settings.

    Raises:
        PartsimError: ``sample_rate`` differs from ``config.sample_rate``.
    """
    if sample_rate != config.sample_rate:
        raise PartsimError(f"{what} rate {sample_rate} Hz differs from the front end's {config.sample_rate} Hz")


def log_mel(audio: np.ndarray | torch.Tensor, config: FrontendConfig,
            device: str | torch.device | None = None) -> torch.Tensor:
    """Functional form of :class:`LogMel`: numpy or torch audio in, ``(batch, n_mels, frames)`` tensor out.

    Args:
        audio: ``(batch, samples)`` or ``(samples,)`` waveform(s) at ``config.sample_rate``.
        config: front end settings (``get_preset(name).frontend``).
        device: where to compute; ``None`` keeps a tensor's own device (numpy input: CPU).

    Returns:
        float32 tensor in [0, 1] on ``device`` (float64 input stays float64).
    """
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind not in "fiu":
            raise PartsimError(f"front end expects numeric audio, got dtype {audio.dtype}")
        array = audio if audio.dtype in (np.float32, np.float64) else audio.astype(np.float32)
        # Read-only arrays (the stem cache's memmaps) are copied: torch.from_numpy warns on them.
        array = np.ascontiguousarray(array) if array.flags.writeable else np.array(array, order="C")
        tensor = torch.from_numpy(array)
    elif torch.is_tensor(audio):
        tensor = audio
    else:
        raise PartsimError(f"front end expects a numpy array or torch tensor, got {type(audio).__name__}")
    if device is not None:
        tensor = tensor.to(device)
    return LogMel(config)(tensor)
