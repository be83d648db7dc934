"""The one embedding path: segments -> waveform batches -> log-mel -> model -> small float32 embeddings.

Segments are read from the (memory-mapped) stem cache one batch at a time, embedded and dropped, so peak memory is
set by ``batch_size``, not by the number or length of the tracks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from partsim_core.data.segments import SegmentIndex, SignalSource, gather
from partsim_core.data.slakh import Track
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.presets import FrontendConfig


@torch.no_grad()
def embed(
    model: torch.nn.Module,
    source: SignalSource,
    tracks_by_id: Mapping[str, Track],
    index: SegmentIndex,
    frontend: FrontendConfig,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Embeddings of every segment of ``index`` (in ``index.refs()`` order): waveform -> log-mel -> ``model``.

    Args:
        model: maps log-mel batches (batch, n_mels, frames) to (batch, dim) embeddings; put in eval mode here.
        source: where the audio comes from (a ``StemCache`` or a ``SeparatedSource``).
        tracks_by_id: the tracks of ``index`` by id.
        index: the segments to embed.
        frontend: log-mel settings (the preset's).
        batch_size: segments per forward pass.
        device: torch device (``"auto"`` = CUDA when visible).
        progress: show a progress bar.

    Returns:
        float32 array (n_segments, dim).
    """
    chunks = []
    with _inference(model, frontend, batch_size, device) as (target, front):
        refs = index.refs()
        for start in tqdm(range(0, len(refs), batch_size), desc="embedding segments", unit="batch",
                          disable=not progress):
            waves = gather(source, tracks_by_id, index, refs[start:start + batch_size]).to(target)
            chunks.append(model(front(waves)).float().cpu().numpy())
    if not chunks:
        return _no_embeddings(model)
    return np.concatenate(chunks).astype(np.float32, copy=False)


@torch.no_grad()
def embed_bounds(
    model: torch.nn.Module,
    audio: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    frontend: FrontendConfig,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Embeddings of segments of one waveform given as sample bounds (the generic variant of :func:`embed` for
    segments of unequal length, e.g. MixQuery's shorter last segment): segments of equal length are batched
    together, waveform -> log-mel -> ``model``; audio past the end of ``audio`` is zero-padded.

    Returns:
        float32 array ``(len(bounds), dim)`` in the order of ``bounds``.
    """
    out: np.ndarray | None = None
    with _inference(model, frontend, batch_size, device) as (target, front):
        by_length: dict[int, list[int]] = {}
        for number, (start, end) in enumerate(bounds):
            by_length.setdefault(int(end) - int(start), []).append(number)
        for length, numbers in by_length.items():
            for first in range(0, len(numbers), batch_size):
                chosen = numbers[first:first + batch_size]
                batch = np.zeros((len(chosen), length), dtype=np.float32)
                for row, number in enumerate(chosen):
                    start = int(bounds[number][0])
                    excerpt = np.asarray(audio[start:start + length], dtype=np.float32)
                    batch[row, :excerpt.shape[0]] = excerpt
                vectors = model(front(torch.from_numpy(batch).to(target))).float().cpu().numpy()
                if out is None:
                    out = np.zeros((len(bounds), vectors.shape[1]), dtype=np.float32)
                out[chosen] = vectors
    if out is None:
        return _no_embeddings(model)
    return out


@contextlib.contextmanager
def _inference(model: torch.nn.Module, frontend: FrontendConfig, batch_size: int,
               device: str | torch.device) -> Iterator[tuple[torch.device, LogMel]]:
    """Check ``batch_size``, put ``model`` in eval mode on ``device`` and yield ``(device, log-mel front end)``;
    the model's training mode is restored afterwards."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PartsimError(f"batch_size must be a positive integer, got {batch_size!r}")
    target = resolve_device(device)
    was_training = model.training
    model.eval()
    model.to(target)
    front = LogMel(frontend).to(target)
    try:
        yield target, front
    finally:
        model.train(was_training)


def _no_embeddings(model: torch.nn.Module) -> np.ndarray:
    """The ``(0, dim)`` result of embedding no segment."""
    return np.zeros((0, int(getattr(model, "embedding_dim", 0))), dtype=np.float32)
