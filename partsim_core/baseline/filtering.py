"""Chapter 3's test-set filter, as thesis 3.3.1 ("Testing Conditions") words it.

"For testing, we used the test set of the Slakh-redux subset, excluding tracks whose number of segments (after
removing silent sections) was in the lowest 10 %, leaving 136 tracks." The score of a track is therefore the
number of its non-overlapping 3-s segments that are not silent; which signal is segmented is not said, and we
read "tracks whose number of segments" as the *track* itself, i.e. its mix (a segment is silent when its mean
power is below the silence threshold, the rule of training). The ``floor(10 %)`` tracks with the fewest
non-silent segments are removed (ties: lower track id first): 151 -> 136 on Slakh2100 redux.

Chapter 4 (thesis 4.4.1) words another rule (remove the tracks with the shortest non-silent *part*), which
:func:`~partsim_core.data.segments.filter_test_tracks` implements and :func:`~partsim_core.data.dataset.load_dataset`
applies; chapter 3 replaces the handle's test set with :func:`chapter3_dataset`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from partsim_core.data.cache import MIX_PART, StemCache
from partsim_core.data.dataset import TEST_FILTER_FRACTION, DatasetHandle
from partsim_core.data.segments import (
    SILENCE_THRESHOLD,
    non_silent_mask,
    segment_length,
    segment_starts,
)
from partsim_core.data.slakh import Track
from partsim_core.errors import PartsimError


def filter_by_segment_count(cache: StemCache, tracks: list[Track], fraction: float = TEST_FILTER_FRACTION,
                            seconds: float = 3.0, threshold: float = SILENCE_THRESHOLD,
                            progress: bool = False) -> tuple[list[Track], pd.DataFrame]:
    """Drop the ``floor(fraction * n)`` tracks whose mix has the fewest non-silent ``seconds``-long segments.

    Returns:
        The kept tracks (input order) and a table indexed by ``track_id`` with ``non_silent_segments``, ``kept``
        and ``drop_order`` (1 for the first track removed; NaN for kept tracks).

    Raises:
        PartsimError: ``fraction`` outside ``[0, 1)``.
    """
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction) or not 0 <= fraction < 1:
        raise PartsimError(f"fraction must be in [0, 1), got {fraction!r}")
    length = segment_length(cache.sample_rate, seconds)
    counts = {}
    for track in tqdm(tracks, desc="non-silent segments", unit="track", disable=not progress, leave=False):
        mix = cache.get(track, MIX_PART)
        starts = segment_starts(len(mix), cache.sample_rate, seconds, overlap=False)
        counts[track.track_id] = int(np.count_nonzero(non_silent_mask(mix, starts, length, threshold)))
    table = pd.DataFrame({"non_silent_segments": pd.Series(counts, dtype="int64")})
    table.index.name = "track_id"
    order = sorted(counts, key=lambda track_id: (counts[track_id], track_id))
    dropped = order[:math.floor(fraction * len(tracks))]
    table["kept"] = True
    table["drop_order"] = math.nan
    for rank, track_id in enumerate(dropped, start=1):
        table.at[track_id, "kept"] = False
        table.at[track_id, "drop_order"] = rank
    gone = set(dropped)
    return [track for track in tracks if track.track_id not in gone], table


def chapter3_dataset(data: DatasetHandle, progress: bool = False) -> DatasetHandle:
    """``data`` with chapter 3's test set: every test track of the split, filtered by
    :func:`filter_by_segment_count` (the training and validation tracks are unchanged)."""
    kept, table = filter_by_segment_count(data.cache, data.dataset.tracks("test"), seconds=data.preset.segment_seconds,
                                          threshold=data.preset.silence_threshold, progress=progress)
    return dataclasses.replace(data, test_tracks=kept, filter_table=table)
