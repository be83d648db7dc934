"""The plan of the pseudo-piece catalog (pure: no audio): sizes, evaluation queries and which pieces hold what.

Thesis 6.4 had no ground truth ("the song most similar to the vocals of song A and the drums of song B" is unknown),
so it ran a listening test. The embedded generator's dataset knows which track every part comes from, and pseudo
musical pieces (chapter 4) can be planned so that a known set of pieces contains exactly "the drums of A and the
bass of B":

* for every part combination ``(p, q)`` (the 10 unordered pairs of :data:`~partsim_core.INSTRUMENTS`, ``p`` first
  in that order) up to ``pairs_per_combination`` ordered song pairs ``(A, B)``, ``A != B``, with ``p`` sounding in
  A and ``q`` in B - a 10-s segment where the part is not silent (the query segment,
  :func:`~partsim_core.mixquery.ground_truth.query_segments`), and playing at least half of the shortest piece's
  span from 0, so that it sounds in every piece that takes it - each pair giving one **query**
  ``(A, p, segment s), (B, q, segment s')`` and these pieces: ``relevant_per_query`` *relevant* pieces (``p`` from
  A, ``q`` from B, every other part from a random other song having it), ``distractors_per_side`` pieces with ``p``
  from A but ``q`` from another song (never B; one whose ``q`` plays from the start when there is one), as many with
  ``q`` from B but ``p`` from another song (never A) - the other parts as in the relevant ones;
* ``random_pieces`` pieces whose every part comes from a random song having it;
* no piece is relevant to a query by accident: the random parts are redrawn (and, after 50 tries, the offending
  ones left out) until a piece completes no query's pair except the one it was planted for, so every query has
  exactly ``relevant_per_query`` relevant pieces and a perfect ranking reaches recall@10 = MRR = 1.

A piece's length is that of its shortest source (capped at ``max_piece_seconds``); pieces are numbered from
``Track90001``. Writing them is :mod:`partsim_core.mixquery.pseudo_catalog`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART
from partsim_core.errors import PartsimError
from partsim_core.mixquery.ground_truth import QUERY_MIN_SECONDS, audible, overlap_seconds
from partsim_core.mixquery.search import StemQuery

#: First track number of the pseudo pieces (far above the generator's and Slakh2100's 1..2100).
PIECE_NUMBER_BASE = 90001

#: Part combinations of the evaluation: the 10 unordered pairs, in INSTRUMENTS order.
PART_COMBINATIONS: tuple[tuple[str, str], ...] = tuple(itertools.combinations(INSTRUMENTS, 2))

@dataclass(frozen=True)
class EvaluationSizes:
    """Size of the pseudo-piece catalog and of the simulated listening test.

    Attributes:
        pairs_per_combination: Song pairs (= queries) per part combination (fewer when fewer pairs exist).
        relevant_per_query: Relevant pieces planted per query.
        distractors_per_side: Pieces sharing only ``p`` from A, and as many sharing only ``q`` from B, per query.
        random_pieces: Pieces of random parts.
        max_piece_seconds: Longest piece (``None``: the shortest source decides alone).
        listeners: Simulated listeners (thesis 6.4: 15 participants).
        listener_noise: Range of the listeners' noise levels (uniform).
    """

    pairs_per_combination: int
    relevant_per_query: int = 3
    distractors_per_side: int = 1
    random_pieces: int = 10
    max_piece_seconds: float | None = None
    listeners: int = 15
    listener_noise: tuple[float, float] = (0.2, 0.6)

    def check(self) -> None:
        """Raise :class:`PartsimError` naming the first impossible value."""
        for name in ("pairs_per_combination", "relevant_per_query", "listeners"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PartsimError(f"evaluation size {name} must be a positive integer, got {value!r}")
        for name in ("distractors_per_side", "random_pieces"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PartsimError(f"evaluation size {name} must be a non-negative integer, got {value!r}")
        if self.max_piece_seconds is not None and not (math.isfinite(self.max_piece_seconds)
                                                        and self.max_piece_seconds >= QUERY_MIN_SECONDS):
            raise PartsimError(f"max_piece_seconds must be None or at least {QUERY_MIN_SECONDS} s, got "
                               f"{self.max_piece_seconds!r}")
        low, high = self.listener_noise
        if not (0 <= low <= high and math.isfinite(high)):
            raise PartsimError(f"listener_noise must be a range 0 <= low <= high, got {self.listener_noise!r}")


#: Sizes per preset. smoke: 4 test songs -> 56 pieces, seconds of evaluation. default: 30 test songs -> 120 pieces
#: of 10 s (one segment) beside the 30 songs of 30-40 s; the ``separated`` backend separates all of it with the U-Net
#: (~0.12-0.24 s per second of audio on 2 shared cores, measured), which dominates the run. paper: real sizes.
EVALUATION_SIZES: dict[str, EvaluationSizes] = {
    "smoke": EvaluationSizes(pairs_per_combination=1, relevant_per_query=3, distractors_per_side=1,
                             random_pieces=6),
    "default": EvaluationSizes(pairs_per_combination=2, relevant_per_query=3, distractors_per_side=1,
                               random_pieces=20, max_piece_seconds=10.0),
    "paper": EvaluationSizes(pairs_per_combination=10, relevant_per_query=3, distractors_per_side=2,
                             random_pieces=500, max_piece_seconds=60.0),
}


def evaluation_sizes(preset: str) -> EvaluationSizes:
    """The evaluation sizes of a preset.

    Raises:
        PartsimError: an unknown preset.
    """
    try:
        return EVALUATION_SIZES[preset]
    except KeyError:
        raise PartsimError(f"unknown preset {preset!r}; choose one of: {', '.join(EVALUATION_SIZES)}") from None


@dataclass(frozen=True)
class EvaluationQuery:
    """One evaluation query: part ``part_a`` of song A at ``segment_a`` plus ``part_b`` of song B at ``segment_b``."""

    query_id: str
    song_a: str
    part_a: str
    segment_a: int
    song_b: str
    part_b: str
    segment_b: int

    @property
    def combination(self) -> str:
        """``"drums+bass"``: the part combination."""
        return f"{self.part_a}+{self.part_b}"

    def stem_queries(self, parts: Sequence[str] = INSTRUMENTS) -> list[StemQuery]:
        """The two stem queries for an index with embedding parts ``parts``; an index without the query's parts
        but with ``mix`` (the track-level backend) gets the two songs' mix segments."""
        if self.part_a in parts and self.part_b in parts:
            return [StemQuery(self.song_a, self.part_a, self.segment_a),
                    StemQuery(self.song_b, self.part_b, self.segment_b)]
        if MIX_PART in parts:
            return [StemQuery(self.song_a, MIX_PART, self.segment_a), StemQuery(self.song_b, MIX_PART, self.segment_b)]
        raise PartsimError(f"an index with parts {', '.join(parts)} cannot answer a {self.combination} query")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (manifest, JSON)."""
        return asdict(self)


def plan_pseudo_catalog(songs: Mapping[str, Mapping], seconds: Mapping[str, float],
                        segments: Mapping[str, Mapping[str, Sequence[int]]], sizes: EvaluationSizes,
                        seed: int = 0, sample_rate: int | None = None) -> dict[str, Any]:
    """Which queries and pieces the catalog holds (pure: no audio), following the module docstring's rules.

    Args:
        songs: Ground-truth entry (``parts`` with ``style`` and ``active``) of every test song.
        seconds: Length of every song in seconds.
        segments: ``{song: {part: query segment numbers}}``, the segments where each part is not silent
            (:func:`~partsim_core.mixquery.ground_truth.query_segments`); a missing entry means none.
        sizes: Catalog sizes.
        seed: Seeds every draw.
        sample_rate: Rate of the audio; when given, each piece's length in samples is added (``samples``).

    Returns:
        ``{"queries": [query dicts], "pieces": {piece id: {"kind", "query", "sources": {part: song or None},
        "seconds"[, "samples"]}}, "skipped_combinations": [combinations without any song pair]}``.

    Raises:
        PartsimError: fewer than 3 songs, or no combination with a usable song pair.
    """
    sizes.check()
    ids = sorted(songs)
    clashing = [song for song in ids if song.startswith("Track") and song[5:].isdigit()
                and int(song[5:]) >= PIECE_NUMBER_BASE]
    if clashing:
        raise PartsimError(f"test songs {', '.join(clashing[:5])} use the pseudo pieces' track numbers "
                           f"(from {PIECE_NUMBER_BASE})")
    if len(ids) < 3:
        raise PartsimError(f"the pseudo-piece catalog needs at least 3 test songs with ground truth, got {len(ids)}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 6]))
    # Every piece is at least this long; a query's parts must play in it (pieces start at 0), else a "relevant"
    # piece could hold A's part only where it is silent.
    floor = min(min(seconds[song] for song in ids), sizes.max_piece_seconds or math.inf)
    early = {part: [song for song in ids if audible(songs[song]["parts"].get(part), 0.0, floor)]
             for part in INSTRUMENTS}

    def usable(song: str, part: str) -> list[int]:
        return [int(number) for number in segments.get(song, {}).get(part, [])]

    sounding = {part: [song for song in early[part] if usable(song, part)] for part in INSTRUMENTS}
    # Songs whose part plays at all (a piece's other parts need not have a 10-s query segment).
    having = {part: [song for song in ids if overlap_seconds(songs[song]["parts"].get(part), 0.0, seconds[song]) > 0]
              for part in INSTRUMENTS}
    queries: list[EvaluationQuery] = []
    skipped: list[str] = []

    def pick(part: str, avoid: Collection[str], pool: Mapping[str, list[str]] = having) -> str | None:
        choices = [song for song in pool[part] if song not in avoid]
        return choices[int(rng.integers(len(choices)))] if choices else None

    def pick_early(part: str, avoid: Collection[str]) -> str | None:
        # A distractor's other query part: one that plays from the start, when there is one.
        return pick(part, avoid, early) if any(song not in avoid for song in early[part]) else pick(part, avoid)

    # 1. The queries: song pairs per combination, a segment where each part sounds.
    for part_a, part_b in PART_COMBINATIONS:
        pairs = [(a, b) for a in sounding[part_a] for b in sounding[part_b] if a != b]
        if not pairs:
            skipped.append(f"{part_a}+{part_b}")
            continue
        chosen = rng.choice(len(pairs), size=min(sizes.pairs_per_combination, len(pairs)), replace=False)
        for number in sorted(int(n) for n in chosen):
            song_a, song_b = pairs[number]
            segments_a = usable(song_a, part_a)
            segments_b = usable(song_b, part_b)
            segment_a = int(segments_a[int(rng.integers(len(segments_a)))])
            segment_b = int(segments_b[int(rng.integers(len(segments_b)))])
            queries.append(EvaluationQuery(f"q{len(queries):03d}", song_a, part_a, segment_a, song_b, part_b,
                                           segment_b))
    if not queries:
        raise PartsimError(f"no part combination has two different test songs in which its parts sound "
                           f"({len(ids)} songs); the pseudo-piece catalog needs more test songs")

    def matches(sources: Mapping[str, str | None], own: EvaluationQuery | None, kind: str) -> list[EvaluationQuery]:
        # Queries the piece would be relevant to, other than the one it was planted for as relevant.
        return [query for query in queries if sources[query.part_a] == query.song_a
                and sources[query.part_b] == query.song_b and not (kind == "relevant" and query is own)]

    pieces: list[dict] = []

    def piece(kind: str, own: EvaluationQuery | None, fixed: Mapping[str, str | None],
              avoid: Collection[str]) -> None:
        # The free parts are redrawn until the piece is relevant to no query by accident (with few test songs a
        # random part often completes another query's pair); after 50 tries the offending free parts are dropped.
        for _ in range(50):
            sources = {part: (fixed[part] if part in fixed else pick(part, avoid)) for part in INSTRUMENTS}
            if not matches(sources, own, kind):
                break
        else:
            while clashes := matches(sources, own, kind):
                free = [part for query in clashes for part in (query.part_a, query.part_b) if part not in fixed]
                if not free:  # pragma: no cover - the fixed parts never form another query (see below)
                    raise PartsimError(f"internal error: a {kind} piece's fixed parts {dict(fixed)} form a query")
                for part in free:
                    sources[part] = None
        if any(source is not None for source in sources.values()):
            pieces.append({"kind": kind, "query": own.query_id if own else None, "sources": sources})

    # 2. The pieces of every query, then the random ones.
    for query in queries:
        pair = (query.song_a, query.song_b)
        same = [other for other in queries if (other.part_a, other.part_b) == (query.part_a, query.part_b)]
        # A distractor's second song must not make it another query's pair of the same combination.
        not_b = {*pair, *(other.song_b for other in same if other.song_a == query.song_a)}
        not_a = {*pair, *(other.song_a for other in same if other.song_b == query.song_b)}
        for _ in range(sizes.relevant_per_query):
            piece("relevant", query, {query.part_a: query.song_a, query.part_b: query.song_b}, pair)
        for _ in range(sizes.distractors_per_side):
            piece("distractor_a", query, {query.part_a: query.song_a,
                                          query.part_b: pick_early(query.part_b, not_b)}, pair)
        for _ in range(sizes.distractors_per_side):
            piece("distractor_b", query, {query.part_a: pick_early(query.part_a, not_a),
                                          query.part_b: query.song_b}, pair)
    for _ in range(sizes.random_pieces):
        piece("random", None, {}, ())
    if PIECE_NUMBER_BASE + len(pieces) - 1 > 99999:
        raise PartsimError(f"{len(pieces)} pseudo pieces do not fit the track ids Track{PIECE_NUMBER_BASE}-Track99999; "
                           "lower the evaluation sizes")
    planned: dict[str, dict] = {}
    for number, entry in enumerate(pieces):
        used = [song for song in entry["sources"].values() if song is not None]
        length = min(seconds[song] for song in used)
        if sizes.max_piece_seconds is not None:
            length = min(length, float(sizes.max_piece_seconds))
        entry["seconds"] = float(length)
        if sample_rate is not None:
            # seconds are sample counts / rate, so this floor gives back the shortest source's count exactly.
            entry["samples"] = math.floor(length * sample_rate + 1e-6)
        planned[f"Track{PIECE_NUMBER_BASE + number:05d}"] = entry
    queries_out = [query.to_dict() for query in queries]
    return {"queries": queries_out, "pieces": planned, "skipped_combinations": skipped}

