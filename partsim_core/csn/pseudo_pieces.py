"""Chapter 4's sampling: pseudo musical pieces, basic/additional triplets and created silences.

Thesis 4.3.3-4.3.4 (Figs. 4.2-4.3). A *pseudo musical piece* mixes the parts of different dataset pieces of one
tempo class; its label per part is the track the part comes from. For a condition ``c`` (a part) four distinct
tracks A, B, C, D of one tempo class give the **basic triplet**

* anchor   = (c from A, other parts from B),
* positive = (c from A, other parts from C),
* negative = (c from D, other parts from B),

and the **additional triplet** (anchor, negative, positive) under a condition ``c' != c``: the anchor and the
basic negative share every label except ``c``, so they are "similar" for any ``c'``.

Our reading of what the thesis leaves open (documented here, tested in ``tests/test_csn_pseudo_pieces.py``):

* Segments: one segment time per piece, the same for all its parts (parts are aligned from their beginnings, as
  a mix of two songs in one tempo class would be). The anchor's and positive's times are drawn from the
  non-silent segments (3 s, 50 % overlap grid, mean power >= threshold) of A's part ``c`` (distinct when A has
  two or more), the negative's from D's part ``c``: the condition part is always audible. A part shorter than
  the segment time is zero-padded (silent, so its norm target is 0).
* A part a source track lacks (no stem, or silent throughout) is absent (``None``) in the piece.
* Tracks: A uniformly among the tracks having part ``c``; D among the other tracks of A's tempo class having
  ``c``; B and C among the remaining tracks of the class. When the class has too few (see
  :meth:`TempoGroups.pool`) the pool widens to neighbouring classes.
* Additional condition ``c'``: uniform among the other parts that B contributes (not dropped) and that are
  non-silent at both the anchor's and the negative's times; uniform among all other parts when there is none.
* **Created silences** (4.3.4): per part ``j`` let ``T_j`` be its total non-silent time over the training
  tracks. Each part of a piece other than the condition part is kept with probability ``T_min / T_j``
  (``T_min`` the smallest non-zero ``T``), so in expectation every part contributes the rarest part's time. The
  condition part is never dropped (the triplet is about it), and B's parts are dropped jointly in the anchor
  and the negative (they must keep sharing labels). Because of these two exceptions the balance is approximate.
  The thesis applies them to "a musical piece" of the training data (4.3.4; Fig. 4.2's dataset pieces hold only
  piano and guitar "for the reasons explained in Section 4.3.4"), so they apply to dataset pieces as well: the
  anchor/positive piece A and the negative piece D each drop parts in the same way.
* Without pseudo pieces (Fig. 4.2, ablations (c)-(e)): anchor and positive are two segments of one dataset
  piece A (part ``c`` non-silent in both), the negative a segment of another piece D having ``c`` (any tempo,
  as in chapter 3); no additional triplets.

The training task that mixes these triplets into log-mel batches is :mod:`partsim_core.csn.pseudo_triplet_task`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.data.segments import (
    SILENCE_THRESHOLD,
    THESIS_TEMPO_CLASSES,
    SegmentIndex,
    SignalSource,
    read_waveform,
    segment_length,
    tempo_classes,
)
from partsim_core.errors import PartsimError

#: Tracks a pseudo-piece draw needs (A, B, C, D; thesis Fig. 4.3).
TRACKS_PER_DRAW = 4


def _track_id(track: Any) -> str:
    return track if isinstance(track, str) else track.track_id


@dataclass(frozen=True)
class PseudoPiece:
    """A (pseudo) musical piece: the source track id of each part, ``None`` where the part is absent.

    The label of a part is its source track id (thesis 4.3.3: ``(A, B)^(dr, else)`` has drums label A).
    A dataset piece is the special case where every present part comes from one track.
    """

    drums: str | None = None
    bass: str | None = None
    piano: str | None = None
    guitar: str | None = None
    others: str | None = None

    @classmethod
    def from_parts(cls, sources: Mapping[str, str | None]) -> PseudoPiece:
        """Build from ``{part: track id}``; unknown part names raise :class:`PartsimError`."""
        unknown = set(sources) - set(INSTRUMENTS)
        if unknown:
            raise PartsimError(f"unknown part(s) {sorted(unknown)}; expected {', '.join(INSTRUMENTS)}")
        return cls(**dict(sources))

    def source(self, part: str) -> str | None:
        """Track id of ``part`` (its label), or ``None`` when absent."""
        if part not in INSTRUMENTS:
            raise PartsimError(f"unknown part {part!r}; expected one of {', '.join(INSTRUMENTS)}")
        return getattr(self, part)

    def labels(self) -> tuple[str | None, ...]:
        """Labels in :data:`~partsim_core.INSTRUMENTS` order."""
        return tuple(getattr(self, field.name) for field in fields(self))

    def present_parts(self) -> tuple[str, ...]:
        """Parts with a source track."""
        return tuple(part for part, label in zip(INSTRUMENTS, self.labels()) if label is not None)


@dataclass(frozen=True)
class PseudoTriplet:
    """One triplet of pieces for condition ``condition`` (index into :data:`~partsim_core.INSTRUMENTS`).

    ``starts`` are the segment start samples of anchor, positive and negative (all parts of a piece share it).
    ``additional_condition`` is the condition of the additional triplet (anchor, negative, positive), or ``None``.
    """

    anchor: PseudoPiece
    positive: PseudoPiece
    negative: PseudoPiece
    condition: int
    starts: tuple[int, int, int]
    additional_condition: int | None = None

    @property
    def pieces(self) -> tuple[PseudoPiece, PseudoPiece, PseudoPiece]:
        """(anchor, positive, negative)."""
        return self.anchor, self.positive, self.negative

    def labels(self) -> np.ndarray:
        """Object array ``(3, 5)``: labels of anchor, positive and negative, parts in INSTRUMENTS order."""
        return np.array([piece.labels() for piece in self.pieces], dtype=object)

    def additional(self) -> PseudoTriplet | None:
        """The additional triplet: positive and negative interchanged, condition ``additional_condition``."""
        if self.additional_condition is None:
            return None
        return PseudoTriplet(self.anchor, self.negative, self.positive, self.additional_condition,
                             (self.starts[0], self.starts[2], self.starts[1]), None)


class TempoGroups:
    """Tracks grouped into tempo classes (thesis 4.4.1: 36) by :func:`~partsim_core.data.segments.tempo_classes`.

    Args:
        tracks: Tracks (or track ids) to group; every one needs a tempo.
        tempos: BPM per track id (e.g. :func:`~partsim_core.data.segments.track_tempo`).
        n_classes: Wanted classes; fewer on small sets (every class holds >= 4 tracks, see ``tempo_classes``).

    Attributes:
        class_of: Class index per track id.
        members: Track ids of every class (input order within a class).

    Raises:
        PartsimError: fewer than 4 tracks, a track without tempo, or a bad tempo.
    """

    def __init__(self, tracks: Sequence[Any], tempos: Mapping[str, float],
                 n_classes: int = THESIS_TEMPO_CLASSES) -> None:
        track_ids = [_track_id(track) for track in tracks]
        missing = [track_id for track_id in track_ids if track_id not in tempos]
        if missing:
            raise PartsimError(f"no tempo for {len(missing)} track(s): {', '.join(missing[:5])}")
        if len(set(track_ids)) < TRACKS_PER_DRAW:
            raise PartsimError(f"pseudo pieces need at least {TRACKS_PER_DRAW} distinct tracks, got "
                               f"{len(set(track_ids))}")
        self.class_of = tempo_classes({track_id: tempos[track_id] for track_id in track_ids}, n_classes)
        self.n_classes = max(self.class_of.values()) + 1
        self.members: list[list[str]] = [[] for _ in range(self.n_classes)]
        for track_id in dict.fromkeys(track_ids):
            self.members[self.class_of[track_id]].append(track_id)

    def pool(self, class_index: int, min_tracks: int = TRACKS_PER_DRAW, eligible: set[str] | None = None,
             min_eligible: int = 0) -> list[str]:
        """Tracks of class ``class_index``, widened to neighbouring classes when it is too small.

        Fallback rule: while the pool has fewer than ``min_tracks`` tracks, or fewer than ``min_eligible`` of
        them in ``eligible`` (e.g. tracks having the condition part), add the classes at distance 1, 2, ...
        (both sides at once: the nearest tempos first). The whole set is the last resort.
        """
        if not 0 <= class_index < self.n_classes:
            raise PartsimError(f"tempo class {class_index} out of range 0..{self.n_classes - 1}")
        for distance in range(self.n_classes):
            pool = [track_id for index in range(class_index - distance, class_index + distance + 1)
                    if 0 <= index < self.n_classes for track_id in self.members[index]]
            matching = len(pool) if eligible is None else sum(track_id in eligible for track_id in pool)
            if len(pool) >= min_tracks and matching >= min_eligible:
                break
        return pool

    def draw(self, rng: np.random.Generator, count: int = TRACKS_PER_DRAW,
             class_index: int | None = None) -> list[str]:
        """``count`` distinct tracks of one class (a uniform class unless given; widened as in :meth:`pool`)."""
        if class_index is None:
            class_index = int(rng.integers(self.n_classes))
        pool = self.pool(class_index, min_tracks=count)
        if len(pool) < count:
            raise PartsimError(f"cannot draw {count} distinct tracks from {len(pool)}")
        return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]


class PartActivity:
    """Where each part of each track is audible: non-silent segment starts on the 50 %-overlap grid.

    One :class:`~partsim_core.data.segments.SegmentIndex` per part (the project's one segment grid and silence
    rule): every track's grid starts at sample 0 with hop ``length // 2``, so a start drawn for one track can be
    checked against another's (:meth:`active`). A part the track's metadata lacks is not loaded.

    Args:
        source: Signals (ideal stems: silence is judged on them).
        tracks: Tracks (objects with ``track_id``; a :class:`~partsim_core.data.slakh.Track` also tells which
            parts exist).
        seconds: Segment length (thesis: 3 s).
        threshold: Silence threshold on the mean power (thesis: 0.0001; below it is silent).
    """

    def __init__(self, source: SignalSource, tracks: Sequence[Any], seconds: float,
                 threshold: float = SILENCE_THRESHOLD) -> None:
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise PartsimError(f"silence threshold must be a finite number >= 0, got {threshold!r}")
        self.sample_rate = int(source.sample_rate)
        self.seconds = float(seconds)
        self.threshold = float(threshold)
        self.length = segment_length(self.sample_rate, seconds)
        self.track_ids = [track.track_id for track in tracks]
        empty = np.zeros(0, dtype=np.int64)
        self.starts: dict[tuple[str, str], np.ndarray] = {(track_id, part): empty for track_id in self.track_ids
                                                          for part in INSTRUMENTS}
        for part in INSTRUMENTS:
            try:
                index = SegmentIndex(source, tracks, part, seconds, overlap=True, threshold=threshold)
            except PartsimError as error:
                if "no non-silent" not in str(error):
                    raise
                continue  # no track plays this part
            for track_id, starts in index.starts.items():
                self.starts[track_id, part] = starts
        self._sets = {key: set(starts.tolist()) for key, starts in self.starts.items()}

    def has(self, track_id: str, part: str) -> bool:
        """Whether the part is non-silent in at least one segment of the track."""
        return self.starts[track_id, part].size > 0

    def active(self, track_id: str, part: str, start: int) -> bool:
        """Whether the segment of ``part`` starting at ``start`` (a grid start) is non-silent."""
        return int(start) in self._sets[track_id, part]

    def presence_counts(self) -> np.ndarray:
        """Non-silent segments per part over all tracks, ``(5,)`` in INSTRUMENTS order (``T_j`` up to a factor)."""
        return np.array([sum(self.starts[track_id, part].size for track_id in self.track_ids)
                         for part in INSTRUMENTS], dtype=np.int64)


def balanced_keep_probabilities(presence: Sequence[float]) -> np.ndarray:
    """Created-silence rule (thesis 4.3.4): keep part ``j`` with probability ``min(T) / T_j``.

    ``T`` is each part's total present time (any unit); the minimum is over the parts present at all, and a part
    never present gets 1 (nothing to drop). Example: ``T = [10, 5, 2, 0, 4]`` gives ``[0.2, 0.4, 1, 1, 0.5]``.
    """
    presence = np.asarray(presence, dtype=np.float64)
    if presence.ndim != 1 or not np.all(np.isfinite(presence)) or np.any(presence < 0):
        raise PartsimError(f"part presence times must be finite and >= 0, got {presence.tolist()}")
    keep = np.ones_like(presence)
    positive = presence > 0
    if positive.any():
        keep[positive] = presence[positive].min() / presence[positive]
    return keep


class PseudoTripletSampler:
    """Basic (+ additional) triplets of pseudo pieces, or dataset-piece triplets (Fig. 4.2), per epoch.

    :meth:`triplets` is a pure function of (seed, epoch, count): ``numpy.random.default_rng([seed, epoch])``.
    See the module docstring for every rule.

    Args:
        activity: Non-silent segments of the tracks.
        groups: Their tempo classes (needed with ``pseudo``; may be ``None`` without).
        pseudo: Pseudo pieces (thesis "psd"); ``False`` gives the Fig. 4.2 variant.
        additional: Add the additional triplet's condition to every basic triplet (thesis "add"; needs pseudo).
        created_silences: Drop parts with :func:`balanced_keep_probabilities` (pseudo and dataset pieces).
        seed: Seeds the draws.

    Raises:
        PartsimError: ``additional`` without ``pseudo``, or no part present in two tracks.
    """

    def __init__(self, activity: PartActivity, groups: TempoGroups | None, *, pseudo: bool = True,
                 additional: bool = True, created_silences: bool = True, seed: int = 0) -> None:
        if additional and not pseudo:
            raise PartsimError("additional triplets need pseudo pieces (thesis Table 4.2, note †)")
        if pseudo and groups is None:
            raise PartsimError("pseudo pieces need tempo groups")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise PartsimError(f"seed must be a non-negative integer, got {seed!r}")
        self.activity, self.groups = activity, groups
        self.pseudo, self.additional, self.created_silences = bool(pseudo), bool(additional), bool(created_silences)
        self.seed = int(seed)
        track_ids = activity.track_ids if groups is None else [t for t in activity.track_ids if t in groups.class_of]
        self.track_ids = track_ids
        # A track can be the condition source of part c when it has c; without pseudo pieces it also needs two
        # segments of c (anchor and positive are different segments of one piece).
        minimum = 1 if pseudo else 2
        self.with_part = {part: [t for t in track_ids if activity.starts[t, part].size >= 1] for part in INSTRUMENTS}
        self.sources = {part: [t for t in track_ids if activity.starts[t, part].size >= minimum]
                        for part in INSTRUMENTS}
        self.conditions = [c for c, part in enumerate(INSTRUMENTS)
                           if self.sources[part] and len(self.with_part[part]) >= 2]
        if not self.conditions:
            raise PartsimError(f"no part is non-silent in two of the {len(track_ids)} track(s); cannot draw "
                               "triplets")
        self.keep = (balanced_keep_probabilities(activity.presence_counts()) if self.created_silences
                     else np.ones(len(INSTRUMENTS)))

    def triplets(self, epoch: int, count: int) -> list[PseudoTriplet]:
        """``count`` triplets of epoch ``epoch``; conditions uniform over the parts that can be conditions."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise PartsimError(f"epoch must be a non-negative integer, got {epoch!r}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise PartsimError(f"triplet count must be a positive integer, got {count!r}")
        rng = np.random.default_rng([self.seed, int(epoch)])
        draw = self._pseudo_triplet if self.pseudo else self._dataset_triplet
        return [draw(rng, self.conditions[int(rng.integers(len(self.conditions)))]) for _ in range(count)]

    def _two_starts(self, rng: np.random.Generator, track_id: str, part: str) -> tuple[int, int]:
        """Two starts of the track's non-silent segments of ``part``, distinct when it has two or more."""
        starts = self.activity.starts[track_id, part]
        first = int(rng.integers(starts.size))
        if starts.size == 1:
            return int(starts[0]), int(starts[0])
        second = int(rng.integers(starts.size - 1))
        second += second >= first
        return int(starts[first]), int(starts[second])

    def _pseudo_triplet(self, rng: np.random.Generator, condition: int) -> PseudoTriplet:
        part = INSTRUMENTS[condition]
        activity, groups = self.activity, self.groups
        assert groups is not None
        track_a = self.sources[part][int(rng.integers(len(self.sources[part])))]
        having = set(self.with_part[part])
        pool = groups.pool(groups.class_of[track_a], TRACKS_PER_DRAW, having, min_eligible=2)
        negatives = [t for t in pool if t in having and t != track_a]
        track_d = negatives[int(rng.integers(len(negatives)))]
        rest = [t for t in pool if t not in (track_a, track_d)]
        if len(rest) < 2:
            raise PartsimError(f"only {len(pool)} tracks in the tempo pool of {track_a}; pseudo pieces need "
                               f"{TRACKS_PER_DRAW}")
        pick = rng.choice(len(rest), size=2, replace=False)
        track_b, track_c = rest[int(pick[0])], rest[int(pick[1])]
        start_a, start_p = self._two_starts(rng, track_a, part)
        starts_d = activity.starts[track_d, part]
        start_n = int(starts_d[int(rng.integers(starts_d.size))])
        others = [other for other in INSTRUMENTS if other != part]
        # One uniform draw per other part and track, whether or not it is dropped, keeps the stream regular.
        keep_b = {o: activity.has(track_b, o) and rng.random() < self.keep[INSTRUMENTS.index(o)] for o in others}
        keep_c = {o: activity.has(track_c, o) and rng.random() < self.keep[INSTRUMENTS.index(o)] for o in others}
        from_b = {o: (track_b if keep_b[o] else None) for o in others}
        anchor = PseudoPiece.from_parts({part: track_a, **from_b})
        positive = PseudoPiece.from_parts({part: track_a, **{o: (track_c if keep_c[o] else None) for o in others}})
        negative = PseudoPiece.from_parts({part: track_d, **from_b})
        additional = None
        if self.additional:
            audible = [INSTRUMENTS.index(o) for o in others if keep_b[o] and activity.active(track_b, o, start_a)
                       and activity.active(track_b, o, start_n)]
            choices = audible or [INSTRUMENTS.index(o) for o in others]
            additional = choices[int(rng.integers(len(choices)))]
        return PseudoTriplet(anchor, positive, negative, condition, (start_a, start_p, start_n), additional)

    def _dataset_triplet(self, rng: np.random.Generator, condition: int) -> PseudoTriplet:
        part = INSTRUMENTS[condition]
        activity = self.activity
        track_a = self.sources[part][int(rng.integers(len(self.sources[part])))]
        negatives = [t for t in self.with_part[part] if t != track_a]
        track_d = negatives[int(rng.integers(len(negatives)))]
        start_a, start_p = self._two_starts(rng, track_a, part)
        starts_d = activity.starts[track_d, part]
        start_n = int(starts_d[int(rng.integers(starts_d.size))])

        def dataset_piece(track_id: str) -> PseudoPiece:
            # Created silences (4.3.4): every part but the condition part is kept with its balancing probability;
            # anchor and positive are one piece, so they keep the same parts.
            return PseudoPiece.from_parts({o: (track_id if activity.has(track_id, o) and (
                o == part or not self.created_silences or rng.random() < self.keep[INSTRUMENTS.index(o)])
                else None) for o in INSTRUMENTS})

        anchor = dataset_piece(track_a)
        return PseudoTriplet(anchor, anchor, dataset_piece(track_d), condition, (start_a, start_p, start_n), None)


def mix_piece(source: SignalSource, tracks_by_id: Mapping[str, Any], piece: PseudoPiece,
              start_by_part: Mapping[str, int] | int, length: int, *,
              arrays: dict[tuple[str, str], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mix a piece's parts in the waveform domain.

    Args:
        source: Ideal part signals (e.g. :class:`~partsim_core.data.cache.StemCache`).
        tracks_by_id: Track object of every source id.
        piece: Which track each part comes from.
        start_by_part: Start sample per present part, or one start for all.
        length: Samples to return.
        arrays: Optional per-process cache ``(track_id, part) -> waveform``.

    Returns:
        ``(mix (length,), part_signals (5, length))`` float32, parts in INSTRUMENTS order; absent parts and the
        stretch past a part's end are zeros. ``mix`` is the sum of the part signals.

    Raises:
        PartsimError: a negative start/length, a missing start, or an unknown track.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise PartsimError(f"segment length must be a positive integer, got {length!r}")
    parts = np.zeros((len(INSTRUMENTS), int(length)), dtype=np.float32)
    cache = {} if arrays is None else arrays
    for row, (part, track_id) in enumerate(zip(INSTRUMENTS, piece.labels())):
        if track_id is None:
            continue
        if isinstance(start_by_part, Mapping):
            if part not in start_by_part:
                raise PartsimError(f"no start sample given for part {part!r} of {piece}")
            start = int(start_by_part[part])
        else:
            start = int(start_by_part)
        if start < 0:
            raise PartsimError(f"start sample of {track_id}/{part} must be >= 0, got {start}")
        if track_id not in tracks_by_id:
            raise PartsimError(f"piece refers to unknown track {track_id!r}")
        audio = cache.get((track_id, part))
        if audio is None:
            audio = cache[track_id, part] = read_waveform(source, tracks_by_id[track_id], part)
        excerpt = audio[start:start + int(length)]
        parts[row, :excerpt.shape[0]] = excerpt
    return parts.sum(axis=0), parts
