"""Segments, the silence rule, the 10 % test-set filter and tempo classes.

* Segments: tracks are cut into 3-, 5- or 10-s segments, with 50 % overlap for training and without for
  testing; the last partial segment is dropped (thesis 3.3.1, 4.4.1).
* Silence rule: a segment whose mean power is below 0.0001 is silent (thesis 3.3.1).
* Test-set filter: the tracks whose shortest non-silent part is shortest are removed one by one until 10 % of
  the test set is gone (151 -> 136 on Slakh2100 redux; thesis 4.4.1).
* Tempo classes: tracks are put into 36 tempo classes; pseudo pieces mix parts only within a class (thesis 4.4.1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import mido
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from partsim_core.data.cache import StemCache
from partsim_core.data.slakh import GROUPS, Track
from partsim_core.errors import PartsimError

#: Mean power below which a segment is silent (thesis 3.3.1).
SILENCE_THRESHOLD = 1e-4

#: Number of tempo classes of the thesis (4.4.1).
THESIS_TEMPO_CLASSES = 36

#: Tempo MIDI assumes when a file sets none (500000 microseconds per quarter note).
DEFAULT_MIDI_TEMPO_BPM = 120.0

#: Track ids listed in a warning before "... and N more".
WARNING_LIST_LIMIT = 5


def segment_length(sample_rate: int, seconds: float) -> int:
    """Samples in one segment of ``seconds`` at ``sample_rate`` (rounded to the nearest sample).

    Raises:
        PartsimError: non-positive or non-finite values, or a segment shorter than one sample.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise PartsimError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not isinstance(seconds, (int, float, np.floating)) or not math.isfinite(seconds) or seconds <= 0:
        raise PartsimError(f"segment seconds must be a positive finite number, got {seconds!r}")
    length = int(round(seconds * sample_rate))
    if length < 1:
        raise PartsimError(f"segment of {seconds} s at {sample_rate} Hz is shorter than one sample")
    return length


def segment_starts(n_samples: int, sample_rate: int, seconds: float, overlap: bool) -> np.ndarray:
    """First sample of every complete segment; the last partial segment is dropped.

    Example: 10 s at 1 kHz in 3-s segments gives ``[0, 3000, 6000]`` without overlap and
    ``[0, 1500, 3000, 4500, 6000]`` with 50 % overlap.

    Args:
        n_samples: Length of the signal.
        sample_rate: Its sample rate (Hz).
        seconds: Segment length (thesis: 3, 5 or 10 s).
        overlap: Hop half a segment (training) instead of a whole one (testing).

    Returns:
        int64 array of start samples (empty when the signal is shorter than one segment).
    """
    if n_samples < 0:
        raise PartsimError(f"n_samples must be non-negative, got {n_samples!r}")
    length = segment_length(sample_rate, seconds)
    hop = max(1, length // 2) if overlap else length
    if n_samples < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - length + 1, hop, dtype=np.int64)


def segment_power(audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Mean power (mean of squared samples) of each segment ``audio[start:start + length]``.

    Computed from a float64 running sum of squares, so overlapping segments cost no more than one pass.

    Raises:
        PartsimError: a segment runs past the end of ``audio``, or ``length`` is not positive.
    """
    audio = np.asarray(audio)
    starts = np.asarray(starts, dtype=np.int64)
    if length <= 0:
        raise PartsimError(f"segment length must be positive, got {length!r}")
    if starts.size == 0:
        return np.zeros(0, dtype=np.float64)
    if starts.min() < 0 or starts.max() + length > audio.shape[0]:
        raise PartsimError(
            f"segments [{starts.min()}, {starts.max() + length}) run past the signal ({audio.shape[0]} samples)"
        )
    squares = np.square(audio, dtype=np.float64)
    running = np.concatenate(([0.0], np.cumsum(squares)))
    return (running[starts + length] - running[starts]) / length


def non_silent_mask(
    audio: np.ndarray, starts: np.ndarray, length: int, threshold: float = SILENCE_THRESHOLD
) -> np.ndarray:
    """``True`` for segments whose mean power is at least ``threshold`` (silent: below it; thesis 3.3.1)."""
    return segment_power(audio, starts, length) >= threshold


def non_silent_seconds(
    audio: np.ndarray, sample_rate: int, seconds: float, threshold: float = SILENCE_THRESHOLD
) -> float:
    """Total duration of the non-silent, non-overlapping ``seconds``-long segments of ``audio``."""
    length = segment_length(sample_rate, seconds)
    starts = segment_starts(len(audio), sample_rate, seconds, overlap=False)
    return float(np.count_nonzero(non_silent_mask(audio, starts, length, threshold)) * seconds)


def filter_test_tracks(
    cache: StemCache,
    tracks: list[Track],
    fraction: float = 0.1,
    seconds: float = 3.0,
    threshold: float = SILENCE_THRESHOLD,
    progress: bool = True,
) -> tuple[list[Track], pd.DataFrame]:
    """The thesis's test-set filter (4.4.1): drop the tracks with the shortest non-silent part.

    For each track, every part it has (stems with audio) is cut into non-overlapping ``seconds`` segments; the
    part's non-silent duration is the number of non-silent segments times ``seconds``. The track's score is the
    smallest such duration over its parts. Tracks are removed one by one, smallest score first (ties: lower
    track id first), until ``floor(fraction * n)`` are gone: 151 -> 136 on the Slakh2100 redux test set.

    Args:
        cache: Stem cache giving each part's audio.
        tracks: The test tracks.
        fraction: Share of tracks to remove, in ``[0, 1)``.
        seconds: Segment length of the silence rule.
        threshold: Silence threshold (mean power).
        progress: Show a progress bar.

    Returns:
        The kept tracks (input order) and a table indexed by ``track_id`` with one column of non-silent seconds
        per part (NaN where the track lacks the part), ``shortest_part``, ``shortest_non_silent_s``, ``kept`` and
        ``drop_order`` (1 for the first track removed; NaN for kept tracks).
    """
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction) or not 0 <= fraction < 1:
        raise PartsimError(f"fraction must be in [0, 1), got {fraction!r}")
    rows = []
    for track in tqdm(tracks, desc="non-silent durations", unit="track", disable=not progress):
        row: dict = {"track_id": track.track_id}
        present = track.stems_by_group()
        for group in GROUPS:
            row[group] = (
                non_silent_seconds(cache.get(track, group), cache.sample_rate, seconds, threshold)
                if group in present
                else math.nan
            )
        durations = {group: row[group] for group in present}
        if durations:
            shortest = min(durations, key=lambda group: (durations[group], GROUPS.index(group)))
            row["shortest_part"], row["shortest_non_silent_s"] = shortest, durations[shortest]
        else:  # a track without any part audio has nothing to test on
            row["shortest_part"], row["shortest_non_silent_s"] = None, 0.0
        rows.append(row)
    columns = ["track_id", *GROUPS, "shortest_part", "shortest_non_silent_s"]
    table = pd.DataFrame(rows, columns=columns).set_index("track_id")
    n_drop = math.floor(fraction * len(tracks))
    order = sorted(table.index, key=lambda track_id: (table.at[track_id, "shortest_non_silent_s"], track_id))
    dropped = order[:n_drop]
    table["kept"] = True
    table["drop_order"] = math.nan
    for rank, track_id in enumerate(dropped, start=1):
        table.at[track_id, "kept"] = False
        table.at[track_id, "drop_order"] = rank
    dropped_ids = set(dropped)
    return [track for track in tracks if track.track_id not in dropped_ids], table


def track_tempo(track: Track) -> float:
    """Tempo in BPM from the track's ``all_src.mid``: its first tempo event, or 120 BPM when it has none.

    Raises:
        PartsimError: ``all_src.mid`` is missing or unreadable.
    """
    path = track.folder / "all_src.mid"
    if not path.is_file():
        raise PartsimError(f"{path}: MIDI file not found (needed for the tempo)")
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as error:
        raise PartsimError(f"{path}: unreadable MIDI ({error})") from None
    first: tuple[int, int] | None = None  # (absolute tick, tempo) of the earliest set_tempo in any track
    for midi_track in midi.tracks:
        tick = 0
        for message in midi_track:
            tick += message.time
            if message.type == "set_tempo":
                if first is None or tick < first[0]:
                    first = (tick, message.tempo)
                break
    if first is None:
        return DEFAULT_MIDI_TEMPO_BPM
    return float(mido.tempo2bpm(first[1]))


def tempo_classes(tempos: Mapping[str, float], n_classes: int = THESIS_TEMPO_CLASSES) -> dict[str, int]:
    """Equal-population tempo classes (thesis 4.4.1: 36 classes).

    Tracks are ranked by tempo (ties by track id) and cut into ``k`` groups of (nearly) equal size, class 0 the
    slowest. On small sets ``k = min(n_classes, max(1, len(tempos) // 4))`` so that every class holds at least
    four tracks, which pseudo pieces (four tracks of one class, thesis Fig. 4.3) need.

    Args:
        tempos: BPM per track id.
        n_classes: Wanted number of classes.

    Returns:
        Class index (0 .. k-1) per track id.

    Raises:
        PartsimError: a tempo is not a positive finite number, or ``n_classes < 1``.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise PartsimError(f"n_classes must be a positive integer, got {n_classes!r}")
    for track_id, tempo in tempos.items():
        if not isinstance(tempo, (int, float, np.floating)) or not math.isfinite(tempo) or tempo <= 0:
            raise PartsimError(f"tempo of {track_id} must be a positive finite BPM, got {tempo!r}")
    n = len(tempos)
    if n == 0:
        return {}
    k = min(n_classes, max(1, n // 4))
    ranked = sorted(tempos, key=lambda track_id: (float(tempos[track_id]), track_id))
    return {track_id: rank * k // n for rank, track_id in enumerate(ranked)}


# --------------------------------------------------------------------------------------------------------------
# Segments of one part over many tracks (every chapter's segment grid)
# --------------------------------------------------------------------------------------------------------------

@runtime_checkable
class SignalSource(Protocol):
    """Anything that returns a part's mono float32 waveform of a track (:class:`~partsim_core.data.cache.StemCache`,
    ``partsim_core.baseline.separated_stems.SeparatedSource``, or a test's fake)."""

    sample_rate: int

    def get(self, track: Track, part: str) -> np.ndarray:
        """1-d float32 waveform of ``part`` (a group or ``"mix"``) of ``track`` at :attr:`sample_rate`."""
        ...


def read_waveform(source: SignalSource, track: Any, part: str) -> np.ndarray:
    """``source.get(track, part)`` checked to be a 1-d numeric array."""
    audio = source.get(track, part)
    if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype.kind != "f":
        shape = getattr(audio, "shape", None)
        raise PartsimError(f"signal source {type(source).__name__} returned {type(audio).__name__} {shape} for "
                           f"{getattr(track, 'track_id', track)}/{part}; expected a 1-d float array")
    return audio


class SegmentIndex:
    """The non-silent segments of one part over a list of tracks.

    Every track's part is cut into ``seconds``-long segments (50 % overlap when ``overlap``, the last partial
    segment dropped) and the silent ones (mean power below ``threshold``, thesis 3.3.1) are dropped. Silence is
    judged on ``silence_source`` (default: ``source``): for separated input it is the ideal stem, so that the same
    segments are used with ideal and separated signals.

    Tracks are skipped, not refused: a track lacking the part (per its metadata, when it is a
    :class:`~partsim_core.data.slakh.Track` and ``part`` is one of the five groups) or whose part is silent
    throughout (``skipped["silent"]``), and a track shorter than one segment (``skipped["too_short"]``, with one
    warning per index). ``max_per_track`` keeps only the first segments of each track.

    Attributes:
        part: The part indexed.
        sample_rate: ``source.sample_rate``.
        seconds: Segment duration; ``length`` is the same in samples.
        track_ids: Tracks with at least one non-silent segment, in the input order.
        starts: Start samples (ascending) of each such track's non-silent segments.
        skipped: Track ids left out, by reason: ``missing_part``, ``silent``, ``too_short``.

    Raises:
        PartsimError: no track has a non-silent segment of ``part`` (the message names the part), a bad
            ``seconds``/``threshold``/``max_per_track``, or a source returning something other than a 1-d array.
    """

    def __init__(self, source: SignalSource, tracks: Sequence[Track], part: str, seconds: float, overlap: bool,
                 threshold: float = SILENCE_THRESHOLD, max_per_track: int | None = None,
                 silence_source: SignalSource | None = None) -> None:
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise PartsimError(f"silence threshold must be a finite number >= 0, got {threshold!r}")
        if max_per_track is not None and (isinstance(max_per_track, bool) or not isinstance(max_per_track, int)
                                          or max_per_track < 1):
            raise PartsimError(f"max_per_track must be a positive integer or None, got {max_per_track!r}")
        silence_source = source if silence_source is None else silence_source
        if silence_source.sample_rate != source.sample_rate:
            raise PartsimError(f"silence source rate {silence_source.sample_rate} Hz differs from the signal "
                               f"source rate {source.sample_rate} Hz")
        self.part = part
        self.sample_rate = int(source.sample_rate)
        self.seconds = float(seconds)
        self.overlap = bool(overlap)
        self.length = segment_length(self.sample_rate, seconds)
        self.track_ids: list[str] = []
        self.starts: dict[str, np.ndarray] = {}
        self.skipped: dict[str, list[str]] = {"missing_part": [], "silent": [], "too_short": []}
        for track in tracks:
            track_id = track.track_id
            if part in GROUPS and hasattr(track, "stems_by_group") and part not in track.stems_by_group():
                self.skipped["missing_part"].append(track_id)
                continue
            audio = read_waveform(source, track, part)
            reference = audio if silence_source is source else read_waveform(silence_source, track, part)
            # Separated and ideal signals may differ by a few samples at the end: use what both cover.
            usable = min(audio.shape[0], reference.shape[0])
            starts = segment_starts(usable, self.sample_rate, seconds, overlap)
            if starts.size == 0:
                self.skipped["too_short"].append(track_id)
                continue
            kept = starts[non_silent_mask(reference, starts, self.length, threshold)]
            if max_per_track is not None:
                kept = kept[:max_per_track]
            if kept.size == 0:
                self.skipped["silent"].append(track_id)
                continue
            self.track_ids.append(track_id)
            self.starts[track_id] = kept.astype(np.int64)
        if self.skipped["too_short"]:
            warnings.warn(f"{part}: skipped {len(self.skipped['too_short'])} track(s) shorter than one "
                          f"{self.seconds:g}-s segment: {list_ids(self.skipped['too_short'])}", stacklevel=2)
        if not self.track_ids:
            raise PartsimError(f"no non-silent {self.seconds:g}-s segment of part {part!r} in any of the "
                               f"{len(tracks)} track(s) (skipped: "
                               + ", ".join(f"{len(ids)} {reason}" for reason, ids in self.skipped.items()) + ")")

    def __len__(self) -> int:
        """Number of segments."""
        return sum(starts.size for starts in self.starts.values())

    def refs(self) -> np.ndarray:
        """Every segment as ``(track position in track_ids, start sample)``, int64 ``(n, 2)``, track by track."""
        return np.concatenate([
            np.stack([np.full(self.starts[track_id].size, position, dtype=np.int64), self.starts[track_id]], axis=1)
            for position, track_id in enumerate(self.track_ids)
        ])

    def labels(self) -> np.ndarray:
        """Track position of every segment of :meth:`refs` (the kNN labels of chapter 3)."""
        return self.refs()[:, 0]


def list_ids(track_ids: list[str]) -> str:
    shown = ", ".join(track_ids[:WARNING_LIST_LIMIT])
    more = len(track_ids) - WARNING_LIST_LIMIT
    return shown + (f" ... and {more} more" if more > 0 else "")


def gather(source: SignalSource, tracks_by_id: dict[str, Track], index: SegmentIndex, refs: np.ndarray, *,
           arrays: dict[str, np.ndarray] | None = None) -> torch.Tensor:
    """Waveforms of segment references: float32 ``(len(refs), index.length)``.

    Args:
        source: Where the signals come from (for separated training input: the separated source, while the index
            may have judged silence on the ideal stems).
        tracks_by_id: The :class:`Track` of every id in ``index.track_ids``.
        index: Gives the part, the segment length and the track of each reference's position.
        refs: ``(n, 2)`` of (track position, start sample), e.g. from :meth:`SegmentIndex.refs` or one column of
            :meth:`TripletSampler.triplets`.
        arrays: Optional cache ``track_id -> waveform`` filled on first use (saves re-opening memory maps; keep it
            per process).

    Raises:
        PartsimError: a reference outside the index or past the end of its signal.
    """
    refs = np.asarray(refs, dtype=np.int64).reshape(-1, 2)
    length = index.length
    out = np.empty((refs.shape[0], length), dtype=np.float32)
    cache = {} if arrays is None else arrays
    for row, (position, start) in enumerate(refs):
        if not 0 <= position < len(index.track_ids):
            raise PartsimError(f"segment reference to track position {position}; the index has "
                               f"{len(index.track_ids)} tracks")
        track_id = index.track_ids[position]
        audio = cache.get(track_id)
        if audio is None:
            audio = cache[track_id] = read_waveform(source, tracks_by_id[track_id], index.part)
        if start < 0 or start + length > audio.shape[0]:
            raise PartsimError(f"segment {start}..{start + length} of {track_id}/{index.part} runs past its "
                               f"signal ({audio.shape[0]} samples)")
        out[row] = audio[start:start + length]
    return torch.from_numpy(out)
