"""Chapter 4's evaluations of a five-subspace embedding (thesis 4.4.2): one pure function per thesis table.

Every function takes embedding arrays whose subspaces follow :data:`partsim_core.INSTRUMENTS` (drums, bass, piano,
guitar, others): ``(n, 5 D)`` (``D = 128`` for the thesis's 640-dimensional CSN output), or ``(seeds, n, 5 D)`` for
several trained seeds evaluated on the same segments. "Using only the masked subspace ``c``" (``f(x) m_c``, eq.
4.3) means using columns ``[c D, (c + 1) D)``: masking the other dimensions to zero leaves Euclidean distances equal
to distances within the subspace, so slicing is the same and cheaper.

* :func:`table_4_1` - leave-one-out kNN track-ID accuracy (k = 5) in one subspace (and of the baseline's networks).
* :func:`test_pseudo_piece_plan` and :func:`table_4_2` - 10 labels x 4 test pseudo pieces per instrument; kNN
  part-label prediction where every segment of the target's own pseudo piece is excluded.
* :func:`table_4_3` - the instrument of a single clean stem predicted as the subspace with the largest norm.
* :func:`table_4_4` and :func:`table_4_5` - Pearson correlation of the flattened upper triangles of two Euclidean
  distance matrices (:mod:`partsim_core.csn.correlation`).

Each table cell is an :class:`ItemScores`: per test track (the unit of resampling) and per seed, the score behind
the cell, so that :meth:`ItemScores.cell` gives the cell with its 95 % interval by :mod:`partsim_core.stats`
(percentile bootstrap over test tracks, seeds included) and findings can pair two conditions on the same tracks.
Accuracies are pooled over segments (a track weighs by its number of segments, so the value equals the plain
accuracy over all segments). Correlations get per-track jackknife pseudo-values (leave one track out), bootstrapped
the same way; their value is the correlation itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from partsim_core import INSTRUMENTS
from partsim_core.csn.correlation import (
    as_points,
    distance_matrix_correlation,
    jackknife_pseudo_values,
    leave_one_group_out_correlations,
    pair_correlations,
)
from partsim_core.errors import PartsimError
from partsim_core.knn import THESIS_K, knn_accuracy, knn_predict
from partsim_core.stats import bootstrap_cell, cell

#: Number of subspaces (one per instrument, in :data:`INSTRUMENTS` order).
N_PARTS = len(INSTRUMENTS)



# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _subspace_width(points: np.ndarray, name: str = "embeddings") -> int:
    """``D``: the width of one subspace; the embedding width must be ``5 D``."""
    width = points.shape[1]
    if width == 0 or width % N_PARTS:
        raise PartsimError(f"{name} must have 5 x D columns (one subspace per instrument), got {width}")
    return width // N_PARTS


def part_position(part_index: int | str) -> int:
    """The subspace index of a part given as an index ``0..4`` or an instrument name (``"drums"``...).

    Raises:
        PartsimError: an unknown name or an index outside ``[0, 5)``.
    """
    if isinstance(part_index, str):
        if part_index not in INSTRUMENTS:
            raise PartsimError(f"unknown part {part_index!r}; choose one of: {', '.join(INSTRUMENTS)}")
        return INSTRUMENTS.index(part_index)
    if isinstance(part_index, bool) or not isinstance(part_index, (int, np.integer)) \
            or not 0 <= part_index < N_PARTS:
        raise PartsimError(f"part_index must be an instrument name or an integer in [0, {N_PARTS}), "
                           f"got {part_index!r}")
    return int(part_index)


def subspace(embeddings: Any, part_index: int | str) -> np.ndarray:
    """The columns of subspace ``part_index`` of ``(n, 5 D)`` embeddings: ``(n, D)`` float64.

    Distances between these rows equal distances between the masked embeddings ``f(x) m_c`` (eq. 4.3).
    """
    points = as_points(embeddings)
    width = _subspace_width(points)
    position = part_position(part_index)
    return points[:, position * width:(position + 1) * width]


def _per_row(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` as an array with one entry per embedding row, or a PartsimError naming ``name``."""
    array = np.asarray(values)
    if array.shape != (n,):
        raise PartsimError(f"{name} must have one entry per embedding ({n}), got shape {array.shape}")
    return array


# --------------------------------------------------------------------------------------------------------------
# Table 4.2: part-level label prediction on test pseudo pieces
# --------------------------------------------------------------------------------------------------------------


def test_pseudo_piece_plan(track_ids_with_part: Mapping[str, Sequence[str]], n_labels: int = 10,
                           pieces_per_label: int = 4, seed: int = 0,
                           tempo_class_of: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The test pseudo pieces of 4.4.2: per instrument, ``n_labels`` label tracks x ``pieces_per_label`` pieces.

    For instrument ``c`` a piece ``(A, B)^(c, else)`` takes part ``c`` from the label track A and every other part
    from an "other" track B. Each label track A is combined with ``pieces_per_label`` *different* other tracks, so
    segments of different pieces share the ``c`` label but no other part's source (the thesis's
    ``(A, B), (A, C), (A, D), (A, E), (F, G), ...``). Choices made here (the thesis leaves them open):

    * label tracks: ``n_labels`` drawn without replacement from the tracks having part ``c``;
    * other tracks: any test track except A (it need not have every other part - an absent part stays silent);
      the least-used tracks so far are preferred (ties broken at random), so other tracks repeat across labels
      only when there are too few; with ``tempo_class_of`` tracks of A's tempo class come first, as in training
      (4.3.3), and the pool widens to all tracks only when the class is too small.

    Deterministic for a given ``seed`` (inputs are sorted first, so their order does not matter).

    Args:
        track_ids_with_part: ``{part: track ids having that part}`` for the test tracks (parts from
            :data:`INSTRUMENTS`; a missing part gets no pieces). The union is the pool of other tracks.
        n_labels: label tracks per instrument (thesis: 10).
        pieces_per_label: pieces per label track (thesis: 4); at least 2, or no label could be predicted once the
            target's own piece is excluded.
        seed: random seed.
        tempo_class_of: optional ``{track id: tempo class}``.

    Returns:
        One row per piece: ``part`` (the condition instrument), ``label`` (track A), ``other`` (track B),
        ``piece`` (a unique id ``"<part>-<label no.>-<piece no.>"``), and one column per instrument giving the
        track its part comes from (A for ``part``, B for the rest).

    Raises:
        PartsimError: unknown part names, bad counts, or too few tracks for the design.
    """
    for name, value, low in (("n_labels", n_labels, 1), ("pieces_per_label", pieces_per_label, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise PartsimError(f"{name} must be an integer >= {low}, got {value!r}")
    unknown = sorted(set(track_ids_with_part) - set(INSTRUMENTS))
    if unknown:
        raise PartsimError(f"unknown part(s) {', '.join(map(repr, unknown))} in track_ids_with_part; "
                           f"parts are: {', '.join(INSTRUMENTS)}")
    pool = sorted({str(track) for tracks in track_ids_with_part.values() for track in tracks})
    if tempo_class_of is not None:
        missing = [track for track in pool if track not in tempo_class_of]
        if missing:
            raise PartsimError(f"tempo_class_of has no tempo class for track {missing[0]!r}")
    rng = np.random.default_rng(seed)
    rows = []
    for part in INSTRUMENTS:
        if part not in track_ids_with_part:
            continue
        having = sorted({str(track) for track in track_ids_with_part[part]})
        if len(having) < n_labels:
            raise PartsimError(f"only {len(having)} test tracks have {part}; the plan needs n_labels={n_labels} "
                               f"(pass a smaller n_labels for small data)")
        if len(pool) - 1 < pieces_per_label:
            raise PartsimError(f"only {len(pool)} test tracks; each label needs pieces_per_label={pieces_per_label} "
                               f"other tracks")
        labels = [having[i] for i in np.sort(rng.choice(len(having), size=n_labels, replace=False))]
        uses = dict.fromkeys(pool, 0)
        for label_number, label in enumerate(labels):
            candidates = [track for track in pool if track != label]
            # Priority: same tempo class first (when known), then least used, then random.
            noise = rng.random(len(candidates))
            same_class = [0 if tempo_class_of is None or tempo_class_of[track] == tempo_class_of[label] else 1
                          for track in candidates]
            order = np.lexsort((noise, [uses[track] for track in candidates], same_class))
            others = [candidates[i] for i in order[:pieces_per_label]]
            for piece_number, other in enumerate(others):
                uses[other] += 1
                row = {"part": part, "label": label, "other": other, "piece": f"{part}-{label_number}-{piece_number}"}
                row.update({name: (label if name == part else other) for name in INSTRUMENTS})
                rows.append(row)
    return pd.DataFrame(rows, columns=["part", "label", "other", "piece", *INSTRUMENTS])


# Not a pytest test despite its name (the thesis calls these "test pseudo pieces").
test_pseudo_piece_plan.__test__ = False  # type: ignore[attr-defined]


def part_label_accuracy(embeddings: Any, part_labels: Sequence | np.ndarray, piece_ids: Sequence | np.ndarray,
                        part_index: int | str, k: int = THESIS_K, **options: Any) -> float:
    """Table 4.2: kNN part-label accuracy on test pseudo pieces in one masked subspace, in [0, 1].

    The label of a segment is the source track of the evaluated part (the ``label`` column of
    :func:`test_pseudo_piece_plan`). Not only the target but every segment of the target's own pseudo piece is
    removed from the reference (``exclude_groups=piece_ids``), so a correct vote needs segments of *other* pieces
    with the same part label - pieces that share nothing else with the target. The thesis uses 5-s segments.

    Args:
        embeddings: (n, 5 D) CSN embeddings of the pieces' segments (usually the pieces made for ``part_index``).
        part_labels: (n,) the part label of each segment.
        piece_ids: (n,) the pseudo piece of each segment.
        part_index: the subspace (index 0..4 or instrument name).
        k: neighbours that vote (thesis: 5).
        options: passed to :func:`partsim_core.knn.knn_accuracy`.

    Raises:
        PartsimError: bad shapes, NaN, an unknown part, or a target with no segment of another piece.
    """
    points = subspace(embeddings, part_index)
    labels = _per_row(part_labels, points.shape[0], "part_labels")
    pieces = _per_row(piece_ids, points.shape[0], "piece_ids")
    return knn_accuracy(points, labels, k=k, exclude_groups=pieces, **options)


# --------------------------------------------------------------------------------------------------------------
# Table 4.3: instrument identification from subspace norms
# --------------------------------------------------------------------------------------------------------------


def subspace_norms(embeddings: Any) -> np.ndarray:
    """``||f(x) m_j||_2`` for every row and subspace: (n, 5) (Table 4.3, Fig. 4.10)."""
    points = as_points(embeddings)
    width = _subspace_width(points)
    return np.linalg.norm(points.reshape(points.shape[0], N_PARTS, width), axis=2)


@dataclass(frozen=True)
class IdentificationResult:
    """Instrument identification from subspace norms (Table 4.3).

    Attributes:
        accuracy: share of all stems identified correctly, in [0, 1].
        per_part: accuracy per true instrument (index :data:`INSTRUMENTS`; NaN for a part without stems) - the
            thesis's Table 4.3 row, in [0, 1].
        confusion: counts, rows = true part, columns = predicted part (both in :data:`INSTRUMENTS` order).
    """

    accuracy: float
    per_part: pd.Series
    confusion: pd.DataFrame


def identification_accuracy(embeddings_of_single_stems: Any,
                            true_part_index: Sequence[int | str] | np.ndarray) -> IdentificationResult:
    """Table 4.3: predict each clean stem's instrument as the subspace with the largest norm.

    The input is the *unmasked* embedding of a single ideal part signal; the prediction is
    ``argmax_j ||f(x) m_j||``. Exact ties (e.g. an all-zero embedding) go to the lowest index, as ``numpy.argmax``
    does; they only arise for degenerate outputs.

    Args:
        embeddings_of_single_stems: (n, 5 D) embeddings of single-stem segments.
        true_part_index: (n,) the stem's part, as index 0..4 or instrument name.

    Raises:
        PartsimError: bad shapes, NaN, unknown parts.
    """
    norms = subspace_norms(embeddings_of_single_stems)
    truth_values = _per_row(np.asarray(true_part_index, dtype=object), norms.shape[0], "true_part_index")
    truth = np.array([part_position(value if isinstance(value, str) else int(value)) for value in truth_values],
                     dtype=np.int64)
    predicted = np.argmax(norms, axis=1)
    counts = np.zeros((N_PARTS, N_PARTS), dtype=np.int64)
    np.add.at(counts, (truth, predicted), 1)
    confusion = pd.DataFrame(counts, index=pd.Index(INSTRUMENTS, name="true"),
                             columns=pd.Index(INSTRUMENTS, name="predicted"))
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_part = pd.Series(np.where(totals > 0, np.diag(counts) / np.maximum(totals, 1), np.nan),
                             index=pd.Index(INSTRUMENTS, name="part"), name="accuracy")
    accuracy = float(np.mean(predicted == truth)) if truth.size else float("nan")
    return IdentificationResult(accuracy=accuracy, per_part=per_part, confusion=confusion)




# --------------------------------------------------------------------------------------------------------------
# Per-track scores and the five tables
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ItemScores:
    """The per-item scores behind one table cell (items = test tracks, the unit of resampling).

    Attributes:
        items: ``(items,)`` item ids.
        values: ``(seeds, items)`` score per seed and item (NaN: the item has no segment here).
        weights: ``(items,)`` segments per item (accuracies are pooled over segments), or None (equal weights).
        scale: factor applied to values and estimate in :meth:`cell` (100 for percentages).
        estimate: the cell's value when it is not the weighted mean of ``values`` (jackknife cells: a correlation,
            whose interval is the pseudo-values' bootstrap interval moved to the correlation and kept in [-1, 1]).
        thetas: ``(seeds,)`` the statistic per seed (jackknife cells).
        leave_one_out: ``(seeds, items)`` the statistic without each item (jackknife cells).
    """

    items: np.ndarray
    values: np.ndarray
    weights: np.ndarray | None = None
    scale: float = 1.0
    estimate: float | None = None
    thetas: np.ndarray | None = None
    leave_one_out: np.ndarray | None = None

    def cell(self) -> dict[str, float]:
        """``{"value", "low", "high"}``: the estimate and its 95 % bootstrap interval over items and seeds."""
        values = np.asarray(self.values, dtype=np.float64)
        if values.size == 0 or not np.isfinite(values).any():
            value = math.nan if self.estimate is None else self.estimate * self.scale
            return cell(value, math.nan, math.nan)
        out = bootstrap_cell(values * self.scale, weights=self.weights)
        if self.estimate is not None:
            # Jackknife cells: the pseudo-values' mean is the bias-corrected statistic; the interval keeps their
            # spread around the statistic itself (shifted by the jackknife's bias estimate), within [-1, 1].
            shift = float(self.estimate * self.scale) - out["value"]
            out = cell(self.estimate * self.scale, max(out["low"] + shift, -self.scale),
                       min(out["high"] + shift, self.scale))
        return out


def missing_cell() -> dict[str, float]:
    """A cell that could not be computed (too few segments, condition not run)."""
    return cell(math.nan, math.nan, math.nan)


def _stack_seeds(embeddings: Any, name: str) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise PartsimError(f"{name} must be (segments, dims) or (seeds, segments, dims), got shape {array.shape}")
    return array


def scores_from_segments(correct: Any, item_of_segment: Any, items: Sequence | None = None) -> ItemScores:
    """Per-item accuracy from per-segment correctness ``(seeds, n)`` (or ``(n,)``), in percent, weighted by the
    item's number of segments (so the cell's value is the accuracy over all segments)."""
    hits = np.asarray(correct, dtype=np.float64)
    if hits.ndim == 1:
        hits = hits[None]
    owners = np.asarray(item_of_segment)
    ids = np.unique(owners) if items is None else np.asarray(list(items))
    position = {item: number for number, item in enumerate(ids.tolist())}
    codes = np.array([position[item] for item in owners.tolist()], dtype=np.int64)
    counts = np.bincount(codes, minlength=ids.size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.stack([np.bincount(codes, weights=row, minlength=ids.size) / counts for row in hits])
    return ItemScores(items=ids, values=np.where(counts > 0, values, np.nan), weights=counts, scale=100.0)


def track_id_scores(embeddings: Any, track_ids: Any, k: int = THESIS_K, device: str | None = "cpu",
                    ) -> ItemScores | None:
    """Leave-one-out kNN track-ID correctness of every segment, per track; None when no track has two segments
    (the kNN then has nothing to find)."""
    points = _stack_seeds(embeddings, "embeddings")
    labels = _per_row(track_ids, points.shape[1], "track_ids")
    if labels.size < 2 or np.unique(labels, return_counts=True)[1].max() < 2:
        return None
    correct = [knn_predict(as_points(seed_points), labels, k=k, device=device) == labels for seed_points in points]
    return scores_from_segments(np.stack(correct), labels)


def table_4_1(proposed: Mapping[float, Any] | None, baseline: Mapping[float, Mapping[str, Any]] | None,
              track_ids: Mapping[float, Any], part_active: Mapping[float, Any],
              device: str | None = "cpu") -> dict[str, dict[str, ItemScores | None]]:
    """Table 4.1: track-ID accuracy per part at each input length, the CSN's subspace vs the baseline's network.

    Args:
        proposed: ``{seconds: (seeds, n, 5 D)}`` the proposed CSN's embeddings of every grid segment of the mixes.
        baseline: ``{seconds: {part: (seeds, n_part, D)}}`` the baseline's network embeddings of the part's
            separated stem at the grid segments where the part sounds (in grid order).
        track_ids: ``{seconds: (n,)}`` the track of each grid segment.
        part_active: ``{seconds: (n, 5)}`` where each part's ideal stem sounds (the segments that count).

    Returns:
        ``{part: {"proposed_3s": scores, "baseline_3s": scores, ...}}`` (None where not computable).
    """
    table: dict[str, dict[str, ItemScores | None]] = {part: {} for part in INSTRUMENTS}
    for seconds, ids in track_ids.items():
        ids = np.asarray(ids)
        active = np.asarray(part_active[seconds], dtype=bool)
        for column, part in enumerate(INSTRUMENTS):
            rows = np.flatnonzero(active[:, column])
            label = f"{seconds:g}s"
            mix = None if proposed is None or seconds not in proposed else _stack_seeds(proposed[seconds], "mix")
            table[part][f"proposed_{label}"] = None if mix is None or rows.size < 2 else track_id_scores(
                np.stack([subspace(points[rows], part) for points in mix]), ids[rows], device=device)
            networks = None if baseline is None else baseline.get(seconds, {}).get(part)
            table[part][f"baseline_{label}"] = None if networks is None or rows.size < 2 else track_id_scores(
                networks, ids[rows], device=device)
    return table


def label_scores(embeddings: Any, segments: pd.DataFrame, part: str, whole: bool = False,
                 k: int = THESIS_K) -> ItemScores | None:
    """Table 4.2 cell for ``part``: kNN over the segments of the pieces made for ``part`` (``segments`` holds only
    those, with ``label`` and ``piece``), excluding the target's own piece; items = label tracks.

    ``whole=True`` uses the embedding as it is (a per-part network), else the part's subspace. None when not
    computable (fewer than two pieces, or a target with no segment of another piece).
    """
    points = _stack_seeds(embeddings, "embeddings")
    if len(segments) < 2 or segments["piece"].nunique() < 2:
        return None
    labels = segments["label"].to_numpy()
    pieces = segments["piece"].to_numpy()
    correct = []
    try:
        for seed_points in points:
            chosen = as_points(seed_points) if whole else subspace(seed_points, part)
            correct.append(knn_predict(chosen, labels, k=k, exclude_groups=pieces, device="cpu") == labels)
    except PartsimError:
        return None  # a target with no segment of another piece (tiny data): the cell cannot be computed
    return scores_from_segments(np.stack(correct), labels)


def table_4_2(csn: Mapping[str, Any], segments: pd.DataFrame, baseline: Mapping[str, Any] | None = None,
              baseline_row: str = "(a)") -> dict[str, dict[str, ItemScores | None]]:
    """Table 4.2: part-level label accuracy on test pseudo pieces.

    Args:
        csn: ``{row: (seeds, m, 5 D)}`` embeddings of every test pseudo-piece segment (rows of ``segments``).
        segments: one row per segment with ``part`` (the piece's condition part), ``label`` and ``piece``.
        baseline: ``{part: (seeds, m_part, D)}`` the baseline's network embeddings of the separated part of the
            segments whose ``part`` is that part (in ``segments`` order), for row ``baseline_row``.
    """
    parts = segments["part"].to_numpy() if len(segments) else np.zeros(0, dtype=object)
    table: dict[str, dict[str, ItemScores | None]] = {}
    for row, embeddings in csn.items():
        points = _stack_seeds(embeddings, row)
        table[row] = {part: label_scores(points[:, parts == part], segments[parts == part], part)
                      for part in INSTRUMENTS}
    if baseline is not None:
        table[baseline_row] = {part: None if baseline.get(part) is None else label_scores(
            baseline[part], segments[parts == part], part, whole=True) for part in INSTRUMENTS}
    return table


#: Draws of random embeddings averaged into a chance cell (:func:`chance_tables`), and their size (one subspace).
CHANCE_DRAWS, CHANCE_DIM = 20, 128


def _chance(score: Any, n_points: int, draws: int, rng: np.random.Generator) -> ItemScores | None:
    """``score`` (a function of ``(draws, n_points, D)`` embeddings -> :class:`ItemScores`) on i.i.d. Gaussian
    embeddings that carry no information, each draw scored as a seed, averaged per item into one row."""
    scores = score(rng.standard_normal((draws, n_points, CHANCE_DIM)).astype(np.float32))
    if scores is None:
        return None
    return ItemScores(items=scores.items, values=np.nanmean(scores.values, axis=0, keepdims=True),
                      weights=scores.weights, scale=scores.scale)


def chance_tables(track_ids: Mapping[float, Any], part_active: Mapping[float, Any], segments: pd.DataFrame,
                  draws: int = CHANCE_DRAWS, seed: int = 0, k: int = THESIS_K) -> dict[str, dict[str, Any]]:
    """The chance level of every Table 4.1 and 4.2 cell: the same kNN scoring of the same segments, items and
    labels, on random embeddings (``draws`` draws of Gaussian vectors, averaged per item).

    Why not 1 / number of labels: the kNN's majority vote over neighbours from other pieces (Table 4.2) or over
    the other segments of every track (Table 4.1) favours frequent labels, so its chance level depends on how many
    segments each label or track has; scoring random embeddings measures it for exactly these test items.

    Args:
        track_ids, part_active: As :func:`table_4_1` (``{seconds: (n,)}``, ``{seconds: (n, 5)}``).
        segments: As :func:`table_4_2` (one row per test pseudo-piece segment with ``part``, ``label``,
            ``piece``).
        draws: Random draws averaged.
        seed: Seed of the draws.
        k: Neighbours of the kNN (as the tables' cells).

    Returns:
        ``{"table_4_1": {part: {"3s": scores, ...}}, "table_4_2": {part: scores}}`` (None where not computable);
        each :class:`ItemScores` has one row (the draws' mean per item).
    """
    rng = np.random.default_rng(seed)
    by_length: dict[str, dict[str, ItemScores | None]] = {part: {} for part in INSTRUMENTS}
    for seconds, ids in track_ids.items():
        ids = np.asarray(ids)
        active = np.asarray(part_active[seconds], dtype=bool)
        for column, part in enumerate(INSTRUMENTS):
            rows = np.flatnonzero(active[:, column])
            by_length[part][f"{seconds:g}s"] = None if rows.size < 2 else _chance(
                lambda points, owners=ids[rows]: track_id_scores(points, owners, k=k), rows.size, draws, rng)
    parts = segments["part"].to_numpy() if len(segments) else np.zeros(0, dtype=object)
    labels: dict[str, ItemScores | None] = {}
    for part in INSTRUMENTS:
        chosen = segments[parts == part]
        labels[part] = None if len(chosen) < 2 else _chance(
            lambda points, chosen=chosen, part=part: label_scores(points, chosen, part, whole=True, k=k), len(chosen),
            draws, rng)
    return {"table_4_1": by_length, "table_4_2": labels}


def table_4_3(stems: Mapping[str, Mapping[str, Any]], stem_tracks: Mapping[str, Any],
              ) -> dict[str, dict[str, ItemScores | None]]:
    """Table 4.3: instrument identification from subspace norms, per condition row and true part.

    Args:
        stems: ``{row: {part: (seeds, n_part, 5 D)}}`` the (unmasked) embeddings of each part's clean stem alone.
        stem_tracks: ``{part: (n_part,)}`` the track of each stem segment.
    """
    table: dict[str, dict[str, ItemScores | None]] = {}
    for row, by_part in stems.items():
        table[row] = {}
        for column, part in enumerate(INSTRUMENTS):
            vectors = by_part.get(part)
            if vectors is None or len(np.asarray(stem_tracks[part])) == 0:
                table[row][part] = None
                continue
            correct = np.stack([np.argmax(subspace_norms(points), axis=1) == column
                                for points in _stack_seeds(vectors, part)])
            table[row][part] = scores_from_segments(correct, stem_tracks[part])
    return table


def jackknife_scores(thetas: Sequence[float], leave_one_out: np.ndarray, items: Sequence) -> ItemScores:
    """A correlation cell: per seed the statistic and its leave-one-track-out values -> jackknife pseudo-values."""
    thetas = np.asarray(thetas, dtype=np.float64)
    loo = np.asarray(leave_one_out, dtype=np.float64).reshape(thetas.size, -1)
    pseudo = np.stack([jackknife_pseudo_values(theta, row) for theta, row in zip(thetas, loo)])
    return ItemScores(items=np.asarray(list(items)), values=pseudo, estimate=float(np.nanmean(thetas)),
                      thetas=thetas, leave_one_out=loo)


def _correlation_scores(first: np.ndarray, second: np.ndarray, groups: np.ndarray,
                        tracks: Sequence) -> ItemScores | None:
    """Distance-matrix correlation of ``(seeds, n, .)`` pairs with leave-one-track-out values."""
    if first.shape[1] < 3:
        return None
    thetas, loo = [], []
    for a, b in zip(first, second):
        thetas.append(distance_matrix_correlation(a, b))
        loo.append(leave_one_group_out_correlations([a, b], [(0, 1)], groups, list(tracks))[0])
    return jackknife_scores(thetas, np.stack(loo), tracks)


def table_4_4(stems: Mapping[str, Mapping[str, Any]], mix: Mapping[str, Mapping[str, Any]],
              stem_tracks: Mapping[str, Any], tracks: Sequence) -> dict[str, dict[str, ItemScores | None]]:
    """Table 4.4: per part, the correlation between the distance matrices of the part's subspace with its stem alone
    as input and with the mix as input, over the same segments.

    Args:
        stems: ``{row: {part: (seeds, n_part, 5 D)}}`` embeddings of the clean stems.
        mix: ``{row: {part: (seeds, n_part, 5 D)}}`` embeddings of the mixes at the same segments.
        stem_tracks: ``{part: (n_part,)}`` the track of each segment.
        tracks: every test track (the jackknife's items).
    """
    table: dict[str, dict[str, ItemScores | None]] = {}
    for row, by_part in stems.items():
        table[row] = {}
        for part in INSTRUMENTS:
            if by_part.get(part) is None or mix.get(row, {}).get(part) is None:
                table[row][part] = None
                continue
            alone, mixed = _stack_seeds(by_part[part], part), _stack_seeds(mix[row][part], part)
            table[row][part] = _correlation_scores(
                np.stack([subspace(points, part) for points in alone]),
                np.stack([subspace(points, part) for points in mixed]), np.asarray(stem_tracks[part]), tracks)
    return table


def table_4_5(spaces: Mapping[str, Any], track_ids: Any, tracks: Sequence,
              active: Mapping[str, Any] | None = None) -> dict[tuple[str, str], ItemScores | None]:
    """Table 4.5: correlation between the distance matrices of every pair of parts (upper triangle).

    Args:
        spaces: ``{part: (seeds, n, d)}`` each part's representation of the same ``n`` segments: a CSN's subspaces
            of the mix (blocks 4.5b/c: :func:`csn_spaces`) or chapter 3's per-part networks on the ideal stems
            (block 4.5a).
        track_ids: ``(n,)`` the track of each segment.
        tracks: every test track (the jackknife's items).
        active: optional ``{part: (n,)}``: a pair uses only the segments where both parts are active (block 4.5a);
            rows outside ``active`` may hold anything.
    """
    ids = np.asarray(track_ids)
    out: dict[tuple[str, str], ItemScores | None] = {}
    if active is None and all(spaces.get(part) is not None for part in INSTRUMENTS) and ids.size >= 3:
        # One pass over the distances of all five spaces for the ten pairs (per seed).
        stacks = [_stack_seeds(spaces[part], part) for part in INSTRUMENTS]
        pairs = [(i, j) for i in range(N_PARTS) for j in range(i + 1, N_PARTS)]
        thetas, loo = [], []
        for seed in range(stacks[0].shape[0]):
            seed_spaces = [stack[seed] for stack in stacks]
            thetas.append(pair_correlations(seed_spaces, pairs))
            loo.append(leave_one_group_out_correlations(seed_spaces, pairs, ids, list(tracks)))
        for number, (i, j) in enumerate(pairs):
            out[INSTRUMENTS[i], INSTRUMENTS[j]] = jackknife_scores([row[number] for row in thetas],
                                                                   np.stack([row[number] for row in loo]), tracks)
        return out
    for i, first in enumerate(INSTRUMENTS):
        for second in INSTRUMENTS[i + 1:]:
            if spaces.get(first) is None or spaces.get(second) is None:
                out[first, second] = None
                continue
            rows = np.ones(ids.size, dtype=bool) if active is None else \
                np.asarray(active[first], dtype=bool) & np.asarray(active[second], dtype=bool)
            a, b = _stack_seeds(spaces[first], first)[:, rows], _stack_seeds(spaces[second], second)[:, rows]
            out[first, second] = _correlation_scores(a, b, ids[rows], tracks)
    return out


def csn_spaces(embeddings: Any) -> dict[str, np.ndarray]:
    """``{part: (seeds, n, D)}``: the five subspaces of CSN embeddings ``(seeds, n, 5 D)``."""
    points = _stack_seeds(embeddings, "embeddings")
    return {part: np.stack([subspace(seed_points, part) for seed_points in points]) for part in INSTRUMENTS}
