"""Chapter 4's evaluations of a five-subspace embedding (thesis 4.4.2), as pure functions on embeddings.

Every function takes an embedding array ``(n, 5 D)`` (``D = 128`` for the thesis's 640-dimensional CSN output;
any width divisible by five works) whose subspaces follow :data:`partsim_core.INSTRUMENTS` (drums, bass, piano,
guitar, others). "Using only the masked subspace ``c``" (``f(x) m_c``, eq. 4.3) means using columns
``[c D, (c + 1) D)``: masking the other dimensions to zero leaves Euclidean distances equal to distances within
the subspace, so slicing is the same and cheaper.

* :func:`subspace_track_accuracy` - Table 4.1: leave-one-out kNN track-ID accuracy (k = 5) in one subspace.
* :func:`test_pseudo_piece_plan` and :func:`part_label_accuracy` - Table 4.2: 10 labels x 4 test pseudo pieces per
  instrument; kNN part-label prediction where every segment of the target's own pseudo piece is excluded.
* :func:`identification_accuracy` - Table 4.3: the instrument of a single clean stem predicted as the subspace
  with the largest norm; overall and per-part accuracy and the confusion matrix.
* :func:`distance_matrix_correlation` and :func:`subspace_correlations` - Tables 4.4-4.5: Pearson correlation of
  the flattened upper triangles of two Euclidean distance matrices.
* :func:`style_leakage` - **our addition, not in the thesis**: on the embedded dataset, whose generator records
  each part's true style, how well a subspace retrieves segments whose *same* part shares the target's style, and
  how much more often than chance its neighbours share *another* part's style (a direct leakage measure).

The kNN votes reuse :func:`partsim_core.knn.knn_accuracy` (its neighbour order and tie rules). Distance
matrix correlations stream over row chunks (Chan's pairwise update of means and co-moments), so the full test set
(~10^4 segments, ~5 x 10^7 pairs) never holds a whole distance matrix in memory.

Used by: chapter 4 (``notebooks/ch4_csn_ablations``, ``partsim_core.csn.conditions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.errors import PartsimError
from partsim_core.knn import THESIS_K, _torch_neighbours, knn_accuracy

#: Number of subspaces (one per instrument, in :data:`INSTRUMENTS` order).
N_PARTS = len(INSTRUMENTS)

#: Rows of query points per distance-matrix chunk in the correlation functions.
CORRELATION_CHUNK_ROWS = 1024


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _as_points(embeddings: Any, name: str = "embeddings", min_rows: int = 1) -> np.ndarray:
    """A finite float64 array (n, d) or a PartsimError naming ``name``."""
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    points = np.asarray(embeddings)
    if points.ndim != 2:
        raise PartsimError(f"{name} must be a 2-d array (segments, dimensions), got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise PartsimError(f"{name} must be numbers, got dtype {points.dtype}")
    points = points.astype(np.float64, copy=False)
    if not np.all(np.isfinite(points)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(points), axis=1))[0])
        raise PartsimError(f"{name} hold NaN or infinite values (first at row {bad})")
    if points.shape[0] < min_rows:
        raise PartsimError(f"{name} need at least {min_rows} rows, got {points.shape[0]}")
    return points


def _subspace_width(points: np.ndarray, name: str = "embeddings") -> int:
    """``D``: the width of one subspace; the embedding width must be ``5 D``."""
    width = points.shape[1]
    if width == 0 or width % N_PARTS:
        raise PartsimError(f"{name} must have 5 x D columns (one subspace per instrument), got {width}")
    return width // N_PARTS


def part_position(part_index: int | str) -> int:
    """The subspace index of a part given as an index ``0..4`` or an instrument name (``"drums"``...).

    Used by every function of this module (chapter 4).

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

    Distances between these rows equal distances between the masked embeddings ``f(x) m_c`` (eq. 4.3). Used by the
    chapter-4 evaluations here and by the notebook's t-SNE plots.
    """
    points = _as_points(embeddings)
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
# Table 4.1: track-ID accuracy per subspace
# --------------------------------------------------------------------------------------------------------------


def subspace_track_accuracy(embeddings: Any, track_ids: Sequence | np.ndarray, part_index: int | str,
                            k: int = THESIS_K, **options: Any) -> float:
    """Table 4.1: leave-one-out kNN track-ID accuracy using only the masked subspace of one part, in [0, 1].

    The inputs are segments of dataset (not pseudo) pieces of the test split after the 10 % filter; the caller
    embeds them at 3, 5 or 10 s (one call per length). ``options`` go to
    :func:`partsim_core.knn.knn_accuracy` (``tie_break``, ``device``, ``batch_size``, ``backend``).

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, Table 4.1).

    Args:
        embeddings: (n, 5 D) CSN embeddings of mix segments.
        track_ids: (n,) track of each segment.
        part_index: the subspace (index 0..4 or instrument name).
        k: neighbours that vote (thesis: 5).

    Raises:
        PartsimError: bad shapes, NaN, an unknown part.
    """
    points = subspace(embeddings, part_index)
    labels = _per_row(track_ids, points.shape[0], "track_ids")
    return knn_accuracy(points, labels, k=k, **options)


def subspace_track_accuracy_table(embeddings_by_length: Mapping[float, tuple[Any, Sequence | np.ndarray]],
                                  k: int = THESIS_K, **options: Any) -> pd.DataFrame:
    """Table 4.1 laid out as in the thesis: rows = instruments, columns = input lengths (s), accuracy in percent.

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``).

    Args:
        embeddings_by_length: ``{seconds: (embeddings (n, 5 D), track_ids (n,))}``, e.g. for 3, 5 and 10 s.
        k: neighbours that vote.
        options: passed to :func:`subspace_track_accuracy`.
    """
    if not embeddings_by_length:
        raise PartsimError("embeddings_by_length is empty; give at least one input length")
    table = {seconds: [100.0 * subspace_track_accuracy(points, ids, part, k=k, **options) for part in INSTRUMENTS]
             for seconds, (points, ids) in embeddings_by_length.items()}
    frame = pd.DataFrame(table, index=pd.Index(INSTRUMENTS, name="part"))
    frame.columns.name = "seconds"
    return frame


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

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, Table 4.2 and Figs. 4.8-4.9).

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

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, Table 4.2).

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
    """``||f(x) m_j||_2`` for every row and subspace: (n, 5). Used by Table 4.3 and Fig. 4.10 (chapter 4)."""
    points = _as_points(embeddings)
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

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, Table 4.3).

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
# Tables 4.4-4.5: correlation between distance matrices
# --------------------------------------------------------------------------------------------------------------


class _StreamingPearson:
    """Pearson correlation of paired values fed in chunks (Chan et al.'s pairwise merge of means/co-moments)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean_x = self.mean_y = 0.0
        self.m2_x = self.m2_y = self.c_xy = 0.0

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add the pairs ``(x[i], y[i])``."""
        n = x.size
        if n == 0:
            return
        mean_x, mean_y = float(x.mean()), float(y.mean())
        dx, dy = x - mean_x, y - mean_y
        m2_x, m2_y, c_xy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        total = self.count + n
        delta_x, delta_y = mean_x - self.mean_x, mean_y - self.mean_y
        weight = self.count * n / total
        self.m2_x += m2_x + delta_x * delta_x * weight
        self.m2_y += m2_y + delta_y * delta_y * weight
        self.c_xy += c_xy + delta_x * delta_y * weight
        self.mean_x += delta_x * n / total
        self.mean_y += delta_y * n / total
        self.count = total

    def value(self) -> float:
        """The correlation; NaN when either side is constant (no ordering to correlate)."""
        # Relative tolerance: constant distances can carry float round-off.
        scale_x = max(self.m2_x, 0.0) ** 0.5
        scale_y = max(self.m2_y, 0.0) ** 0.5
        if self.count < 2 or scale_x <= 1e-12 * max(1.0, abs(self.mean_x)) * self.count ** 0.5 \
                or scale_y <= 1e-12 * max(1.0, abs(self.mean_y)) * self.count ** 0.5:
            return float("nan")
        return float(np.clip(self.c_xy / (scale_x * scale_y), -1.0, 1.0))


def _upper_distance_rows(points: np.ndarray, squared_norms: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Euclidean distances ``d(i, j)`` for ``start <= i < stop``, ``j > i``, flattened row by row (as ``pdist``)."""
    block = squared_norms[start:stop, None] + squared_norms[None, start:] \
        - 2.0 * (points[start:stop] @ points[start:].T)
    np.maximum(block, 0.0, out=block)
    np.sqrt(block, out=block)
    rows = np.arange(stop - start)[:, None]
    columns = np.arange(points.shape[0] - start)[None, :]
    return block[columns > rows]


def _correlations(spaces: list[np.ndarray], pairs: list[tuple[int, int]],
                  chunk_rows: int | None = None) -> list[float]:
    """Pearson correlation of the upper-triangle distances of ``spaces[a]`` and ``spaces[b]`` for every pair."""
    chunk_rows = CORRELATION_CHUNK_ROWS if chunk_rows is None else chunk_rows
    n = spaces[0].shape[0]
    squared = [np.einsum("ij,ij->i", space, space) for space in spaces]
    accumulators = [_StreamingPearson() for _ in pairs]
    needed = sorted({index for pair in pairs for index in pair})
    for start in range(0, n - 1, chunk_rows):
        stop = min(n - 1, start + chunk_rows)
        distances = {index: _upper_distance_rows(spaces[index], squared[index], start, stop) for index in needed}
        for accumulator, (a, b) in zip(accumulators, pairs):
            accumulator.update(distances[a], distances[b])
    return [accumulator.value() for accumulator in accumulators]


def distance_matrix_correlation(a: Any, b: Any) -> float:
    """Tables 4.4-4.5: Pearson correlation of the flattened upper triangles of two Euclidean distance matrices.

    ``a`` and ``b`` are embeddings of the same ``n`` segments in the same order (e.g. the drums subspace of
    single-drum-stem inputs ``f(x_ij) m_j`` and of the mix inputs ``f(x_i) m_j``; the widths may differ). The
    diagonal is left out (it is zero in both). Computed in row chunks without materialising the ``n x n`` matrices.
    Returns NaN when all distances of either side are equal (a collapsed space: the correlation is undefined).

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, Table 4.4 and Fig. 4.11).

    Raises:
        PartsimError: bad shapes, NaN, different numbers of rows, or fewer than 3 segments.
    """
    first = _as_points(a, "a", min_rows=3)
    second = _as_points(b, "b", min_rows=3)
    if first.shape[0] != second.shape[0]:
        raise PartsimError(f"a and b must embed the same segments: {first.shape[0]} rows vs {second.shape[0]}")
    return _correlations([first, second], [(0, 1)])[0]


def subspace_correlations(embeddings: Any) -> pd.DataFrame:
    """Table 4.5: 5 x 5 correlations between the distance matrices of every pair of subspaces on mix input.

    Entry ``(i, j)`` is :func:`distance_matrix_correlation` of subspaces ``i`` and ``j`` of the same embeddings
    (diagonal 1, symmetric; NaN next to a collapsed subspace). The thesis prints the upper triangle.

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, Table 4.5).

    Raises:
        PartsimError: bad shapes, NaN, fewer than 3 segments.
    """
    points = _as_points(embeddings, min_rows=3)
    width = _subspace_width(points)
    spaces = [points[:, index * width:(index + 1) * width] for index in range(N_PARTS)]
    pairs = [(i, j) for i in range(N_PARTS) for j in range(i + 1, N_PARTS)]
    matrix = np.eye(N_PARTS)
    for (i, j), value in zip(pairs, _correlations(spaces, pairs)):
        matrix[i, j] = matrix[j, i] = value
    return pd.DataFrame(matrix, index=pd.Index(INSTRUMENTS, name="subspace"),
                        columns=pd.Index(INSTRUMENTS, name="subspace"))


# --------------------------------------------------------------------------------------------------------------
# Our addition: style retrieval and leakage on the embedded dataset
# --------------------------------------------------------------------------------------------------------------


def style_leakage(embeddings: Any, styles: pd.DataFrame, part_index: int | str, k: int = 10,
                  exclude_groups: Sequence | np.ndarray | None = None, device: str | None = "cpu",
                  batch_size: int = 4096) -> pd.DataFrame:
    """**Our addition (not in the thesis):** style retrieval of one subspace and its leakage of the other parts.

    The embedded dataset's generator records each part's true style, so, unlike the thesis's data, we can ask
    directly what a subspace encodes. For every segment (target), take its ``k`` nearest neighbours in subspace
    ``part_index`` (Euclidean; the target itself and, with ``exclude_groups``, every segment of its own group never
    count) and, for each part ``q``:

    * ``precision`` - share of the neighbours whose part ``q`` has the target's style for ``q`` (a neighbour
      lacking ``q`` does not match), averaged over the targets that have ``q``;
    * ``chance`` - the same share over *all* eligible references instead of the ``k`` nearest (the precision of a
      subspace that ignores ``q``), averaged over the same targets;
    * ``excess = precision - chance``.

    For ``q`` = the subspace's own part, ``excess`` measures how well it retrieves its part's style (higher is
    better). For every *other* part it is the **leakage**: near 0 means the subspace does not respond to that
    part's style. Pass the track IDs as ``exclude_groups`` for dataset pieces: segments of one track share every
    part's style, so without it a good subspace that finds its own track would look as if it leaked.

    Used by: chapter 4 (``notebooks/ch4_csn_ablations``, the "beyond the thesis" section).

    Args:
        embeddings: (n, 5 D) embeddings.
        styles: (n rows) with one column per instrument name (style labels; NaN/None where the part is absent).
        part_index: the subspace (index 0..4 or instrument name).
        k: neighbours retrieved per target.
        exclude_groups: optional (n,) group of each segment (e.g. track ID); the target's group is not retrieved.
        device: torch device for the neighbour search.
        batch_size: query rows per distance chunk.

    Returns:
        Tidy frame, one row per part ``q``: ``subspace``, ``part``, ``relation`` (``"same"``/``"other"``), ``k``,
        ``precision``, ``chance``, ``excess``, ``n_targets`` (NaN measures when no target has ``q``).

    Raises:
        PartsimError: bad shapes, NaN embeddings, missing style columns, bad ``k``, or a target without any
            eligible neighbour.
    """
    position = part_position(part_index)
    points = subspace(embeddings, position)
    n = points.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PartsimError(f"k must be a positive integer, got {k!r}")
    if not isinstance(styles, pd.DataFrame):
        raise PartsimError(f"styles must be a pandas DataFrame with columns {', '.join(INSTRUMENTS)}")
    missing = [part for part in INSTRUMENTS if part not in styles.columns]
    if missing:
        raise PartsimError(f"styles has no column for part(s) {', '.join(missing)}")
    if len(styles) != n:
        raise PartsimError(f"styles must have one row per embedding ({n}), got {len(styles)}")
    if n < 2:
        raise PartsimError(f"style_leakage needs at least 2 segments, got {n}")
    groups = None
    if exclude_groups is not None:
        groups = np.unique(_per_row(exclude_groups, n, "exclude_groups"), return_inverse=True)[1].astype(np.int64)
    device_object = torch.device(device if device not in (None, "auto") else
                                 ("cuda" if torch.cuda.is_available() else "cpu"))
    indices, valid = _torch_neighbours(points, groups, int(k), device_object, int(batch_size))
    indices, valid = indices.cpu().numpy(), valid.cpu().numpy()
    if not valid.any(axis=1).all():
        bad = int(np.flatnonzero(~valid.any(axis=1))[0])
        raise PartsimError(f"segment {bad} has no eligible neighbour (all others excluded by exclude_groups)")
    rows = []
    group_of = groups if groups is not None else np.arange(n)
    for other_position, part in enumerate(INSTRUMENTS):
        column = styles[part].to_numpy(dtype=object)
        present = ~pd.isna(styles[part]).to_numpy()
        codes = np.full(n, -1, dtype=np.int64)
        if present.any():
            codes[present] = np.unique(column[present].astype(str), return_inverse=True)[1]
        targets = np.flatnonzero(present)
        relation = "same" if other_position == position else "other"
        if targets.size == 0:
            rows.append({"subspace": INSTRUMENTS[position], "part": part, "relation": relation, "k": int(k),
                         "precision": np.nan, "chance": np.nan, "excess": np.nan, "n_targets": 0})
            continue
        neighbour_codes = codes[indices[targets]]
        matches = (neighbour_codes == codes[targets, None]) & valid[targets]
        precision = float(np.mean(matches.sum(axis=1) / valid[targets].sum(axis=1)))
        # Chance: among the eligible references (not the target, not its group), the share with the same style.
        code_group = pd.crosstab(group_of[present], codes[present])  # (groups, styles) counts of present segments
        group_sizes = np.bincount(group_of, minlength=group_of.max() + 1)
        eligible = n - group_sizes[group_of[targets]]
        same_style_total = np.bincount(codes[present])[codes[targets]]
        same_style_in_group = code_group.reindex(index=group_of[targets]).to_numpy()[
            np.arange(targets.size), codes[targets]]
        chance = float(np.mean((same_style_total - same_style_in_group) / eligible))
        rows.append({"subspace": INSTRUMENTS[position], "part": part, "relation": relation, "k": int(k),
                     "precision": precision, "chance": chance, "excess": precision - chance,
                     "n_targets": int(targets.size)})
    return pd.DataFrame(rows, columns=["subspace", "part", "relation", "k", "precision", "chance", "excess",
                                       "n_targets"])
