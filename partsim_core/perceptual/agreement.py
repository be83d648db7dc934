"""Model-vs-listener agreement (thesis 4.4.2 / Table 4.6 and 5.3.4 / Fig. 5.12) and ABX stimulus extraction.

The stimuli of the listening test are 5-s excerpts of Slakh2100 test tracks; ``sample_configs/*.json`` names each
one's track, category and sample range. :func:`extract_stimuli` cuts ``[index_s:index_e]`` (rescaled when the
requested sample rate differs from the JSON's ``sr``) from the track's category signal (the sum of that part's
stems, or the mix) read through :class:`partsim_core.data.cache.StemCache`; ``source="mix"`` cuts the same range
from the whole track instead, which is what a mix-input model such as the chapter-4 CSN needs (it embeds the mix
and keeps the category's subspace).

:func:`model_listener_agreement` then asks, for each sample set kept by the 80 % filter, which of A/B an embedding
puts nearer to X and counts how many of the kept listener evaluations chose that file, with Clopper-Pearson 95 %
intervals. On the published data this needs a local Slakh2100 copy; on the embedded mini-Slakh the simulated
listening test (:mod:`partsim_core.perceptual.simulate`) writes the same JSON format, so the same code runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
from tqdm.auto import tqdm

from partsim_core.data.cache import StemCache
from partsim_core.data.outputs import output_directory
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError
from partsim_core.frontend import log_mel
from partsim_core.perceptual.abx import (
    FOLDER_FROM_CATEGORY,
    PART_CATEGORIES,
    PERSPECTIVES,
    SET_TYPES,
)
from partsim_core.perceptual.analysis import (
    AGREEMENT_THRESHOLD,
    TABLE_5_3_AGREEMENT,
    agreement_filter,
    clopper_pearson,
    kept_evaluations,
)
from partsim_core.presets import FrontendConfig

#: ``embed(audio, category) -> vector``: any embedding of one stimulus (the category lets a CSN pick its subspace).
EmbedFunction = Callable[[np.ndarray, str], np.ndarray]
#: ``signal_for(track_number, category) -> full-length signal`` at the extraction sample rate.
SignalSource = Callable[[int, str], np.ndarray]

#: Source choices of :func:`extract_stimuli`.
SOURCES: tuple[str, ...] = ("category", "mix")


def slakh_signal_source(dataset, sample_rate: int, source: str = "category", cache=None) -> SignalSource:
    """A :data:`SignalSource` over a Slakh-format dataset through the stem cache.

    Args:
        dataset: a :class:`partsim_core.data.slakh.SlakhDataset` (real Slakh2100 or the embedded mini-Slakh).
        sample_rate: rate of the returned signals.
        source: ``"category"`` (the part's summed stems; ``mix`` gives the mix) or ``"mix"`` (always the mix).
        cache: an existing :class:`~partsim_core.data.cache.StemCache` at ``sample_rate`` (default: a new one).
    """

    if source not in SOURCES:
        raise PartsimError(f"unknown stimulus source {source!r}; choose one of {', '.join(SOURCES)}")
    stem_cache = cache if cache is not None else StemCache(dataset, int(sample_rate))
    if int(stem_cache.sample_rate) != int(sample_rate):
        raise PartsimError(f"stem cache runs at {stem_cache.sample_rate} Hz, not the requested {sample_rate} Hz")

    def signal_for(track_number: int, category: str) -> np.ndarray:
        track = dataset.track(f"Track{int(track_number):05d}")
        part = "mix" if source == "mix" or category == "mix" else category
        return stem_cache.get(track, part)

    return signal_for


def extract_stimuli(configs: pd.DataFrame, signal_for: SignalSource, sample_rate: int,
                    paths: Sequence[str] | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Cut every stimulus of ``configs`` (:func:`~partsim_core.perceptual.abx.read_sample_configs`) from its track.

    Args:
        configs: stimulus table (one row per stimulus; X rows repeated for both types are cut once).
        signal_for: where full signals come from (:func:`slakh_signal_source`, or any callable in tests).
        sample_rate: rate of ``signal_for``'s signals; indices are rescaled from each row's ``sr``.
        paths: only these stimulus paths (default: all).
        progress: show a tqdm bar.

    Returns:
        ``{csv path: float32 excerpt}``; an excerpt running past the end of a shorter signal is zero-padded.

    Raises:
        PartsimError: a requested path is not in ``configs`` or an excerpt starts beyond its track's end.
    """
    table = configs.drop_duplicates("path").set_index("path")
    wanted = list(table.index) if paths is None else list(dict.fromkeys(paths))
    missing = [path for path in wanted if path not in table.index]
    if missing:
        raise PartsimError(f"stimulus {missing[0]} is not described by the sample configs "
                           f"({len(missing)} missing in all)")
    stimuli: dict[str, np.ndarray] = {}
    signals: dict[tuple[int, str], np.ndarray] = {}
    # Several paths may name the same excerpt (X is shared by both types; small datasets repeat segments):
    # such paths share one read-only array.
    excerpts: dict[tuple[int, str, int, int], np.ndarray] = {}
    # Sorted by track so each track's signal is fetched once and can be dropped afterwards.
    order = sorted(wanted, key=lambda path: (int(table.at[path, "track"]), str(table.at[path, "category"]), path))
    for path in tqdm(order, desc="extracting ABX stimuli", disable=not progress, leave=False):
        row = table.loc[path]
        key = (int(row["track"]), str(row["category"]))
        if key not in signals:
            signals.clear()
            signals[key] = np.asarray(signal_for(*key), dtype=np.float32)
        signal = signals[key]
        scale = sample_rate / float(row["sr"])
        start = int(round(int(row["index_s"]) * scale))
        length = int(round((int(row["index_e"]) - int(row["index_s"])) * scale))
        if start >= len(signal):
            raise PartsimError(f"stimulus {path}: starts at sample {start} but Track{key[0]:05d} ({key[1]}) has "
                               f"{len(signal)} samples at {sample_rate} Hz")
        excerpt_key = (*key, start, length)
        if excerpt_key not in excerpts:
            excerpt = np.zeros(length, dtype=np.float32)
            piece = signal[start:start + length]
            excerpt[:len(piece)] = piece
            excerpt.flags.writeable = False
            excerpts[excerpt_key] = excerpt
        stimuli[path] = excerpts[excerpt_key]
    return stimuli


def extract_from_slakh(configs: pd.DataFrame, slakh_root: str | Path, sample_rate: int | None = None,
                       source: str = "category", redux_json: str | Path | None = None,
                       paths: Sequence[str] | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Extract stimuli from a Slakh-format root (real Slakh2100 or the embedded mini-Slakh).

    ``sample_rate`` defaults to the configs' ``sr`` (44.1 kHz for the published test). See :func:`extract_stimuli`.
    """

    if sample_rate is None:
        rates = sorted(set(configs["sr"]))
        if len(rates) != 1:
            raise PartsimError(f"sample configs mix sample rates {rates}; pass sample_rate explicitly")
        sample_rate = int(rates[0])
    dataset = open_slakh(slakh_root, redux_json=redux_json)
    source_fn = slakh_signal_source(dataset, int(sample_rate), source=source)
    return extract_stimuli(configs, source_fn, int(sample_rate), paths=paths, progress=progress)


def write_stimuli(stimuli: Mapping[str, np.ndarray], out: str | Path, sample_rate: int, fresh: bool = False) -> Path:
    """Write extracted stimuli as ``out/<csv path>`` wav files (the dataset's own layout), atomically as a folder,
    under the output rule (an existing folder partsim did not write is never replaced)."""


    out = Path(out)
    with output_directory(out, fresh=fresh) as tmp:
        for path, audio in stimuli.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(target), np.asarray(audio, dtype=np.float32), int(sample_rate), subtype="PCM_16")
    return out


def model_choices(sample_sets: pd.DataFrame, stimuli: Mapping[str, np.ndarray], embed: EmbedFunction,
                  progress: bool = True) -> pd.DataFrame:
    """Which file of each sample set an embedding puts nearer (Euclidean) to X.

    Args:
        sample_sets: rows with ``set_key, category, reference, sample_a, sample_b`` (one per unique set is enough).
        stimuli: audio per stimulus path.
        embed: embedding function; each stimulus is embedded once.

    Returns:
        One row per ``set_key``: ``set_key, category, distance_a, distance_b, model_choice`` (the nearer file;
        an exact tie goes to ``sample_a``).
    """
    unique = sample_sets.drop_duplicates("set_key")
    needed = sorted(set(unique["reference"]) | set(unique["sample_a"]) | set(unique["sample_b"]))
    missing = [path for path in needed if path not in stimuli]
    if missing:
        raise PartsimError(f"no audio for stimulus {missing[0]} ({len(missing)} missing in all)")
    categories = {}
    for row in unique.itertuples(index=False):
        for path in (row.reference, row.sample_a, row.sample_b):
            categories[path] = row.category
    embeddings: dict[str, np.ndarray] = {}
    # Paths sharing one audio array (see extract_stimuli) and category are embedded once.
    by_object: dict[tuple[int, str], np.ndarray] = {}
    for path in tqdm(needed, desc="embedding ABX stimuli", disable=not progress, leave=False):
        object_key = (id(stimuli[path]), categories[path])
        if object_key not in by_object:
            audio = np.asarray(stimuli[path], dtype=np.float32)
            vector = np.asarray(embed(audio, categories[path]), dtype=np.float64).ravel()
            if not np.all(np.isfinite(vector)):
                raise PartsimError(f"embedding of stimulus {path} contains NaN or infinite values")
            by_object[object_key] = vector
        embeddings[path] = by_object[object_key]
    rows = []
    for row in unique.itertuples(index=False):
        x = embeddings[row.reference]
        distance_a = float(np.linalg.norm(embeddings[row.sample_a] - x))
        distance_b = float(np.linalg.norm(embeddings[row.sample_b] - x))
        choice = row.sample_a if distance_a <= distance_b else row.sample_b
        rows.append((row.set_key, row.category, distance_a, distance_b, choice))
    return pd.DataFrame(rows, columns=["set_key", "category", "distance_a", "distance_b", "model_choice"])


def model_listener_agreement(responses: pd.DataFrame, stimuli: Mapping[str, np.ndarray], embed: EmbedFunction,
                             perspectives: Sequence[str] = PERSPECTIVES,
                             categories: Sequence[str] = PART_CATEGORIES,
                             threshold: float = AGREEMENT_THRESHOLD, progress: bool = True,
                             agreement: str | Mapping[str, str] = TABLE_5_3_AGREEMENT,
                             sample_set: str = "files") -> pd.DataFrame:
    """Matching rate between an embedding's A/B choices and the filtered listener choices (Fig. 5.12, Table 4.6).

    For every perspective the sample sets kept by the 80 % filter (:func:`~partsim_core.perceptual.analysis.
    agreement_filter`) contribute all their A/B responses; a response matches when it chose the file the model
    puts nearer to X. ``agreement`` and ``sample_set`` choose the filter's reading (see
    :func:`~partsim_core.perceptual.analysis.agreement_filter`).

    Returns:
        Columns ``set_type, perspective, category, sets, evaluations, matches, percent, ci_low, ci_high``
        (percent, Clopper-Pearson 95 %).
    """
    subset = responses[responses["category"].isin(list(categories))]
    filtered = agreement_filter(subset, threshold=threshold, perspectives=perspectives, agreement=agreement,
                                sample_set=sample_set)
    kept = {perspective: kept_evaluations(subset, filtered, perspective) for perspective in perspectives}
    kept_sets = pd.concat([frame for frame in kept.values()], ignore_index=True)
    if len(kept_sets):
        choices = model_choices(kept_sets, stimuli, embed, progress=progress).set_index("set_key")["model_choice"]
    else:
        choices = pd.Series(dtype=object)
    rows = []
    for perspective in perspectives:
        evaluations = kept[perspective]
        evaluations["match"] = evaluations["chosen"].to_numpy() == evaluations["set_key"].map(choices).to_numpy()
        for set_type in SET_TYPES:
            for category in categories:
                part = evaluations[(evaluations["set_type"] == set_type) & (evaluations["category"] == category)]
                rows.append((set_type, perspective, category, part["set_key"].nunique(), len(part),
                             int(part["match"].sum())))
    table = pd.DataFrame(rows, columns=["set_type", "perspective", "category", "sets", "evaluations", "matches"])
    low, high = clopper_pearson(table["matches"].to_numpy(), table["evaluations"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        table["percent"] = 100.0 * table["matches"] / table["evaluations"].replace(0, np.nan)
    table["ci_low"] = 100.0 * low
    table["ci_high"] = 100.0 * high
    return table


def kept_stimulus_paths(responses: pd.DataFrame, categories: Sequence[str] = PART_CATEGORIES,
                        perspectives: Sequence[str] = PERSPECTIVES, threshold: float = AGREEMENT_THRESHOLD,
                        agreement: str | Mapping[str, str] = TABLE_5_3_AGREEMENT,
                        sample_set: str = "files") -> list[str]:
    """Every stimulus (X, A, B) of the sample sets the 80 % filter keeps for any of ``perspectives`` (sorted): the
    audio :func:`model_listener_agreement` needs, so that only these are extracted from Slakh."""
    subset = responses[responses["category"].isin(list(categories))]
    filtered = agreement_filter(subset, threshold=threshold, perspectives=perspectives, agreement=agreement,
                                sample_set=sample_set)
    paths: set[str] = set()
    for perspective in perspectives:
        kept = kept_evaluations(subset, filtered, perspective)
        paths |= set(kept["reference"]) | set(kept["sample_a"]) | set(kept["sample_b"])
    return sorted(paths)


def mean_log_mel_embedding(frontend: FrontendConfig) -> EmbedFunction:
    """A transparent baseline :data:`EmbedFunction`: the time-averaged log-mel spectrum of a stimulus.

    Temporal average pooling is the property the thesis blames for the models' weak rhythm scores, so this baseline
    shows what pooling alone keeps. ``frontend`` is a preset's front end (``get_preset(name).frontend``); the
    category is ignored.
    """

    def embed(audio: np.ndarray, category: str) -> np.ndarray:
        return log_mel(np.asarray(audio, dtype=np.float32)[None, :], frontend)[0].mean(dim=-1).numpy()

    return embed


def stimulus_folder_name(category: str) -> str:
    """Dataset folder name of a thesis category (``others`` -> ``residuals``)."""
    try:
        return FOLDER_FROM_CATEGORY[category]
    except KeyError:
        raise PartsimError(f"unknown category {category!r}") from None
