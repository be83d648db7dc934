"""The Inst-Sim ABX listening test: loader, chapter-5 analyses, model-vs-listener agreement, simulated test.

* :mod:`~partsim_core.perceptual.abx` - the dataset's own format (answers CSVs, sample-config JSON).
* :mod:`~partsim_core.perceptual.analysis` - Fig. 5.4, 5.6, 5.8, 5.9 and Tables 5.1-5.4 as tidy data frames.
* :mod:`~partsim_core.perceptual.agreement` - stimulus extraction from a Slakh root and model agreement
  (Fig. 5.12, Table 4.6).
* :mod:`~partsim_core.perceptual.simulate` - a simulated test over the embedded mini-Slakh when the real data is
  absent.

Used by ``notebooks/ch5_perceptual_analysis.py``, the chapter-4 evaluation and ``partsim perceptual ...``.
"""

from partsim_core.perceptual.abx import (
    CATEGORIES,
    NA,
    PART_CATEGORIES,
    PERSPECTIVES,
    PUBLISHED_VALID_RESPONSES,
    SET_TYPES,
    ABXData,
    all_subjects,
    check_published_counts,
    default_abx_dir,
    is_published_dataset,
    load_abx,
    participant_summary,
    read_answers_csv,
    read_sample_configs,
)
from partsim_core.perceptual.agreement import (
    EmbedFunction,
    extract_from_slakh,
    extract_stimuli,
    model_choices,
    model_listener_agreement,
    slakh_signal_source,
    write_stimuli,
)
from partsim_core.perceptual.analysis import (
    agreement_filter,
    all_na_participants,
    category_agreement,
    clopper_pearson,
    dendrogram_order,
    filter_summary,
    kept_evaluations,
    matching_vectors,
    part_track_matches,
    perspective_matching_rates,
    response_counts,
    thesis_tables,
    to_thesis_layout,
    tsne_embedding,
    variance_comparison,
    ward_clusters,
    ward_linkage,
    within_between,
)
from partsim_core.perceptual.simulate import SimulationConfig, ensure_simulated_test, simulate_listening_test

__all__ = [
    "ABXData", "CATEGORIES", "EmbedFunction", "NA", "PART_CATEGORIES", "PERSPECTIVES", "PUBLISHED_VALID_RESPONSES",
    "SET_TYPES", "SimulationConfig", "agreement_filter", "all_na_participants", "all_subjects", "category_agreement",
    "check_published_counts", "default_abx_dir", "ensure_simulated_test", "clopper_pearson", "dendrogram_order", "extract_from_slakh", "extract_stimuli",
    "filter_summary", "is_published_dataset", "kept_evaluations", "load_abx", "matching_vectors",
    "model_choices", "model_listener_agreement", "part_track_matches", "participant_summary",
    "perspective_matching_rates", "read_answers_csv", "read_sample_configs", "response_counts",
    "simulate_listening_test", "slakh_signal_source", "thesis_tables", "to_thesis_layout", "tsne_embedding",
    "variance_comparison", "ward_clusters", "ward_linkage", "within_between", "write_stimuli",
]
