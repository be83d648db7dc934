"""The MixQuery catalog (thesis 6.2.1, 6.3.1): songs of a Slakh-format folder cut into 10-s segments.

A catalog is one split (``test`` by default, or ``all``) of a Slakh-format root, read with
:func:`~partsim_core.data.slakh.open_slakh`; a song is a track, its id the track id. Audio comes from the
:class:`~partsim_core.data.cache.StemCache` at the backend's sample rate (decoded once, memory-mapped): the mix,
or a part = the sum of that part's stems.

Segmentation (6.2.1: "a 10-second portion obtained by sequentially dividing the song from its beginning"):
segments start at 0, 10, 20, ... s; the remainder after the last full segment becomes a shorter last segment when it
is at least the backend's minimum length (otherwise it is dropped), and a song shorter than 10 s gives one such
segment or, when even that is too short, is skipped with a warning listing it. A catalog without any usable song is
an error. The full segments are :mod:`partsim_core.data.segments`' grid (:func:`~partsim_core.data.segments.segment_starts`
without overlap) and a segment is silent by its one rule (mean power below
:data:`~partsim_core.data.segments.SILENCE_THRESHOLD`, thesis 3.3.1).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART, StemCache, cache_root, file_identity, stable_hash
from partsim_core.data.segments import SILENCE_THRESHOLD, non_silent_mask, segment_length, segment_starts
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError

if TYPE_CHECKING:
    from partsim_core.data.dataset import DatasetHandle
    from partsim_core.data.slakh import SlakhDataset, Track

#: Segment length of MixQuery (thesis 6.2.1).
SEGMENT_SECONDS = 10.0

#: ``--split`` values: one split of the root, or every track in it.
CATALOG_SPLITS: tuple[str, ...] = ("test", "validation", "train", "omitted", "all")

#: Songs listed by name in the short-song warning before "... and N more".
WARN_LIST_LIMIT = 20


@dataclass(frozen=True)
class CatalogSong:
    """One song of the catalog and its segments.

    Attributes:
        song_id: The track id (``Track01876``).
        samples: Length in samples at the catalog's rate.
        segments: ``(start, end)`` sample bounds of every segment, in time order.
        stem_parts: Parts the song has stems of (in :data:`~partsim_core.INSTRUMENTS` order).
    """

    song_id: str
    samples: int
    segments: tuple[tuple[int, int], ...]
    stem_parts: tuple[str, ...]


def segment_bounds(samples: int, sample_rate: int, segment_seconds: float = SEGMENT_SECONDS,
                   min_seconds: float = 0.0) -> list[tuple[int, int]]:
    """``(start, end)`` sample bounds of the segments of a song of ``samples`` samples (see the module docstring):
    the data grid's full segments, then the rest when it is at least ``min_seconds`` long.

    Raises:
        PartsimError: a segment shorter than one sample.
    """
    length = segment_length(sample_rate, segment_seconds)
    starts = segment_starts(int(samples), sample_rate, segment_seconds, overlap=False)
    bounds = [(int(start), int(start) + length) for start in starts]
    # ceil with a little tolerance: 0.1 s x 30 Hz is 3 samples, not 4.
    minimum = max(1, math.ceil(min_seconds * sample_rate - 1e-9))
    rest_start = len(bounds) * length
    if samples - rest_start >= minimum:
        bounds.append((rest_start, int(samples)))
    return bounds


def non_silent_segments(audio: np.ndarray, bounds: list[tuple[int, int]],
                        threshold: float = SILENCE_THRESHOLD) -> list[int]:
    """Numbers of the segments of ``bounds`` that are not silent by the data rule
    (:func:`~partsim_core.data.segments.non_silent_mask`: mean power at least ``threshold``); audio missing past
    the decoded end counts as zeros."""
    audio = np.asarray(audio)
    kept = []
    for number, (start, end) in enumerate(bounds):
        excerpt = audio[start:end]
        if excerpt.shape[0] < end - start:
            excerpt = np.pad(excerpt, (0, end - start - excerpt.shape[0]))
        if non_silent_mask(excerpt, np.zeros(1, dtype=np.int64), end - start, threshold)[0]:
            kept.append(number)
    return kept


class Catalog:
    """A split of a Slakh-format root served as MixQuery songs at one sample rate.

    Args:
        root: The Slakh-format folder.
        split: One of :data:`CATALOG_SPLITS` (``all`` = every track of the root).
        sample_rate: Rate of all audio served (the backend's front-end rate).
        segment_seconds: Segment length (thesis: 10 s).
        dataset: An already opened dataset of ``root`` (saves re-reading the metadata).

    Raises:
        PartsimError: a missing or non-Slakh root, an unknown split, or a split without tracks (the message names
            the root and the tracks per split).
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", sample_rate: int = 22050,
                 segment_seconds: float = SEGMENT_SECONDS, dataset: SlakhDataset | None = None) -> None:
        if split not in CATALOG_SPLITS:
            raise PartsimError(f"unknown catalog split {split!r}; choose one of: {', '.join(CATALOG_SPLITS)}")
        self.root = Path(root).expanduser().resolve()
        self.split = split
        self.segment_seconds = float(segment_seconds)
        self.dataset = dataset if dataset is not None else open_slakh(self.root)
        self.tracks: list[Track] = self.dataset.tracks(None if split == "all" else split)
        if not self.tracks:
            counts = ", ".join(f"{name} {count}" for name, count in self.dataset.split_counts().items())
            raise PartsimError(f"catalog {self.root.name} has no tracks in split {split!r} (found: {counts}); pass "
                               "--split all or another split")
        self.cache: StemCache = StemCache(self.dataset, sample_rate)
        self.sample_rate = self.cache.sample_rate
        self._by_id = {track.track_id: track for track in self.tracks}

    def track(self, song_id: str) -> Track:
        """The track of a song id.

        Raises:
            PartsimError: not a song of this catalog.
        """
        try:
            return self._by_id[song_id]
        except KeyError:
            raise PartsimError(f"unknown song {song_id!r}: not in the catalog {self.root} (split "
                               f"{self.split!r})") from None

    def fingerprint(self) -> str:
        """Identity of the catalog's tracks (ids and every audio file's path, size, mtime), as in
        :meth:`partsim_core.data.dataset.DatasetHandle.fingerprint`: any change of the audio changes it."""
        return stable_hash([(track.track_id, [file_identity(path) for path in track.audio_files()])
                            for track in self.tracks])

    def plan(self, min_seconds: float) -> tuple[list[CatalogSong], list[dict]]:
        """Segments of every song (lengths from file headers, no decoding) and the songs too short to index.

        Args:
            min_seconds: The backend's minimum segment length.

        Returns:
            ``(songs, skipped)``: usable songs in catalog order; ``{"song", "seconds", "reason"}`` per skipped one.
            A warning lists the skipped songs.
        """
        songs: list[CatalogSong] = []
        skipped: list[dict] = []
        for track in self.tracks:
            samples = int(self.cache.track_length(track))
            bounds = segment_bounds(samples, self.sample_rate, self.segment_seconds, min_seconds)
            if not bounds:
                skipped.append({"song": track.track_id, "seconds": round(samples / self.sample_rate, 3),
                                "reason": f"shorter than the backend's minimum segment of {min_seconds:g} s"})
                continue
            stem_parts = tuple(part for part in INSTRUMENTS if part in track.stems_by_group())
            songs.append(CatalogSong(track.track_id, samples, tuple(bounds), stem_parts))
        if skipped:
            names = [entry["song"] for entry in skipped]
            listed = ", ".join(names[:WARN_LIST_LIMIT])
            more = f" ... and {len(names) - WARN_LIST_LIMIT} more" if len(names) > WARN_LIST_LIMIT else ""
            warnings.warn(f"MixQuery catalog {self.root.name}: skipped {len(names)} song(s) shorter than "
                          f"{min_seconds:g} s: {listed}{more}", stacklevel=2)
        return songs, skipped

    def audio(self, song_id: str, part: str) -> np.ndarray:
        """Mono float32 audio (read-only memmap) of a song's part (sum of its stems; zeros when it has none) or of
        its mix (``part="mix"``), at :attr:`sample_rate`.

        Raises:
            PartsimError: unknown song or part.
        """
        if part not in (*INSTRUMENTS, MIX_PART):
            raise PartsimError(f"unknown part {part!r}; the catalog serves {', '.join((*INSTRUMENTS, MIX_PART))}")
        return self.cache.get(self.track(song_id), part)


def display_location(path: str | os.PathLike) -> str:
    """A folder as a page may print it: ``<cache>/...`` relative to the cache root when inside it, else its name
    (never an absolute path of the machine)."""
    path = Path(path).expanduser().resolve()
    try:
        return str(Path("<cache>") / path.relative_to(cache_root().resolve()))
    except ValueError:
        return path.name


def default_catalog_root(data: DatasetHandle) -> Path:
    """The default catalog of ``partsim mixquery index``: the dataset the entry point resolved (its test split)."""
    return Path(data.root)
