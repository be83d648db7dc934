"""The one data handle every chapter receives: preset and data root resolved once, at the entry point.

:func:`resolve_dataset_root` turns a (preset, data root) pair into the Slakh-format folder to read (generating the
preset's embedded mini-Slakh when no root is given); :func:`load_dataset` opens it into a :class:`DatasetHandle`
holding the splits, the stem cache at the preset's sample rate and the filtered test set. Chapters never look up
their data themselves: the CLI or the notebook builds the handle and hands it down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from partsim_core.data.cache import StemCache, file_identity, stable_hash
from partsim_core.data.segments import filter_test_tracks
from partsim_core.data.slakh import SlakhDataset, Track, open_slakh
from partsim_core.data.synth import default_dataset_root, synthesize_dataset
from partsim_core.errors import PartsimError
from partsim_core.presets import Preset, get_preset

#: Test share removed by the thesis's filter (4.4.1: 151 -> 136 tracks).
TEST_FILTER_FRACTION = 0.1


def resolve_dataset_root(preset: str, data_root: str | os.PathLike = "", progress: bool = False) -> Path:
    """The Slakh-format folder a chapter reads: ``data_root``, or the preset's embedded dataset.

    With ``data_root == ""`` the embedded mini-Slakh dataset of ``preset`` is generated when absent (this returns
    at once when it is already there, as after ``partsim book build``'s data step).

    Raises:
        PartsimError: unknown preset, or a ``data_root`` that is not a folder.
    """
    get_preset(preset)  # validates the name
    if str(data_root):
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise PartsimError(f"data root {str(root)!r} is not a folder (expected a Slakh2100-format dataset)")
        return root.resolve()
    return Path(synthesize_dataset(default_dataset_root(preset), preset, progress=progress))


@dataclass
class DatasetHandle:
    """A preset's dataset: splits, the stem cache and the filtered test set."""

    preset: Preset
    root: Path
    dataset: SlakhDataset
    cache: StemCache
    train_tracks: list[Track]
    validation_tracks: list[Track]
    #: Test tracks kept by the 10 % filter.
    test_tracks: list[Track]
    #: :func:`~partsim_core.data.segments.filter_test_tracks`'s table (every test track, ``kept`` column).
    filter_table: pd.DataFrame

    @property
    def tracks_by_id(self) -> dict[str, Track]:
        """Every train, validation and kept test track by id."""
        return {track.track_id: track
                for track in (*self.train_tracks, *self.validation_tracks, *self.test_tracks)}

    def fingerprint(self, tracks: list[Track]) -> str:
        """Identity of ``tracks`` (ids and audio files' path, size, mtime) for artefact keys: regenerated data
        gives new keys, so a network is never reused on other audio."""
        return stable_hash([(track.track_id, [file_identity(path) for path in track.audio_files()])
                            for track in tracks])


def load_dataset(preset: str, data_root: str | os.PathLike = "", progress: bool = False) -> DatasetHandle:
    """Open a preset's dataset and apply the test-set filter.

    Args:
        preset: ``smoke``, ``default`` or ``paper``.
        data_root: a Slakh-format folder, or ``""`` for the preset's embedded dataset (generated when absent).
        progress: progress bars for the data step and the filter.

    Raises:
        PartsimError: unknown preset, a data root that is not a Slakh-format folder, or one without train tracks or
            test tracks (the message names the root and the split counts).
    """
    settings = get_preset(preset)
    root = resolve_dataset_root(preset, data_root, progress=progress)
    dataset = open_slakh(root)
    counts = dataset.split_counts()
    for split in ("train", "test"):
        if not counts.get(split):
            found = ", ".join(f"{name} {count}" for name, count in counts.items())
            raise PartsimError(f"data root {root} has no {split!r} tracks (found: {found}); the chapters need "
                               "train and test splits (validation is optional)")
    train_tracks = dataset.tracks("train")
    n_train = settings.part_network.n_train_tracks
    if n_train is not None:
        train_tracks = train_tracks[:n_train]
    cache = StemCache(dataset, sample_rate=settings.frontend.sample_rate)
    test_tracks, filter_table = filter_test_tracks(cache, dataset.tracks("test"), fraction=TEST_FILTER_FRACTION,
                                                   seconds=settings.segment_seconds,
                                                   threshold=settings.silence_threshold, progress=progress)
    return DatasetHandle(preset=settings, root=Path(root), dataset=dataset, cache=cache, train_tracks=train_tracks,
                         validation_tracks=dataset.tracks("validation"), test_tracks=test_tracks,
                         filter_table=filter_table)
