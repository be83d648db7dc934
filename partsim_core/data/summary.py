"""What the Data chapter shows about a dataset: splits, stems, non-silent time per part, the test filter, tempo
classes, an excerpt through the front end, and the generated dataset's style ground truth.

Each function takes the :class:`~partsim_core.data.dataset.DatasetHandle` (or what it holds) and returns a table;
the notebook only calls and shows. The test filter is not run again here: the handle holds the one the chapters
use (:attr:`DatasetHandle.filter_table`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from partsim_core.data.cache import StemCache
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.segments import non_silent_seconds, tempo_classes, track_tempo
from partsim_core.data.slakh import GROUPS, Track
from partsim_core.errors import PartsimError
from partsim_core.frontend import log_mel

#: The splits in reading order.
SPLITS: tuple[str, ...] = ("train", "validation", "test")


def present_splits(handle: DatasetHandle) -> list[str]:
    """The splits that hold tracks (the redux release omits duplicates; a small dataset may lack validation)."""
    return [split for split in SPLITS if handle.dataset.tracks(split)]


def all_tracks(handle: DatasetHandle) -> list[Track]:
    """Every track of every split (not cut to the preset's training-track count, not filtered)."""
    return [track for split in present_splits(handle) for track in handle.dataset.tracks(split)]


def split_table(handle: DatasetHandle) -> pd.DataFrame:
    """Tracks, minutes of audio and tracks containing each part, per split, plus a ``total`` row.

    A track contains a part when at least one of its stems with audio belongs to that part's group.
    """
    rows = []
    for split in present_splits(handle):
        tracks = handle.dataset.tracks(split)
        minutes = sum(len(handle.cache.get(track, "mix")) for track in tracks) / handle.cache.sample_rate / 60
        row: dict[str, Any] = {"split": split, "tracks": len(tracks), "minutes of audio": minutes}
        for part in GROUPS:
            row[f"with {part}"] = sum(part in track.stems_by_group() for track in tracks)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("split")
    table.loc["total"] = table.sum()
    return table.astype({column: int for column in table.columns if column != "minutes of audio"})


def stem_counts(handle: DatasetHandle) -> pd.DataFrame:
    """Stems with audio per split (rows) and part (columns)."""
    records = [{"split": track.split, "part": stem.group}
               for track in all_tracks(handle) for stem in track.stems if stem.audio_path is not None]
    if not records:
        raise PartsimError(f"{handle.root.name}: no stem has audio")
    table = pd.DataFrame(records).value_counts().unstack(fill_value=0)
    return table.reindex(index=present_splits(handle), columns=[part for part in GROUPS if part in table.columns],
                         fill_value=0)


def part_durations(handle: DatasetHandle) -> pd.DataFrame:
    """One row per (track, part it has): ``split, track, part, non-silent seconds, track seconds, share playing``.

    Non-silent time follows the thesis's silence rule (3.3.1) on non-overlapping segments of the preset's length.
    """
    settings = handle.preset
    rate = handle.cache.sample_rate
    rows = []
    for track in all_tracks(handle):
        present = track.stems_by_group()
        for part in GROUPS:
            if part in present:
                audio = handle.cache.get(track, part)
                rows.append({"split": track.split, "track": track.track_id, "part": part,
                             "non-silent seconds": non_silent_seconds(audio, rate, settings.segment_seconds,
                                                                      settings.silence_threshold),
                             "track seconds": len(audio) / rate})
    table = pd.DataFrame(rows, columns=["split", "track", "part", "non-silent seconds", "track seconds"])
    table["share playing"] = table["non-silent seconds"] / table["track seconds"]
    return table


def non_silent_minutes(durations: pd.DataFrame, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """Non-silent minutes per split (rows) and part (columns) from :func:`part_durations`."""
    table = durations.pivot_table(index="split", columns="part", values="non-silent seconds", aggfunc="sum") / 60
    return table.reindex(index=[split for split in splits if split in table.index],
                         columns=[part for part in GROUPS if part in table.columns])


def filtered_test_counts(handle: DatasetHandle) -> dict[str, int]:
    """Test tracks before and after the chapters' 10 % filter, and how many it removed."""
    before = len(handle.filter_table)
    kept = int(handle.filter_table["kept"].sum()) if before else 0
    return {"before": before, "kept": kept, "removed": before - kept}


def tempo_table(tracks: Sequence[Track]) -> pd.DataFrame:
    """Tempo (BPM) and tempo class (thesis 4.4.1: equal-population classes over the training tracks), by track,
    slowest first."""
    tempos = {track.track_id: track_tempo(track) for track in tracks}
    classes = tempo_classes(tempos)
    table = pd.DataFrame({"tempo (BPM)": tempos, "tempo class": classes}).sort_values("tempo (BPM)")
    table.index.name = "track"
    return table


def excerpt_log_mel(cache: StemCache, track: Track, frontend: Any, seconds: float = 8.0,
                    parts: Sequence[str] = ("mix", *GROUPS)) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel spectrograms of the first ``seconds`` of ``parts`` of ``track`` (a missing part is silence).

    Returns:
        ``(spectrograms, times)``: array ``(len(parts), n_mels, frames)`` and the frame times in seconds.
    """
    audio = cache.get_all(track)
    n_samples = min(len(audio["mix"]), int(seconds * cache.sample_rate))
    batch = np.stack([np.asarray(audio[name][:n_samples], dtype=np.float32) for name in parts])
    spectrograms = log_mel(batch, frontend).numpy()
    times = np.arange(spectrograms.shape[-1]) * frontend.hop_length / frontend.sample_rate
    return spectrograms, times


def listening_clips(cache: StemCache, tracks: Sequence[Track], parts: Sequence[str] = ("mix", *GROUPS)
                    ) -> dict[str, dict[str, np.ndarray | None]]:
    """``part -> track id -> waveform`` (``None`` where the track lacks the part), for an audio table."""
    return {part: {track.track_id: cache.get(track, part) if part == "mix" or part in track.stems_by_group()
                   else None for track in tracks} for part in parts}


def style_tables(ground_truth: Mapping[str, Any] | None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The generated dataset's style ground truth: per track (split, tempo, key, the style of each part, ``-``
    where absent) and per style (tracks per part). ``None`` for a dataset without ground truth (real Slakh2100)."""
    if ground_truth is None:
        return None
    songs = ground_truth.get("tracks", {})
    rows = []
    for track_id, song in sorted(songs.items()):
        row = {"track": track_id, "split": song.get("split"), "tempo": song.get("tempo"),
               "key": f"{song.get('key', '')} {song.get('mode', '')}".strip()}
        for part in GROUPS:
            row[part] = song.get("parts", {}).get(part, {}).get("style", "-")
        rows.append(row)
    per_track = pd.DataFrame(rows).set_index("track")
    styles = [{"style": info.get("style"), "part": part}
              for song in songs.values() for part, info in song.get("parts", {}).items()]
    per_style = pd.DataFrame(styles, columns=["style", "part"]).value_counts().unstack(fill_value=0)
    per_style = per_style.reindex(columns=[part for part in GROUPS if part in per_style.columns])
    return per_track, per_style.rename_axis(columns="tracks per style")


def data_results(handle: DatasetHandle) -> dict[str, Any]:
    """The Data chapter's numbers as JSON: tracks per split, the test filter, the analysis rate."""
    return {"chapter": "data", "preset": handle.preset.name,
            "tracks": {split: len(handle.dataset.tracks(split)) for split in present_splits(handle)},
            "test_filter": filtered_test_counts(handle), "sample_rate": handle.cache.sample_rate}
