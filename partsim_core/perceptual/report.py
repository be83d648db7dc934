"""Shaping chapter-5 results for the chapter page: thesis-vs-ours tables, matrices, interval strings, checks.

Pure functions over the analysis outputs (no plotting, no file access): the chapter notebook loads the printed
numbers from ``data/thesis_tables`` and passes them in.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from partsim_core.perceptual.abx import CATEGORIES, PART_CATEGORIES
from partsim_core.perceptual.analysis import (
    all_na_participants,
    filter_summary,
    to_thesis_layout,
)
from partsim_core.perceptual.published import rates_from_table


def data_description(published: bool, simulated: bool, folder_name: str, valid: int, catch: int,
                     dropped: int = 0) -> str:
    """One Markdown paragraph saying which data the chapter shows (published, simulated or another folder)."""
    if published:
        shown = ("the **published Inst-Sim ABX dataset** (real listeners, `zume06/Inst-Sim-ABX-Dataset`; files "
                 "verified by SHA-256)")
    elif simulated:
        shown = ("a **SIMULATED listening test** over the embedded mini-Slakh dataset (the published data was not "
                 "found beside the repository). Its listeners follow the generator's part-level ground truth plus "
                 "noise (`partsim_core.perceptual.simulate`), so its numbers only show that the analyses run and "
                 "recover what the simulation put in; they say nothing about human perception")
    else:
        shown = (f"the ABX folder given as `abx_dir` (`{folder_name}`), which is **not** the published data (its "
                 f"files differ from the published checksums)")
    text = (f"**Data shown in this chapter:** {shown}. {valid:,} valid responses after excluding {catch:,} "
            f"catch-trial rows")
    if dropped:
        text += f" and dropping {dropped:,} rows that break the published format"
    return text + "."


def with_printed(ours: pd.DataFrame, printed: pd.Series, key: str = "quantity", value: str = "ours") -> pd.DataFrame:
    """``ours`` (one row per quantity) with the thesis's printed value and ``difference = ours - thesis`` added.

    Args:
        ours: e.g. :func:`~partsim_core.perceptual.abx.participant_summary`.
        printed: printed values indexed by quantity name (``table_5_text.csv``'s ``value`` column).
        key: the column of ``ours`` holding the quantity names.
        value: the column of ``ours`` holding our values.
    """
    table = ours.copy()
    table["thesis"] = table[key].map(printed)
    table["difference"] = table[value] - table["thesis"]
    return table


def agreement_matrix(agreement: pd.DataFrame, set_type: str) -> pd.DataFrame:
    """Square category x category matrix of :func:`~partsim_core.perceptual.analysis.category_agreement` rates."""
    part = agreement[agreement["set_type"] == set_type]
    grid = part.pivot(index="category_1", columns="category_2", values="agreement")
    order = [category for category in CATEGORIES if category in grid.index]
    grid = grid.reindex(index=order, columns=order)
    grid.index.name = None
    grid.columns.name = None
    return grid


def interval_layout(tidy: pd.DataFrame, value: str = "percent", low: str = "ci_low", high: str = "ci_high",
                    decimals: int = 1) -> pd.DataFrame:
    """Thesis layout (perspective x category) of ``"value [low, high]"`` strings."""
    cells = tidy.copy()
    cells["cell"] = [f"{v:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
                     for v, lo, hi in zip(cells[value], cells[low], cells[high])]
    return to_thesis_layout(cells, "cell")


def filter_layouts(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Table 5.3's four blocks (``5.3a`` xab sets, ``5.3b`` xyc sets, ``5.3c`` xab evaluations, ``5.3d`` xyc
    evaluations) from :func:`~partsim_core.perceptual.analysis.filter_summary`, in the thesis layout."""
    blocks = {"5.3a": ("xab", "sets"), "5.3b": ("xyc", "sets"), "5.3c": ("xab", "evaluations"),
              "5.3d": ("xyc", "evaluations")}
    return {table_id: to_thesis_layout(summary[summary["set_type"] == set_type], value)
            for table_id, (set_type, value) in blocks.items()}


def text_checks(responses: pd.DataFrame, filtered: pd.DataFrame, subjects: Sequence[str],
                printed: pd.Series) -> pd.DataFrame:
    """The counts chapter 5.3.4 prints, thesis vs ours: xab drum-melody sets passing the filter, participants
    never answering drum melody (of all unique participants, ``subjects``).

    Returns:
        Columns ``check, thesis, ours``.
    """
    summary = filter_summary(filtered, categories=PART_CATEGORIES).set_index(["set_type", "perspective", "category"])
    rows = [
        ("xab drum-melody sample sets passing the filter",
         int(summary.at[("xab", "melody", "drums"), "sets"])),
        ("participants never answering drum melody", all_na_participants(responses, subjects, "drums", "melody")),
    ]
    return pd.DataFrame([(name, printed[name], ours) for name, ours in rows], columns=["check", "thesis", "ours"])


def printed_rates(table_4_6a: pd.DataFrame, table_4_6b: pd.DataFrame, paper_xyc: pd.DataFrame) -> pd.DataFrame:
    """The printed "rate ± half-width" cells behind Table 5.3's evaluations: Table 4.6 (xab, overall and timbre)
    and the companion paper's Table 6 test 2 (xyc, ``table_5_3_paper_xyc_rates.csv``), tidy
    (:func:`~partsim_core.perceptual.published.rates_from_table`)."""
    return pd.concat([rates_from_table(table_4_6a, "xab", "overall"), rates_from_table(table_4_6b, "xab", "timbre"),
                      rates_from_table(paper_xyc, "xyc", "overall"), rates_from_table(paper_xyc, "xyc", "timbre")],
                     ignore_index=True)
