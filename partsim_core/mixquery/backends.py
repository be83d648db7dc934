"""Embedding backends of MixQuery: one vector per (segment, part) of a catalog song (thesis 6.3.3).

The thesis embeds each separated stem with frozen MERT features and a small per-stem network. This project offers
four backends behind one interface (:class:`EmbeddingBackend`) and one registry (:func:`get_backend`):

1. ``csn`` (default): the chapter-4 conditional similarity network, condition (i) of Table 4.2, straight from the
   10-s mix (no separation): log-mel of the mix -> ``(5 x D)`` -> five ``D``-wide subspaces in
   :data:`~partsim_core.INSTRUMENTS` order. Trained (or reused) with
   :func:`partsim_core.csn.conditions.train_condition`; its model hash is the artefact folder's name (run + config
   key), so a retrained model gives a new hash.
2. ``separated``: the chapter-3 pipeline: our U-Net separates the whole song
   (:class:`~partsim_core.baseline.separation.SeparatedSource`, cached), and each part's per-part network
   (:func:`partsim_core.baseline.train_part_network` with ``separated`` input) embeds that part's 10-s segments.
3. ``mert``: MERT hidden states (averaged over time and layers) of each separated stem, resampled to the model's
   rate - only when ``transformers`` is importable *and* a local MERT model folder is given; nothing is ever
   downloaded. Without the thesis's trained per-stem 1-D convolutions (we have no training labels for them).
4. ``track``: not a part-level backend but the track-level peer of the evaluation
   (:mod:`partsim_core.mixquery.evaluation`): chapter 3's network on the mix ("track-mix", the baseline row of
   Table 3.2, :func:`partsim_core.baseline.train_part_network` with part ``mix``), one vector per 10-s segment in a
   single part named ``mix``. Stem queries of an index of it use part ``mix`` (the query song's whole mix at that
   segment); several are averaged (eq. 6.1), so a query set of two songs ranks songs by the cosine distance of
   their best segment to the mean of the two query segments' vectors.

Every backend returns raw vectors ``(n_segments, n_parts, dim)``; the index L2-normalises each part (a zero vector
stays zero, at cosine distance 1 to everything) and zeroes the parts a song has no stem of. Our part-level backends
give the five instrument parts (no vocals: Slakh has none); ``track`` gives the one part ``mix``. Tests build a
backend from an in-memory model (``CSNBackend(model, frontend, model_hash)``) instead of going through the registry.

Used by: :func:`partsim_core.mixquery.index.build_index` and ``partsim mixquery index``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART, file_identity, stable_hash
from partsim_core.errors import PartsimError
from partsim_core.presets import FrontendConfig, get_preset

if TYPE_CHECKING:
    from partsim_core.mixquery.catalog import Catalog, CatalogSong

#: Backend names of :func:`get_backend`, default first.
BACKENDS: tuple[str, ...] = ("csn", "separated", "mert", "track")

#: Shortest segment (s) a backend embeds; shorter songs are skipped (a time-averaged embedding of less than a
#: second says little about a part).
DEFAULT_MIN_SECONDS = 1.0

#: Table 4.2 row of the CSN used by MixQuery: everything on (norm loss, pseudo pieces, additional triplets,
#: pre-training), the thesis's best condition.
CSN_CONDITION = "i"

MERT_HINT = (
    "backend 'mert' needs the transformers package (pip install transformers) and a local MERT model folder "
    "passed as --mert-model DIR (e.g. a copy of m-a-p/MERT-v1-95M or MERT-v1-330M with config.json, the weights "
    "and preprocessor_config.json); models are never downloaded here. Or use the default backend 'csn'")


@runtime_checkable
class EmbeddingBackend(Protocol):
    """What :func:`~partsim_core.mixquery.index.build_index` needs from a backend.

    Attributes:
        name: Registry name (``csn``, ``separated``, ``mert``); stored in the index.
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


def _segments(audio: np.ndarray, bounds: tuple[tuple[int, int], ...], batch_size: int,
              ) -> Iterator[tuple[list[int], np.ndarray]]:
    """Batches ``(segment numbers, float32 (batch, samples))`` of equal-length segments (the last one may be
    shorter than the others, so it goes alone); audio past the decoded end is zero-padded."""
    by_length: dict[int, list[int]] = {}
    for number, (start, end) in enumerate(bounds):
        by_length.setdefault(end - start, []).append(number)
    for length, numbers in by_length.items():
        for first in range(0, len(numbers), batch_size):
            chosen = numbers[first:first + batch_size]
            batch = np.zeros((len(chosen), length), dtype=np.float32)
            for row, number in enumerate(chosen):
                start = bounds[number][0]
                excerpt = np.asarray(audio[start:start + length], dtype=np.float32)
                batch[row, :excerpt.shape[0]] = excerpt
            yield chosen, batch


def _min_seconds(frontend: FrontendConfig, min_seconds: float) -> float:
    # The log-mel front end needs more than n_fft / 2 samples (reflect padding).
    return max(float(min_seconds), (frontend.n_fft // 2 + 1) / frontend.sample_rate)


def _device(device: str) -> Any:
    from partsim_core.device import resolve_device

    return resolve_device(device)


# --------------------------------------------------------------------------------------------------------------
# csn
# --------------------------------------------------------------------------------------------------------------


class CSNBackend:
    """Chapter-4 CSN embeddings of the mix: five subspaces per 10-s segment (no separation).

    Args:
        model: A :class:`~partsim_core.csn.conditions.CSNModel` (or a bare :class:`~partsim_core.models.CSNEncoder`)
            with five subspaces.
        frontend: Log-mel settings the model was trained with (its sample rate is the catalog's).
        model_hash: Identity of the weights (the training artefact's folder name).
        preset: Preset name, recorded in the index.
        device: Torch device for embedding (``auto`` = CUDA when visible).
        batch_size: Segments per forward pass.
        min_seconds: Shortest segment embedded.

    Raises:
        PartsimError: a model whose number of subspaces is not five.

    Used by: :func:`get_backend` (``csn``) and the tests (tiny untrained models).
    """

    name = "csn"

    def __init__(self, model: Any, frontend: FrontendConfig, model_hash: str, preset: str = "",
                 device: str = "cpu", batch_size: int = 8, min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        from partsim_core.frontend import LogMel

        encoder = getattr(model, "encoder", model)
        n_parts, dim = getattr(encoder, "n_parts", None), getattr(encoder, "subspace_dim", None)
        if n_parts != len(INSTRUMENTS) or not dim:
            raise PartsimError(f"the CSN backend needs a model with {len(INSTRUMENTS)} subspaces "
                               f"({', '.join(INSTRUMENTS)}), got n_parts={n_parts}")
        self.device = _device(device)
        self.model = model.eval().to(self.device)
        self.frontend = frontend
        self.log_mel = LogMel(frontend)
        self.model_hash = str(model_hash)
        self.preset = preset
        self.parts = INSTRUMENTS
        self.sample_rate = frontend.sample_rate
        self.dim = int(dim)
        self.batch_size = batch_size
        self.min_seconds = _min_seconds(frontend, min_seconds)

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Subspace vectors ``(segments, 5, D)`` of the song's mix, raw (not normalised)."""
        import torch

        mix = catalog.audio(song.song_id, MIX_PART)
        out = np.zeros((len(song.segments), len(self.parts), self.dim), dtype=np.float32)
        with torch.no_grad():
            for numbers, batch in _segments(mix, song.segments, self.batch_size):
                mel = self.log_mel(torch.from_numpy(batch).to(self.device))
                vectors = self.model(mel).float().cpu().numpy()
                out[numbers] = vectors.reshape(len(numbers), len(self.parts), self.dim)
        return out


# --------------------------------------------------------------------------------------------------------------
# separated
# --------------------------------------------------------------------------------------------------------------


class SeparatedBackend:
    """Chapter-3 per-part networks on the stems our separator estimates from each catalog song's mix.

    Args:
        networks: One :class:`~partsim_core.models.PartCNN` per part in ``INSTRUMENTS`` (trained on separated input).
        separator: The :class:`~partsim_core.baseline.separation.Separator` whose outputs the networks were trained on.
        frontend: Log-mel settings of the networks.
        model_hash: Identity of separator + networks.
        preset: Preset name.
        device: Torch device for embedding.
        batch_size: Segments per forward pass.
        min_seconds: Shortest segment embedded.

    Used by: :func:`get_backend` (``separated``).
    """

    name = "separated"

    def __init__(self, networks: dict[str, Any], separator: Any, frontend: FrontendConfig, model_hash: str,
                 preset: str = "", device: str = "cpu", batch_size: int = 8,
                 min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        from partsim_core.frontend import LogMel

        missing = [part for part in INSTRUMENTS if part not in networks]
        if missing:
            raise PartsimError(f"the separated backend needs a network for every part; missing: {', '.join(missing)}")
        dims = {int(getattr(net, "embedding_dim", 0)) for net in networks.values()}
        if len(dims) != 1 or 0 in dims:
            raise PartsimError(f"the part networks disagree on their embedding size: {sorted(dims)}")
        self.device = _device(device)
        self.networks = {part: networks[part].eval().to(self.device) for part in INSTRUMENTS}
        self.separator = separator
        self.frontend = frontend
        self.log_mel = LogMel(frontend)
        self.model_hash = str(model_hash)
        self.preset = preset
        self.parts = INSTRUMENTS
        self.sample_rate = frontend.sample_rate
        self.dim = dims.pop()
        self.batch_size = batch_size
        self.min_seconds = _min_seconds(frontend, min_seconds)
        self._sources: dict[int, Any] = {}

    def source(self, catalog: Catalog) -> Any:
        """The catalog's separated stems (separated on first use, cached under ``cache_root()/separated``)."""
        from partsim_core.baseline.separated_stems import SeparatedSource

        key = id(catalog.cache)
        if key not in self._sources:
            self._sources[key] = SeparatedSource(self.separator, catalog.cache)
        return self._sources[key]

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Per-part network vectors ``(segments, 5, D)`` of the song's separated stems."""
        import torch

        source = self.source(catalog)
        track = catalog.track(song.song_id)
        out = np.zeros((len(song.segments), len(self.parts), self.dim), dtype=np.float32)
        with torch.no_grad():
            for column, part in enumerate(self.parts):
                audio = source.get(track, part)
                for numbers, batch in _segments(audio, song.segments, self.batch_size):
                    mel = self.log_mel(torch.from_numpy(batch).to(self.device))
                    out[numbers, column] = self.networks[part](mel).float().cpu().numpy()
        return out


# --------------------------------------------------------------------------------------------------------------
# mert (optional)
# --------------------------------------------------------------------------------------------------------------


class MertBackend:
    """MERT features of each separated stem: hidden states averaged over time and over all layers.

    UNTESTED: no MERT model (and no ``transformers``) is available where this project is tested, so this path has
    never run; only its refusal without ``transformers`` / a model folder is tested. It loads with
    ``local_files_only=True`` (MERT's own model code from the folder, ``trust_remote_code=True``) and never
    downloads. The thesis trains a per-stem 1-D convolution on top of the 25 layer averages; we average the layers.

    Args:
        model_dir: Local MERT model folder.
        separator: Separator giving the stems (our U-Net).
        frontend: The preset's front end (its rate is the catalog's; segments are resampled to MERT's rate).
        model_hash: Identity of model folder + separator.
        preset: Preset name.
        device: Torch device.
        batch_size: Segments per forward pass.

    Used by: :func:`get_backend` (``mert``).
    """

    name = "mert"

    def __init__(self, model_dir: Path, separator: Any, frontend: FrontendConfig, model_hash: str, preset: str = "",
                 device: str = "cpu", batch_size: int = 4) -> None:
        from transformers import AutoModel, Wav2Vec2FeatureExtractor

        self.device = _device(device)
        self.processor = Wav2Vec2FeatureExtractor.from_pretrained(str(model_dir), trust_remote_code=True,
                                                                  local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), trust_remote_code=True,
                                               local_files_only=True).eval().to(self.device)
        self.model_rate = int(self.processor.sampling_rate)
        self.separator = separator
        self.model_hash = str(model_hash)
        self.preset = preset
        self.parts = INSTRUMENTS
        self.sample_rate = frontend.sample_rate
        self.dim = int(self.model.config.hidden_size)
        self.batch_size = batch_size
        self.min_seconds = DEFAULT_MIN_SECONDS
        self._sources: dict[int, Any] = {}

    source = SeparatedBackend.source

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """MERT vectors ``(segments, 5, hidden size)`` of the song's separated stems."""
        import torch

        from partsim_core.data.slakh import resample

        source = self.source(catalog)
        track = catalog.track(song.song_id)
        out = np.zeros((len(song.segments), len(self.parts), self.dim), dtype=np.float32)
        with torch.no_grad():
            for column, part in enumerate(self.parts):
                audio = source.get(track, part)
                for numbers, batch in _segments(audio, song.segments, self.batch_size):
                    waves = [resample(wave, self.sample_rate, self.model_rate) for wave in batch]
                    inputs = self.processor(waves, sampling_rate=self.model_rate, return_tensors="pt")
                    inputs = {name: value.to(self.device) for name, value in inputs.items()}
                    hidden = self.model(**inputs, output_hidden_states=True).hidden_states
                    # (layers, batch, time, hidden) -> mean over time, then over layers.
                    out[numbers, column] = torch.stack(hidden).mean(dim=2).mean(dim=0).float().cpu().numpy()
        return out


# --------------------------------------------------------------------------------------------------------------
# track (the track-level peer of the evaluation)
# --------------------------------------------------------------------------------------------------------------


class TrackLevelBackend:
    """Chapter 3's track-level network ("track-mix": a :class:`~partsim_core.models.PartCNN` trained on the mix):
    one vector per 10-s segment, in one part named ``mix``.

    Not part-level at all: it is the peer the MixQuery evaluation compares the part-level backends with (the
    thesis's track-level baseline, Table 3.2 "music track"). Stem queries of its index name part ``mix``.

    Args:
        model: The mix network (any module mapping log-mels ``(B, n_mels, frames)`` to ``(B, D)``).
        frontend: Log-mel settings the network was trained with.
        model_hash: Identity of the weights.
        preset: Preset name.
        device: Torch device for embedding.
        batch_size: Segments per forward pass.
        min_seconds: Shortest segment embedded.

    Raises:
        PartsimError: a model without a positive ``embedding_dim``.

    Used by: :func:`get_backend` (``track``) and :func:`partsim_core.mixquery.evaluation.run_evaluation`.
    """

    name = "track"

    def __init__(self, model: Any, frontend: FrontendConfig, model_hash: str, preset: str = "",
                 device: str = "cpu", batch_size: int = 8, min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        from partsim_core.frontend import LogMel

        dim = int(getattr(model, "embedding_dim", 0) or 0)
        if dim < 1:
            raise PartsimError(f"the track-level backend needs a network with an embedding_dim, got "
                               f"{type(model).__name__}")
        self.device = _device(device)
        self.model = model.eval().to(self.device)
        self.frontend = frontend
        self.log_mel = LogMel(frontend)
        self.model_hash = str(model_hash)
        self.preset = preset
        self.parts = (MIX_PART,)
        self.sample_rate = frontend.sample_rate
        self.dim = dim
        self.batch_size = batch_size
        self.min_seconds = _min_seconds(frontend, min_seconds)

    def embed_song(self, catalog: Catalog, song: CatalogSong) -> np.ndarray:
        """Mix-network vectors ``(segments, 1, D)`` of the song's mix."""
        import torch

        mix = catalog.audio(song.song_id, MIX_PART)
        out = np.zeros((len(song.segments), 1, self.dim), dtype=np.float32)
        with torch.no_grad():
            for numbers, batch in _segments(mix, song.segments, self.batch_size):
                mel = self.log_mel(torch.from_numpy(batch).to(self.device))
                out[numbers, 0] = self.model(mel).float().cpu().numpy()
        return out


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------


def get_backend(name: str, preset: str, *, data_root: str | os.PathLike = "", device: str = "auto",
                progress: bool = True, seed: int = 0, mert_model: str | os.PathLike | None = None,
                batch_size: int = 8) -> EmbeddingBackend:
    """The embedding backend ``name`` of ``preset``, training (or reusing from the cache) what it needs.

    * ``csn``: condition (i) of Table 4.2 via :func:`~partsim_core.csn.conditions.train_condition` (which trains the
      chapter-3 ideal networks and the pre-training first when they are not cached).
    * ``separated``: our U-Net (:func:`~partsim_core.baseline.separated_source`) and the five chapter-3 networks
      on separated input (:func:`~partsim_core.baseline.train_part_network`).
    * ``mert``: a local MERT folder (``mert_model``) + our U-Net's stems; needs ``transformers``.
    * ``track``: chapter 3's track-level network on the mix (:func:`~partsim_core.baseline.train_part_network`
      with part ``mix``, ideal input), one part ``mix`` (the evaluation's track-level peer).

    Args:
        name: One of :data:`BACKENDS`.
        preset: ``smoke``, ``default`` or ``paper`` (model sizes, front end, sample rate).
        data_root: Dataset the models are trained on (``""`` = the preset's embedded dataset); not the catalog.
        device: Torch device for training and embedding.
        progress: Progress bars while training.
        seed: Seed of the training runs.
        mert_model: Local MERT model folder (``mert`` only).
        batch_size: Segments per forward pass when embedding.

    Raises:
        PartsimError: unknown backend or preset; for ``mert`` without ``transformers`` or without a model folder,
            a message saying how to provide them.

    Used by: ``partsim mixquery index`` and :func:`partsim_core.mixquery.evaluation.run_evaluation`.
    """
    if name not in BACKENDS:
        raise PartsimError(f"unknown MixQuery backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    settings = get_preset(preset)
    if name == "mert":
        return _mert_backend(preset, data_root, device, progress, seed, mert_model, batch_size)
    if name == "csn":
        from partsim_core.csn.conditions import train_condition

        result = train_condition(CSN_CONDITION, preset, data_root=data_root, device=device, progress=progress,
                                 seed=seed)
        return CSNBackend(result.model, settings.frontend, result.out_dir.name, preset=preset, device=device,
                          batch_size=batch_size)
    from partsim_core.baseline.networks import train_part_network
    from partsim_core.baseline.separated_stems import separated_source
    from partsim_core.data.dataset import load_dataset

    data = load_dataset(preset, data_root, progress=progress)
    if name == "track":
        result = train_part_network(data, MIX_PART, "ideal", device=device, progress=progress, seed=seed)
        return TrackLevelBackend(result.model, settings.frontend, result.out_dir.name, preset=preset, device=device,
                                 batch_size=batch_size)
    source = separated_source(data, "unet", device=device, progress=progress, seed=seed)
    networks, keys = {}, {}
    for part in INSTRUMENTS:
        result = train_part_network(data, part, "separated", source=source, device=device, progress=progress,
                                    seed=seed)
        networks[part], keys[part] = result.model, result.out_dir.name
    model_hash = stable_hash({"separator": source.key, "networks": keys}, length=12)
    return SeparatedBackend(networks, source.separator, settings.frontend, f"separated-{model_hash}", preset=preset,
                            device=device, batch_size=batch_size)


def check_mert(mert_model: str | os.PathLike | None) -> Path:
    """The MERT model folder, after checking that ``transformers`` is importable and the folder looks like a model.

    Raises:
        PartsimError: no ``transformers``, no folder given, or a folder without ``config.json`` (the message says
            how to provide them; nothing is downloaded).
    """
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise PartsimError(f"transformers is not installed: {MERT_HINT}")
    if not mert_model:
        raise PartsimError(f"no MERT model folder given: {MERT_HINT}")
    folder = Path(mert_model).expanduser()
    if not (folder / "config.json").is_file():
        raise PartsimError(f"{folder}: not a MERT model folder (no config.json); {MERT_HINT}")
    return folder


def _mert_backend(preset: str, data_root: str | os.PathLike, device: str, progress: bool, seed: int,
                  mert_model: str | os.PathLike | None, batch_size: int) -> EmbeddingBackend:
    """``mert``: refuse clearly unless transformers is importable and a local model folder is given."""
    folder = check_mert(mert_model)
    from partsim_core.baseline.separators import get_separator
    from partsim_core.data.dataset import load_dataset

    settings = get_preset(preset)
    separator = get_separator("unet", load_dataset(preset, data_root, progress=progress), device=device,
                              progress=progress, seed=seed)
    files = [file_identity(path) for path in sorted(folder.rglob("*")) if path.is_file()]
    model_hash = f"mert-{stable_hash({'model': files, 'separator': separator.key}, length=12)}"
    return MertBackend(folder, separator, settings.frontend, model_hash, preset=preset, device=device,
                       batch_size=max(1, batch_size // 2))
