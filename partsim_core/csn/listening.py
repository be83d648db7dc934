"""Table 4.6: agreement of the CSN and of the separation baseline with (simulated or published) listeners.

For each xab sample set kept by chapter 5's 80 % filter (:func:`partsim_core.perceptual.agreement_filter`,
:func:`~partsim_core.perceptual.kept_evaluations`), the model says which of A/B is nearer to X
(:func:`partsim_core.perceptual.model_choices`): the CSN in the category's subspace of the mix excerpt, the
baseline with its per-part network on the excerpt separated by chapter 3's separator (from the whole track, as the
thesis's Spleeter baseline did). A listener response *matches* when it chose the same file; the matching rate (%)
of a cell is the share of matching responses. Unless real ABX audio is given, the listeners are simulated from the
generator's ground truth.

Intervals (every cell is ``{"value", "low", "high"}``, :mod:`partsim_core.stats`):

* **One seed:** the unit is one listener response, so the 95 % interval is the exact binomial (Clopper-Pearson)
  interval of ``matches / responses`` (:func:`partsim_core.stats.binomial_cell`).
* **Several seeds:** every seed's model answers the same responses, giving a ``(seeds, responses)`` array of
  matches; the value is its mean (the rate pooled over seeds) and the interval a percentile bootstrap that draws a
  seed and resamples responses in each replicate (:func:`partsim_core.stats.bootstrap_cell`), so it includes the
  seed-to-seed spread.
* **The finding** (thesis 4.4.3: "compared with the baseline, ... that for the piano is better") is the difference
  proposed minus baseline on the same responses and seeds, resampled paired
  (:func:`partsim_core.stats.paired_difference_cell`), with its verdict by :func:`partsim_core.stats.finding`.
  Responses to one sample set share the model's choice, so resampling responses (not sets) makes this interval
  somewhat narrower than a resampling of sets would.

The thesis's own cells stay as it prints them ("rate ± half-width", its interval unnamed), labelled ``paper``
beside ours (:func:`paper_beside_ours`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS, perceptual
from partsim_core.baseline.separated_stems import SeparatedSource
from partsim_core.csn.metrics import subspace
from partsim_core.data.cache import StemCache
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.slakh import open_slakh
from partsim_core.data.synth import GROUND_TRUTH_FILE
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.presets import FrontendConfig
from partsim_core.stats import (
    binomial_cell,
    bootstrap_cell,
    cell,
    finding,
    paired_difference_cell,
)

#: Table 4.6's blocks: responses on *overall* (4.6a) and on *timbre* (4.6b).
PERSPECTIVES: tuple[str, ...] = ("overall", "timbre")

#: The finding drawn from Table 4.6 (one per perspective).
CLAIM = ("Table 4.6 ({perspective}): the CSN's choices match the listeners' more often than the separation "
         "baseline's for the piano (proposed minus baseline, points)")

#: ``(seeds, responses)`` matches of one cell: 1.0 where the response chose the model's file.
Matches = np.ndarray


def ground_truth_styles(data: DatasetHandle) -> dict | None:
    """The embedded dataset generator's record of every track's part styles, or None for other data.

    Raises:
        PartsimError: the ground-truth file exists but cannot be read (names the file).
    """
    path = data.root / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["tracks"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PartsimError(f"unreadable ground truth {path}: {error!r}") from None


@torch.no_grad()
def embed_one(model: torch.nn.Module, audio: np.ndarray, frontend: FrontendConfig, device: str = "cpu") -> np.ndarray:
    """One stimulus: waveform -> log-mel -> ``model`` (eval mode) -> ``(dim,)``."""
    model.eval().to(device)
    mel = LogMel(frontend).to(device)(torch.from_numpy(np.array(audio, dtype=np.float32)[None]).to(device))
    return model(mel).float().cpu().numpy()[0]


def _separated_view(separated: Any, root: str, sample_rate: int) -> Any:
    """The same separator over another Slakh-format root (e.g. a local Slakh2100 for the published stimuli)."""
    return SeparatedSource(separated.separator, StemCache(open_slakh(root), sample_rate))



# --------------------------------------------------------------------------------------------------------------
# Cells, finding and display
# --------------------------------------------------------------------------------------------------------------


def _as_matrix(matches: Any) -> np.ndarray:
    matrix = np.asarray(matches, dtype=np.float64)
    return matrix[None, :] if matrix.ndim == 1 else matrix


def _percent(rate: Mapping[str, float]) -> dict[str, float]:
    return cell(100.0 * rate["value"], 100.0 * rate["low"], 100.0 * rate["high"])


def rate_cell(matches: Any) -> dict[str, float]:
    """A Table 4.6 cell (%): the matching rate of ``(seeds, responses)`` (or ``(responses,)``) 0/1 matches.

    One seed: Clopper-Pearson over responses; several seeds: the pooled rate with a bootstrap interval drawing a
    seed and resampling responses (see the module docstring). No responses: NaN.
    """
    matrix = _as_matrix(matches)
    if matrix.size == 0:
        return cell(math.nan, math.nan, math.nan)
    if matrix.shape[0] == 1:
        return _percent(binomial_cell(int(matrix.sum()), matrix.shape[1]))
    return _percent(bootstrap_cell(matrix))


@dataclass
class ListeningAgreement:
    """Table 4.6's matches per response and what they were measured on.

    Attributes:
        matches: ``{perspective: {row: {part: (seeds, responses) array}}}`` with rows ``baseline``/``proposed``.
        source: ``simulated``, ``published`` or ``skipped: <why>``.
    """

    matches: dict[str, dict[str, dict[str, Matches]]] = field(default_factory=dict)
    source: str = "skipped"

    def cells(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """``{perspective: {row: {part: {"value", "low", "high"}}}}`` (%), as chapter 4's JSON writes it."""
        return {perspective: {row: {part: rate_cell(matches) for part, matches in parts.items()}
                              for row, parts in rows.items()}
                for perspective, rows in self.matches.items()}

    def findings(self) -> list[dict[str, Any]]:
        """Per perspective: proposed minus baseline for the piano (points), paired over responses and seeds."""
        out = []
        for perspective in PERSPECTIVES:
            claim = CLAIM.format(perspective=perspective)
            rows = self.matches.get(perspective, {})
            proposed = rows.get("proposed", {}).get("piano")
            baseline = rows.get("baseline", {}).get("piano")
            if proposed is None or baseline is None or _as_matrix(proposed).size == 0:
                out.append(finding(claim, cell(math.nan, math.nan, math.nan), 0.0,
                                   note=f"not computable: {self.source}" if self.source.startswith("skipped")
                                   else "not computable: needs conditions (a) and (i) and kept piano sets"))
                continue
            difference = _percent(paired_difference_cell(_as_matrix(proposed), _as_matrix(baseline)))
            out.append(finding(claim, difference, 0.0, responses=int(_as_matrix(proposed).shape[1])))
        return out


def _format_cell(value: Any, digits: int) -> str:
    if not isinstance(value, Mapping) or value.get("value") is None or not math.isfinite(value["value"]):
        return "–"
    low, high = value.get("low"), value.get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value['value']:.{digits}f}"
    return f"{value['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def interval_table(cells: Mapping[str, Mapping[str, Any]], digits: int = 1) -> pd.DataFrame:
    """One Table 4.6 block (``row -> part -> cell``) as text ``value [low, high]``, rows x parts."""
    return pd.DataFrame({part: {row: _format_cell(parts.get(part), digits) for row, parts in cells.items()}
                         for part in INSTRUMENTS}, index=list(cells)).rename_axis("row")


def paper_beside_ours(published: pd.DataFrame, ours: Mapping[str, Mapping[str, Any]], label: str = "ours",
                      digits: int = 1, rows: Sequence[str] = ("baseline", "proposed")) -> pd.DataFrame:
    """The thesis's block of Table 4.6 as printed ("rate ± half-width", column ``paper``) beside ours
    (``value [low, high]``, column ``label``), per part; ``–`` where a side has no number.

    Args:
        published: the thesis's block (:func:`partsim_core.book.thesis_tables.load_thesis_table` ``("4.6a")``):
            columns ``<part>`` and ``<part>_pm``.
        ours: our block, ``row -> part -> cell`` (:meth:`ListeningAgreement.cells`).
        label: name of our column.
        digits: decimals of our numbers (the thesis's are printed with one).
        rows: row order (rows only one side has follow).

    Raises:
        PartsimError: ``label`` is ``paper``.
    """
    if label == "paper":
        raise PartsimError("label 'paper' is the thesis's column; name ours otherwise")
    order = list(dict.fromkeys([*rows, *published.index, *ours]))
    columns = pd.MultiIndex.from_product([list(INSTRUMENTS), ["paper", label]])
    table = pd.DataFrame("–", index=pd.Index(order, name="row"), columns=columns)
    for row in order:
        for part in INSTRUMENTS:
            if row in published.index and part in published.columns and pd.notna(published.at[row, part]):
                half = published.at[row, f"{part}_pm"] if f"{part}_pm" in published.columns else math.nan
                table.at[row, (part, "paper")] = (f"{published.at[row, part]:.1f}" if pd.isna(half) else
                                                  f"{published.at[row, part]:.1f} ± {half:.1f}")
            table.at[row, (part, label)] = _format_cell(ours.get(row, {}).get(part), digits)
    return table


# --------------------------------------------------------------------------------------------------------------
# Computing the matches
# --------------------------------------------------------------------------------------------------------------

#: An embedder of Table 4.6: one embedding function per seed, and where its stimuli come from (``"mix"`` or a
#: callable ``root -> signal_for``, see :func:`partsim_core.perceptual.extract_stimuli`).
Embedder = tuple[Sequence[Callable[[np.ndarray, str], np.ndarray]], Any]


def kept_xab_evaluations(responses: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per perspective, the A/B responses to the xab sets that chapter 5's 80 % filter keeps (Table 4.6's unit)."""
    parts = responses[responses["category"].isin(perceptual.PART_CATEGORIES)]
    filtered = perceptual.agreement_filter(parts, perspectives=PERSPECTIVES)
    out = {}
    for perspective in PERSPECTIVES:
        kept = perceptual.kept_evaluations(parts, filtered, perspective)
        out[perspective] = kept[kept["set_type"] == "xab"].reset_index(drop=True)
    return out


def response_matches(evaluations: Mapping[str, pd.DataFrame], choices: Sequence[pd.Series],
                     ) -> dict[str, dict[str, Matches]]:
    """``{perspective: {part: (seeds, responses)}}``: 1.0 where a response chose the file of seed ``s``'s model.

    Args:
        evaluations: :func:`kept_xab_evaluations`.
        choices: per seed, the model's file per ``set_key`` (:func:`partsim_core.perceptual.model_choices`'s
            ``model_choice`` indexed by ``set_key``).
    """
    out: dict[str, dict[str, Matches]] = {}
    for perspective, frame in evaluations.items():
        out[perspective] = {}
        for part in INSTRUMENTS:
            rows = frame[frame["category"] == part]
            chosen = rows["chosen"].to_numpy()
            out[perspective][part] = np.stack(
                [chosen == rows["set_key"].map(choice).to_numpy() for choice in choices]).astype(np.float64) \
                if choices else np.zeros((0, len(rows)))
    return out


def _agreement(data: DatasetHandle, embedders: Mapping[str, Embedder], abx_dir: str, slakh_root: str,
               seed: int) -> ListeningAgreement:
    """Table 4.6's matches for each embedder (``{"baseline": ([fn per seed], stimulus source), ...}``)."""
    if abx_dir:
        abx_root, published = abx_dir, True
        if not slakh_root:
            return ListeningAgreement(source="skipped: the published stimuli are Slakh2100 test excerpts; pass "
                                             "slakh_root (a local Slakh2100 copy) to compute Table 4.6 on the "
                                             "published test")
        source_root = slakh_root
    else:
        if ground_truth_styles(data) is None:
            return ListeningAgreement(source="skipped: this dataset has no generator ground truth to simulate a "
                                             "listening test from")
        abx_root, published, source_root = str(perceptual.ensure_simulated_test(data.root, seed=seed)), False, \
            str(data.root)
    abx = perceptual.load_abx(abx_root)
    evaluations = kept_xab_evaluations(abx.responses)
    sets = pd.concat(list(evaluations.values()), ignore_index=True).drop_duplicates("set_key")
    needed = sorted(set(sets["reference"]) | set(sets["sample_a"]) | set(sets["sample_b"]))
    rate = data.preset.frontend.sample_rate
    matches: dict[str, dict[str, dict[str, Matches]]] = {perspective: {} for perspective in PERSPECTIVES}
    for name, (embed_fns, source) in embedders.items():
        stimuli: dict[str, np.ndarray] = {}
        if needed and callable(source):
            stimuli = perceptual.extract_stimuli(abx.configs, source(source_root), rate, paths=needed,
                                                 progress=False)
        elif needed:
            stimuli = perceptual.extract_from_slakh(abx.configs, source_root, sample_rate=rate, paths=needed,
                                                    source=source, progress=False)
        choices = [perceptual.model_choices(sets, stimuli, embed_fn, progress=False)
                   .set_index("set_key")["model_choice"] for embed_fn in embed_fns]
        for perspective, parts in response_matches(evaluations, choices).items():
            matches[perspective][name] = parts
    return ListeningAgreement(matches=matches, source="published" if published else "simulated")


def table_4_6(data: DatasetHandle, proposed: Sequence[torch.nn.Module] | None,
              baseline: Sequence[Mapping[str, torch.nn.Module]] | None, separated: Any, device: str,
              abx_dir: str = "", slakh_root: str = "", seed: int = 0) -> ListeningAgreement:
    """Table 4.6's matches of the rows ``baseline`` and ``proposed``, every training seed answering.

    Args:
        data: the dataset handle.
        proposed: condition (i)'s CSN per seed (empty or None: no ``proposed`` row).
        baseline: condition (a)'s per-part networks per seed (empty or None: no ``baseline`` row).
        separated: chapter 3's separated source (the baseline's stimuli).
        device: where the models run.
        abx_dir: the published Inst-Sim ABX folder (needs ``slakh_root``); empty = a simulated test.
        slakh_root: a local Slakh2100 copy for the published stimuli.
        seed: seed of the simulated listening test.

    Returns:
        :class:`ListeningAgreement`: its :meth:`~ListeningAgreement.cells` are the table (%, 95 % intervals), its
        :meth:`~ListeningAgreement.findings` the finding, its ``source`` what it ran on (``simulated``,
        ``published`` or ``skipped: ...``).
    """
    frontend = data.preset.frontend
    embedders: dict[str, Embedder] = {}
    if baseline:
        def baseline_embedder(networks: Mapping[str, torch.nn.Module]) -> Callable[[np.ndarray, str], np.ndarray]:
            def baseline_embed(audio: np.ndarray, category: str) -> np.ndarray:
                return embed_one(networks[category], audio, frontend, device)
            return baseline_embed

        def separated_stimuli(root: str) -> Callable[[int, str], np.ndarray]:
            # On the book's dataset the separated stems are already cached.
            same = str(root) == str(data.root)
            source = separated if same else _separated_view(separated, root, data.cache.sample_rate)
            dataset = data.dataset if same else source.cache.dataset

            def signal_for(track_number: int, category: str) -> np.ndarray:
                return source.get(dataset.track(f"Track{int(track_number):05d}"), category)
            return signal_for
        embedders["baseline"] = ([baseline_embedder(networks) for networks in baseline], separated_stimuli)
    if proposed:
        def proposed_embedder(model: torch.nn.Module) -> Callable[[np.ndarray, str], np.ndarray]:
            def proposed_embed(audio: np.ndarray, category: str) -> np.ndarray:
                return subspace(embed_one(model, audio, frontend, device)[None], category)[0]
            return proposed_embed
        embedders["proposed"] = ([proposed_embedder(model) for model in proposed], "mix")
    if not embedders:
        return ListeningAgreement(source="skipped: needs condition (i) or (a)")
    return _agreement(data, embedders, abx_dir, slakh_root, seed)
