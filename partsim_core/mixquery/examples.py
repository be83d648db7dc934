"""Examples for the chapter-6 page (Fig. 6.5): growing query sets on an index and their ranked songs as tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from partsim_core.errors import PartsimError
from partsim_core.mixquery.ground_truth import QUERY_MIN_SECONDS
from partsim_core.mixquery.index import MixQueryIndex
from partsim_core.mixquery.search import SongHit, StemQuery


def loudest_segment(index: MixQueryIndex, song: str, part: str, min_seconds: float = QUERY_MIN_SECONDS) -> int:
    """The segment (of at least ``min_seconds`` when the song has one) where a song's part is loudest (mean power
    of its catalog audio); works on any catalog, ground truth or not.

    Raises:
        PartsimError: the song has no stem of ``part``.
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


def example_tables(index: MixQueryIndex, parts: Sequence[str], seed: int = 0, k: int = 10
                   ) -> list[tuple[list[StemQuery], pd.DataFrame]]:
    """The growing query sets of :func:`example_query_sets` with their top ``k`` songs (query songs left out) as
    :func:`hits_table`\\ s, each after the first with :func:`ranking_changes` against the one before."""
    out: list[tuple[list[StemQuery], pd.DataFrame]] = []
    for query_set in example_query_sets(index, parts, seed=seed):
        table = hits_table(index, index.search_songs(query_set, k=k, exclude_query_songs=True))
        if out:
            table = ranking_changes(out[-1][1], table)
        out.append((query_set, table))
    return out


def listening_clips(index: MixQueryIndex, query_set: Sequence[StemQuery], k: int = 3, seconds: float = 5.0
                    ) -> list[tuple[str, str, np.ndarray]]:
    """``(label, detail, audio)`` to listen to: each query stem (the part alone, its segment), then the mix of the
    top ``k`` songs from their best segment; the first ``seconds`` of each, at the index's rate."""
    length = int(seconds * index.sample_rate)
    clips = [(f"query: {query.part} of {query.song}", f"segment {query.segment}",
              np.asarray(index.segment_audio(query.song, query.part, query.segment)[:length], dtype=np.float32))
             for query in query_set]
    for rank, hit in enumerate(index.search_songs(list(query_set), k=k, exclude_query_songs=True), start=1):
        clips.append((f"result {rank}: {hit.song}", f"segment {hit.best_segment}, distance {hit.distance:.3f}",
                      np.asarray(index.segment_audio(hit.song, "mix", hit.best_segment)[:length], dtype=np.float32)))
    return clips
