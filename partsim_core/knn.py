"""kNN track-ID prediction (thesis 3.3.2) and segment embeddings for every evaluation chapter.

The thesis evaluates an embedding space without similarity labels by predicting the track ID of every test segment
from its ``k = 5`` nearest neighbours among all *other* test segments (leave-one-out), by majority vote, with the
Euclidean distance. Silent segments never enter (the caller's :class:`~partsim_core.baseline.triplets.SegmentIndex` drops
them), and the test set is the 3-s segments without overlap of the test tracks kept by the 10 % filter
(:func:`partsim_core.data.segments.filter_test_tracks`).

Rules made explicit here (the thesis does not state them):

* **Neighbour order.** Candidates are ordered by distance, and equal distances by position in the input (lower
  index first). That decides which points are "the k nearest" when the k-th distance is tied, so the result never
  depends on how a sort or a ``topk`` kernel happens to break ties.
* **Vote ties** (``tie_break``): ``"nearest"`` (default) - among the labels with the most votes, the one that owns
  the nearest of the k neighbours wins (so with k = 5 a 2-2-1 split goes to the pair holding the closer point);
  ``"lowest_label"`` - the smallest label wins, which is scikit-learn's ``KNeighborsClassifier`` rule (labels
  compare in ``numpy.unique`` order).
* **Excluded points.** A point never votes for itself. With ``exclude_groups`` every point of the target's own
  group is excluded as well (chapter 4 evaluates pseudo pieces: segments from the same source piece must not vote).
  When fewer than ``k`` candidates remain, all of them vote; none at all is an error.

The distance matrix is computed in query chunks of ``batch_size`` rows (``|q|^2 + |x|^2 - 2 q.x`` in float64 on the
CPU, float32 on a GPU) with ``torch.topk``, so memory stays ``O(batch_size * n)`` and the full Slakh test set
(~136 tracks x ~80 segments per part) takes seconds. ``backend="faiss"`` uses an exact ``faiss.IndexFlatL2``
search instead (float32), with the same ordering and vote rules.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError

#: Vote tie rules understood by :func:`knn_predict`.
TIE_BREAKS: tuple[str, ...] = ("nearest", "lowest_label")

#: Neighbour-search implementations understood by :func:`knn_predict`.
KNN_BACKENDS: tuple[str, ...] = ("torch", "faiss")

#: Neighbours of the thesis's kNN evaluation (3.3.2).
THESIS_K = 5


def _check_inputs(embeddings: Any, labels: Any, k: int, exclude_groups: Any, tie_break: str,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and encode: float array (n, d), label classes, encoded labels (n,), encoded groups or None."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise PartsimError(f"k must be a positive integer, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise PartsimError(f"batch_size must be a positive integer, got {batch_size!r}")
    if tie_break not in TIE_BREAKS:
        raise PartsimError(f"unknown tie_break {tie_break!r}; choose one of: {', '.join(TIE_BREAKS)}")
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    points = np.asarray(embeddings)
    if points.ndim != 2:
        raise PartsimError(f"embeddings must be a 2-d array (points, dimensions), got shape {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise PartsimError(f"embeddings must be numbers, got dtype {points.dtype}")
    if not np.all(np.isfinite(points)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(points), axis=1))[0])
        raise PartsimError(f"embeddings hold NaN or infinite values (first at row {bad})")
    label_array = np.asarray(labels)
    if label_array.shape != (points.shape[0],):
        raise PartsimError(f"labels must have one entry per embedding ({points.shape[0]}), got shape "
                           f"{label_array.shape}")
    if points.shape[0] < 2:
        raise PartsimError(f"kNN leave-one-out needs at least 2 points, got {points.shape[0]}")
    classes, encoded = np.unique(label_array, return_inverse=True)
    groups = None
    if exclude_groups is not None:
        group_array = np.asarray(exclude_groups)
        if group_array.shape != (points.shape[0],):
            raise PartsimError(f"exclude_groups must have one entry per embedding ({points.shape[0]}), got shape "
                               f"{group_array.shape}")
        groups = np.unique(group_array, return_inverse=True)[1].astype(np.int64)
    return points, classes, encoded.astype(np.int64), groups


def _ordered_neighbours(distances: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest columns of each row ordered by (distance, column index); +inf marks excluded columns.

    Returns ``(indices, valid)`` of shape (rows, k): ``valid`` is False where a row has fewer than ``k`` finite
    candidates.
    """
    rows, columns = distances.shape
    k = min(k, columns)
    values, indices = torch.topk(distances, k, dim=1, largest=False, sorted=True)
    kth = values[:, -1:]
    # Rows where more columns share the k-th distance than topk kept (or where the kept order may not follow the
    # column index among equal distances) are redone exactly with a stable sort; with real-valued embeddings this
    # only happens for duplicated points.
    at_or_below = (distances <= kth).sum(dim=1)
    has_equal_values = (values[:, 1:] == values[:, :-1]).any(dim=1) if k > 1 else torch.zeros(
        rows, dtype=torch.bool, device=distances.device)
    redo = torch.nonzero((at_or_below > k) | has_equal_values).flatten()
    if redo.numel():
        exact = torch.sort(distances[redo], dim=1, stable=True)
        values[redo], indices[redo] = exact.values[:, :k], exact.indices[:, :k]
    return indices, torch.isfinite(values)


def _vote(neighbour_labels: torch.Tensor, valid: torch.Tensor, n_classes: int, tie_break: str) -> torch.Tensor:
    """Majority vote over each row's neighbours (ordered nearest first), with the given tie rule."""
    rows, k = neighbour_labels.shape
    counts = torch.zeros(rows, n_classes, dtype=torch.int64, device=neighbour_labels.device)
    counts.scatter_add_(1, neighbour_labels, valid.to(torch.int64))
    best = counts.max(dim=1, keepdim=True).values
    tied = counts == best  # (rows, classes)
    if tie_break == "lowest_label":
        # argmax of a boolean row returns the first True: the lowest label among the tied ones.
        return torch.argmax(tied.to(torch.int8), dim=1)
    # "nearest": the first neighbour (nearest first) whose label is among the tied ones.
    candidate = torch.gather(tied, 1, neighbour_labels) & valid
    first = torch.argmax(candidate.to(torch.int8), dim=1)
    return neighbour_labels[torch.arange(rows, device=neighbour_labels.device), first]


def _torch_neighbours(points: np.ndarray, groups: np.ndarray | None, k: int, device: torch.device,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out neighbours of every point via chunked distance matrices and ``topk``."""
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    data = torch.as_tensor(points, dtype=dtype, device=device)
    squared_norms = (data * data).sum(dim=1)
    group_tensor = torch.as_tensor(groups, device=device) if groups is not None else None
    n = data.shape[0]
    all_indices, all_valid = [], []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        query = data[start:stop]
        distances = squared_norms[start:stop, None] + squared_norms[None, :] - 2.0 * (query @ data.T)
        distances.clamp_(min=0.0)
        rows = torch.arange(stop - start, device=device)
        distances[rows, rows + start] = math.inf  # a point never votes for itself
        if group_tensor is not None:
            distances.masked_fill_(group_tensor[start:stop, None] == group_tensor[None, :], math.inf)
        indices, valid = _ordered_neighbours(distances, k)
        all_indices.append(indices)
        all_valid.append(valid)
    return torch.cat(all_indices), torch.cat(all_valid)


def _faiss_neighbours(points: np.ndarray, groups: np.ndarray | None, k: int,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out neighbours with an exact ``faiss.IndexFlatL2`` search (float32)."""
    try:
        import faiss
    except ImportError:
        raise PartsimError("backend='faiss' needs the faiss-cpu package: pip install faiss-cpu") from None
    data = np.ascontiguousarray(points, dtype=np.float32)
    n = data.shape[0]
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    # Ask for enough neighbours that k remain after removing the point itself and its group, plus some slack so
    # that ties at the k-th distance are seen and ordered by index like the torch backend.
    largest_group = int(np.bincount(groups).max()) if groups is not None else 1
    search = min(n, k + largest_group + 8)
    all_indices, all_valid = [], []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        distances, found = index.search(data[start:stop], search)
        distances = torch.as_tensor(distances.astype(np.float64))
        found = torch.as_tensor(found.astype(np.int64))
        own = torch.arange(start, stop)[:, None]
        excluded = (found == own) | (found < 0)
        if groups is not None:
            group_tensor = torch.as_tensor(groups)
            excluded |= group_tensor[found.clamp(min=0)] == group_tensor[start:stop, None]
        distances[excluded] = math.inf
        # Order by (distance, index): sort by index, then stable-sort by distance.
        by_index = torch.argsort(found, dim=1, stable=True)
        distances, found = torch.gather(distances, 1, by_index), torch.gather(found, 1, by_index)
        ordered = torch.sort(distances, dim=1, stable=True)
        indices = torch.gather(found, 1, ordered.indices)[:, :k]
        valid = torch.isfinite(ordered.values[:, :k])
        all_indices.append(indices)
        all_valid.append(valid)
    return torch.cat(all_indices), torch.cat(all_valid)


def knn_predict(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | list,
    k: int = THESIS_K,
    exclude_groups: np.ndarray | list | None = None,
    tie_break: str = "nearest",
    device: str | torch.device | None = None,
    batch_size: int = 4096,
    backend: str = "torch",
) -> np.ndarray:
    """Leave-one-out kNN prediction of each point's label from all other points (thesis 3.3.2).

    Args:
        embeddings: (n, d) points; Euclidean distance.
        labels: (n,) label of each point (track IDs, any sortable type).
        k: neighbours that vote (thesis: 5). With fewer than ``k`` candidates left, all of them vote.
        exclude_groups: optional (n,) group of each point; points of the target's own group do not vote.
        tie_break: ``"nearest"`` or ``"lowest_label"`` (scikit-learn's rule); see the module docstring.
        device: torch device; ``None``/``"auto"`` = CUDA when visible, else CPU (torch backend only).
        batch_size: query rows per distance-matrix chunk.
        backend: ``"torch"`` (default) or ``"faiss"`` (exact ``IndexFlatL2``, float32).

    Returns:
        (n,) predicted labels, of the same kind as ``labels``.

    Raises:
        PartsimError: bad shapes, NaN embeddings, unknown ``tie_break``/``backend``, or a point without any
            candidate neighbour (e.g. every point in one group).
    """
    points, classes, encoded, groups = _check_inputs(embeddings, labels, k, exclude_groups, tie_break, batch_size)
    if backend == "torch":
        target = resolve_device(device)
        indices, valid = _torch_neighbours(points, groups, int(k), target, int(batch_size))
    elif backend == "faiss":
        indices, valid = _faiss_neighbours(points, groups, int(k), int(batch_size))
    else:
        raise PartsimError(f"unknown kNN backend {backend!r}; choose one of: {', '.join(KNN_BACKENDS)}")
    without = torch.nonzero(~valid.any(dim=1)).flatten()
    if without.numel():
        raise PartsimError(f"point {int(without[0])} has no candidate neighbour (all other points are excluded "
                           f"by exclude_groups); kNN needs at least one")
    label_tensor = torch.as_tensor(encoded, device=indices.device)
    neighbour_labels = label_tensor[indices.clamp(min=0)]
    predicted = _vote(neighbour_labels, valid, len(classes), tie_break).cpu().numpy()
    return classes[predicted]


def knn_accuracy(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | list,
    k: int = THESIS_K,
    exclude_groups: np.ndarray | list | None = None,
    tie_break: str = "nearest",
    **options: Any,
) -> float:
    """Share of points whose leave-one-out kNN prediction equals their own label, in [0, 1].

    Chapter tables print it in percent (thesis Table 3.2). ``options`` go to :func:`knn_predict` (``device``,
    ``batch_size``, ``backend``).
    """
    predicted = knn_predict(embeddings, labels, k=k, exclude_groups=exclude_groups, tie_break=tie_break, **options)
    return float(np.mean(predicted == np.asarray(labels)))
