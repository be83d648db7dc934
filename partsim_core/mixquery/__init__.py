"""MixQuery (thesis chapter 6): retrieval of songs from a query set of stems taken from different songs.

* :mod:`~partsim_core.mixquery.catalog` - a Slakh-format split as songs cut into 10-s segments (6.2.1).
* :mod:`~partsim_core.mixquery.backends` - embeddings per segment and part: ``csn`` (chapter 4, from the mix; the
  default), ``separated`` (chapter 3 networks on separated stems), ``mert`` (local MERT model, optional).
* :mod:`~partsim_core.mixquery.index_build` - :func:`build_index` writes the index folder (format version, model
  hash, catalog fingerprint); :mod:`~partsim_core.mixquery.index` - :class:`MixQueryIndex` opens and queries it.
* :mod:`~partsim_core.mixquery.search` - similar stems (6.2.2) and eq. 6.1-6.2 song retrieval (6.2.3-6.2.4) with
  FAISS, and the plain numpy references they equal.
* :mod:`~partsim_core.mixquery.ranking` - eq. 6.1 (mean of the raw query embeddings) and eq. 6.2 with cosine or
  Euclidean distance on a catalog's raw embeddings (what the evaluation ranks with).
* :mod:`~partsim_core.mixquery.mert` - the thesis's embedding: frozen MERT layer features and the per-stem head
  trained on same-song triplets (``partsim train mixquery-head``).
* The evaluation, beyond the thesis: :mod:`~partsim_core.mixquery.pseudo_plan` and
  :mod:`~partsim_core.mixquery.pseudo_catalog` (ground truth from a catalog of pseudo pieces),
  :mod:`~partsim_core.mixquery.metrics` (recall@10/@100, MRR with intervals),
  :mod:`~partsim_core.mixquery.simulated_listening` (the C0-C3 protocol of 6.4.1 with simulated listeners) and
  :mod:`~partsim_core.mixquery.run` (the chapter's run and its JSON).

Example::

    from partsim_core.mixquery import MixQueryIndex, StemQuery
    index = MixQueryIndex.load(folder)
    hits = index.search_songs([StemQuery("Track01877", "drums", 2), StemQuery("Track01890", "bass", 0)], k=10)
"""

from partsim_core.mixquery.backends import (
    BACKENDS,
    CSNBackend,
    EmbeddingBackend,
    MertBackend,
    SeparatedBackend,
    TrackLevelBackend,
    get_backend,
)
from partsim_core.mixquery.catalog import SEGMENT_SECONDS, Catalog, CatalogSong, default_catalog_root, segment_bounds
from partsim_core.mixquery.index import FORMAT_VERSION, MixQueryIndex
from partsim_core.mixquery.index_build import build_index, default_index_dir
from partsim_core.mixquery.metrics import expected_random_metrics, recall_at_k, reciprocal_rank
from partsim_core.mixquery.pseudo_catalog import PseudoCatalog, build_pseudo_catalog
from partsim_core.mixquery.pseudo_plan import EvaluationQuery, EvaluationSizes, evaluation_sizes
from partsim_core.mixquery.run import MixQueryEvaluation, run_evaluation
from partsim_core.mixquery.search import (
    THESIS_K,
    SongHit,
    StemHit,
    StemQuery,
    search_songs_numpy,
    similar_stems_numpy,
)
from partsim_core.mixquery.simulated_listening import SimulatedABX, comparison_rank_ranges, simulate_abx

__all__ = [
    "BACKENDS",
    "FORMAT_VERSION",
    "SEGMENT_SECONDS",
    "THESIS_K",
    "CSNBackend",
    "Catalog",
    "CatalogSong",
    "EmbeddingBackend",
    "EvaluationQuery",
    "EvaluationSizes",
    "MertBackend",
    "MixQueryEvaluation",
    "MixQueryIndex",
    "PseudoCatalog",
    "SeparatedBackend",
    "SimulatedABX",
    "SongHit",
    "StemHit",
    "StemQuery",
    "TrackLevelBackend",
    "build_index",
    "build_pseudo_catalog",
    "comparison_rank_ranges",
    "default_catalog_root",
    "default_index_dir",
    "evaluation_sizes",
    "expected_random_metrics",
    "get_backend",
    "recall_at_k",
    "reciprocal_rank",
    "run_evaluation",
    "search_songs_numpy",
    "segment_bounds",
    "similar_stems_numpy",
    "simulate_abx",
]
