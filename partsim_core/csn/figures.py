"""The data of chapter 4's figures (Figs. 4.7-4.11), from :class:`~partsim_core.csn.run.Chapter4Results`.

Each function returns a tidy table or matrices that the notebook plots; all use the first seed's embeddings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist
from sklearn.manifold import TSNE

from partsim_core import INSTRUMENTS
from partsim_core.csn.metrics import subspace
from partsim_core.csn.run import PROPOSED, Chapter4Results
from partsim_core.csn.test_set import EVALUATION_SECONDS


def _tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    perplexity = float(min(30.0, max(1.0, (len(vectors) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)


def dataset_tsne(results: Chapter4Results, condition: str = PROPOSED, max_tracks: int = 10,
                 seed: int = 0) -> pd.DataFrame:
    """Fig. 4.7: t-SNE of every subspace for 5-s segments of dataset pieces (the first ``max_tracks`` test tracks).

    Returns:
        Columns ``x, y, subspace, track, start_s`` (one t-SNE per subspace, on the segments where the part sounds).
    """
    grid = results.grids[EVALUATION_SECONDS]
    vectors = results.embeddings[condition]["mix_5"]
    chosen = sorted(set(grid.track_ids.tolist()))[:max_tracks]
    frames = []
    for column, part in enumerate(INSTRUMENTS):
        rows = np.flatnonzero(np.isin(grid.track_ids, chosen) & grid.part_active[:, column])
        if rows.size < 4:
            continue
        points = _tsne(subspace(vectors[rows], part), seed)
        frames.append(pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "subspace": part,
                                    "track": grid.track_ids[rows],
                                    "start_s": grid.starts[rows] / results.data.cache.sample_rate}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["x", "y", "subspace", "track", "start_s"])


def pseudo_tsne(results: Chapter4Results, condition: str = PROPOSED, seed: int = 0) -> pd.DataFrame:
    """Figs. 4.8-4.9: t-SNE of each subspace for the test pseudo pieces made for that part.

    Returns:
        Columns ``x, y, subspace, label`` (the part-level label: Fig. 4.8's colours), ``piece`` (the whole
        piece, e.g. ``A-1``: Fig. 4.9's colours), ``other``.
    """
    segments = results.pseudo.segments if results.pseudo is not None else pd.DataFrame()
    vectors = results.embeddings.get(condition, {}).get("pseudo")
    frames = []
    for part in INSTRUMENTS:
        if vectors is None or segments.empty or len(vectors) != len(segments):
            break
        rows = np.flatnonzero(segments["part"].to_numpy() == part)
        if rows.size < 4:
            continue
        points = _tsne(subspace(vectors[rows], part), seed)
        chosen = segments.iloc[rows]
        piece_number = chosen.groupby("label")["piece"].transform(lambda s: pd.factorize(s)[0] + 1)
        frames.append(pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "subspace": part,
                                    "label": chosen["label"].to_numpy(),
                                    "piece": (chosen["label"] + "-" + piece_number.astype(str)).to_numpy(),
                                    "other": chosen["other"].to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["x", "y", "subspace", "label", "piece", "other"])


def embedding_magnitudes(results: Chapter4Results, condition: str = PROPOSED, per_part: int = 20) -> pd.DataFrame:
    """Fig. 4.10: |embedding| of single-stem inputs, ``per_part`` segments per instrument stacked vertically.

    Returns:
        Rows ``"<part> <n>"`` (the input's instrument), columns = embedding dimensions.
    """
    stems = results.embeddings.get(condition, {}).get("stems_5", {})
    blocks, labels = [], []
    for part in INSTRUMENTS:
        if stems.get(part) is None:
            continue
        chosen = np.abs(stems[part][:per_part])
        blocks.append(chosen)
        labels += [f"{part} {number}" for number in range(len(chosen))]
    if not blocks:
        return pd.DataFrame()
    return pd.DataFrame(np.concatenate(blocks), index=labels)


def distance_matrices(results: Chapter4Results, part: str = "drums", condition: str = PROPOSED,
                      n_tracks: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 4.11: distances between one 5-s segment of each of ``n_tracks`` test tracks in ``part``'s subspace,
    with the part's stem as input and with the mix as input (masked).

    Returns:
        ``(stem input, mix input)`` distance matrices labelled by track.
    """
    grid = results.grids[EVALUATION_SECONDS]
    column = INSTRUMENTS.index(part)
    active = np.flatnonzero(grid.part_active[:, column])
    _, first = np.unique(grid.track_ids[active], return_index=True)
    chosen = np.sort(first)[:n_tracks]          # positions within ``active``: first segment of each track
    stem_vectors = subspace(results.embeddings[condition]["stems_5"][part][chosen], part)
    mix_vectors = subspace(results.embeddings[condition]["mix_5"][active[chosen]], part)
    labels = grid.track_ids[active[chosen]]
    return (pd.DataFrame(cdist(stem_vectors, stem_vectors), index=labels, columns=labels),
            pd.DataFrame(cdist(mix_vectors, mix_vectors), index=labels, columns=labels))


def loss_curves(results: Chapter4Results) -> pd.DataFrame:
    """Train and validation loss per epoch of every model, tidy: ``model, seed, epoch, split, loss``."""
    rows = []
    for name, history in results.histories.items():
        model, _, seed = name.partition("/seed")
        for entry in history:
            for split, key in (("train", "train_loss"), ("validation", "val_loss")):
                if entry.get(key) is not None:
                    rows.append({"model": model, "seed": int(seed or 0), "epoch": int(entry["epoch"]),
                                 "split": split, "loss": float(entry[key])})
    return pd.DataFrame(rows, columns=["model", "seed", "epoch", "split", "loss"])
