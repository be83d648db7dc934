"""Ground truth of the MixQuery evaluation: which part of which source song sounds where.

The embedded generator records every part's source track and style (``partsim_ground_truth.json``, read by the one
reader :func:`partsim_core.data.synth.load_ground_truth_tracks`). Whether a part *sounds* in a 10-s segment is
decided from its audio by the data rule (mean power below 1e-4 is silent,
:func:`partsim_core.mixquery.catalog.non_silent_segments`); the generator's ``active`` spans are only used to tell
how much of a listened segment a part plays (the simulated listeners, :mod:`.simulated_listening`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from partsim_core.mixquery.catalog import SEGMENT_SECONDS, non_silent_segments, segment_bounds

#: Query segments must be at least this long (a short last segment is indexed but makes a poor query).
QUERY_MIN_SECONDS = 3.0


def overlap_seconds(part_truth: Mapping | None, start_s: float, end_s: float) -> float:
    """Seconds of ``[start_s, end_s]`` in which a part plays (its ``active`` spans; all of it without spans)."""
    if part_truth is None:
        return 0.0
    spans = part_truth.get("active")
    if spans is None:
        return max(0.0, end_s - start_s)
    return float(sum(max(0.0, min(end_s, b) - max(start_s, a)) for a, b in spans))


def audible(part_truth: Mapping | None, start_s: float, end_s: float) -> bool:
    """Whether a part plays for at least half of ``[start_s, end_s]`` (the rule of the simulated listeners)."""
    return end_s > start_s and overlap_seconds(part_truth, start_s, end_s) >= 0.5 * (end_s - start_s)


def query_segments(part_audio: np.ndarray, sample_rate: int, segment_seconds: float = SEGMENT_SECONDS,
                   min_seconds: float = QUERY_MIN_SECONDS) -> list[int]:
    """Segments of the catalog grid (10-s steps from 0, at least ``min_seconds`` long) in which a part is not
    silent by the data rule; ``[]`` when it is silent throughout (or the song has no segment that long).

    Args:
        part_audio: The part's mono waveform (the sum of its stems).
        sample_rate: Its rate.
        segment_seconds: Segment length (thesis 6.2.1: 10 s).
        min_seconds: Shortest usable query segment.
    """
    bounds = segment_bounds(len(part_audio), sample_rate, segment_seconds, min_seconds)
    return non_silent_segments(part_audio, bounds)
