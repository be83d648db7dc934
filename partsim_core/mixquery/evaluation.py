"""MixQuery evaluation with ground truth (beyond the thesis) and a *simulated* C0-C3 ABX test (thesis 6.4).

Thesis 6.4 had no ground truth ("the song most similar to the vocals of song A and the drums of song B" is unknown),
so it ran a listening test. The embedded generator's dataset knows which track every part comes from, and pseudo
musical pieces (chapter 4, :func:`partsim_core.csn.pseudo_pieces.mix_piece`) can be built so that a known set of pieces
contains exactly "the drums of A and the bass of B". That gives ground truth for MixQuery:

**The pseudo-piece catalog** (:func:`build_pseudo_catalog`), a Slakh-format folder
``cache_root()/mixquery/pseudo-catalog-<hash>/test/`` (written atomically, reused while its key is unchanged):

* the test-split songs of the dataset themselves (hard links to their files, copies where links fail);
* for every part combination ``(p, q)`` (the 10 unordered pairs of :data:`~partsim_core.INSTRUMENTS`, ``p``
  first in that order) up to ``pairs_per_combination`` ordered song pairs ``(A, B)``, ``A != B``, with ``p``
  sounding in A and ``q`` in B - a 10-s segment where the part plays at least half the time (the query segment,
  see :func:`query_segments`), and at least half of the shortest piece's span from 0, so that it sounds in every
  piece that takes it - each pair giving one **query** ``(A, p, segment s), (B, q, segment s')`` and these pieces:
  ``relevant_per_query`` *relevant* pieces (``p`` from A, ``q`` from B, every other part from a random other test
  song having it), ``distractors_per_side`` pieces with ``p`` from A but ``q`` from another song (never B; one whose
  ``q`` plays from the start when there is one), as many with ``q`` from B but ``p`` from another song (never A) -
  the other parts as in the relevant ones;
* ``random_pieces`` pieces whose every part comes from a random test song having it;
* no piece is relevant to a query by accident: the random parts are redrawn (and, after 50 tries, the offending
  ones left out) until a piece completes no query's pair except the one it was planted for, so every query has
  exactly ``relevant_per_query`` relevant pieces and a perfect ranking reaches recall@10 = MRR = 1.

A piece's parts are aligned from the start of each source (sample 0), its length is that of its shortest source
(capped at ``max_piece_seconds``), and it is written like a generated track (:mod:`partsim_core.data.synth`):
every stem of every used part is the source stem's 16-bit excerpt, copied sample for sample (``stems/SXX.flac``,
its ``metadata.yaml`` entry copied with the excerpt's loudness), and ``mix.flac`` is the waveform-domain sum of
the parts (:func:`~partsim_core.csn.pseudo_pieces.mix_piece`) scaled to a -1 dBFS peak (``overall_gain``), like the
generator's mixes. No MIDI is copied. Pieces are numbered from ``Track90001``. A JSON manifest
(:data:`MANIFEST_FILE`) lists every piece's source track per part, the queries, and the source songs' ground truth.

**Relevance**: a piece is relevant to a query when its ``p`` comes from A and its ``q`` from B (read from the
manifest; by the rule above these are exactly the planted relevant pieces). **Queries** are run on an index of the
catalog (:meth:`~partsim_core.mixquery.MixQueryIndex.search_songs` with ``exclude_query_songs=True``, the whole
catalog ranked). **Metrics** per query, averaged per part combination and overall: recall@k = share of the relevant
pieces in the top k (k = 10, 100), reciprocal rank = 1 / rank of the first relevant piece (its mean is the MRR).
**Peers**: the track-level network (backend ``track``: chapter 3's mix network, one vector per segment, a song's
distance = min over its segments of the cosine distance to the mean of the two query segments' vectors) and
random ranking, whose expected metrics are computed **exactly** (:func:`expected_random_metrics`).

**Simulated C0-C3** (thesis 6.4.1, Table 6.1; :func:`simulate_abx`): for every query (two stems of different
songs) and method, the catalog is ranked; the target is rank 1, the comparison rank ``m`` is drawn uniformly per
strategy from the thesis's ranges rescaled to the ``N`` ranked songs (:func:`comparison_rank_ranges`: C0 =
2..max(2, round(100 / 3108 N)), C1-C3 the remaining ranks in three equal parts; at N = 3108 exactly the thesis's
2-100, 101-1103, 1104-2106, 2107-3108). Listeners are **simulated** from the generator's ground truth: a candidate
scores, per query part, 1 when its part comes from the query's source track, else 0.5 when it has the same style,
else 0 - and 0 when the part does not sound in the 10-s segment listened to (the candidate's best segment) - summed
over the query's two parts. A listener picks the target when ``score(target) - score(comparison) + s e > 0``
(``e`` standard normal per answer, ``s`` the listener's noise level drawn uniformly from ``listener_noise``; an
exact tie is a coin flip). Every listener answers every trial; the same draws serve every method (common random
numbers). Accuracy per strategy with Wilson 95 % intervals (as thesis 6.4.2). **These are not listeners**: the
numbers say how well a ranking follows the generator's notion of "same track / same style", nothing about people.

Everything is seeded. Real Slakh2100 has no ground truth, so the evaluation needs the embedded generator's dataset
(``partsim data synth``); another root is refused with a :class:`~partsim_core.errors.PartsimError` saying so.

Used by: ``partsim mixquery evaluate`` and ``notebooks/ch6_mixquery.py`` (chapter 6).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import (
    MIX_PART,
    atomic_directory,
    atomic_write_json,
    cache_root,
    file_identity,
    stable_hash,
)
from partsim_core.errors import PartsimError
from partsim_core.mixquery.catalog import SEGMENT_SECONDS, Catalog
from partsim_core.mixquery.search import SongHit, StemQuery

if TYPE_CHECKING:
    from partsim_core.data.slakh import Track
    from partsim_core.mixquery.backends import EmbeddingBackend
    from partsim_core.mixquery.index import MixQueryIndex

#: Bump when the catalog's layout or planning rules change (part of the catalog key).
CATALOG_FORMAT_VERSION = 2

#: The manifest of a pseudo-piece catalog (beside its ``test/`` folder).
MANIFEST_FILE = "mixquery_pseudo_catalog.json"

#: The ground-truth file of the embedded generator (``partsim_core.data.synth.GROUND_TRUTH_FILE``).
GROUND_TRUTH_FILE = "partsim_ground_truth.json"

#: First track number of the pseudo pieces (far above the generator's and Slakh2100's 1..2100).
PIECE_NUMBER_BASE = 90001

#: Query segments must be at least this long (a short last segment is indexed but makes a poor query).
QUERY_MIN_SECONDS = 3.0

#: Part combinations of the evaluation: the 10 unordered pairs, in INSTRUMENTS order.
PART_COMBINATIONS: tuple[tuple[str, str], ...] = tuple(itertools.combinations(INSTRUMENTS, 2))

#: Cut-offs of recall@k.
RECALL_KS: tuple[int, ...] = (10, 100)

#: Method names of the peers in the tables.
TRACK_METHOD = "track"
RANDOM_METHOD = "random"

#: The thesis's retrieval catalog (6.3.1) and the last rank of strategy C0 (6.4.1).
THESIS_CATALOG_SONGS = 3108
THESIS_C0_LAST_RANK = 100

#: Comparison strategies of thesis 6.4.1.
STRATEGIES: tuple[str, ...] = ("C0", "C1", "C2", "C3")

#: z of a two-sided 95 % interval.
WILSON_Z = 1.959963984540054

#: Score of a candidate's part from the query's source track, and from another track of the same style.
SAME_TRACK_SCORE = 1.0
SAME_STYLE_SCORE = 0.5

#: Label of every simulated listening-test output.
SIMULATED = "SIMULATED"


# --------------------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------------------


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

    Used by: :func:`run_evaluation`, :func:`build_pseudo_catalog`.
    """
    try:
        return EVALUATION_SIZES[preset]
    except KeyError:
        raise PartsimError(f"unknown preset {preset!r}; choose one of: {', '.join(EVALUATION_SIZES)}") from None


# --------------------------------------------------------------------------------------------------------------
# ground truth of the source songs
# --------------------------------------------------------------------------------------------------------------


def read_source_truth(root: str | os.PathLike) -> dict:
    """The ``tracks`` of a generated dataset's ``partsim_ground_truth.json``.

    Raises:
        PartsimError: no (readable) ground truth - real Slakh2100 has none; the evaluation needs the embedded
            generator's dataset.

    Used by: :func:`build_pseudo_catalog`.
    """
    path = Path(root) / GROUND_TRUTH_FILE
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartsimError(
            f"{root}: no {GROUND_TRUTH_FILE}, so the MixQuery evaluation has no ground truth here. It needs the "
            "embedded generator's dataset (partsim data synth, or data_root empty), which records the source track "
            "and style of every part; real Slakh2100 has no such ground truth") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PartsimError(f"{path}: unreadable ground truth ({error})") from None
    tracks = truth.get("tracks") if isinstance(truth, dict) else None
    if not isinstance(tracks, dict):
        raise PartsimError(f"{path}: malformed ground truth (no 'tracks' mapping)")
    return tracks


def overlap_seconds(part_truth: Mapping | None, start_s: float, end_s: float) -> float:
    """Seconds of ``[start_s, end_s]`` in which a part plays (its ``active`` spans; all of it without spans).

    Used by: :func:`query_segments`, :func:`plan_pseudo_catalog`.
    """
    if part_truth is None:
        return 0.0
    spans = part_truth.get("active")
    if spans is None:
        return max(0.0, end_s - start_s)
    return float(sum(max(0.0, min(end_s, b) - max(start_s, a)) for a, b in spans))


def audible(part_truth: Mapping | None, start_s: float, end_s: float) -> bool:
    """Whether a part plays for at least half of ``[start_s, end_s]`` (the rule of the simulated chapter-5 test).

    Used by: :func:`query_segments`, :func:`listener_score`.
    """
    return end_s > start_s and overlap_seconds(part_truth, start_s, end_s) >= 0.5 * (end_s - start_s)


def query_segments(part_truth: Mapping | None, seconds: float, segment_seconds: float = SEGMENT_SECONDS,
                   min_seconds: float = QUERY_MIN_SECONDS) -> list[int]:
    """Segments (10-s steps from 0, at least ``min_seconds`` long) of a song of ``seconds`` where the part sounds.

    A segment qualifies when the part plays at least half of it; when none does, the segments where it plays at
    all, longest playing first; ``[]`` when it never plays (or the song has no segment that long).

    Used by: :func:`plan_pseudo_catalog` (query segments).
    """
    bounds = []
    start = 0.0
    while start + min_seconds <= seconds + 1e-9:
        bounds.append((start, min(start + segment_seconds, seconds)))
        start += segment_seconds
    good = [number for number, (a, b) in enumerate(bounds) if audible(part_truth, a, b)]
    if good:
        return good
    playing = [(overlap_seconds(part_truth, a, b), number) for number, (a, b) in enumerate(bounds)]
    return [number for amount, number in sorted(playing, key=lambda item: (-item[0], item[1])) if amount > 0]


# --------------------------------------------------------------------------------------------------------------
# queries and the catalog plan
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationQuery:
    """One evaluation query: part ``part_a`` of song A at ``segment_a`` plus ``part_b`` of song B at ``segment_b``.

    Used by :func:`run_evaluation` and :func:`simulate_abx`.
    """

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


def plan_pseudo_catalog(songs: Mapping[str, Mapping], seconds: Mapping[str, float], sizes: EvaluationSizes,
                        seed: int = 0, sample_rate: int | None = None) -> dict[str, Any]:
    """Which queries and pieces the catalog holds (pure: no audio), following the module docstring's rules.

    Args:
        songs: Ground-truth entry (``parts`` with ``style`` and ``active``) of every test song.
        seconds: Length of every song in seconds.
        sizes: Catalog sizes.
        seed: Seeds every draw.
        sample_rate: Rate of the audio; when given, each piece's length in samples is added (``samples``).

    Returns:
        ``{"queries": [query dicts], "pieces": {piece id: {"kind", "query", "sources": {part: song or None},
        "seconds"[, "samples"]}}, "skipped_combinations": [combinations without any song pair]}``.

    Raises:
        PartsimError: fewer than 3 songs, or no combination with a usable song pair.

    Used by: :func:`build_pseudo_catalog` and the tests.
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
    sounding = {part: [song for song in early[part]
                       if query_segments(songs[song]["parts"].get(part), seconds[song])] for part in INSTRUMENTS}
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
            segments_a = query_segments(songs[song_a]["parts"].get(part_a), seconds[song_a])
            segments_b = query_segments(songs[song_b]["parts"].get(part_b), seconds[song_b])
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
            entry["samples"] = int(math.floor(length * sample_rate + 1e-6))
        planned[f"Track{PIECE_NUMBER_BASE + number:05d}"] = entry
    queries_out = [query.to_dict() for query in queries]
    return {"queries": queries_out, "pieces": planned, "skipped_combinations": skipped}


# --------------------------------------------------------------------------------------------------------------
# writing the catalog
# --------------------------------------------------------------------------------------------------------------


class _PieceStems:
    """The signal source of one piece: each source track's parts as exact sums of the first ``frames`` samples of
    its 16-bit stems (decoded once per piece, nothing kept afterwards, no disk cache).

    ``mix_piece`` reads parts through it, so a piece's mix is the sum of exactly the samples written as its stems.
    """

    def __init__(self, sample_rate: int, frames: int) -> None:
        self.sample_rate = int(sample_rate)
        self.frames = int(frames)
        self._stems: dict[Path, np.ndarray] = {}

    def stem(self, path: Path) -> np.ndarray:
        """The first ``frames`` int16 samples of one stem file (zero-padded when it is shorter)."""
        import soundfile

        if path not in self._stems:
            try:
                with soundfile.SoundFile(str(path)) as handle:
                    rate = handle.samplerate
                    audio = handle.read(self.frames, dtype="int16", always_2d=True)
            except (RuntimeError, OSError) as error:
                raise PartsimError(f"{path}: unreadable stem ({' '.join(str(error).split())})") from None
            if rate != self.sample_rate:
                raise PartsimError(f"{path}: sample rate {rate} Hz, but the catalog's songs are {self.sample_rate} Hz")
            mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1).astype(np.int16)
            excerpt = np.zeros(self.frames, dtype=np.int16)
            excerpt[:mono.shape[0]] = mono
            self._stems[path] = excerpt
        return self._stems[path]

    def get(self, track: Track, part: str) -> np.ndarray:
        """Float32 sum of the part's stem excerpts (full scale 1.0; zeros when the track lacks the part)."""
        total = np.zeros(self.frames, dtype=np.float32)
        for stem in track.stems_by_group().get(part, []):
            total += self.stem(stem.audio_path).astype(np.float32) / 32768.0
        return total


def _link_or_copy(source: str, target: str) -> str:
    # Hard links cost no space; across file systems (or where links are refused) fall back to a copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def _write_piece(folder: Path, piece_id: str, entry: Mapping, tracks: Mapping[str, Track], sample_rate: int) -> None:
    """Write one pseudo piece as a Slakh track folder (stems, mix, metadata.yaml; see the module docstring)."""
    import soundfile
    import yaml

    from partsim_core.data.synth import STEM_TARGET_DBFS, TARGET_PEAK_DBFS, gated_rms_dbfs, to_pcm16
    from partsim_core.csn.pseudo_pieces import PseudoPiece, mix_piece

    length = int(entry["samples"])
    stems = _PieceStems(sample_rate, length)
    (folder / "stems").mkdir(parents=True)
    stems_metadata: dict[str, dict] = {}
    for part in INSTRUMENTS:
        source = entry["sources"][part]
        if source is None:
            continue
        track = tracks[source]
        for stem in track.stems_by_group().get(part, []):
            excerpt = stems.stem(stem.audio_path)
            stem_id = f"S{len(stems_metadata):02d}"
            soundfile.write(folder / "stems" / f"{stem_id}.flac", excerpt, sample_rate, format="FLAC",
                            subtype="PCM_16")
            info = dict(track.metadata["stems"][stem.stem_id])
            info["integrated_loudness"] = gated_rms_dbfs(excerpt / 32768.0, sample_rate)
            info["partsim_source"] = f"{source}/{stem.stem_id}"
            stems_metadata[stem_id] = info
    piece = PseudoPiece.from_parts(entry["sources"])
    mix, _ = mix_piece(stems, tracks, piece, 0, length)
    gain = float(10 ** (TARGET_PEAK_DBFS / 20) / max(float(np.abs(mix).max()), 1e-9))
    soundfile.write(folder / "mix.flac", to_pcm16(mix * gain), sample_rate, format="FLAC", subtype="PCM_16")
    metadata = {
        "UUID": stable_hash({"piece": piece_id, "sources": entry["sources"], "samples": length}, length=32),
        "audio_dir": f"{piece_id}/stems",
        "midi_dir": f"{piece_id}/MIDI",
        "normalization_factor": STEM_TARGET_DBFS,
        "normalized": True,
        "overall_gain": gain,
        "partsim_pseudo_piece": {part: entry["sources"][part] for part in INSTRUMENTS},
        "stems": stems_metadata,
        "target_peak": TARGET_PEAK_DBFS,
    }
    (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=True, default_flow_style=False))


@dataclass
class PseudoCatalog:
    """A pseudo-piece catalog on disk (see the module docstring) and its manifest.

    Attributes:
        root: The Slakh-format folder (its split ``test`` is the catalog).
        manifest: The parsed :data:`MANIFEST_FILE`.
        reused: True when :func:`build_pseudo_catalog` found it already built.

    Used by: :func:`run_evaluation`, :func:`simulate_abx`, the chapter-6 notebook.
    """

    root: Path
    manifest: dict
    reused: bool = False

    @classmethod
    def load(cls, root: str | os.PathLike) -> PseudoCatalog:
        """Open a built catalog folder.

        Raises:
            PartsimError: no (readable) manifest there.
        """
        root = Path(root)
        path = root / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PartsimError(f"{root}: not a pseudo-piece catalog (no {MANIFEST_FILE}); build one with "
                               "partsim_core.mixquery.evaluation.build_pseudo_catalog") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PartsimError(f"{path}: unreadable manifest ({error})") from None
        if manifest.get("format_version") != CATALOG_FORMAT_VERSION:
            raise PartsimError(f"{path}: catalog format {manifest.get('format_version')}, this partsim writes "
                               f"{CATALOG_FORMAT_VERSION}; rebuild it")
        return cls(root, manifest)

    @property
    def queries(self) -> list[EvaluationQuery]:
        """The evaluation queries, in plan order."""
        return [EvaluationQuery(**query) for query in self.manifest["queries"]]

    @property
    def songs(self) -> list[str]:
        """The test songs (sources of the pieces)."""
        return sorted(self.manifest["songs"])

    @property
    def pieces(self) -> dict[str, dict]:
        """Piece id -> ``{"kind", "query", "sources", "seconds", "samples"}``."""
        return self.manifest["pieces"]

    @property
    def catalog_ids(self) -> list[str]:
        """Every song of the catalog: the test songs, then the pieces."""
        return self.songs + sorted(self.pieces)

    def sources(self, song: str) -> dict[str, str | None]:
        """Source track of every part of a catalog song (a test song: itself for the parts it has).

        Raises:
            PartsimError: not a song of this catalog.
        """
        if song in self.pieces:
            return dict(self.pieces[song]["sources"])
        if song in self.manifest["songs"]:
            parts = self.manifest["songs"][song]["truth"]["parts"]
            return {part: (song if part in parts else None) for part in INSTRUMENTS}
        raise PartsimError(f"{song!r} is not a song of the pseudo-piece catalog {self.root}")

    def seconds(self, song: str) -> float:
        """Length of a catalog song in seconds."""
        entry = self.pieces.get(song) or self.manifest["songs"].get(song)
        if entry is None:
            raise PartsimError(f"{song!r} is not a song of the pseudo-piece catalog {self.root}")
        return float(entry["seconds"])

    def part_truth(self, track: str, part: str) -> dict | None:
        """Ground truth (``style``, ``program``, ``active``) of a *source* song's part, ``None`` when it lacks it."""
        return self.manifest["songs"][track]["truth"]["parts"].get(part)

    def relevant(self, query: EvaluationQuery) -> list[str]:
        """Catalog songs whose ``part_a`` comes from A and ``part_b`` from B (sorted)."""
        return sorted(piece for piece, entry in self.pieces.items()
                      if entry["sources"][query.part_a] == query.song_a
                      and entry["sources"][query.part_b] == query.song_b)

    def ground_truth(self) -> pd.DataFrame:
        """One row per query: its id, combination, stems and the relevant pieces (the evaluation's ground truth)."""
        rows = []
        for query in self.queries:
            relevant = self.relevant(query)
            rows.append({"query": query.query_id, "combination": query.combination,
                         "stem A": f"{query.song_a}:{query.part_a}:{query.segment_a}",
                         "stem B": f"{query.song_b}:{query.part_b}:{query.segment_b}",
                         "relevant": len(relevant), "relevant pieces": ", ".join(relevant)})
        return pd.DataFrame(rows).set_index("query")

    def summary(self) -> dict[str, Any]:
        """Counts: songs, pieces per kind, queries, skipped combinations."""
        kinds = pd.Series([entry["kind"] for entry in self.pieces.values()]).value_counts()
        return {"root": str(self.root), "songs": len(self.manifest["songs"]), "pieces": len(self.pieces),
                "pieces_per_kind": {str(kind): int(count) for kind, count in kinds.items()},
                "queries": len(self.manifest["queries"]), "catalog_songs": len(self.catalog_ids),
                "skipped_combinations": list(self.manifest.get("skipped_combinations", [])),
                "reused": bool(self.reused)}

    def catalog(self, sample_rate: int) -> Catalog:
        """The catalog (split ``test`` of :attr:`root`) served at ``sample_rate``."""
        return Catalog(self.root, split="test", sample_rate=sample_rate)


def default_pseudo_catalog_dir(key: str) -> Path:
    """``cache_root()/mixquery/pseudo-catalog-<key>``.

    Used by: :func:`build_pseudo_catalog`.
    """
    return cache_root() / "mixquery" / f"pseudo-catalog-{key}"


def build_pseudo_catalog(preset: str = "smoke", data_root: str | os.PathLike = "", *,
                         sizes: EvaluationSizes | None = None, seed: int = 0, out: str | os.PathLike | None = None,
                         rebuild: bool = False, progress: bool = True) -> PseudoCatalog:
    """Write (or reuse) the pseudo-piece catalog of a dataset's test split (see the module docstring).

    Args:
        preset: Preset whose embedded dataset is the source when ``data_root`` is empty; also picks the sizes.
        data_root: A dataset written by ``partsim data synth`` (needs its ground truth); ``""`` = the preset's.
        sizes: Override of :func:`evaluation_sizes`.
        seed: Seeds the plan.
        out: Catalog folder; default :func:`default_pseudo_catalog_dir` of the key (hash of the source test songs'
            files, sizes, seed and format), so a regenerated dataset gets a new catalog.
        rebuild: Write even when a catalog of the same key is there.
        progress: Progress bar over pieces.

    Raises:
        PartsimError: a dataset without ground truth (e.g. real Slakh2100), fewer than 3 test songs, songs of
            different sample rates.

    Used by: :func:`run_evaluation`, ``partsim mixquery evaluate``, the chapter-6 notebook.
    """
    from partsim_core.data.dataset import resolve_dataset_root
    from partsim_core.data.slakh import open_slakh, track_sample_rate

    sizes = sizes or evaluation_sizes(preset)
    sizes.check()
    source_root = Path(resolve_dataset_root(preset, data_root, progress=progress))
    truth = read_source_truth(source_root)
    dataset = open_slakh(source_root)
    tracks = [track for track in dataset.tracks("test") if track.track_id in truth]
    if len(tracks) < 3:
        raise PartsimError(f"{source_root}: {len(tracks)} test song(s) with ground truth; the pseudo-piece catalog "
                           "needs at least 3")
    rates = {track.track_id: track_sample_rate(track) for track in tracks}
    if len(set(rates.values())) != 1:
        raise PartsimError(f"{source_root}: test songs have different sample rates {sorted(set(rates.values()))}")
    rate = next(iter(rates.values()))
    key = stable_hash({"format": CATALOG_FORMAT_VERSION, "sizes": asdict(sizes), "seed": int(seed),
                       "songs": [(track.track_id, [file_identity(path) for path in track.audio_files()])
                                 for track in tracks]}, length=12)
    folder = Path(out) if out is not None else default_pseudo_catalog_dir(key)
    if not rebuild and (folder / MANIFEST_FILE).is_file():
        with contextlib.suppress(PartsimError):
            existing = PseudoCatalog.load(folder)
            if existing.manifest.get("key") == key:
                existing.reused = True
                return existing
    samples = {track.track_id: _mix_frames(track) for track in tracks}
    seconds = {song: count / rate for song, count in samples.items()}
    songs = {track.track_id: truth[track.track_id] for track in tracks}
    plan = plan_pseudo_catalog(songs, seconds, sizes, seed=seed, sample_rate=rate)
    by_id = {track.track_id: track for track in tracks}
    with atomic_directory(folder) as tmp:
        for track in tracks:
            shutil.copytree(track.folder, tmp / "test" / track.track_id, copy_function=_link_or_copy)
        for piece_id, entry in tqdm(plan["pieces"].items(), desc="pseudo pieces", unit="piece",
                                    disable=not progress):
            _write_piece(tmp / "test" / piece_id, piece_id, entry, by_id, rate)
        manifest = {
            "format_version": CATALOG_FORMAT_VERSION, "key": key, "preset": preset, "seed": int(seed),
            "source_root": str(source_root), "sample_rate": int(rate), "sizes": asdict(sizes),
            "songs": {song: {"seconds": seconds[song], "samples": samples[song], "truth": songs[song]}
                      for song in sorted(songs)},
            "pieces": plan["pieces"], "queries": plan["queries"],
            "skipped_combinations": plan["skipped_combinations"],
        }
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
    # What a later load reads (tuples become lists), so a fresh and a reused catalog compare equal.
    return PseudoCatalog(folder, json.loads(json.dumps(manifest)), reused=False)


def _mix_frames(track: Track) -> int:
    from partsim_core.data.slakh import audio_info

    if track.mix_path is None:
        raise PartsimError(f"{track.folder}: test song has no mix file")
    return int(audio_info(track.mix_path).frames)


# --------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------


def recall_at_k(ranking: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items among the first ``k`` of ``ranking``.

    Raises:
        PartsimError: no relevant item, or ``k < 1``.

    Used by: :func:`query_metrics`.
    """
    relevant = set(relevant)
    if not relevant:
        raise PartsimError("recall needs at least one relevant item")
    if k < 1:
        raise PartsimError(f"k must be at least 1, got {k}")
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def reciprocal_rank(ranking: Sequence[str], relevant: Collection[str]) -> float:
    """``1 / rank`` of the first relevant item of ``ranking`` (ranks from 1), 0 when none is ranked.

    Used by: :func:`query_metrics`.
    """
    relevant = set(relevant)
    for rank, item in enumerate(ranking, start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def expected_random_metrics(n_candidates: int, n_relevant: int, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Exact expected recall@k and reciprocal rank of a uniformly random ranking of ``n_candidates`` items of which
    ``n_relevant`` are relevant.

    ``E[recall@k] = min(k, N) / N`` (each relevant item is in the top k with that probability);
    ``E[RR] = sum_r (1 / r) P(first relevant at r)`` with ``P(first at r) = C(N - r, R - 1) / C(N, R)``.

    Raises:
        PartsimError: ``n_relevant`` not in ``1..n_candidates``.

    Used by: :func:`random_expectation_table` (the random peer of the tables).
    """
    n, r = int(n_candidates), int(n_relevant)
    if not 1 <= r <= n:
        raise PartsimError(f"need 1 <= relevant ({r}) <= candidates ({n})")
    total = math.comb(n, r)
    expected_rr = sum(math.comb(n - rank, r - 1) / rank for rank in range(1, n - r + 2)) / total
    out = {f"recall@{k}": min(k, n) / n for k in ks}
    out["rr"] = float(expected_rr)
    return out


def query_metrics(ranking: Sequence[str], relevant: Collection[str], ks: Sequence[int] = RECALL_KS
                  ) -> dict[str, float]:
    """recall@k for every ``k``, reciprocal rank (``rr``) and the rank of the first relevant item.

    Used by: :func:`per_query_table`.
    """
    out = {f"recall@{k}": recall_at_k(ranking, relevant, k) for k in ks}
    rr = reciprocal_rank(ranking, relevant)
    out["rr"] = rr
    out["first_relevant_rank"] = round(1.0 / rr) if rr > 0 else math.nan
    return out


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a proportion (thesis 6.4.2); ``(nan, nan)`` for ``n == 0``.

    Used by: :meth:`SimulatedABX.accuracy`.
    """
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summary_table(per_query: pd.DataFrame, ks: Sequence[int] = RECALL_KS) -> pd.DataFrame:
    """Mean recall@k and MRR per method and part combination, plus an ``all`` row per method.

    Args:
        per_query: One row per (method, query) with ``method``, ``combination``, ``recall@k``, ``rr``.

    Returns:
        Indexed by (method, combination); columns ``recall@k``..., ``MRR``, ``queries``. Methods keep their order
        of appearance; combinations follow :data:`PART_COMBINATIONS`, ``all`` last.

    Used by: :func:`run_evaluation` (``MixQueryEvaluation.table``).
    """
    columns = [f"recall@{k}" for k in ks]
    methods = list(dict.fromkeys(per_query["method"]))
    order = [f"{a}+{b}" for a, b in PART_COMBINATIONS]
    rows = []
    for method in methods:
        own = per_query[per_query["method"] == method]
        for combination in [c for c in order if c in set(own["combination"])] + ["all"]:
            chosen = own if combination == "all" else own[own["combination"] == combination]
            row = {"method": method, "combination": combination}
            row.update({column: float(chosen[column].mean()) for column in columns})
            row["MRR"] = float(chosen["rr"].mean())
            row["queries"] = int(len(chosen))
            rows.append(row)
    return pd.DataFrame(rows).set_index(["method", "combination"])


# --------------------------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------------------------


def rank_catalog(index: MixQueryIndex, query: EvaluationQuery) -> list[SongHit]:
    """Every catalog song except the two query songs, ranked by eq. 6.1-6.2 for the query's two stems.

    Used by: :func:`run_evaluation`.
    """
    stems = query.stem_queries(index.parts)
    return index.search_songs(stems, k=len(index.songs), exclude_query_songs=True)


def random_rankings(catalog: PseudoCatalog, seed: int = 0) -> dict[str, list[SongHit]]:
    """A seeded uniform shuffle of the catalog (query songs left out) per query; best segment 0, distance NaN.

    Used by: :func:`run_evaluation` (the random method of the simulated test).
    """
    rankings = {}
    ids = catalog.catalog_ids
    for number, query in enumerate(catalog.queries):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7, number]))
        candidates = [song for song in ids if song not in (query.song_a, query.song_b)]
        rankings[query.query_id] = [SongHit(candidates[i], math.nan, 0) for i in rng.permutation(len(candidates))]
    return rankings


def per_query_table(method: str, rankings: Mapping[str, Sequence[SongHit]], catalog: PseudoCatalog,
                    ks: Sequence[int] = RECALL_KS) -> pd.DataFrame:
    """One row per query: method, query, combination, recall@k, rr, first relevant rank, relevant, candidates.

    Used by: :func:`run_evaluation`.
    """
    rows = []
    for query in catalog.queries:
        ranking = [hit.song for hit in rankings[query.query_id]]
        relevant = catalog.relevant(query)
        row = {"method": method, "query": query.query_id, "combination": query.combination}
        row.update(query_metrics(ranking, relevant, ks))
        row.update({"relevant": len(relevant), "candidates": len(ranking)})
        rows.append(row)
    return pd.DataFrame(rows)


def random_expectation_table(catalog: PseudoCatalog, ks: Sequence[int] = RECALL_KS) -> pd.DataFrame:
    """:func:`per_query_table`'s columns for random ranking, from :func:`expected_random_metrics` (exact).

    Used by: :func:`run_evaluation`.
    """
    rows = []
    n_candidates = len(catalog.catalog_ids) - 2
    for query in catalog.queries:
        relevant = catalog.relevant(query)
        row = {"method": RANDOM_METHOD, "query": query.query_id, "combination": query.combination}
        row.update(expected_random_metrics(n_candidates, len(relevant), ks))
        row.update({"first_relevant_rank": math.nan, "relevant": len(relevant), "candidates": n_candidates})
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------------------
# simulated C0-C3 listening test
# --------------------------------------------------------------------------------------------------------------


def comparison_rank_ranges(n_ranked: int, thesis_songs: int = THESIS_CATALOG_SONGS,
                           thesis_c0_last: int = THESIS_C0_LAST_RANK) -> dict[str, tuple[int, int]]:
    """Inclusive rank ranges of strategies C0-C3 for a ranking of ``n_ranked`` songs (thesis 6.4.1, rescaled).

    C0 = ``2 .. max(2, round(thesis_c0_last / thesis_songs * n))``; the ranks after it split into three parts of
    equal size (the first parts one larger when the count is not divisible by 3), as the thesis's 101-1103,
    1104-2106, 2107-3108 for n = 3108.

    Raises:
        PartsimError: fewer ranks than the four strategies need (n < 5).

    Used by: :func:`simulate_abx`, :func:`thesis_design_table`.
    """
    n = int(n_ranked)
    c0_last = max(2, int(round(thesis_c0_last / thesis_songs * n)))
    rest = n - c0_last
    if rest < 3:
        raise PartsimError(f"a ranking of {n} songs is too short for the four comparison strategies (needs >= 5)")
    sizes = [rest // 3 + (1 if part < rest % 3 else 0) for part in range(3)]
    ranges = {"C0": (2, c0_last)}
    first = c0_last + 1
    for strategy, size in zip(STRATEGIES[1:], sizes):
        ranges[strategy] = (first, first + size - 1)
        first += size
    return ranges


def thesis_design_table(n_ranked: int) -> pd.DataFrame:
    """Strategies beside the thesis's design (Table 6.1): its rank ranges and the ranks it used, and ours.

    Used by: the chapter-6 notebook.
    """
    from partsim_core.book.thesis_tables import load_thesis_table

    thesis = load_thesis_table("6.1")
    thesis_ranges = comparison_rank_ranges(THESIS_CATALOG_SONGS)
    ours = comparison_rank_ranges(n_ranked)
    rows = []
    for strategy in STRATEGIES:
        used = thesis[thesis["comparison_strategy"] == strategy]
        stems = ["+".join(part.replace("query_", "") for part in ("query_vocals", "query_bass", "query_drums",
                                                                   "query_other") if row[part] == "w/")
                 for _, row in used.iterrows()]
        rows.append({"strategy": strategy,
                     "thesis ranks": f"{thesis_ranges[strategy][0]}-{thesis_ranges[strategy][1]} of "
                                     f"{THESIS_CATALOG_SONGS}",
                     "thesis query sets (stems: rank)": "; ".join(
                         f"{stem}: {int(rank)}" for stem, rank in zip(stems, used["comparison_rank"])),
                     "ours ranks": f"{ours[strategy][0]}-{ours[strategy][1]} of {n_ranked}"})
    return pd.DataFrame(rows).set_index("strategy")


def listener_score(catalog: PseudoCatalog, candidate: str, segment: int, query: EvaluationQuery,
                   segment_seconds: float = SEGMENT_SECONDS) -> float:
    """Ground-truth match of a candidate's segment to the query's two stems (see the module docstring).

    Per query part: 0 when the candidate lacks the part or it does not sound in the candidate's 10-s segment
    ``segment`` (pieces are aligned from 0, so a piece's part sounds where its source's does);
    :data:`SAME_TRACK_SCORE` when it comes from the query's source song; :data:`SAME_STYLE_SCORE` when its style
    equals the query part's; else 0. Summed over the two parts.

    Used by: :func:`simulate_abx`.
    """
    start = segment * segment_seconds
    end = min(start + segment_seconds, catalog.seconds(candidate))
    sources = catalog.sources(candidate)
    score = 0.0
    for song, part in ((query.song_a, query.part_a), (query.song_b, query.part_b)):
        source = sources.get(part)
        if source is None:
            continue
        truth = catalog.part_truth(source, part)
        if not audible(truth, start, end):
            continue
        if source == song:
            score += SAME_TRACK_SCORE
        elif truth.get("style") == (catalog.part_truth(song, part) or {}).get("style"):
            score += SAME_STYLE_SCORE
    return score


@dataclass
class SimulatedABX:
    """The simulated C0-C3 listening test (**SIMULATED**: listeners follow the generator's ground truth).

    Attributes:
        ranges: Rank range of each strategy.
        n_ranked: Songs in each ranking (catalog minus the two query songs).
        listeners: Number of simulated listeners.
        noise: Each listener's noise level.
        trials: One row per (method, query, strategy, listener): rank, target, comparison, both scores, correct.

    Used by: :func:`run_evaluation`, the chapter-6 notebook.
    """

    ranges: dict[str, tuple[int, int]]
    n_ranked: int
    listeners: int
    noise: list[float]
    trials: pd.DataFrame
    label: str = SIMULATED

    def accuracy(self, by_part: bool = False) -> pd.DataFrame:
        """Accuracy (share of answers choosing the target) with Wilson 95 % intervals per method and strategy
        (and query part with ``by_part``: a trial counts for both of its parts, as thesis Fig. 6.8)."""
        trials = self.trials
        keys = ["method", "strategy"]
        if by_part:
            trials = pd.concat([trials.assign(part=trials["part_a"]), trials.assign(part=trials["part_b"])])
            keys.append("part")
        rows = []
        for key, group in trials.groupby(keys, sort=False):
            correct, n = int(group["correct"].sum()), int(len(group))
            low, high = wilson_interval(correct, n)
            rows.append({**dict(zip(keys, key)), "answers": n, "correct": correct, "accuracy": correct / n,
                         "ci_low": low, "ci_high": high, "label": self.label})
        return pd.DataFrame(rows).set_index(keys)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (ranges, accuracies; not the single answers)."""
        return {"label": self.label,
                "note": "SIMULATED listeners that follow the generator's ground truth, not people",
                "ranges": {strategy: list(bounds) for strategy, bounds in self.ranges.items()},
                "n_ranked": self.n_ranked, "listeners": self.listeners, "noise": self.noise,
                "accuracy": _records(self.accuracy()), "accuracy_by_part": _records(self.accuracy(by_part=True))}


def simulate_abx(rankings: Mapping[str, Mapping[str, Sequence[SongHit]]], catalog: PseudoCatalog,
                 listeners: int = 15, listener_noise: tuple[float, float] = (0.2, 0.6), seed: int = 0,
                 segment_seconds: float = SEGMENT_SECONDS) -> SimulatedABX:
    """Run the simulated C0-C3 test (module docstring) on every method's rankings.

    Args:
        rankings: ``{method: {query id: ranked SongHits}}`` (query songs left out, every ranking equally long).
        catalog: The pseudo-piece catalog (ground truth).
        listeners: Simulated listeners.
        listener_noise: Range of their noise levels.
        seed: Seeds the comparison ranks, the listeners' noise levels and answers (shared by all methods).
        segment_seconds: Length of the segments listened to.

    Raises:
        PartsimError: no rankings, rankings of different lengths, or too short for the strategies.

    Used by: :func:`run_evaluation`.
    """
    if not rankings:
        raise PartsimError("the simulated listening test needs at least one method's rankings")
    queries = catalog.queries
    lengths = {len(ranked[query.query_id]) for ranked in rankings.values() for query in queries}
    if len(lengths) != 1:
        raise PartsimError(f"rankings of different lengths {sorted(lengths)}: every method must rank the same catalog")
    n_ranked = lengths.pop()
    ranges = comparison_rank_ranges(n_ranked)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 8]))
    low, high = listener_noise
    noise = rng.uniform(low, high, size=listeners)
    # Shared draws: comparison rank per (query, strategy); answer noise and coin per (query, strategy, listener).
    ranks = np.array([[int(rng.integers(ranges[s][0], ranges[s][1] + 1)) for s in STRATEGIES] for _ in queries])
    errors = rng.standard_normal((len(queries), len(STRATEGIES), listeners))
    coins = rng.random((len(queries), len(STRATEGIES), listeners)) < 0.5
    rows = []
    for method, ranked in rankings.items():
        for q_number, query in enumerate(queries):
            hits = ranked[query.query_id]
            target = hits[0]
            target_score = listener_score(catalog, target.song, target.best_segment, query, segment_seconds)
            for s_number, strategy in enumerate(STRATEGIES):
                rank = int(ranks[q_number, s_number])
                comparison = hits[rank - 1]
                comparison_score = listener_score(catalog, comparison.song, comparison.best_segment, query,
                                                  segment_seconds)
                for listener in range(listeners):
                    margin = target_score - comparison_score + noise[listener] * errors[q_number, s_number, listener]
                    correct = bool(coins[q_number, s_number, listener]) if margin == 0 else bool(margin > 0)
                    rows.append({"method": method, "query": query.query_id, "combination": query.combination,
                                 "part_a": query.part_a, "part_b": query.part_b, "strategy": strategy, "rank": rank,
                                 "target": target.song, "comparison": comparison.song,
                                 "target_score": target_score, "comparison_score": comparison_score,
                                 "listener": listener, "correct": correct})
    return SimulatedABX(ranges, n_ranked, listeners, [float(value) for value in noise], pd.DataFrame(rows))


# --------------------------------------------------------------------------------------------------------------
# the whole evaluation
# --------------------------------------------------------------------------------------------------------------


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe records of a frame (index as columns, NaN as None)."""
    flat = frame.reset_index()
    return [{key: (None if isinstance(value, float) and not math.isfinite(value) else
                   value.item() if isinstance(value, np.generic) else value)
             for key, value in row.items()} for row in flat.to_dict(orient="records")]


@dataclass
class MixQueryEvaluation:
    """Result of :func:`run_evaluation`.

    Attributes:
        preset: Preset of the models and sizes.
        catalog: The pseudo-piece catalog.
        per_query: One row per (method, query) (see :func:`per_query_table`).
        table: :func:`summary_table` of ``per_query`` (recall@10, recall@100, MRR per method and combination).
        abx: The simulated C0-C3 test (SIMULATED).
        rankings: ``{method: {query id: ranked SongHits}}`` (random: one seeded shuffle).
        indices: Index folder per backend method.
        seconds: Wall time per method (index build/reuse + queries) and of the catalog.

    Used by: ``partsim mixquery evaluate``, the chapter-6 notebook.
    """

    preset: str
    catalog: PseudoCatalog
    per_query: pd.DataFrame
    table: pd.DataFrame
    abx: SimulatedABX
    rankings: dict[str, dict[str, list[SongHit]]]
    indices: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """Methods in table order."""
        return list(dict.fromkeys(self.per_query["method"]))

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (what ``partsim mixquery evaluate --out`` writes)."""
        return {"preset": self.preset, "catalog": self.catalog.summary(),
                "random_ranking": "exact expectation over uniformly random rankings",
                "methods": self.methods, "table": _records(self.table), "per_query": _records(self.per_query),
                "ground_truth": _records(self.catalog.ground_truth()), "simulated_abx": self.abx.to_json(),
                "indices": self.indices, "seconds": {name: round(value, 2) for name, value in self.seconds.items()}}


def run_evaluation(preset: str = "smoke", data_root: str | os.PathLike = "",
                   backends: Sequence[str | EmbeddingBackend] = ("csn", "separated"), *,
                   track_level: bool | EmbeddingBackend = True, seed: int = 0, device: str = "auto",
                   sizes: EvaluationSizes | None = None, catalog: PseudoCatalog | None = None,
                   progress: bool = True) -> MixQueryEvaluation:
    """Build the pseudo-piece catalog, index it with every method, score the rankings and run the simulated test.

    Args:
        preset: Models (trained or reused through :func:`~partsim_core.mixquery.get_backend`) and sizes.
        data_root: Dataset with ground truth the catalog comes from and the models were trained on (``""`` = the
            preset's embedded one).
        backends: Backend names (``csn``, ``separated``, ``mert``) or ready backends (tests pass tiny or oracle
            ones); each becomes a method named after its ``name``.
        track_level: Add the track-level peer (``True``: backend ``track``; or a ready backend; ``False``: none).
        seed: Seeds the catalog plan, the training of missing models, the random ranking and the listeners.
        device: Torch device for training and embedding.
        sizes: Override of :func:`evaluation_sizes`.
        catalog: An already built catalog (skips :func:`build_pseudo_catalog`).
        progress: Progress bars.

    Raises:
        PartsimError: a dataset without ground truth, an unknown backend, two methods of one name.

    Used by: ``partsim mixquery evaluate`` and the chapter-6 notebook.
    """
    from partsim_core.mixquery.backends import get_backend
    from partsim_core.mixquery.index import build_index

    sizes = sizes or evaluation_sizes(preset)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if catalog is None:
        catalog = build_pseudo_catalog(preset, data_root, sizes=sizes, seed=seed, progress=progress)
    seconds["catalog"] = time.perf_counter() - started
    methods: list[str | EmbeddingBackend] = list(backends)
    if track_level is True:
        methods.append(TRACK_METHOD)
    elif track_level is not False:
        methods.append(track_level)
    rankings: dict[str, dict[str, list[SongHit]]] = {}
    indices: dict[str, str] = {}
    tables = []
    for method in methods:
        started = time.perf_counter()
        backend = get_backend(method, preset, data_root=data_root, device=device, progress=progress, seed=seed) \
            if isinstance(method, str) else method
        if backend.name in rankings or backend.name == RANDOM_METHOD:
            raise PartsimError(f"two methods named {backend.name!r}: give each backend its own name")
        index = build_index(catalog.catalog(backend.sample_rate), backend, progress=progress)
        ranked = {query.query_id: rank_catalog(index, query)
                  for query in tqdm(catalog.queries, desc=f"queries ({backend.name})", unit="query",
                                    disable=not progress)}
        rankings[backend.name] = ranked
        indices[backend.name] = str(index.folder)
        tables.append(per_query_table(backend.name, ranked, catalog))
        seconds[backend.name] = time.perf_counter() - started
    tables.append(random_expectation_table(catalog))
    rankings[RANDOM_METHOD] = random_rankings(catalog, seed=seed)
    per_query = pd.concat(tables, ignore_index=True)
    started = time.perf_counter()
    abx = simulate_abx(rankings, catalog, listeners=sizes.listeners, listener_noise=sizes.listener_noise, seed=seed)
    seconds["simulated_abx"] = time.perf_counter() - started
    return MixQueryEvaluation(preset, catalog, per_query, summary_table(per_query), abx, rankings, indices, seconds)


# --------------------------------------------------------------------------------------------------------------
# examples for the chapter notebook
# --------------------------------------------------------------------------------------------------------------


def loudest_segment(index: MixQueryIndex, song: str, part: str, min_seconds: float = QUERY_MIN_SECONDS) -> int:
    """The segment (of at least ``min_seconds`` when the song has one) where a song's part is loudest (mean power
    of its catalog audio); works on any catalog, ground truth or not.

    Raises:
        PartsimError: the song has no stem of ``part``.

    Used by: :func:`example_query_sets`.
    """
    if not index.has_part_audio(song, part):
        raise PartsimError(f"song {song!r} has no {part} stem")
    segments = index.segments(song)
    long_enough = [number for number, start, end in segments if end - start >= min_seconds] or \
        [number for number, _, _ in segments]
    powers = [float(np.mean(np.square(index.segment_audio(song, part, number), dtype=np.float64)))
              for number in long_enough]
    return long_enough[int(np.argmax(powers))]


def example_query_sets(index: MixQueryIndex, parts: Sequence[str], seed: int = 0) -> list[list[StemQuery]]:
    """Growing query sets for the notebook (Fig. 6.5): the first part from one song, then the second part from
    another song added, and so on - each from a seeded random song having that stem, at its loudest segment.

    Returns:
        ``[[q1], [q1, q2], ...]``.

    Raises:
        PartsimError: an unknown part, or no unused song having it.

    Used by: the chapter-6 notebook (Fig. 6.5 example).
    """
    parts = [str(part).strip() for part in parts if str(part).strip()]
    if not parts:
        raise PartsimError("query_parts is empty: name one or more parts, e.g. 'drums,bass'")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 9]))
    chosen: list[StemQuery] = []
    sets = []
    for part in parts:
        if part not in index.parts:
            raise PartsimError(f"unknown part {part!r}; this index has {', '.join(index.parts)}")
        used = {query.song for query in chosen}
        songs = [song for song in index.songs if song not in used and index.has_part_audio(song, part)]
        if not songs:
            raise PartsimError(f"no song of the catalog (other than {', '.join(sorted(used)) or 'none'}) has a "
                               f"{part} stem")
        song = songs[int(rng.integers(len(songs)))]
        chosen.append(StemQuery(song, part, loudest_segment(index, song, part)))
        sets.append(list(chosen))
    return sets


def hits_table(index: MixQueryIndex, hits: Sequence[SongHit]) -> pd.DataFrame:
    """Ranked songs as a table: rank, song, distance, best segment and its time span.

    Used by: the chapter-6 notebook.
    """
    rows = []
    for rank, hit in enumerate(hits, start=1):
        _, start, end = index.segments(hit.song)[hit.best_segment]
        rows.append({"rank": rank, "song": hit.song, "distance": round(hit.distance, 4),
                     "best segment": hit.best_segment, "from (s)": round(start, 1), "to (s)": round(end, 1)})
    return pd.DataFrame(rows).set_index("rank")


def ranking_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """``after`` (a :func:`hits_table`) with a ``change`` column against ``before``: ``new``, ``same rank`` or
    ``was N`` (its earlier rank).

    Used by: the chapter-6 notebook.
    """
    earlier = {song: rank for rank, song in before["song"].items()}
    changes = []
    for rank, song in after["song"].items():
        if song not in earlier:
            changes.append("new")
        elif earlier[song] == rank:
            changes.append("same rank")
        else:
            changes.append(f"was {earlier[song]}")
    return after.assign(change=changes)
