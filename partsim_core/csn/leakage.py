"""**Our addition, not in the thesis:** style retrieval of a subspace and its leakage of the other parts.

The embedded dataset's generator records each part's true style, so, unlike the thesis's data, we can ask
directly what a subspace encodes: :func:`style_leakage` measures how well a subspace retrieves segments whose
*same* part shares the target's style, and how much more often than chance its neighbours share *another* part's
style (a direct leakage measure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.csn.metrics import _per_row, part_position, subspace
from partsim_core.errors import PartsimError
from partsim_core.knn import _torch_neighbours


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


def grid_styles(track_ids: np.ndarray, part_active: np.ndarray, truth: dict) -> pd.DataFrame:
    """Per segment and part: the generator's style of that part where it sounds, else None."""
    columns = {}
    for column, part in enumerate(INSTRUMENTS):
        values = []
        for row, track_id in enumerate(track_ids):
            entry = truth.get(str(track_id), {}).get("parts", {}).get(part)
            values.append(entry.get("style") if entry is not None and part_active[row, column] else None)
        columns[part] = values
    return pd.DataFrame(columns)


#: Columns of the tidy style-leakage table.
LEAKAGE_COLUMNS = ["subspace", "part", "relation", "k", "precision", "chance", "excess", "n_targets", "condition"]


def leakage_table(embeddings: Any, track_ids: np.ndarray, styles: pd.DataFrame, condition: str,
                  device: str | None = "cpu") -> pd.DataFrame:
    """:func:`style_leakage` of every subspace of one condition's embeddings (segments of one track excluded from
    each other's neighbours), as one tidy table; empty when fewer than two tracks."""
    if len(track_ids) < 2 or len(set(track_ids)) < 2:
        return pd.DataFrame(columns=LEAKAGE_COLUMNS)
    frames = [style_leakage(embeddings, styles.reset_index(drop=True), part, k=min(10, len(track_ids) - 1),
                            exclude_groups=track_ids, device=device).assign(condition=condition)
              for part in INSTRUMENTS]
    return pd.concat(frames, ignore_index=True)
