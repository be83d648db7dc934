"""Embedding backends of MixQuery: one vector per (segment, part) of a catalog song (thesis 6.3.3).

The thesis embeds each separated stem with frozen MERT features and a small per-stem network. This project offers
four backends behind one interface (:class:`EmbeddingBackend`) and one registry (:func:`get_backend`):

1. ``csn`` (default): the chapter-4 conditional similarity network, condition (i) of Table 4.2, straight from the
   10-s mix (no separation): log-mel of the mix -> ``(5 x D)`` -> five ``D``-wide subspaces in
   :data:`~partsim_core.INSTRUMENTS` order. Trained (or reused) with
   :func:`partsim_core.csn.conditions.train_condition`; its model hash is the artefact folder's name.
2. ``separated``: the chapter-3 pipeline: our U-Net separates the whole song (cached), and each part's per-part
   network (:func:`partsim_core.baseline.networks.train_part_network` with ``separated`` input) embeds that part's
   10-s segments.
3. ``mert``: the thesis's embedding (:mod:`partsim_core.mixquery.mert`): frozen MERT layer features of each
   separated stem, through the per-stem heads trained by ``partsim train mixquery-head`` (without heads: the mean
   over layers, which is *not* the thesis's embedding). Only with ``transformers`` and a local MERT model folder;
   nothing is ever downloaded.
4. ``track``: not a part-level backend but the track-level peer of the evaluation: chapter 3's network on the mix
   ("track-mix", the baseline row of Table 3.2), one vector per 10-s segment in a single part named ``mix``.

Every backend returns raw vectors ``(n_segments, n_parts, dim)`` (norms kept: the CSN's norms carry whether a part
is present). The log-mel backends embed through the one embedding path (:func:`partsim_core.embed.embed_bounds`).
Tests build a backend from an in-memory model (``CSNBackend(model, frontend, model_hash)``) instead of going
through the registry.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.baseline.networks import train_part_network
from partsim_core.baseline.separated_stems import SeparatedSource, separated_source
from partsim_core.csn.conditions import train_condition
from partsim_core.data.cache import MIX_PART, stable_hash
from partsim_core.embed import embed_bounds
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.mixquery.mert import (
    LayerFeatureModel,
    MertHead,
    embed_with_heads,
    heads_identity,
    layer_features,
    load_heads,
    load_mert,
)
from partsim_core.presets import FrontendConfig

if TYPE_CHECKING:
    from partsim_core.data.dataset import DatasetHandle
    from partsim_core.mixquery.catalog import Catalog, CatalogSong

#: Backend names of :func:`get_backend`, default first.
BACKENDS: tuple[str, ...] = ("csn", "separated", "mert", "track")

#: Shortest segment (s) a backend embeds; shorter songs are skipped (a time-averaged embedding of less than a
#: second says little about a part).
DEFAULT_MIN_SECONDS = 1.0

#: Table 4.2 row of the CSN used by MixQuery: everything on (norm loss, pseudo pieces, additional triplets,
#: pre-training), the thesis's best condition.
CSN_CONDITION = "i"


@runtime_checkable
class EmbeddingBackend(Protocol):
    """What an index or the evaluation needs from a backend.

    Attributes:
        name: Registry name (``csn``, ``separated``, ``mert``, ``track``); stored in the index.
        model_hash: Identity of the model(s); an index built with another hash is refused as stale.
        preset: Preset the model belongs to (``""`` when none).
        parts: Parts embedded, in output order.
        sample_rate: Rate of the audio the backend reads (the catalog is served at it).
        dim: Size of one part's vector.
        min_seconds: Shortest segment it embeds.
    """

    name: str
    model_hash: str
    preset: str
    parts: tuple[str, ...]
    sample_rate: int
    dim: int
    min_seconds: float

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Raw vectors ``(len(song.segments), len(parts), dim)`` of every segment of ``song``."""


def song_embeddings(backend: EmbeddingBackend, catalog: Catalog, song: CatalogSong,
                    dtype: Any = None) -> np.ndarray:
    """``backend.embed_song(catalog, song)`` as an array (of ``dtype``, when given), checked.

    Raises:
        PartsimError: embeddings of another shape than ``(len(song.segments), len(backend.parts), backend.dim)``,
            or NaN/infinite ones; the message names the backend, the song and the catalog.
    """
    raw = np.asarray(backend.embed_song(catalog, song), dtype=dtype)
    expected = (len(song.segments), len(backend.parts), int(backend.dim))
    if raw.shape != expected:
        raise PartsimError(f"backend {backend.name!r} returned embeddings of shape {raw.shape} for song "
                           f"{song.song_id} ({catalog.root}); expected {expected}")
    if not np.all(np.isfinite(raw)):
        raise PartsimError(f"backend {backend.name!r} returned NaN or infinite embeddings for song "
                           f"{song.song_id} ({catalog.root})")
    return raw


def _min_seconds(frontend: FrontendConfig, min_seconds: float) -> float:
    # The log-mel front end needs more than n_fft / 2 samples (reflect padding).
    return max(float(min_seconds), (frontend.n_fft // 2 + 1) / frontend.sample_rate)


class _LogMelBackend:
    """Shared settings of the backends whose models read log-mels."""

    def __init__(self, frontend: FrontendConfig, model_hash: str, preset: str, device: str, batch_size: int,
                 min_seconds: float) -> None:
        self.frontend = frontend
        #: The log-mel front end the models read (what :func:`~partsim_core.embed.embed_bounds` applies).
        self.log_mel = LogMel(frontend)
        self.model_hash = str(model_hash)
        self.preset = preset
        self.device = device
        self.sample_rate = frontend.sample_rate
        self.batch_size = batch_size
        self.min_seconds = _min_seconds(frontend, min_seconds)

    def _embed(self, model: Any, audio: np.ndarray, song: CatalogSong) -> np.ndarray:
        return embed_bounds(model, audio, song.segments, self.frontend, self.batch_size, self.device)


class CSNBackend(_LogMelBackend):
    """Chapter-4 CSN embeddings of the mix: five subspaces per 10-s segment (no separation).

    Args:
        model: A :class:`~partsim_core.csn.network.CSNModel` (or a bare :class:`~partsim_core.models.CSNEncoder`)
            with five subspaces.
        frontend: Log-mel settings the model was trained with (its sample rate is the catalog's).
        model_hash: Identity of the weights (the training artefact's folder name).
        preset: Preset name, recorded in the index.
        device: Torch device for embedding (``auto`` = CUDA when visible).
        batch_size: Segments per forward pass.
        min_seconds: Shortest segment embedded.

    Raises:
        PartsimError: a model whose number of subspaces is not five.
    """

    name = "csn"

    def __init__(self, model: Any, frontend: FrontendConfig, model_hash: str, preset: str = "",
                 device: str = "cpu", batch_size: int = 8, min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        encoder = getattr(model, "encoder", model)
        n_parts, dim = getattr(encoder, "n_parts", None), getattr(encoder, "subspace_dim", None)
        if n_parts != len(INSTRUMENTS) or not dim:
            raise PartsimError(f"the CSN backend needs a model with {len(INSTRUMENTS)} subspaces "
                               f"({', '.join(INSTRUMENTS)}), got n_parts={n_parts}")
        super().__init__(frontend, model_hash, preset, device, batch_size, min_seconds)
        self.model = model.eval()
        self.parts = INSTRUMENTS
        self.dim = int(dim)

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Subspace vectors ``(segments, 5, D)`` of the song's mix, raw (not normalised)."""
        vectors = self._embed(self.model, catalog.audio(song.song_id, MIX_PART), song)
        return vectors.reshape(len(song.segments), len(self.parts), self.dim)


class SeparatedBackend(_LogMelBackend):
    """Chapter-3 per-part networks on the stems our separator estimates from each catalog song's mix.

    Args:
        networks: One :class:`~partsim_core.models.PartCNN` per part in ``INSTRUMENTS`` (trained on separated input).
        separator: The separator whose outputs the networks were trained on.
        frontend: Log-mel settings of the networks.
        model_hash: Identity of separator + networks.
        preset: Preset name.
        device: Torch device for embedding.
        batch_size: Segments per forward pass.
        min_seconds: Shortest segment embedded.
    """

    name = "separated"

    def __init__(self, networks: dict[str, Any], separator: Any, frontend: FrontendConfig, model_hash: str,
                 preset: str = "", device: str = "cpu", batch_size: int = 8,
                 min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        missing = [part for part in INSTRUMENTS if part not in networks]
        if missing:
            raise PartsimError(f"the separated backend needs a network for every part; missing: {', '.join(missing)}")
        dims = {int(getattr(net, "embedding_dim", 0)) for net in networks.values()}
        if len(dims) != 1 or 0 in dims:
            raise PartsimError(f"the part networks disagree on their embedding size: {sorted(dims)}")
        super().__init__(frontend, model_hash, preset, device, batch_size, min_seconds)
        self.networks = {part: networks[part].eval() for part in INSTRUMENTS}
        self.separator = separator
        self.parts = INSTRUMENTS
        self.dim = dims.pop()
        self._sources: dict[int, Any] = {}

    def source(self, catalog: Catalog) -> Any:
        """The catalog's separated stems (separated on first use, cached under ``cache_root()/separated``)."""
        return separated_stems(self.separator, catalog, self._sources)

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Per-part network vectors ``(segments, 5, D)`` of the song's separated stems."""
        source = self.source(catalog)
        track = catalog.track(song.song_id)
        out = np.zeros((len(song.segments), len(self.parts), self.dim), dtype=np.float32)
        for column, part in enumerate(self.parts):
            out[:, column] = self._embed(self.networks[part], source.get(track, part), song)
        return out


def separated_stems(separator: Any, catalog: Catalog, memo: dict[int, Any]) -> Any:
    """The separated source of a catalog's stem cache (one per catalog, kept in ``memo``)."""
    key = id(catalog.cache)
    if key not in memo:
        memo[key] = SeparatedSource(separator, catalog.cache)
    return memo[key]


class MertBackend:
    """The thesis's embedding: frozen MERT layer features of each separated stem through the per-stem heads.

    Args:
        features: The frozen MERT model (:func:`~partsim_core.mixquery.mert.load_mert`, or a stand-in).
        separator: Separator giving the stems (our U-Net).
        frontend: The preset's front end (its rate is the catalog's; segments are resampled to MERT's rate).
        model_hash: Identity of model folder, heads and separator.
        heads: Trained :class:`~partsim_core.mixquery.mert.MertHead` per part; a part without one gets the mean
            over layers (not the thesis's embedding).
        preset: Preset name.
        batch_size: Segments per forward pass.
    """

    name = "mert"

    def __init__(self, features: LayerFeatureModel, separator: Any, frontend: FrontendConfig, model_hash: str,
                 heads: dict[str, MertHead] | None = None, preset: str = "", batch_size: int = 4) -> None:
        self.features = features
        self.separator = separator
        self.heads = dict(heads or {})
        self.model_hash = str(model_hash)
        self.preset = preset
        self.parts = INSTRUMENTS
        self.sample_rate = frontend.sample_rate
        self.dim = int(features.dim)
        self.batch_size = batch_size
        self.min_seconds = DEFAULT_MIN_SECONDS
        self._sources: dict[int, Any] = {}

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Head embeddings ``(segments, 5, hidden size)`` of the song's separated stems."""
        source = separated_stems(self.separator, catalog, self._sources)
        track = catalog.track(song.song_id)
        out = np.zeros((len(song.segments), len(self.parts), self.dim), dtype=np.float32)
        for column, part in enumerate(self.parts):
            features = layer_features(self.features, source.get(track, part), self.sample_rate, song.segments,
                                      self.batch_size)
            out[:, column] = embed_with_heads(features, self.heads.get(part))
        return out


class TrackLevelBackend(_LogMelBackend):
    """Chapter 3's track-level network ("track-mix": a :class:`~partsim_core.models.PartCNN` trained on the mix):
    one vector per 10-s segment, in one part named ``mix``.

    Not part-level at all: it is the peer the MixQuery evaluation compares the part-level backends with (the
    thesis's track-level baseline, Table 3.2 "music track"). Stem queries of its index name part ``mix``.

    Raises:
        PartsimError: a model without a positive ``embedding_dim``.
    """

    name = "track"

    def __init__(self, model: Any, frontend: FrontendConfig, model_hash: str, preset: str = "",
                 device: str = "cpu", batch_size: int = 8, min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        dim = int(getattr(model, "embedding_dim", 0) or 0)
        if dim < 1:
            raise PartsimError(f"the track-level backend needs a network with an embedding_dim, got "
                               f"{type(model).__name__}")
        super().__init__(frontend, model_hash, preset, device, batch_size, min_seconds)
        self.model = model.eval()
        self.parts = (MIX_PART,)
        self.dim = dim

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Mix-network vectors ``(segments, 1, D)`` of the song's mix."""
        return self._embed(self.model, catalog.audio(song.song_id, MIX_PART), song)[:, None, :]


#: Seed of the one U-Net separator every seed's separated backend uses (chapter 4's condition (a) uses it too).
SEPARATOR_SEED = 0


def get_backend(name: str, data: DatasetHandle, *, device: str = "auto", progress: bool = True, seed: int = 0,
                mert_model: str | os.PathLike | None = None, mert_heads: str | os.PathLike | None = None,
                batch_size: int = 8, epochs: int | None = None, fresh: bool = False) -> EmbeddingBackend:
    """The embedding backend ``name`` trained on ``data`` (trained now, or reused from the cache).

    * ``csn``: condition (i) of Table 4.2 via :func:`~partsim_core.csn.conditions.train_condition`.
    * ``separated``: our U-Net and the five chapter-3 networks on separated input.
    * ``mert``: a local MERT folder (``mert_model``), the heads of ``partsim train mixquery-head``
      (``mert_heads``) and our U-Net's stems; needs ``transformers``.
    * ``track``: chapter 3's track-level network on the mix, one part ``mix``.

    Args:
        name: One of :data:`BACKENDS`.
        data: The dataset handle the entry point resolved (models are trained on it; it is not the catalog).
        device: Torch device for training and embedding.
        progress: Progress bars while training.
        seed: Seed of the training runs (networks and CSN). The U-Net separator is one model for every seed: its
            seed 0, as chapter 4's condition (a) uses (a separator per seed would train one more U-Net and five more
            networks per seed and vary what the seeds are meant to vary, the networks).
        mert_model: Local MERT model folder (``mert`` only).
        mert_heads: Folder of trained heads (``mert`` only).
        batch_size: Segments per forward pass when embedding.
        epochs: Training epochs of the models (``None``: the preset's).
        fresh: Retrain the models instead of reusing cached ones.

    Raises:
        PartsimError: unknown backend; for ``mert`` without ``transformers`` or without a model folder, a message
            saying how to provide them.
    """
    if name not in BACKENDS:
        raise PartsimError(f"unknown MixQuery backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name == "mert":
        features = load_mert(mert_model, device)  # refuses before any training when MERT is unavailable
    preset = data.preset.name
    frontend = data.preset.frontend
    if name == "mert":
        source = separated_source(data, "unet", device=device, progress=progress, seed=SEPARATOR_SEED)
        heads = load_heads(mert_heads) if mert_heads else {}
        model_hash = "mert-" + stable_hash({"model": features.identity, "separator": source.key,
                                            "heads": heads_identity(mert_heads)},
                                           length=12)
        return MertBackend(features, source.separator, frontend, model_hash, heads=heads, preset=preset,
                           batch_size=max(1, batch_size // 2))
    if name == "csn":
        result = train_condition(CSN_CONDITION, data, device=device, progress=progress, seed=seed, epochs=epochs,
                                 resume=not fresh)
        return CSNBackend(result.model, frontend, result.out_dir.name, preset=preset, device=device,
                          batch_size=batch_size)
    if name == "track":
        result = train_part_network(data, MIX_PART, "ideal", device=device, progress=progress, seed=seed,
                                    epochs=epochs, resume=not fresh)
        return TrackLevelBackend(result.model, frontend, result.out_dir.name, preset=preset, device=device,
                                 batch_size=batch_size)
    source = separated_source(data, "unet", device=device, progress=progress, seed=SEPARATOR_SEED)
    networks, keys = {}, {}
    for part in INSTRUMENTS:
        result = train_part_network(data, part, "separated", source=source, device=device, progress=progress,
                                    seed=seed, epochs=epochs, resume=not fresh)
        networks[part], keys[part] = result.model, result.out_dir.name
    model_hash = stable_hash({"separator": source.key, "networks": keys}, length=12)
    return SeparatedBackend(networks, source.separator, frontend, f"separated-{model_hash}", preset=preset,
                            device=device, batch_size=batch_size)
