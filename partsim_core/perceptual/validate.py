"""Row checks of the Inst-Sim ABX answers format and the checksums of the published files (thesis chapter 5).

The published answers CSV (``zume06/Inst-Sim-ABX-Dataset``) follows rules that the analyses rely on:

* every answer is ``A+ A- B+ B-`` or N/A (``NA`` or empty), and *overall* (``answer_total``) is never N/A;
* at most two of timbre, rhythm and melody are N/A in one response;
* ``choice_time`` is a whole, non-negative number of milliseconds;
* a response row appears once: no exact duplicate of a row (all ten columns equal), and no second answer of one
  subject to one sample set (the published file has neither);
* every stimulus path of a non-catch row reads ``set<N>/<sample set>/<category>/<ROLE>_<track>-<segment>.wav``, A
  and B lie in X's set and category, and the roles are X/A/B or X/Y/C.

:func:`invalid_rows` gives the first broken rule of every row; the loader
(:func:`partsim_core.perceptual.abx.read_answers_table`) refuses a file with such rows, or drops them on request
and reports how many. :data:`PUBLISHED_SHA256` holds the SHA-256 of the published files: only data read from files
with these checksums is called "published" (a row count alone cannot tell an edited copy from the original).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

#: SHA-256 of the published dataset's files, by path relative to the dataset folder.
PUBLISHED_SHA256: dict[str, str] = {
    "csvs/inst_sim_abx_answers.csv": "53aaee147a31341a0ad5390f132249b9f5583fdf7a5e80600c31c12200cd195b",
    "csvs/inst_sim_abx_answers_XAB.csv": "9a2d59dc4c77e74a8f64262890538478c91391af8d534c713363a9572f302378",
    "csvs/inst_sim_abx_answers_XYC.csv": "7bacd182c279ba9a8820b758a2fbf14c1d36a4d9916bf16282d4106c11adafef",
    "sample_configs/dict_triplet_202404.json": "c820169467dad0b7d4333126c8ed3e19b9b0b9ceefd5ba7904568a1717809693",
    "sample_configs/dict_triplet_202407.json": "49248def6050fd959e99dad3cdcd1a2875ea5b9b1e8a05b4e0a2a170f02d22aa",
}

#: Answer codes (``NA`` and the empty string mean N/A).
VALID_ANSWERS: frozenset[str] = frozenset({"A+", "A-", "B+", "B-"})
NA_ANSWERS: frozenset[str] = frozenset({"NA", ""})
#: Answer columns where N/A may be chosen (at most two per row), and the overall column where it may not.
NA_ALLOWED_COLUMNS: tuple[str, ...] = ("answer_timbre", "answer_rhythm", "answer_melody")
OVERALL_COLUMN = "answer_total"
#: Most N/A answers one response may hold (dataset Readme: "up to two perspectives").
MAX_NA_PER_ROW = 2

STIMULUS_PATH = re.compile(
    r"^set(?P<evaluation_set>\d+)/(?P<sample_set>\d+)/(?P<folder>[a-z]+)/"
    r"(?P<role>[XABYC])_(?P<track>\d+)-(?P<segment>\d+)\.wav$"
)
_WHOLE_NUMBER = re.compile(r"^\d{1,15}$")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches_published(root: str | Path, relative_paths: list[str]) -> bool:
    """True when every named file under ``root`` exists and has the published SHA-256 (and at least one is named).

    Args:
        root: dataset folder.
        relative_paths: files to check, relative to ``root`` (e.g. ``csvs/inst_sim_abx_answers.csv``); a file that
            is not one of :data:`PUBLISHED_SHA256` makes the answer ``False``.
    """
    root = Path(root)
    if not relative_paths:
        return False
    for relative in relative_paths:
        expected = PUBLISHED_SHA256.get(relative)
        path = root / relative
        if expected is None or not path.is_file() or file_sha256(path) != expected:
            return False
    return True


def invalid_rows(raw: pd.DataFrame, category_folders: Collection[str]) -> pd.Series:
    """The first broken format rule of every row of a raw answers table ("" for a valid row).

    Args:
        raw: the CSV read as strings (``keep_default_na=False``) with the ten answer columns, answer cells already
            stripped, and a ``row`` column holding each row's line number in the file.
        category_folders: the dataset's category folder names (``drums`` ... ``residuals``, ``mix``).

    Returns:
        A string Series aligned with ``raw``: empty for a valid row, else a message such as
        ``"N/A in answer_total (overall must be A+, A-, B+ or B-)"``.
    """
    reasons = pd.Series("", index=raw.index, dtype=object)

    def mark(bad: pd.Series | np.ndarray, message) -> None:
        bad = pd.Series(np.asarray(bad, dtype=bool), index=raw.index) & (reasons == "")
        for index in raw.index[bad]:
            reasons.at[index] = message(index) if callable(message) else message

    for column in (*NA_ALLOWED_COLUMNS, OVERALL_COLUMN):
        values = raw[column]
        mark(~(values.isin(VALID_ANSWERS) | values.isin(NA_ANSWERS)),
             lambda i, c=column: f"unknown answer code {raw.at[i, c]!r} in {c} (expected A+, A-, B+, B-, NA or empty)")
    mark(raw[OVERALL_COLUMN].isin(NA_ANSWERS),
         f"N/A in {OVERALL_COLUMN} (overall must be A+, A-, B+ or B-)")
    na_count = sum(raw[column].isin(NA_ANSWERS).astype(int) for column in NA_ALLOWED_COLUMNS)
    mark(na_count > MAX_NA_PER_ROW, "N/A in all of timbre, rhythm and melody (at most two allowed)")
    times = raw["choice_time"].str.strip()
    mark(~times.str.match(_WHOLE_NUMBER),
         lambda i: f"choice_time {raw.at[i, 'choice_time']!r} is not a whole non-negative number of milliseconds")

    is_catch = (raw["reference"] == raw["sample_a"]) | (raw["reference"] == raw["sample_b"])
    parsed = {column: raw[column].str.extract(STIMULUS_PATH) for column in ("reference", "sample_a", "sample_b")}
    for column, parts in parsed.items():
        mark(~is_catch & parts["role"].isna(),
             lambda i, c=column: f"{c} {raw.at[i, c]!r} does not follow "
                                 f"set<N>/<sample set>/<category>/<ROLE>_<track>-<segment>.wav")
    ref = parsed["reference"]
    mark(~is_catch & ~ref["folder"].isin(list(category_folders)),
         lambda i: f"unknown category folder {ref.at[i, 'folder']!r}")
    place = ["evaluation_set", "sample_set", "folder"]
    for column in ("sample_a", "sample_b"):
        same_place = (parsed[column][place] == ref[place]).all(axis=1)
        mark(~is_catch & ~same_place, f"{column} lies in another set or category than the reference")
    roles = parsed["sample_a"]["role"].fillna("") + parsed["sample_b"]["role"].fillna("")
    mark(~is_catch & ~(roles.isin(["AB", "BA", "YC", "CY"]) & (ref["role"] == "X")),
         lambda i: f"roles X/{'/'.join(roles[i]) or '?'} are neither X/A/B nor X/Y/C")

    columns = ["ex_name", "subject_id", "reference", "sample_a", "sample_b", *NA_ALLOWED_COLUMNS, OVERALL_COLUMN,
               "choice_time"]
    first_line = raw.groupby(columns, sort=False)["row"].transform("first")
    mark(raw.duplicated(columns), lambda i: f"exact duplicate of line {first_line[i]}")
    low = np.minimum(raw["sample_a"], raw["sample_b"])
    high = np.maximum(raw["sample_a"], raw["sample_b"])
    answered = pd.DataFrame({"subject_id": raw["subject_id"], "set": raw["reference"] + "|" + low + "|" + high})
    repeated = answered.duplicated() & ~is_catch
    first_answer = raw["row"].groupby([answered["subject_id"], answered["set"]], sort=False).transform("first")
    mark(repeated, lambda i: f"second answer of subject {raw.at[i, 'subject_id']!r} to sample set "
                             f"{raw.at[i, 'reference']!r} (first at line {first_answer[i]})")
    return reasons
