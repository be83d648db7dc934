"""The thesis's MixQuery embedding (6.3.3): frozen MERT layer features and a per-stem head trained without labels.

* **Features.** Each 10-s segment of a stem is resampled to MERT's rate and passed through the frozen model; every
  transformer layer's hidden states are averaged over time, giving ``(layers, hidden)`` per segment (25 x 1024 for
  MERT-v1-330M). :func:`layer_features` computes them with any :class:`LayerFeatureModel`: :func:`load_mert` wraps
  a local MERT folder (``transformers``, ``local_files_only``: nothing is ever downloaded); the tests use a tiny
  random stand-in.
* **Head.** One 1-D convolution with kernel size 1 per stem type (:class:`MertHead`): the ``layers`` feature
  vectors are the input channels and the output is one ``hidden``-wide embedding - a learned weighting of the
  layers plus a bias.
* **Training** (:func:`train_mert_head`) needs no labels: an anchor segment, a positive from *another time of the
  same song* and a negative from *another song*, triplet loss on the cosine distance (margin
  :data:`HEAD_MARGIN`), Adam with learning rate 5e-4, 100 epochs (thesis 6.3.3; the triplet method of chapter 3).
  The thesis trained on its 3,108 target songs; :func:`partsim_core.cli.mixquery` trains on the MERT features of a
  split of the dataset (``train`` by default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from partsim_core.data.artefacts import cached_artefact, file_checksum
from partsim_core.data.cache import file_identity, stable_hash
from partsim_core.data.slakh import resample
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError
from partsim_core.mixquery.catalog import non_silent_segments, segment_bounds

#: The thesis's optimiser settings (6.3.3).
HEAD_LEARNING_RATE = 5e-4
HEAD_EPOCHS = 100

#: Triplet margin on the cosine distance (the thesis does not state it; chapter 3's triplet loss uses a margin).
HEAD_MARGIN = 0.2

#: Triplets drawn per anchor segment and epoch.
TRIPLETS_PER_SEGMENT = 1

#: File names of a trained head folder.
HEAD_WEIGHTS, HEAD_INFO = "heads.pt", "heads.json"

MERT_HINT = (
    "MERT needs the transformers package (pip install transformers) and a local MERT model folder passed as "
    "--mert-model DIR (e.g. a copy of m-a-p/MERT-v1-95M or MERT-v1-330M with config.json, the weights and "
    "preprocessor_config.json); models are never downloaded here")


class LayerFeatureModel(Protocol):
    """A frozen model giving per-layer, time-averaged features of waveforms at its own rate."""

    sample_rate: int
    n_layers: int
    dim: int
    #: Identity of the weights (enters cache keys).
    identity: str

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        """float32 ``(batch, n_layers, dim)`` for mono waveforms at :attr:`sample_rate`."""


class TransformersMert:
    """A local MERT folder behind :class:`LayerFeatureModel` (hidden states of every layer, mean over time)."""

    def __init__(self, folder: Path, device: str = "auto") -> None:
        from transformers import AutoModel, Wav2Vec2FeatureExtractor

        self.device = resolve_device(device)
        self.processor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), trust_remote_code=True,
                                                                  local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), trust_remote_code=True,
                                               local_files_only=True).eval().to(self.device)
        self.sample_rate = int(self.processor.sampling_rate)
        self.n_layers = int(self.model.config.num_hidden_layers) + 1
        self.dim = int(self.model.config.hidden_size)
        files = [file_identity(path) for path in sorted(folder.rglob("*")) if path.is_file()]
        self.identity = f"mert-{stable_hash(files, length=12)}"

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        inputs = self.processor(waves, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states
        # (layers, batch, time, hidden) -> mean over time -> (batch, layers, hidden)
        return torch.stack(hidden).mean(dim=2).transpose(0, 1).float().cpu().numpy()


def check_mert(mert_model: str | os.PathLike | None) -> Path:
    """The MERT model folder, after checking that ``transformers`` is importable and the folder looks like a model.

    Raises:
        PartsimError: no ``transformers``, no folder given, or a folder without ``config.json``.
    """
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise PartsimError(f"transformers is not installed: {MERT_HINT}")
    if not mert_model:
        raise PartsimError(f"no MERT model folder given: {MERT_HINT}")
    folder = Path(mert_model).expanduser()
    if not (folder / "config.json").is_file():
        raise PartsimError(f"{folder.name}: not a MERT model folder (no config.json); {MERT_HINT}")
    return folder


def load_mert(mert_model: str | os.PathLike | None, device: str = "auto") -> LayerFeatureModel:
    """A local MERT folder as a :class:`LayerFeatureModel` (checked by :func:`check_mert` first)."""
    return TransformersMert(check_mert(mert_model), device)


def layer_features(model: LayerFeatureModel, audio: np.ndarray, sample_rate: int,
                   bounds: Sequence[tuple[int, int]], batch_size: int = 4) -> np.ndarray:
    """MERT features ``(len(bounds), n_layers, dim)`` of segments of one waveform at ``sample_rate`` (each segment
    resampled to the model's rate; audio past the end zero-padded)."""
    out = np.zeros((len(bounds), model.n_layers, model.dim), dtype=np.float32)
    for first in range(0, len(bounds), batch_size):
        waves = []
        for start, end in bounds[first:first + batch_size]:
            excerpt = np.zeros(int(end) - int(start), dtype=np.float32)
            piece = np.asarray(audio[int(start):int(end)], dtype=np.float32)
            excerpt[:piece.shape[0]] = piece
            waves.append(resample(excerpt, sample_rate, model.sample_rate))
        out[first:first + len(waves)] = model(waves)
    return out


class MertHead(nn.Module):
    """The thesis's per-stem head: a 1-D convolution with kernel size 1 over the MERT layers.

    Input ``(batch, n_layers, dim)`` (layers as channels), output ``(batch, dim)``.
    """

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.n_layers = int(n_layers)
        self.conv = nn.Conv1d(self.n_layers, 1, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features).squeeze(1)


def cosine_triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                        margin: float = HEAD_MARGIN) -> torch.Tensor:
    """``mean(max(0, d(a, p) - d(a, n) + margin))`` with the cosine distance ``d = 1 - cos``."""
    positive_distance = 1.0 - nn.functional.cosine_similarity(anchor, positive, dim=1)
    negative_distance = 1.0 - nn.functional.cosine_similarity(anchor, negative, dim=1)
    return torch.clamp(positive_distance - negative_distance + margin, min=0.0).mean()


def same_song_triplets(songs: Sequence[str], rng: np.random.Generator, per_segment: int = TRIPLETS_PER_SEGMENT
                       ) -> np.ndarray:
    """Rows ``(anchor, positive, negative)``: positive = another segment of the anchor's song, negative = a segment
    of another song. Anchors are every segment whose song has at least two segments.

    Raises:
        PartsimError: fewer than two songs, or no song with two segments.
    """
    songs = np.asarray(songs)
    unique = np.unique(songs)
    if unique.size < 2:
        raise PartsimError(f"same-song triplets need segments of at least two songs, got {unique.size}")
    rows_of = {song: np.flatnonzero(songs == song) for song in unique}
    anchors = np.array([row for song, rows in rows_of.items() if rows.size >= 2 for row in rows], dtype=np.int64)
    if anchors.size == 0:
        raise PartsimError("same-song triplets need a song with at least two segments (positives come from "
                           "another time of the same song)")
    anchors = np.repeat(anchors, per_segment)
    triplets = np.empty((anchors.size, 3), dtype=np.int64)
    for number, anchor in enumerate(anchors):
        own = rows_of[songs[anchor]]
        positive = own[own != anchor][int(rng.integers(own.size - 1))]
        negative = int(rng.integers(songs.size - own.size))
        others = np.flatnonzero(songs != songs[anchor])
        triplets[number] = (anchor, positive, others[negative])
    return triplets


@dataclass
class HeadTraining:
    """A trained head and its per-epoch mean training loss."""

    head: MertHead
    losses: list[float]


def train_mert_head(features: np.ndarray, songs: Sequence[str], epochs: int = HEAD_EPOCHS,
                    learning_rate: float = HEAD_LEARNING_RATE, batch_size: int = 64, seed: int = 0,
                    device: str = "auto", progress: bool = False) -> HeadTraining:
    """Train one stem type's :class:`MertHead` on same-song triplets (module docstring).

    Args:
        features: ``(segments, n_layers, dim)`` MERT features of one stem type.
        songs: The song of every segment (positives: same song, another segment; negatives: another song).
        epochs: Passes over the anchors (thesis: 100).
        learning_rate: Adam's (thesis: 5e-4).
        batch_size: Triplets per step.
        seed: Seeds the initialisation and the triplets.
        device: Torch device.
        progress: Progress bar over epochs.

    Raises:
        PartsimError: mismatched inputs or too few songs (see :func:`same_song_triplets`).
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3 or features.shape[0] != len(songs):
        raise PartsimError(f"MERT features {features.shape} do not match {len(songs)} song labels; expected "
                           "(segments, layers, dim)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")
    target = resolve_device(device)
    torch.manual_seed(seed)
    head = MertHead(features.shape[1]).to(target)
    optimiser = torch.optim.Adam(head.parameters(), lr=learning_rate)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 61]))
    table = torch.from_numpy(features).to(target)
    losses = []
    for _ in tqdm(range(epochs), desc="MixQuery head", unit="epoch", disable=not progress):
        triplets = same_song_triplets(songs, rng)
        triplets = triplets[rng.permutation(len(triplets))]
        total, count = 0.0, 0
        for first in range(0, len(triplets), batch_size):
            batch = torch.from_numpy(triplets[first:first + batch_size]).to(target)
            anchor, positive, negative = (head(table[batch[:, column]]) for column in range(3))
            loss = cosine_triplet_loss(anchor, positive, negative)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        losses.append(total / count)
    return HeadTraining(head.eval().cpu(), losses)


def save_heads(folder: str | os.PathLike, heads: dict[str, MertHead], info: dict[str, Any]) -> None:
    """Write the heads (one per stem type) and ``info`` (training settings, losses) into ``folder``."""
    folder = Path(folder)
    torch.save({part: head.state_dict() for part, head in heads.items()}, folder / HEAD_WEIGHTS)
    layers = {part: head.n_layers for part, head in heads.items()}
    (folder / HEAD_INFO).write_text(json.dumps({**info, "layers": layers}, indent=1, sort_keys=True) + "\n",
                                    encoding="utf-8")


def load_heads(folder: str | os.PathLike) -> dict[str, MertHead]:
    """The heads written by :func:`save_heads`.

    Raises:
        PartsimError: not a head folder, or unreadable files.
    """
    folder = Path(folder).expanduser()
    try:
        info = json.loads((folder / HEAD_INFO).read_text(encoding="utf-8"))
        states = torch.load(folder / HEAD_WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PartsimError(f"{folder.name}: not a MixQuery head folder (no {HEAD_INFO} / {HEAD_WEIGHTS}); train "
                           "one with 'partsim train mixquery-head'") from None
    except (OSError, ValueError, RuntimeError) as error:
        raise PartsimError(f"{folder.name}: unreadable MixQuery heads ({error})") from None
    heads = {}
    for part, state in states.items():
        head = MertHead(int(info["layers"][part]))
        head.load_state_dict(state)
        heads[part] = head.eval()
    return heads


def heads_identity(folder: str | os.PathLike | None) -> str | None:
    """Checksum of a head folder's weights (``None`` without heads): enters the MERT backend's model hash."""
    if not folder:
        return None
    path = Path(folder).expanduser() / HEAD_WEIGHTS
    if not path.is_file():
        raise PartsimError(f"{Path(folder).name}: not a MixQuery head folder (no {HEAD_WEIGHTS}); train one with "
                           "'partsim train mixquery-head'")
    return file_checksum(path)


def embed_with_heads(features: np.ndarray, head: MertHead | None) -> np.ndarray:
    """``(segments, dim)`` embeddings of MERT features: the trained head, or (no head) the mean over layers."""
    if head is None:
        return np.asarray(features, dtype=np.float32).mean(axis=1)
    with torch.no_grad():
        return head(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()



def split_features(model: LayerFeatureModel, source: Any, tracks: Sequence[Any], parts: Sequence[str],
                   fingerprint: str, input_kind: str, segment_seconds: float = 10.0, min_seconds: float = 1.0,
                   fresh: bool = False, progress: bool = False) -> dict[str, tuple[np.ndarray, list[str]]]:
    """MERT features of every non-silent 10-s segment of every part of ``tracks`` (cached artefact).

    Args:
        model: The frozen feature model (its ``identity`` enters the cache key).
        source: Signal source of the parts (:class:`~partsim_core.data.cache.StemCache` for ``ideal``, a
            separated source for ``separated``).
        tracks: The songs.
        parts: Stem types.
        fingerprint: Identity of the tracks' audio (:meth:`~partsim_core.data.dataset.DatasetHandle.fingerprint`).
        input_kind: ``ideal`` or ``separated`` (enters the key).
        segment_seconds: Segment length (thesis: 10 s).
        min_seconds: Shortest (last) segment used.
        fresh: Recompute even when cached.
        progress: Progress bar over tracks.

    Returns:
        ``{part: (features (segments, layers, dim), song id of every segment)}``.
    """
    config = {"model": getattr(model, "identity", type(model).__name__), "input": input_kind,
              "parts": list(parts), "segment_seconds": float(segment_seconds), "min_seconds": float(min_seconds),
              "sample_rate": int(source.sample_rate), "tracks": [track.track_id for track in tracks]}

    def compute(folder: Path) -> None:
        collected: dict[str, tuple[list[np.ndarray], list[str]]] = {part: ([], []) for part in parts}
        for track in tqdm(tracks, desc="MERT features", unit="song", disable=not progress):
            for part in parts:
                if part not in track.stems_by_group():
                    continue
                audio = source.get(track, part)
                bounds = segment_bounds(len(audio), source.sample_rate, segment_seconds, min_seconds)
                kept = [bounds[number] for number in non_silent_segments(audio, bounds)]
                if kept:
                    collected[part][0].append(layer_features(model, audio, source.sample_rate, kept))
                    collected[part][1].extend([track.track_id] * len(kept))
        for part, (blocks, songs) in collected.items():
            features = np.concatenate(blocks) if blocks else np.zeros((0, model.n_layers, model.dim), np.float32)
            np.savez(folder / f"{part}.npz", features=features, songs=np.asarray(songs, dtype=str))

    folder = cached_artefact("mixquery-mert-features", config, fingerprint, compute, fresh=fresh)
    out = {}
    for part in parts:
        with np.load(folder / f"{part}.npz", allow_pickle=False) as stored:
            out[part] = (stored["features"], [str(song) for song in stored["songs"]])
    return out
