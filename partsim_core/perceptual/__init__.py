"""The Inst-Sim ABX listening test: loader, chapter-5 analyses, model-vs-listener agreement, simulated test.

* :mod:`~partsim_core.perceptual.abx` - the dataset's own format (answers CSVs, sample-config JSON).
* :mod:`~partsim_core.perceptual.analysis` - Fig. 5.4, 5.6, 5.8, 5.9 and Tables 5.1-5.4 as tidy data frames.
* :mod:`~partsim_core.perceptual.agreement` - stimulus extraction from a Slakh root and model agreement
  (Fig. 5.12, Table 4.6).
* :mod:`~partsim_core.perceptual.published` - what the thesis prints about chapter 5 and how ours compares
  (Table 5.3 readings, Table 5.1 p-value robustness).
* :mod:`~partsim_core.perceptual.report` - results shaped for the chapter page (thesis-vs-ours tables, matrices).
* :mod:`~partsim_core.perceptual.results` - every chapter result as one JSON-ready dict (``partsim perceptual run``).
* :mod:`~partsim_core.perceptual.validate` - row checks of the published format and the published checksums.
* :mod:`~partsim_core.perceptual.simulate` - a simulated test over the embedded mini-Slakh when the real data is
  absent.
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
    kept_stimulus_paths,
    mean_log_mel_embedding,
    model_choices,
    model_listener_agreement,
    slakh_signal_source,
    write_stimuli,
)
from partsim_core.perceptual.analysis import (
    AGREEMENT_RULES,
    SAMPLE_SET_UNITS,
    TABLE_5_3_AGREEMENT,
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
    sample_set_units,
    thesis_tables,
    to_thesis_layout,
    tsne_embedding,
    variance_comparison,
    ward_clusters,
    ward_linkage,
    within_between,
)
from partsim_core.perceptual.published import (
    consistent_trials,
    filter_rule_counts,
    filter_rule_evidence,
    implied_evaluations,
    p_value_jackknife,
    p_value_variants,
    rates_from_table,
)
from partsim_core.perceptual.report import (
    agreement_matrix,
    data_description,
    filter_layouts,
    interval_layout,
    printed_rates,
    text_checks,
    with_printed,
)
from partsim_core.perceptual.results import chapter_results, rate_cell
from partsim_core.perceptual.simulate import (
    SimulationConfig,
    ensure_simulated_test,
    simulate_listening_test,
)

__all__ = [
    "AGREEMENT_RULES",
    "CATEGORIES",
    "NA",
    "PART_CATEGORIES",
    "PERSPECTIVES",
    "PUBLISHED_VALID_RESPONSES",
    "SAMPLE_SET_UNITS",
    "SET_TYPES",
    "TABLE_5_3_AGREEMENT",
    "ABXData",
    "EmbedFunction",
    "SimulationConfig",
    "agreement_filter",
    "agreement_matrix",
    "all_na_participants",
    "all_subjects",
    "category_agreement",
    "chapter_results",
    "check_published_counts",
    "clopper_pearson",
    "consistent_trials",
    "data_description",
    "default_abx_dir",
    "dendrogram_order",
    "ensure_simulated_test",
    "extract_from_slakh",
    "extract_stimuli",
    "filter_layouts",
    "filter_rule_counts",
    "filter_rule_evidence",
    "filter_summary",
    "implied_evaluations",
    "interval_layout",
    "is_published_dataset",
    "kept_evaluations",
    "kept_stimulus_paths",
    "load_abx",
    "matching_vectors",
    "mean_log_mel_embedding",
    "model_choices",
    "model_listener_agreement",
    "p_value_jackknife",
    "p_value_variants",
    "part_track_matches",
    "participant_summary",
    "perspective_matching_rates",
    "printed_rates",
    "rate_cell",
    "rates_from_table",
    "read_answers_csv",
    "read_sample_configs",
    "response_counts",
    "sample_set_units",
    "simulate_listening_test",
    "slakh_signal_source",
    "text_checks",
    "thesis_tables",
    "to_thesis_layout",
    "tsne_embedding",
    "variance_comparison",
    "ward_clusters",
    "ward_linkage",
    "with_printed",
    "within_between",
    "write_stimuli",
]
