"""Loader for the Inst-Sim ABX listening-test dataset in its own published format (thesis chapter 5).

The dataset (public repository ``zume06/Inst-Sim-ABX-Dataset``) holds:

* ``csvs/inst_sim_abx_answers.csv`` - every response, catch trials included, with a leftover pandas index column
  (header empty or ``Unnamed: 0``) and the columns ``ex_name, subject_id, reference, sample_a, sample_b,
  answer_timbre, answer_rhythm, answer_melody, answer_total, choice_time``; its splits ``..._XAB.csv`` and
  ``..._XYC.csv`` (same columns, catch trials left out);
* ``sample_configs/dict_triplet_*.json`` - evaluation set -> sample set -> ``test1``/``test2`` -> category -> role
  -> ``{ID, seg, filename, sr, index_s, index_e}`` (the Slakh2100 test-set excerpt of every stimulus).

Answers are ``A+ A- B+ B-`` (strong / weak preference) or N/A (written ``NA`` or left empty). A stimulus path reads
``set{evaluation set}/{sample set no}/{category}/{ROLE}_{track}-{segment}.wav``; the category ``residuals`` is the
thesis's "others", ``mix`` the whole track. Roles ``X, A, B`` make a chi-alpha-beta ("xab") sample set (three
different tracks), roles ``X, Y, C`` a chi-chi'-gamma ("xyc") one (Y is another segment of X's track; the A/B order
of Y and C is shuffled). Catch trials (A or B identical to X; paths ``samples/dummy*.wav``) are excluded from every
analysis: the published file then leaves 26,898 valid responses (thesis 5.2.4).

Note: the dataset's Readme calls test 1 "XAB" but its JSON files hold the X/Y/C roles under ``test1``; this loader
decides the sample-set type from the roles, never from the ``test1``/``test2`` key.

Rows are checked against the published format (:mod:`partsim_core.perceptual.validate`) and the files against the
published checksums: only unchanged published files are reported as "published".
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from partsim_core.data.cache import repository_root
from partsim_core.errors import PartsimError
from partsim_core.perceptual.validate import (  # VALID_ANSWERS is re-exported for callers of this module
    NA_ANSWERS,
    STIMULUS_PATH,
    VALID_ANSWERS,  # noqa: F401
    invalid_rows,
    matches_published,
)

#: The four perspectives of a response; "overall" is the CSV's ``answer_total``.
PERSPECTIVES: tuple[str, ...] = ("overall", "timbre", "rhythm", "melody")
#: Perspectives where N/A may be chosen (at most two per response).
NA_PERSPECTIVES: tuple[str, ...] = ("timbre", "rhythm", "melody")
#: Stimulus categories in thesis order (five parts, then the whole track).
CATEGORIES: tuple[str, ...] = ("drums", "bass", "piano", "guitar", "others", "mix")
#: The five instrumental parts.
PART_CATEGORIES: tuple[str, ...] = CATEGORIES[:5]
#: Sample-set types: chi-alpha-beta (three tracks) and chi-chi'-gamma (X's own track vs another).
SET_TYPES: tuple[str, ...] = ("xab", "xyc")

#: CSV column of each perspective.
ANSWER_COLUMNS: dict[str, str] = {
    "overall": "answer_total",
    "timbre": "answer_timbre",
    "rhythm": "answer_rhythm",
    "melody": "answer_melody",
}
#: Columns every answers CSV must have (the leftover index column is optional).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "ex_name", "subject_id", "reference", "sample_a", "sample_b",
    "answer_timbre", "answer_rhythm", "answer_melody", "answer_total", "choice_time",
)
#: Answer codes (:data:`VALID_ANSWERS`); "NA" and the empty string (:data:`NA_ANSWERS`) mean N/A.
#: Value used for N/A in the derived ``choice_*``/``chosen_*``/``strength_*`` columns.
NA = "N/A"

#: Category folder names of the dataset -> thesis names.
CATEGORY_FROM_FOLDER: dict[str, str] = {
    "drums": "drums", "bass": "bass", "piano": "piano", "guitar": "guitar", "residuals": "others", "mix": "mix",
}
#: Thesis names -> dataset folder names (the inverse of :data:`CATEGORY_FROM_FOLDER`).
FOLDER_FROM_CATEGORY: dict[str, str] = {value: key for key, value in CATEGORY_FROM_FOLDER.items()}

#: Published counts (thesis 5.2.4) used as checks.
PUBLISHED_VALID_RESPONSES = 26898
PUBLISHED_ROWS = 28095
COMBINED_CSV = "inst_sim_abx_answers.csv"
SPLIT_CSVS: dict[str, str] = {"xab": "inst_sim_abx_answers_XAB.csv", "xyc": "inst_sim_abx_answers_XYC.csv"}

_PATH_PATTERN = STIMULUS_PATH


@dataclass(frozen=True)
class ABXData:
    """One loaded ABX dataset.

    Attributes:
        root: the dataset folder (holding ``csvs/`` and ``sample_configs/``).
        responses: valid responses, one row per response (catch trials excluded), see :func:`read_answers_csv`.
        catch_trials: the catch-trial rows (A or B identical to X), kept for reporting only.
        configs: stimulus table from the ``sample_configs`` JSON files (:func:`read_sample_configs`); empty when
            the folder has none.
        dropped: rows left out because they break the published format (``row``, ``reason``); empty unless the
            data was loaded with ``drop_invalid``.
        published: every file read (the answers CSV and the sample-config JSONs) has the SHA-256 of the published
            dataset (:data:`~partsim_core.perceptual.validate.PUBLISHED_SHA256`) and no row was dropped.
    """

    root: Path
    responses: pd.DataFrame
    catch_trials: pd.DataFrame
    configs: pd.DataFrame
    dropped: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=["row", "reason"]))
    published: bool = False


def read_answers_table(path: str | Path, drop_invalid: bool = False) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                 pd.DataFrame]:
    """Read one answers CSV, check every row against the published format, and derive the analysis columns.

    Args:
        path: an answers CSV of the dataset (combined or a split file).
        drop_invalid: drop the rows that break the format (see :mod:`partsim_core.perceptual.validate`: unknown
            answer codes, N/A overall, three N/A, a ``choice_time`` that is not a whole number of milliseconds,
            malformed stimulus paths, exact duplicates, a second answer of one subject to one sample set) instead
            of refusing the file. Only rows are dropped: a file that cannot be read, lacks columns or holds no
            response is always refused.

    Returns:
        ``(responses, catch_trials, dropped)``: see :func:`read_answers_csv` for the first two; ``dropped`` has the
        columns ``row`` (line number) and ``reason`` (empty unless ``drop_invalid``).

    Raises:
        PartsimError: a missing or unreadable file (not UTF-8, not CSV), missing columns, no response rows, no
            valid response once catch trials are left out, or (without ``drop_invalid``) a row that breaks the
            format; the message names the file, the line and the value.
    """
    path = Path(path)
    if not path.is_file():
        raise PartsimError(f"ABX answers file not found: {path}")
    # The csv module, not pandas: pandas' parser splits a record at a quoted carriage return, which would make one
    # row two (found by the property-based loader test).
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            records = list(csv.reader(handle))
    except (csv.Error, UnicodeDecodeError, ValueError) as error:
        raise PartsimError(f"cannot parse ABX answers file {path}: {error}") from None
    if not records:
        raise PartsimError(f"cannot parse ABX answers file {path}: the file is empty")
    header, body = records[0], records[1:]
    ragged = next((number for number, record in enumerate(body, start=2) if len(record) != len(header)), None)
    if ragged is not None:
        raise PartsimError(f"cannot parse ABX answers file {path}: record {ragged} has "
                           f"{len(body[ragged - 2])} fields, the header {len(header)}")
    raw = pd.DataFrame(body, columns=header, dtype=str)
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise PartsimError(f"ABX answers file {path} lacks column(s): {', '.join(missing)}")
    if raw.empty:
        raise PartsimError(f"ABX answers file {path} has a header but no response rows")
    raw = raw[list(REQUIRED_COLUMNS)].copy()
    # Line number in the file (header is line 1) so errors can point at the row.
    raw.insert(0, "row", np.arange(2, len(raw) + 2))
    for column in ANSWER_COLUMNS.values():
        raw[column] = raw[column].str.strip()

    reasons = invalid_rows(raw, list(CATEGORY_FROM_FOLDER))
    bad = reasons != ""
    dropped = pd.DataFrame({"row": raw.loc[bad, "row"].to_numpy(), "reason": reasons[bad].to_numpy()})
    if bad.any() and not drop_invalid:
        first = raw.index[bad][0]
        more = f" ({int(bad.sum())} invalid rows in all; drop them with --drop-invalid)" if bad.sum() > 1 else ""
        raise PartsimError(f"{path}, line {raw.at[first, 'row']}: {reasons[first]}{more}")
    if not drop_invalid:
        dropped = dropped.iloc[:0]
    raw = raw[~bad].reset_index(drop=True)
    for column in ANSWER_COLUMNS.values():
        raw[column] = raw[column].where(~raw[column].isin(NA_ANSWERS), NA)
    raw["choice_time"] = raw["choice_time"].str.strip().astype(np.int64)

    is_catch = (raw["reference"] == raw["sample_a"]) | (raw["reference"] == raw["sample_b"])
    catch = raw[is_catch].reset_index(drop=True)
    valid = raw[~is_catch].reset_index(drop=True)
    if valid.empty:
        what = "only catch trials" if len(catch) else "no row"
        after = f" after dropping {len(dropped)} invalid row(s)" if len(dropped) else ""
        raise PartsimError(f"ABX answers file {path} has no valid response{after}: {what} (A or B identical to X) "
                           f"left")
    return _derive_columns(valid), catch, dropped


def read_answers_csv(path: str | Path, drop_invalid: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one answers CSV of the dataset (combined or a split file) and derive the analysis columns.

    Returns ``(responses, catch_trials)``. ``responses`` has one row per valid response with the columns
    ``row`` (line number in the file, header = 1), ``ex_name``, ``subject_id``, ``session`` (subject and evaluation
    set: one participant in the thesis's count), ``evaluation_set``, ``sample_set``, ``triplet`` (evaluation set and
    sample set: the music triplet), ``category`` (thesis names), ``set_type`` (``xab``/``xyc``), ``reference``,
    ``sample_a``, ``sample_b``, ``role_a``/``role_b``, ``track_x``/``track_a``/``track_b`` (Slakh track numbers),
    ``set_key`` (the three files, A/B order removed: one unique sample set), ``choice_time``, ``complete`` (the
    session answered mix sample sets: a complete evaluation set), and for each perspective P in
    :data:`PERSPECTIVES`: ``answer_P`` (``A+``... or ``N/A``), ``choice_P`` (``A``/``B``/``N/A``), ``strength_P``
    (``strong``/``weak``/``N/A``), ``chosen_P`` (the chosen file or ``N/A``), ``chosen_track_P`` (its track
    number, -1 for N/A) and ``chosen_role_P`` (its role ``A``/``B``/``Y``/``C`` or ``N/A``; within one music
    triplet a role names the same track in every category).

    Raises:
        PartsimError: see :func:`read_answers_table` (which also returns the dropped rows).
    """
    responses, catch, _ = read_answers_table(path, drop_invalid=drop_invalid)
    return responses, catch


def _derive_columns(valid: pd.DataFrame) -> pd.DataFrame:
    """Analysis columns of rows that passed :func:`~partsim_core.perceptual.validate.invalid_rows`."""
    parsed = {role_key: valid[column].str.extract(STIMULUS_PATH)
              for column, role_key in (("reference", "x"), ("sample_a", "a"), ("sample_b", "b"))}
    ref = parsed["x"]
    roles = parsed["a"]["role"] + parsed["b"]["role"]

    out = pd.DataFrame({
        "row": valid["row"].to_numpy(),
        "ex_name": valid["ex_name"].to_numpy(),
        "subject_id": valid["subject_id"].to_numpy(),
    })
    out["evaluation_set"] = ref["evaluation_set"].astype(int).to_numpy()
    out["sample_set"] = ref["sample_set"].astype(int).to_numpy()
    out["session"] = out["subject_id"] + "@set" + out["evaluation_set"].astype(str)
    out["triplet"] = out["evaluation_set"].astype(str) + "/" + out["sample_set"].astype(str)
    out["category"] = ref["folder"].map(CATEGORY_FROM_FOLDER).to_numpy()
    out["set_type"] = np.where(roles.isin(["AB", "BA"]), "xab", "xyc")
    for column in ("reference", "sample_a", "sample_b"):
        out[column] = valid[column].to_numpy()
    out["role_a"] = parsed["a"]["role"].to_numpy()
    out["role_b"] = parsed["b"]["role"].to_numpy()
    out["track_x"] = ref["track"].astype(int).to_numpy()
    out["track_a"] = parsed["a"]["track"].astype(int).to_numpy()
    out["track_b"] = parsed["b"]["track"].astype(int).to_numpy()
    low = np.minimum(out["sample_a"], out["sample_b"])
    high = np.maximum(out["sample_a"], out["sample_b"])
    out["set_key"] = out["reference"] + "|" + low + "|" + high
    out["choice_time"] = valid["choice_time"].to_numpy()
    sessions_with_mix = set(out.loc[out["category"] == "mix", "session"])
    out["complete"] = out["session"].isin(sessions_with_mix)

    for perspective, column in ANSWER_COLUMNS.items():
        answer = valid[column].to_numpy()
        letter = np.array([NA if value == NA else value[:1] for value in answer], dtype=object)
        out[f"answer_{perspective}"] = answer
        out[f"choice_{perspective}"] = letter
        out[f"strength_{perspective}"] = np.where(
            answer == NA, NA, np.where(np.char.endswith(answer.astype(str), "+"), "strong", "weak"))
        out[f"chosen_{perspective}"] = np.where(letter == "A", out["sample_a"],
                                                np.where(letter == "B", out["sample_b"], NA))
        out[f"chosen_track_{perspective}"] = np.where(letter == "A", out["track_a"],
                                                      np.where(letter == "B", out["track_b"], -1))
        out[f"chosen_role_{perspective}"] = np.where(letter == "A", out["role_a"],
                                                     np.where(letter == "B", out["role_b"], NA))
    return out


def read_sample_configs(folder: str | Path) -> pd.DataFrame:
    """Read every ``sample_configs/*.json`` of the dataset into one stimulus table.

    One row per stimulus of a sample set (X appears once under each type): ``evaluation_set``, ``sample_set``,
    ``test`` (the JSON's ``test1``/``test2`` key),
    ``set_type`` (from the roles), ``category`` (thesis names), ``role``, ``track`` (Slakh number), ``segment``,
    ``filename``, ``sr``, ``index_s``, ``index_e`` and ``path`` (as written in the answers CSV). Files are merged in
    name order; the same stimulus in two files must agree (the published 202407 file extends 202404 by ``mix``).

    Raises:
        PartsimError: a malformed JSON file or two files that disagree about one stimulus.
    """
    folder = Path(folder)
    rows: dict[tuple[str, str], dict] = {}
    for json_path in sorted(folder.glob("*.json")):
        try:
            tree = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise PartsimError(f"cannot read sample config {json_path}: {error}") from None
        if not isinstance(tree, dict):
            raise PartsimError(f"malformed sample config {json_path}: expected a JSON object at the top level")
        try:
            for set_no, sample_sets in tree.items():
                for sample_no, tests in sample_sets.items():
                    for test, categories in tests.items():
                        roles_here = {role for entries in categories.values() for role in entries}
                        set_type = "xab" if {"A", "B"} <= roles_here else "xyc"
                        for folder_name, entries in categories.items():
                            if folder_name not in CATEGORY_FROM_FOLDER:
                                raise PartsimError(f"{json_path}: set {set_no}/{sample_no}/{test}: unknown category "
                                                   f"{folder_name!r}")
                            for role, entry in entries.items():
                                stim_path = f"set{set_no}/{sample_no}/{folder_name}/{entry['filename']}"
                                row = {
                                    "evaluation_set": int(set_no), "sample_set": int(sample_no), "test": test,
                                    "set_type": set_type, "category": CATEGORY_FROM_FOLDER[folder_name],
                                    "role": role, "track": int(entry["ID"]), "segment": int(entry["seg"]),
                                    "filename": entry["filename"], "sr": int(entry["sr"]),
                                    "index_s": int(entry["index_s"]), "index_e": int(entry["index_e"]),
                                    "path": stim_path,
                                }
                                # X is shared by the xab and xyc sample sets, hence the (path, test) key.
                                previous = rows.get((stim_path, test))
                                if previous is not None and previous != row:
                                    raise PartsimError(f"{json_path}: stimulus {stim_path} disagrees with an "
                                                       f"earlier sample-config file")
                                rows[(stim_path, test)] = row
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as error:
            raise PartsimError(f"malformed sample config {json_path}: {error!r}") from None
    columns = ["evaluation_set", "sample_set", "test", "set_type", "category", "role", "track", "segment",
               "filename", "sr", "index_s", "index_e", "path"]
    table = pd.DataFrame(list(rows.values()), columns=columns)
    return table.sort_values(["evaluation_set", "sample_set", "set_type", "category", "role"],
                             ignore_index=True)


def load_abx(root: str | Path, split: str | None = None, drop_invalid: bool = False) -> ABXData:
    """Load an ABX dataset folder (the published one or a simulated one from :mod:`partsim_core.perceptual.simulate`).

    Args:
        root: folder holding ``csvs/`` (and ``sample_configs/``).
        split: ``None`` reads the combined CSV; ``"xab"``/``"xyc"`` reads that split file instead.
        drop_invalid: drop rows that break the published format instead of refusing the file (see
            :func:`read_answers_table`); ``ABXData.dropped`` lists them.

    Raises:
        PartsimError: a missing folder or file, or a malformed CSV/JSON (see :func:`read_answers_table`).
    """
    root = Path(root)
    if not root.is_dir():
        raise PartsimError(f"ABX dataset folder not found: {root}")
    if split is None:
        csv_name = COMBINED_CSV
    elif split in SPLIT_CSVS:
        csv_name = SPLIT_CSVS[split]
    else:
        raise PartsimError(f"unknown ABX split {split!r}; choose xab or xyc (or none for the combined file)")
    responses, catch, dropped = read_answers_table(root / "csvs" / csv_name, drop_invalid=drop_invalid)
    config_folder = root / "sample_configs"
    configs = read_sample_configs(config_folder)  # an absent folder gives an empty table
    read_files = [f"csvs/{csv_name}"] + sorted(f"sample_configs/{path.name}" for path in config_folder.glob("*.json"))
    published = len(dropped) == 0 and matches_published(root, read_files) and len(read_files) == 3
    return ABXData(root=root, responses=responses, catch_trials=catch, configs=configs, dropped=dropped,
                   published=published)


def default_abx_dir() -> Path | None:
    """``../shared/abx`` beside the source checkout when it holds the answers CSV, else ``None``."""

    repo = repository_root()
    if repo is None:
        return None
    candidate = repo.parent / "shared" / "abx"
    return candidate if (candidate / "csvs" / COMBINED_CSV).is_file() else None


def is_published_dataset(data: ABXData) -> bool:
    """True when ``data`` was read from the published Inst-Sim ABX files, unchanged (checked by SHA-256)."""
    return bool(data.published)


def check_published_counts(data: ABXData) -> None:
    """Assert the thesis's count of valid responses on the published dataset (no-op for other data).

    Raises:
        PartsimError: the published file does not leave 26,898 valid responses after catch-trial exclusion.
    """
    if (is_published_dataset(data) and len(data.responses) + len(data.catch_trials) == PUBLISHED_ROWS
            and len(data.responses) != PUBLISHED_VALID_RESPONSES):
        raise PartsimError(f"{data.root}: expected {PUBLISHED_VALID_RESPONSES} valid responses after excluding catch "
                           f"trials, found {len(data.responses)}")


def participant_summary(responses: pd.DataFrame, catch_trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Participant and response counts of thesis 5.2.4, as a two-column table (quantity, ours).

    A "participant" is one subject answering one evaluation set (a session); "unique" counts subjects, including
    subjects seen only in catch trials when ``catch_trials`` is given (the published file has one such subject:
    the thesis's 281 unique participants count it).
    """
    complete = responses[responses["complete"]]
    per_set = responses.groupby("evaluation_set")["subject_id"].nunique()
    subjects = set(responses["subject_id"])
    if catch_trials is not None:
        subjects |= set(catch_trials["subject_id"])
    rows = [
        ("valid responses", len(responses)),
        ("participants (subject x evaluation set)", responses["session"].nunique()),
        ("unique participants", len(subjects)),
        ("valid responses, complete evaluation sets", len(complete)),
        ("participants, complete evaluation sets", complete["session"].nunique()),
        ("unique participants, complete evaluation sets", complete["subject_id"].nunique()),
        ("evaluation sets", responses["evaluation_set"].nunique()),
        ("fewest unique participants in one evaluation set", int(per_set.min()) if len(per_set) else 0),
    ]
    return pd.DataFrame(rows, columns=["quantity", "ours"])


def all_subjects(data: ABXData) -> list[str]:
    """Every subject in the answers file, catch-trial-only subjects included (sorted)."""
    return sorted(set(data.responses["subject_id"]) | set(data.catch_trials["subject_id"]))
