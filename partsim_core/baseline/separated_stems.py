"""The separated-stem cache: a signal source serving what a separator estimates from each track's mix.

:class:`SeparatedSource` behaves like :class:`~partsim_core.data.cache.StemCache` (``.sample_rate``,
``.get(track, part)``), so the triplet sampler, the embedding path and the metrics read separated stems exactly as
they read ideal ones. Each track is separated once; its five outputs are one artefact of
:func:`~partsim_core.data.artefacts.cached_artefact` (kind ``separated``), keyed by the separator's key (for the
U-Net: its training run's key, which includes the fingerprint of its training audio), the sample rate and the
fingerprint of the track's own audio, and verified against its BLAKE2b manifest before reuse.

:func:`style_mix_source` gives the stems of a U-Net trained on *another rendering*: a generated dataset of another
style mix (:data:`partsim_core.data.compose.STYLE_MIXES`), separating the tracks of the dataset in use.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.baseline.separators import OracleSeparator, Separator, get_separator
from partsim_core.data.artefacts import cached_artefact
from partsim_core.data.cache import MIX_PART, StemCache, file_identity, stable_hash
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.slakh import Track, open_slakh
from partsim_core.data.synth import (
    default_dataset_root,
    synthesize_dataset,
    with_overrides,
)
from partsim_core.errors import PartsimError

#: Bump when the layout or content of cached separated stems changes; part of every artefact's config.
SEPARATED_CACHE_FORMAT_VERSION = 2

#: Artefact kind (folder under the cache root) of separated stems.
SEPARATED_KIND = "separated"

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def track_fingerprint(track: Track) -> str:
    """Identity of one track's audio files, by the rule of
    :meth:`~partsim_core.data.dataset.DatasetHandle.fingerprint` (ids and files' path, size, mtime)."""
    return stable_hash([(track.track_id, [file_identity(path) for path in track.audio_files()])])


class SeparatedSource:
    """A signal source over separated stems, for the samplers and the evaluation (like a :class:`StemCache`).

    ``get(track, part)`` separates the track's whole mix on first use (the separator chunks long tracks itself)
    and caches the five outputs as ``.npy`` in one verified artefact folder; later calls, also from other
    processes, memory-map them. ``get(track, "mix")`` returns the mix itself. With an :class:`OracleSeparator`
    every part comes straight from ``cache`` (nothing separated or copied).

    Args:
        separator: Any :class:`~partsim_core.baseline.separators.Separator`.
        cache: Stem cache giving the mixes (and the oracle's parts); fixes :attr:`sample_rate`.
        key: Name of the outputs in the cache; default ``separator.key``.
    """

    def __init__(self, separator: Separator, cache: StemCache, key: str | None = None) -> None:
        key = key if key is not None else getattr(separator, "key", None)
        if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key):
            raise PartsimError(f"separator key must be letters, digits, '.', '_' or '-', got {key!r}")
        self.separator = separator
        self.cache = cache
        self.key = key
        self.sample_rate = cache.sample_rate
        self._folders: dict[str, Path] = {}

    @property
    def is_oracle(self) -> bool:
        """True when the "separated" stems are the ideal ones."""
        return isinstance(self.separator, OracleSeparator)

    def _config(self, track: Track) -> dict:
        return {"separator": self.key, "track": track.track_id, "sample_rate": self.sample_rate,
                "format": SEPARATED_CACHE_FORMAT_VERSION}

    def folder(self, track: Track) -> Path:
        """The verified folder of ``track``'s separated parts (separating the track first when needed)."""
        folder = self._folders.get(track.track_id)
        if folder is None:
            folder = cached_artefact(SEPARATED_KIND, self._config(track), track_fingerprint(track),
                                     lambda tmp: self._separate(track, tmp))
            self._folders[track.track_id] = folder
        return folder

    def get(self, track: Track, part: str) -> np.ndarray:
        """Separated ``part`` of ``track`` (read-only float32 memmap), or the mix for ``part == "mix"``.

        Raises:
            PartsimError: unknown part, or a separator output that is not five finite signals of the mix's length.
        """
        if part == MIX_PART:
            return self.cache.get(track, MIX_PART)
        if part not in INSTRUMENTS:
            raise PartsimError(f"unknown part {part!r}; expected one of {', '.join((*INSTRUMENTS, MIX_PART))}")
        if self.is_oracle:
            return self.cache.get(track, part)
        return np.load(self.folder(track) / f"{part}.npy", mmap_mode="r", allow_pickle=False)

    def separate_tracks(self, tracks: Sequence[Track], progress: bool = True) -> None:
        """Separate (or verify the cached separation of) every track, with a progress bar."""
        if self.is_oracle:
            return
        for track in tqdm(tracks, desc=f"separating ({self.separator.name})", disable=not progress, leave=False):
            self.folder(track)

    def _separate(self, track: Track, folder: Path) -> None:
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
        for part, audio in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, audio, allow_pickle=False)
            (folder / f"{part}.npy").write_bytes(buffer.getvalue())


def separated_source(data: DatasetHandle, backend: str = "unet", device: str = "auto",
                     **options: Any) -> SeparatedSource:
    """The stems ``backend`` estimates for every track of ``data``, as a signal source (separated on first use,
    then cached).

    With ``backend="unet"`` our separator is trained on the train split first when it is not cached; options
    ``epochs`` (an earlier, weaker U-Net: the separator-quality curve) and ``seed`` pick another checkpoint, e.g.
    ``separated_source(data, "unet", epochs=1)`` for chapter 4's crossover on part-level measures. The source's
    ``key`` (the separator's) names its cached outputs and enters the artefact key of every network trained on it.

    Raises:
        PartsimError: see :func:`~partsim_core.baseline.separators.get_separator`.
    """
    return SeparatedSource(get_separator(backend, data, device=device, **options), data.cache)


#: Dataset seed of the style-mix renderings (not the presets' 0, so that their songs differ too).
STYLE_MIX_DATASET_SEED = 1


def style_mix_dataset(data: DatasetHandle, style_mix: str, progress: bool = False) -> DatasetHandle:
    """The preset's generated dataset rendered with another style mix, as a handle for training a separator.

    Generated on first use (``cache_root()/datasets/mini-slakh-<preset>-<style mix>``; train and validation splits
    of the preset's sizes, no test split: nothing is evaluated on it), with dataset seed
    :data:`STYLE_MIX_DATASET_SEED` and the SoundFont of ``$PARTSIM_SOUNDFONT`` (else pretty_midi's TimGM6mb).
    Its stem cache works at ``data``'s sample rate.

    Raises:
        PartsimError: an unknown style mix, or an unusable SoundFont.
    """
    preset = data.preset
    config = with_overrides(preset.synth, n_test=0)
    root = synthesize_dataset(default_dataset_root(preset.name, style_mix), preset.name, seed=STYLE_MIX_DATASET_SEED,
                              progress=progress, config=config, style_mix=style_mix)
    dataset = open_slakh(root)
    cache = StemCache(dataset, sample_rate=data.cache.sample_rate)
    return DatasetHandle(preset=preset, root=Path(root), dataset=dataset, cache=cache,
                         train_tracks=dataset.tracks("train"), validation_tracks=dataset.tracks("validation"),
                         test_tracks=[], filter_table=pd.DataFrame())


def style_mix_source(data: DatasetHandle, style_mix: str = "shifted", device: str = "auto", seed: int = 0,
                     progress: bool = False) -> SeparatedSource:
    """``data``'s tracks separated by a U-Net trained on another rendering: :func:`style_mix_dataset`'s train
    split (the preset's separator settings; trained on first use, then cached like every separator run).

    The separator's key (its training run's, which includes the fingerprint of the style-mix audio) names the
    cached outputs, so they never mix with the chapter separator's.

    Raises:
        PartsimError: see :func:`style_mix_dataset` and :func:`~partsim_core.baseline.separators.get_separator`.
    """
    rendering = style_mix_dataset(data, style_mix, progress=progress)
    separator = get_separator("unet", rendering, device=device, seed=seed, progress=progress)
    return SeparatedSource(separator, data.cache)
