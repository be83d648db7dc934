"""Chapter 4's test set: the filtered test tracks, their segment grids, the test pseudo pieces, and streaming
embeddings of each.

Every segment list here is a :class:`~partsim_core.data.segments.SegmentIndex` (the project's one segment grid and
silence rule: a segment whose mean power is below 1e-4 is silent), and every embedding goes through
:func:`partsim_core.embed.embed`, which reads one batch of segments at a time from the memory-mapped stem cache:
peak memory is set by the batch, not by the number or length of the test tracks.

* **Test tracks** (:func:`chapter4_test_tracks`): thesis 4.4.1's filter, worded for chapter 4: "musical pieces with
  the shortest non-silent sections in individual instrumental parts were excluded one by one until 10 % of the
  musical pieces were removed" (151 -> 136 on Slakh2100 redux).
* **Segment grids** (:func:`segment_grid`): non-overlapping segments of the test mixes at 3, 5 and 10 s (every
  track from its start, the last partial segment dropped); a segment counts for part ``c`` where ``c``'s ideal stem
  is not silent, and for Table 4.5 where the mix is not silent.
* **Test pseudo pieces** (:func:`test_pseudo_pieces`, Table 4.2): the plan of
  :func:`~partsim_core.csn.metrics.test_pseudo_piece_plan` (10 labels x 4 pieces per part; fewer when the test
  split has fewer tracks, e.g. in the ``smoke`` preset); a piece runs as long as the shorter of its two source
  tracks, and its 5-s segments count where the label part sounds. Pieces are mixed on demand (one piece's signals
  at a time), never stored.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.csn.metrics import test_pseudo_piece_plan
from partsim_core.data.artefacts import cached_artefact
from partsim_core.data.cache import MIX_PART
from partsim_core.data.dataset import TEST_FILTER_FRACTION, DatasetHandle
from partsim_core.data.segments import (
    SegmentIndex,
    SignalSource,
    filter_test_tracks,
    segment_length,
    tempo_classes,
    track_tempo,
)
from partsim_core.data.slakh import Track
from partsim_core.embed import embed
from partsim_core.errors import PartsimError
from partsim_core.presets import FrontendConfig

#: Input lengths of Table 4.1 (seconds).
TABLE_4_1_SECONDS: tuple[float, ...] = (3.0, 5.0, 10.0)

#: Segment length of Tables 4.2-4.5 and Figs. 4.8-4.11 (thesis 4.4.2: 5-s segments).
EVALUATION_SECONDS = 5.0

#: Test pseudo pieces per part (thesis 4.4.2: 10 labels x 4 pieces).
PSEUDO_LABELS = 10
PSEUDO_PIECES_PER_LABEL = 4

#: Segments per forward pass when embedding.
EMBED_BATCH = 64


def chapter4_test_tracks(data: DatasetHandle) -> tuple[list[Track], pd.DataFrame]:
    """The test tracks of chapter 4 by thesis 4.4.1's rule: tracks whose *shortest non-silent part* is shortest are
    removed one by one until 10 % are gone (:func:`~partsim_core.data.segments.filter_test_tracks`).

    Computed here from the raw test split (not taken from ``data.test_tracks``), so that chapter 4 keeps its own
    thesis rule whatever filter another chapter applies.
    """
    settings = data.preset
    return filter_test_tracks(data.cache, data.dataset.tracks("test"), fraction=TEST_FILTER_FRACTION,
                              seconds=settings.segment_seconds, threshold=settings.silence_threshold, progress=False)


def _index_or_none(source: SignalSource, tracks: Sequence[Any], part: str, seconds: float, threshold: float,
                   silence_source: SignalSource | None = None) -> SegmentIndex | None:
    """A non-overlapping :class:`SegmentIndex`, or None when no track has a non-silent segment of ``part``."""
    try:
        with warnings.catch_warnings():  # too-short tracks: the grid's index of every segment warns once
            warnings.simplefilter("ignore", UserWarning)
            return SegmentIndex(source, tracks, part, seconds, overlap=False, threshold=threshold,
                                silence_source=silence_source)
    except PartsimError as error:
        if "no non-silent" not in str(error):
            raise
        return None


@dataclass
class SegmentGrid:
    """Non-overlapping segments of the filtered test tracks at one length (every track from its start).

    Attributes:
        seconds: segment length.
        length: segment length in samples.
        track_ids: (n,) track of each segment.
        starts: (n,) first sample.
        mix_active: (n,) the mix is not silent.
        part_active: (n, 5) each part's ideal stem is not silent (False where the track lacks the part).
        all_segments: the index of every segment of the mixes (threshold 0), in grid order.
        parts: per part, the index of the segments where it sounds (grid order), or None.
    """

    seconds: float
    length: int
    track_ids: np.ndarray
    starts: np.ndarray
    mix_active: np.ndarray
    part_active: np.ndarray
    all_segments: SegmentIndex = field(repr=False)
    parts: dict[str, SegmentIndex | None] = field(repr=False)

    def __len__(self) -> int:
        return len(self.track_ids)

    def stem_track_ids(self) -> dict[str, np.ndarray]:
        """Per part, the track of each of its stem segments (the rows where the part sounds, in grid order)."""
        return {part: self.track_ids[self.part_active[:, column]] for column, part in enumerate(INSTRUMENTS)}

    def at_stems(self, vectors: np.ndarray | None) -> dict[str, np.ndarray | None]:
        """Per part, the rows of ``vectors`` ``(seeds, n, dim)`` at its stem segments (all ``None`` for ``None``)."""
        return {part: None if vectors is None else vectors[:, self.part_active[:, column]]
                for column, part in enumerate(INSTRUMENTS)}


def _members(index: SegmentIndex | None, track_ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Which grid rows ``(track_ids, starts)`` are segments of ``index``."""
    if index is None:
        return np.zeros(track_ids.size, dtype=bool)
    kept = {(track_id, int(start)) for track_id, track_starts in index.starts.items() for start in track_starts}
    return np.array([(track_id, int(start)) in kept for track_id, start in zip(track_ids, starts)], dtype=bool)


def segment_grid(data: DatasetHandle, seconds: float, tracks: Sequence[Track]) -> SegmentGrid:
    """The :class:`SegmentGrid` of ``tracks`` at ``seconds`` (silence judged on the ideal stems).

    Raises:
        PartsimError: no track is at least ``seconds`` long.
    """
    threshold = data.preset.silence_threshold
    try:
        everything = SegmentIndex(data.cache, tracks, MIX_PART, seconds, overlap=False, threshold=0.0)
    except PartsimError:
        raise PartsimError(f"no test track is at least {seconds} s long; chapter 4 needs longer test tracks") \
            from None
    refs = everything.refs()
    track_ids = np.asarray(everything.track_ids, dtype=str)[refs[:, 0]]
    starts = refs[:, 1]
    parts = {part: _index_or_none(data.cache, tracks, part, seconds, threshold) for part in INSTRUMENTS}
    mix = _index_or_none(data.cache, tracks, MIX_PART, seconds, threshold)
    return SegmentGrid(seconds=float(seconds), length=everything.length, track_ids=track_ids, starts=starts,
                       mix_active=_members(mix, track_ids, starts),
                       part_active=np.stack([_members(parts[part], track_ids, starts) for part in INSTRUMENTS],
                                            axis=1),
                       all_segments=everything, parts=parts)


def embed_index(model: torch.nn.Module, source: SignalSource, tracks_by_id: Mapping[str, Any],
                index: SegmentIndex | None, frontend: FrontendConfig, device: str = "cpu",
                batch_size: int = EMBED_BATCH) -> np.ndarray | None:
    """:func:`partsim_core.embed.embed` of ``index`` (None for None), checked to be finite.

    Raises:
        PartsimError: the model returns NaN or infinite values (names the first bad segment).
    """
    if index is None:
        return None
    vectors = embed(model, source, tracks_by_id, index, frontend, batch_size=batch_size, device=device)
    bad = ~np.all(np.isfinite(vectors), axis=1)
    if bad.any():
        raise PartsimError(f"{type(model).__name__} returned NaN or infinite values for segment "
                           f"{int(np.flatnonzero(bad)[0])} of part {index.part!r}")
    return vectors


# --------------------------------------------------------------------------------------------------------------
# Test pseudo pieces (Table 4.2)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestPiece:
    """One test pseudo piece: ``track_id`` is the piece id; ``sources`` the track of each part (None: absent)."""

    track_id: str
    part: str
    label: str
    other: str
    n_samples: int
    sources: tuple[str | None, ...]

    __test__ = False  # not a pytest class


class PieceSource:
    """The test pseudo pieces as a signal source: ``get(piece, "mix")`` is the piece's mix, ``get(piece, part)``
    one clean part (zeros where absent), over the piece's whole length; mixed in the waveform domain."""

    def __init__(self, source: SignalSource, tracks_by_id: Mapping[str, Track]) -> None:
        self.source, self.tracks_by_id, self.sample_rate = source, tracks_by_id, int(source.sample_rate)

    def _part(self, piece: TestPiece, column: int) -> np.ndarray | None:
        track_id = piece.sources[column]
        if track_id is None:
            return None
        audio = np.asarray(self.source.get(self.tracks_by_id[track_id], INSTRUMENTS[column])[:piece.n_samples],
                           dtype=np.float32)
        out = np.zeros(piece.n_samples, dtype=np.float32)
        out[:audio.shape[0]] = audio
        return out

    def get(self, piece: TestPiece, part: str) -> np.ndarray:
        """The piece's mix or one of its clean parts: float32 ``(n_samples,)``."""
        if part != MIX_PART:
            signal = self._part(piece, INSTRUMENTS.index(part))
            return np.zeros(piece.n_samples, dtype=np.float32) if signal is None else signal
        mix = np.zeros(piece.n_samples, dtype=np.float32)
        for column in range(len(INSTRUMENTS)):
            signal = self._part(piece, column)
            if signal is not None:
                mix += signal
        return mix


class PartOfPieces:
    """One signal of every test piece (its mix or one clean part), whatever part an index asks for."""

    def __init__(self, pieces: PieceSource, signal: str) -> None:
        self.pieces, self.signal, self.sample_rate = pieces, signal, pieces.sample_rate

    def get(self, piece: TestPiece, part: str) -> np.ndarray:
        """``signal`` of ``piece``."""
        return self.pieces.get(piece, self.signal)


class SeparatedPieces:
    """The separated part of each test piece, as the chapter-3 separator estimates it from the piece's whole mix.

    Separated once per (separator, pieces, audio) and kept as an artefact
    (:func:`partsim_core.data.artefacts.cached_artefact`); read back memory-mapped. ``get(piece, anything)`` is the
    separated signal of the piece's own part.
    """

    def __init__(self, pieces: PseudoPieceSet, separated: Any, fingerprint: str, fresh: bool = False) -> None:
        self.sample_rate = pieces.source.sample_rate
        config = {"separator": str(separated.key), "sample_rate": self.sample_rate,
                  "pieces": [[piece.track_id, piece.part, piece.n_samples, list(piece.sources)]
                             for piece in pieces.pieces.values()]}

        def compute(folder: Path) -> None:
            for piece in pieces.pieces.values():
                mix = pieces.source.get(piece, MIX_PART)
                estimate = np.asarray(separated.separator.separate(mix, self.sample_rate)[piece.part],
                                      dtype=np.float32)
                out = np.zeros(piece.n_samples, dtype=np.float32)
                out[:min(estimate.shape[0], piece.n_samples)] = estimate[:piece.n_samples]
                np.save(folder / f"{piece.track_id}.npy", out, allow_pickle=False)

        self.folder = cached_artefact("csn-separated-pieces", config, fingerprint, compute, fresh=fresh)

    def get(self, piece: TestPiece, part: str) -> np.ndarray:
        """The separated signal of ``piece.part``."""
        return np.load(self.folder / f"{piece.track_id}.npy", mmap_mode="r")


class LabelPartSource:
    """Silence of a test piece is judged on its label part: ``get(piece, anything)`` is that part's clean signal."""

    def __init__(self, pieces: PieceSource) -> None:
        self.pieces, self.sample_rate = pieces, pieces.sample_rate

    def get(self, piece: TestPiece, part: str) -> np.ndarray:
        """The label track's stem of ``piece.part``."""
        return self.pieces.get(piece, piece.part)


@dataclass
class PseudoPieceSet:
    """The test pseudo pieces of Table 4.2 and their segments.

    Attributes:
        plan: :func:`~partsim_core.csn.metrics.test_pseudo_piece_plan`'s table (one row per piece).
        segments: one row per segment: ``part`` (the piece's condition part), ``label`` (its source track),
            ``other``, ``piece``, ``start`` (sample), and per instrument the track it comes from (None: absent);
            grouped by part in :data:`INSTRUMENTS` order.
        length: segment length in samples.
        source: the pieces as a signal source.
        indices: per part, the segments of the pieces made for that part (None when it has none).
    """

    plan: pd.DataFrame
    segments: pd.DataFrame
    length: int
    source: PieceSource | None = field(default=None, repr=False)
    indices: dict[str, SegmentIndex | None] = field(default_factory=dict, repr=False)
    pieces: dict[str, TestPiece] = field(default_factory=dict, repr=False)

    def waveform(self, row: int, signal: str = MIX_PART) -> np.ndarray:
        """The mix (``signal="mix"``) or one clean part of segment ``row``: float32 ``(length,)``."""
        segment = self.segments.iloc[row]
        start = int(segment["start"])
        return self.source.get(self.pieces[segment["piece"]], signal)[start:start + self.length]


_COLUMNS = ["part", "label", "other", "piece", "start", *INSTRUMENTS]


def test_pseudo_pieces(data: DatasetHandle, tracks: Sequence[Track], seconds: float = EVALUATION_SECONDS,
                       seed: int = 0, n_labels: int = PSEUDO_LABELS,
                       pieces_per_label: int = PSEUDO_PIECES_PER_LABEL) -> PseudoPieceSet:
    """The test pseudo pieces of Table 4.2 over ``tracks``, cut into ``seconds`` segments where the label part
    sounds.

    With fewer test tracks than the thesis's design needs, ``n_labels`` and ``pieces_per_label`` shrink to what
    the split allows (a part with fewer than two tracks, or fewer than 3 tracks in all, gets no pieces).
    """
    by_id = {track.track_id: track for track in tracks}
    having = {part: [tid for tid, track in by_id.items() if part in track.stems_by_group()] for part in INSTRUMENTS}
    pool = len(by_id)
    pieces = min(pieces_per_label, pool - 1)
    usable = {part: ids for part, ids in having.items() if len(ids) >= 2}
    length = segment_length(data.cache.sample_rate, seconds)
    empty = PseudoPieceSet(plan=pd.DataFrame(), segments=pd.DataFrame(columns=_COLUMNS), length=length)
    if pieces < 2 or not usable:
        return empty
    tempo = tempo_classes({tid: track_tempo(track) for tid, track in by_id.items()},
                          n_classes=min(data.preset.csn.n_tempo_classes, max(1, pool // 4)))
    # One plan for all parts, so that every test track is in the pool of "other" tracks.
    pieces = min(pieces, len({tid for ids in usable.values() for tid in ids}) - 1)
    if pieces < 2:
        return empty
    plan = test_pseudo_piece_plan(usable, n_labels=min(n_labels, *(len(ids) for ids in usable.values())),
                                  pieces_per_label=pieces, seed=seed, tempo_class_of=tempo)
    source = PieceSource(data.cache, by_id)
    objects: dict[str, list[TestPiece]] = {part: [] for part in INSTRUMENTS}
    for row in plan.itertuples(index=False):
        n_samples = min(len(data.cache.get(by_id[row.label], MIX_PART)), len(data.cache.get(by_id[row.other], MIX_PART)))
        sources = tuple(tid if name in by_id[tid].stems_by_group() else None
                        for name, tid in ((name, getattr(row, name)) for name in INSTRUMENTS))
        objects[row.part].append(TestPiece(track_id=row.piece, part=row.part, label=row.label, other=row.other,
                                           n_samples=int(n_samples), sources=sources))
    indices = {part: _index_or_none(source, objects[part], MIX_PART, seconds, data.preset.silence_threshold,
                                    silence_source=LabelPartSource(source)) if objects[part] else None
               for part in INSTRUMENTS}
    by_piece = {piece.track_id: piece for group in objects.values() for piece in group}
    rows = []
    for part in INSTRUMENTS:
        index = indices[part]
        if index is None:
            continue
        for piece_id in index.track_ids:
            piece = by_piece[piece_id]
            for start in index.starts[piece_id]:
                rows.append({"part": part, "label": piece.label, "other": piece.other, "piece": piece_id,
                             "start": int(start), **dict(zip(INSTRUMENTS, piece.sources))})
    return PseudoPieceSet(plan=plan, segments=pd.DataFrame(rows, columns=_COLUMNS), length=length, source=source,
                          indices=indices, pieces=by_piece)


# Not a pytest test despite its name.
test_pseudo_pieces.__test__ = False  # type: ignore[attr-defined]
