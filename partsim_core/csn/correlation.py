"""Correlation between distance matrices (thesis Tables 4.4-4.5) and its leave-one-track-out values.

:func:`distance_matrix_correlation` is the Pearson correlation of the flattened upper triangles of two Euclidean
distance matrices over the same segments; :func:`subspace_correlations` gives it for every pair of subspaces. Both
stream over row chunks (Chan's pairwise update of means and co-moments), so ~10^4 segments (~5 x 10^7 pairs) never
hold a whole distance matrix in memory.

:func:`leave_one_group_out_correlations` gives, in one more streamed pass, the correlation with every segment of
one group (a test track) left out, for every group: the jackknife values from which chapter 4 forms per-track
pseudo-values, so that a correlation gets an interval by the same bootstrap over test tracks as an accuracy does
(:mod:`partsim_core.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.errors import PartsimError

#: Rows of query points per distance-matrix chunk.
CORRELATION_CHUNK_ROWS = 1024

#: Number of subspaces (one per instrument).
N_PARTS = len(INSTRUMENTS)


def as_points(embeddings: Any, name: str = "embeddings", min_rows: int = 1) -> np.ndarray:
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


def pair_correlations(spaces: Sequence[Any], pairs: Sequence[tuple[int, int]]) -> list[float]:
    """:func:`distance_matrix_correlation` of ``spaces[a]`` and ``spaces[b]`` for every pair, in one pass."""
    points = [as_points(space, f"spaces[{index}]", min_rows=3) for index, space in enumerate(spaces)]
    if any(p.shape[0] != points[0].shape[0] for p in points):
        raise PartsimError("every space must embed the same segments (same number of rows)")
    return _correlations(points, list(pairs))


def distance_matrix_correlation(a: Any, b: Any) -> float:
    """Tables 4.4-4.5: Pearson correlation of the flattened upper triangles of two Euclidean distance matrices.

    ``a`` and ``b`` are embeddings of the same ``n`` segments in the same order (e.g. the drums subspace of
    single-drum-stem inputs ``f(x_ij) m_j`` and of the mix inputs ``f(x_i) m_j``; the widths may differ). The
    diagonal is left out (it is zero in both). Computed in row chunks without materialising the ``n x n`` matrices.
    Returns NaN when all distances of either side are equal (a collapsed space: the correlation is undefined).

    Raises:
        PartsimError: bad shapes, NaN, different numbers of rows, or fewer than 3 segments.
    """
    first = as_points(a, "a", min_rows=3)
    second = as_points(b, "b", min_rows=3)
    if first.shape[0] != second.shape[0]:
        raise PartsimError(f"a and b must embed the same segments: {first.shape[0]} rows vs {second.shape[0]}")
    return _correlations([first, second], [(0, 1)])[0]


def subspace_correlations(embeddings: Any) -> pd.DataFrame:
    """Table 4.5: 5 x 5 correlations between the distance matrices of every pair of subspaces on mix input.

    Entry ``(i, j)`` is :func:`distance_matrix_correlation` of subspaces ``i`` and ``j`` of the same embeddings
    (diagonal 1, symmetric; NaN next to a collapsed subspace). The thesis prints the upper triangle.

    Raises:
        PartsimError: bad shapes, NaN, fewer than 3 segments.
    """
    points = as_points(embeddings, "embeddings", min_rows=3)
    if points.shape[1] == 0 or points.shape[1] % N_PARTS:
        raise PartsimError(f"embeddings must have 5 x D columns (one subspace per instrument), got {points.shape[1]}")
    width = points.shape[1] // N_PARTS
    spaces = [points[:, index * width:(index + 1) * width] for index in range(N_PARTS)]
    pairs = [(i, j) for i in range(N_PARTS) for j in range(i + 1, N_PARTS)]
    matrix = np.eye(N_PARTS)
    for (i, j), value in zip(pairs, _correlations(spaces, pairs)):
        matrix[i, j] = matrix[j, i] = value
    return pd.DataFrame(matrix, index=pd.Index(INSTRUMENTS, name="subspace"),
                        columns=pd.Index(INSTRUMENTS, name="subspace"))




def _pearson_from_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson r from pair sums ``[..., (count, sx, sy, sxx, syy, sxy)]``; NaN where a side is constant."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_x = n * sxx - sx * sx
        var_y = n * syy - sy * sy
        scale = np.maximum(np.abs(sxx), np.abs(syy)) * np.maximum(n, 1.0)
        ok = (n >= 2) & (var_x > 1e-12 * scale) & (var_y > 1e-12 * scale)
        r = (n * sxy - sx * sy) / np.sqrt(np.where(ok, var_x * var_y, 1.0))
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


def leave_one_group_out_correlations(spaces: Sequence[Any], pairs: Sequence[tuple[int, int]],
                                     groups: Sequence | np.ndarray, group_ids: Sequence,
                                     chunk_rows: int | None = None) -> np.ndarray:
    """For every pair ``(a, b)`` and every group ``g`` of ``group_ids``: the correlation of the distance matrices of
    ``spaces[a]`` and ``spaces[b]`` with every segment of ``g`` left out.

    ``spaces`` embed the same ``n`` segments (widths may differ); ``groups`` is each segment's group (a test
    track). A group of ``group_ids`` that has no segment here leaves the correlation unchanged. Pair sums are
    accumulated once over row chunks (each pair is counted from both of its rows) and each group's share is taken
    out, so the cost is one pass over the distances, not one per group.

    Returns:
        ``(len(pairs), len(group_ids))`` correlations (NaN where a side is constant).

    Raises:
        PartsimError: different numbers of rows, or a ``groups`` of the wrong length.
    """
    chunk_rows = CORRELATION_CHUNK_ROWS // 4 if chunk_rows is None else chunk_rows
    points = [as_points(space, f"spaces[{index}]") for index, space in enumerate(spaces)]
    n = points[0].shape[0]
    if any(p.shape[0] != n for p in points):
        raise PartsimError("every space must embed the same segments (same number of rows)")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise PartsimError(f"groups must have one entry per segment ({n}), got shape {groups.shape}")
    position = {group: number for number, group in enumerate(group_ids)}
    codes = np.array([position.get(group, -1) for group in groups], dtype=np.int64)
    n_groups = len(group_ids)
    needed = sorted({index for pair in pairs for index in pair})
    squared = {index: np.einsum("ij,ij->i", points[index], points[index]) for index in needed}
    # Shift distances by a constant per space (r is unchanged) so the raw sums do not lose precision.
    shift = {}
    for index in needed:
        sample = points[index][: min(n, 64)]
        diff = sample[:, None, :] - sample[None, :, :]
        shift[index] = float(np.sqrt((diff ** 2).sum(-1)).mean()) if n > 1 else 0.0
    row_sums = np.zeros((len(pairs), n, 6))
    within = np.zeros((len(pairs), n_groups + 1, 6))
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        distances = {}
        for index in needed:
            block = squared[index][start:stop, None] + squared[index][None, :] \
                - 2.0 * (points[index][start:stop] @ points[index].T)
            np.maximum(block, 0.0, out=block)
            distances[index] = np.sqrt(block) - shift[index]
        off = np.ones((stop - start, n), dtype=bool)
        off[np.arange(stop - start), np.arange(start, stop)] = False
        same = codes[start:stop, None] == codes[None, :]
        for number, (a, b) in enumerate(pairs):
            x, y = distances[a], distances[b]
            terms = (off.astype(np.float64), x * off, y * off, x * x * off, y * y * off, x * y * off)
            row_sums[number, start:stop] = np.stack([t.sum(axis=1) for t in terms], axis=1)
            # Pairs inside one group (counted from both rows): what removing that group removes twice.
            inside = np.stack([(t * same).sum(axis=1) for t in terms], axis=1)
            np.add.at(within[number], codes[start:stop], inside)
    total = row_sums.sum(axis=1) / 2.0
    out = np.empty((len(pairs), n_groups))
    for number in range(len(pairs)):
        touching = np.zeros((n_groups + 1, 6))
        np.add.at(touching, codes, row_sums[number])
        # Pairs with at least one end in g: rows of g counted once, minus the double count of pairs inside g.
        removed = touching[:n_groups] - within[number][:n_groups] / 2.0
        out[number] = _pearson_from_sums(total[number][None, :] - removed)
    return out


def jackknife_pseudo_values(estimate: float, leave_one_out: np.ndarray) -> np.ndarray:
    """Jackknife pseudo-values ``G theta - (G - 1) theta_(-g)`` of a statistic over ``G`` groups."""
    values = np.asarray(leave_one_out, dtype=np.float64)
    groups = values.shape[-1]
    return groups * estimate - (groups - 1) * values
