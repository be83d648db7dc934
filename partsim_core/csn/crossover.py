"""The thesis's central argument on chapter 4's part-level measure: baseline accuracy against separator quality.

The thesis prefers the CSN because separation errors hurt chapter 3's separate-then-embed baseline (3.3.3, 3.4,
4.4.3). Our chapter-3 separator is trained on renderings like the ones it is tested on, which flatters the
baseline. This module measures the baseline row of Table 4.2 - part-label accuracy on the **test pseudo pieces**
(:mod:`partsim_core.csn.test_set`) - for a sweep of separators of different quality, each point being

* the separator's mean test SDR for the part (:func:`partsim_core.baseline.bss.separation_quality` on the test
  tracks of the dataset handle, the artefact chapter 3 computes too), and
* the baseline's Table 4.2 accuracy with its 95 % interval when the pieces are separated by that separator,

next to the CSN's (condition (i)) Table 4.2 accuracy as a horizontal reference. Track-ID (Table 3.2, chapter 3's
separator-quality curve) is the wrong measure for this comparison: a separated stem still carries traces of the
track's other parts, and they identify the track (chapter 3's leakage track-ID); on test pseudo pieces the other
parts come from *other* tracks, so leakage only hurts.

The sweep (:data:`SWEEP_ENTRIES`, per preset :data:`DEFAULT_SWEEPS`):

* ``mixture`` - no separation: every part estimate is the piece's mix (the floor);
* ``earlier`` - U-Nets trained for fewer epochs (:func:`~partsim_core.baseline.separator_quality.default_curve_epochs`;
  none when the preset trains one epoch, as ``smoke`` does);
* ``chapter`` - chapter 3's separator, the baseline row (a) of Table 4.2 itself (reused, not recomputed);
* ``style-mix`` - a U-Net trained on the preset's dataset rendered with another style mix
  (:func:`~partsim_core.baseline.separated_stems.style_mix_source`): a separator tested on renderings it was not
  trained on. A different SoundFont (``$PARTSIM_SOUNDFONT``) would be the stronger shift; only one ships here.

Documented choice (as in :mod:`partsim_core.baseline.separator_quality`): the part networks are **not** retrained
per separator; the deployed networks (trained on the chapter separator's stems) are fed each separator's stems, so
the curve shows how the baseline degrades with the separator it is given, at the price of a train/test mismatch
for the other points. Every test piece is separated once per separator through the one path that separates them
for row (a) (:func:`baseline_piece_embeddings`, cached as ``csn-separated-pieces`` artefacts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.baseline.bss import separation_quality
from partsim_core.baseline.separated_stems import (
    SeparatedSource,
    separated_source,
    style_mix_source,
)
from partsim_core.baseline.separator_quality import (
    MixtureSeparator,
    default_curve_epochs,
)
from partsim_core.baseline.separators import OracleSeparator
from partsim_core.baseline.tables import mean_cell
from partsim_core.csn.findings import _accuracy_difference
from partsim_core.csn.metrics import ItemScores, missing_cell, table_4_2
from partsim_core.csn.test_set import (
    PartOfPieces,
    PseudoPieceSet,
    SeparatedPieces,
    embed_index,
)
from partsim_core.data.dataset import DatasetHandle
from partsim_core.errors import PartsimError
from partsim_core.presets import FrontendConfig
from partsim_core.stats import finding, verdict

#: The separators a sweep may hold (see the module docstring).
SWEEP_ENTRIES: tuple[str, ...] = ("mixture", "earlier", "chapter", "style-mix")

#: The sweep of each preset: ``smoke`` keeps two separators besides the mixture floor (its separator trains one
#: epoch, so it has no earlier checkpoint); the others add the earlier U-Net. ``style-mix`` renders the preset's
#: train and validation sizes once (``default``: 170 tracks of 30-40 s, minutes; ``paper``: 1,559 tracks of 2-4
#: min, hours) and trains one more separator; ``partsim csn run --crossover`` picks another list.
DEFAULT_SWEEPS: dict[str, tuple[str, ...]] = {
    "smoke": ("mixture", "chapter", "style-mix"),
    "default": ("mixture", "earlier", "chapter", "style-mix"),
    "paper": ("mixture", "earlier", "chapter", "style-mix"),
}

#: The style mix of the ``style-mix`` separator's training rendering.
CROSSOVER_STYLE_MIX = "shifted"

#: The CSN condition drawn as the reference line (the proposed model).
REFERENCE_CONDITION = "(i)"

#: Claim of the per-separator finding.
CLAIM = ("Table 4.2 crossover, {separator}: the baseline beats the CSN (i) on part-level label accuracy (baseline "
         "minus (i), points, pooled over parts)")


def sweep_for(preset: str, sweep: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The sweep to run: ``sweep`` (names of :data:`SWEEP_ENTRIES`, or a comma-separated string; ``"none"`` or
    empty = no crossover) or, for ``None``, the preset's :data:`DEFAULT_SWEEPS` (``default``'s for another name).

    Raises:
        PartsimError: an unknown entry.
    """
    if sweep is None:
        return DEFAULT_SWEEPS.get(preset, DEFAULT_SWEEPS["default"])
    if isinstance(sweep, str):
        sweep = [] if sweep.strip().lower() == "none" else [name.strip() for name in sweep.split(",") if name.strip()]
    unknown = [name for name in sweep if name not in SWEEP_ENTRIES]
    if unknown:
        raise PartsimError(f"unknown crossover separator(s) {', '.join(map(repr, unknown))}; choose from: "
                           f"{', '.join(SWEEP_ENTRIES)}")
    return tuple(dict.fromkeys(sweep))


# --------------------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------------------


def part_sdr_cells(quality: pd.DataFrame, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per part, the mean test SDR (dB) over test tracks with its bootstrap interval (an empty cell for a part
    never measured) from :func:`~partsim_core.baseline.bss.separation_quality`'s table (``split == "test"``)."""
    test = quality[quality["split"] == "test"] if len(quality) else quality
    out = {}
    for part in INSTRUMENTS:
        values = test[test["part"] == part]["sdr"].to_numpy(dtype=float) if len(test) else np.zeros(0)
        out[part] = mean_cell(values, seed=seed) if np.isfinite(values).any() else missing_cell()
    return out


def crossing_sdr(sdr: Sequence[float], accuracy: Sequence[float], reference: float) -> dict[str, Any]:
    """Where the baseline's accuracy-vs-SDR curve meets a reference accuracy (the CSN's), by linear interpolation.

    Points with NaN are dropped; the rest are sorted by SDR. The crossing is the first sign change of
    ``accuracy - reference`` between consecutive points.

    Returns:
        ``{"status", "sdr"}``: ``"crosses"`` with the interpolated SDR (dB) - at points' SDR ``x0 < x1`` with
        accuracies ``y0, y1``, ``x0 + (reference - y0) (x1 - x0) / (y1 - y0)``; ``"baseline above"`` /
        ``"baseline below"`` when every point lies above / at or below the reference (``sdr`` None); ``"not
        computable"`` with no finite point or reference.
    """
    points = sorted((float(x), float(y)) for x, y in zip(sdr, accuracy) if math.isfinite(x) and math.isfinite(y))
    if not points or not math.isfinite(reference):
        return {"status": "not computable", "sdr": None}
    above = [y > reference for _x, y in points]
    if all(above):
        return {"status": "baseline above", "sdr": None}
    if not any(above):
        return {"status": "baseline below", "sdr": None}
    for (x0, y0), (x1, y1), before, after in zip(points, points[1:], above, above[1:]):
        if before != after:
            return {"status": "crosses", "sdr": x0 + (reference - y0) * (x1 - x0) / (y1 - y0)}
    raise AssertionError("unreachable: a sign change exists")


def difference_cell(baseline: Mapping[str, ItemScores | None],
                    reference: Mapping[str, ItemScores | None]) -> dict[str, float] | None:
    """Paired difference (points) of the pooled Table 4.2 accuracies, baseline minus reference, over the parts both
    have (items = (part, label track), resampled together; :mod:`partsim_core.csn.findings`' rule); None when no
    part has both."""
    parts = [part for part in INSTRUMENTS if baseline.get(part) is not None and reference.get(part) is not None]
    if not parts:
        return None
    return _accuracy_difference([{part: baseline[part] for part in parts}],
                                [{part: reference[part] for part in parts}], prefix=True)


# --------------------------------------------------------------------------------------------------------------
# The shared path: test pseudo pieces separated by one separator, embedded by the baseline's networks
# --------------------------------------------------------------------------------------------------------------


def baseline_piece_embeddings(pseudo: PseudoPieceSet, separated: Any,
                              networks: Sequence[Mapping[str, torch.nn.Module]], frontend: FrontendConfig,
                              fingerprint: str, device: str = "cpu", fresh: bool = False,
                              ) -> dict[str, np.ndarray | None]:
    """Row (a) of Table 4.2 for one separator: each piece's whole mix separated (once, cached), and each part's
    network (every seed) embedding the separated part at the pieces' segments.

    Args:
        pseudo: the test pseudo pieces.
        separated: a separated source (its ``separator`` separates the pieces; the oracle reads the clean parts).
        networks: per seed, ``{part: network}``.
        frontend: the preset's front end.
        fingerprint: identity of the test tracks' audio (part of the separated pieces' artefact key).
        device: torch device.
        fresh: separate the pieces again.

    Returns:
        ``{part: (seeds, m_part, D)}`` (None for a part without pieces).
    """
    if not pseudo.indices:
        return {}
    oracle = isinstance(getattr(separated, "separator", None), OracleSeparator)
    pieces = None if oracle else SeparatedPieces(pseudo, separated, fingerprint, fresh=fresh)
    out: dict[str, np.ndarray | None] = {}
    for part in INSTRUMENTS:
        source = PartOfPieces(pseudo.source, part) if oracle else pieces
        vectors = [embed_index(nets[part], source, pseudo.pieces, pseudo.indices.get(part), frontend, device=device)
                   for nets in networks]
        out[part] = None if any(v is None for v in vectors) else np.stack(vectors)
    return out


# --------------------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CrossoverResult:
    """The separator sweep on Table 4.2's measure.

    Attributes:
        separators: per separator (worst to best by design: mixture, earlier, chapter, style mix), its label and
            per part ``{"sdr": cell, "accuracy": cell}``.
        scores: separator -> part -> the baseline's :class:`ItemScores` (for paired findings).
        reference: part -> the CSN's (condition (i)) scores, or None when (i) was not run.
        findings: one finding per separator (baseline minus (i), pooled over parts).
    """

    separators: dict[str, dict[str, Any]]
    scores: dict[str, dict[str, ItemScores | None]] = field(repr=False)
    reference: dict[str, ItemScores | None] | None = field(repr=False)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def reference_cells(self) -> dict[str, dict[str, float]]:
        """The CSN's Table 4.2 cells (empty cells without (i))."""
        return {part: missing_cell() if self.reference is None or self.reference.get(part) is None
                else self.reference[part].cell() for part in INSTRUMENTS}

    def crossings(self) -> dict[str, dict[str, Any]]:
        """Per part, where the baseline's curve meets the CSN's accuracy (:func:`crossing_sdr`)."""
        reference = self.reference_cells()
        out = {}
        for part in INSTRUMENTS:
            points = [entry["parts"][part] for entry in self.separators.values()]
            out[part] = crossing_sdr([p["sdr"]["value"] for p in points], [p["accuracy"]["value"] for p in points],
                                     reference[part]["value"])
        return out

    def frame(self) -> pd.DataFrame:
        """One row per separator and part: ``separator, part, sdr, sdr_low, sdr_high, accuracy, low, high``."""
        rows = []
        for name, entry in self.separators.items():
            for part, point in entry["parts"].items():
                rows.append({"separator": entry["label"], "key": name, "part": part, "sdr": point["sdr"]["value"],
                             "sdr_low": point["sdr"]["low"], "sdr_high": point["sdr"]["high"],
                             "accuracy": point["accuracy"]["value"], "low": point["accuracy"]["low"],
                             "high": point["accuracy"]["high"]})
        return pd.DataFrame(rows, columns=["separator", "key", "part", "sdr", "sdr_low", "sdr_high", "accuracy",
                                           "low", "high"])

    def to_json(self) -> dict[str, Any]:
        """``{"separators": {name: {"label", "parts": {part: {"sdr", "accuracy", "difference"}}}}, "reference":
        {"condition", "accuracy": {part: cell}}, "crossing": {part: {"status", "sdr"}}, "note"}``; each
        part's ``difference`` (baseline minus (i), points) comes with its ``verdict`` ("difference > 0")."""
        separators = {}
        for name, entry in self.separators.items():
            parts = {}
            for part, point in entry["parts"].items():
                difference = None
                if self.reference is not None:
                    difference = difference_cell({part: self.scores[name].get(part)},
                                                 {part: self.reference.get(part)})
                difference = difference or missing_cell()
                parts[part] = {**point, "difference": difference, "verdict": verdict(difference)}
            separators[name] = {"label": entry["label"], "parts": parts}
        return {"separators": separators,
                "reference": {"condition": REFERENCE_CONDITION, "accuracy": self.reference_cells()},
                "crossing": self.crossings(),
                "note": ("baseline = chapter 3's networks (trained on the chapter separator's stems, not retrained) "
                         "fed each separator's estimate of the test pseudo pieces; sdr = mean test SDR (dB) of the "
                         "separator over the test tracks; difference = baseline minus (i), paired over label "
                         "tracks, points")}


def _sources(data: DatasetHandle, chapter: SeparatedSource, sweep: Sequence[str], device: str, seed: int,
             progress: bool) -> list[tuple[str, str, SeparatedSource]]:
    """``(name, label, source)`` of every separator of the sweep, in sweep order."""
    out: list[tuple[str, str, SeparatedSource]] = []
    is_unet = getattr(chapter.separator, "name", "") == "unet"
    for entry in sweep:
        if entry == "mixture":
            out.append(("mixture", "mixture (no separation)", SeparatedSource(MixtureSeparator(), data.cache)))
        elif entry == "earlier" and is_unet:
            for epochs in default_curve_epochs(data.preset.separator.epochs):
                out.append((f"unet-{epochs}-epochs", f"U-Net, {epochs} epoch(s)",
                            separated_source(data, "unet", device=device, epochs=epochs, seed=seed,
                                             progress=progress)))
        elif entry == "chapter":
            out.append(("chapter", f"chapter 3's separator ({chapter.separator.name})", chapter))
        elif entry == "style-mix":
            out.append(("style-mix", f"U-Net trained on the '{CROSSOVER_STYLE_MIX}' style mix",
                        style_mix_source(data, CROSSOVER_STYLE_MIX, device=device, seed=seed, progress=progress)))
    return out


def separator_crossover(data: DatasetHandle, pseudo: PseudoPieceSet, chapter_source: SeparatedSource,
                        networks: Sequence[Mapping[str, torch.nn.Module]],
                        table: Mapping[str, Mapping[str, ItemScores | None]], fingerprint: str,
                        sweep: Sequence[str] = DEFAULT_SWEEPS["default"], device: str = "cpu", seed: int = 0,
                        fresh: bool = False, progress: bool = False,
                        log: Callable[[str], None] | None = None) -> CrossoverResult:
    """Measure the baseline's Table 4.2 accuracy for every separator of ``sweep`` next to the CSN's.

    Args:
        data: the chapter's dataset.
        pseudo: the test pseudo pieces of Table 4.2.
        chapter_source: chapter 3's separated source (row (a)).
        networks: per seed, the baseline's ``{part: network}`` (trained on ``chapter_source``'s stems).
        table: Table 4.2's per-item scores (``{row: {part: scores}}``): row ``(a)`` is reused for the ``chapter``
            entry, row ``(i)`` is the reference.
        fingerprint: identity of the test tracks' audio (the separated pieces' artefact key).
        sweep: names of :data:`SWEEP_ENTRIES` (see :func:`sweep_for`).
        device: torch device.
        seed: seed of the separators' training and of the resampling.
        fresh: separate the pieces again.
        progress: progress bars.
        log: one-line progress messages.
    """
    say = log or (lambda message: None)
    frontend = data.preset.frontend
    reference = table.get(REFERENCE_CONDITION)
    if reference is not None and all(scores is None for scores in reference.values()):
        reference = None
    separators: dict[str, dict[str, Any]] = {}
    all_scores: dict[str, dict[str, ItemScores | None]] = {}
    findings = []
    for name, label, source in _sources(data, chapter_source, sweep, device, seed, progress):
        quality = separation_quality(data, source, train_tracks=0, progress=progress)
        sdr = part_sdr_cells(quality, seed=seed)
        if name == "chapter" and "(a)" in table:
            scores = dict(table["(a)"])
        else:
            embeddings = baseline_piece_embeddings(pseudo, source, networks, frontend, fingerprint, device=device,
                                                   fresh=fresh)
            scores = table_4_2({}, pseudo.segments, embeddings)["(a)"] if embeddings and len(pseudo.segments) \
                else {part: None for part in INSTRUMENTS}
        all_scores[name] = scores
        separators[name] = {"label": label, "parts": {
            part: {"sdr": sdr[part], "accuracy": missing_cell() if scores.get(part) is None else scores[part].cell()}
            for part in INSTRUMENTS}}
        if reference is not None:
            difference = difference_cell(scores, reference)
            mean_sdr = float(np.nanmean([cell["value"] for cell in sdr.values()])) \
                if any(math.isfinite(cell["value"]) for cell in sdr.values()) else math.nan
            claim = CLAIM.format(separator=label)
            findings.append(finding(claim, difference, mean_sdr=mean_sdr) if difference is not None else
                            finding(claim, missing_cell(), mean_sdr=mean_sdr,
                                    note="not computable with these conditions"))
        say(f"chapter 4: separator crossover: {label} measured")
    return CrossoverResult(separators=separators, scores=all_scores, reference=reference, findings=findings)
