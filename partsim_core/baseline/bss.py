"""Separation quality (thesis Table 3.1): SDR, SIR and SAR with ``fast_bss_eval``, per track and part.

:func:`separation_metrics` scores one track's estimates against its ideal parts in 10-s chunks;
:func:`evaluate_separation` does it for a list of tracks; :func:`separation_quality` gives the per-track table of a
dataset's training and test tracks, cached as a verified artefact keyed by the separator and the tracks' audio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fast_bss_eval
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.data.artefacts import cached_artefact
from partsim_core.data.cache import StemCache, atomic_write_json
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.segments import SILENCE_THRESHOLD
from partsim_core.data.slakh import Track
from partsim_core.errors import PartsimError

#: |dB| at which SDR/SIR/SAR are clamped: a perfect estimate (+inf) or an all-zero one (-inf) stays averageable.
METRIC_CLAMP_DB = 100.0

#: Length of the chunks BSS Eval scores (seconds); a track's value is the mean over its chunks.
CHUNK_SECONDS = 10.0

#: Columns of :func:`separation_quality`'s table.
QUALITY_COLUMNS: tuple[str, ...] = ("split", "track", "part", "sdr", "sir", "sar")


def _bss_eval(references: np.ndarray, estimates: np.ndarray, filter_length: int) -> tuple[np.ndarray, ...]:
    """fast_bss_eval's SDR/SIR/SAR of ``(n_src, samples)`` arrays, through its torch back end.

    fast_bss_eval 0.1.4's numpy back end fails under numpy 2 (``np.linalg.solve`` broadcasting changed); its
    torch back end computes the same metrics. A (nearly) singular reference correlation matrix is retried with
    diagonal loading, as the package recommends.
    """
    ref = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float64))
    est = torch.from_numpy(np.ascontiguousarray(estimates, dtype=np.float64))
    try:
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(ref, est, filter_length=filter_length,
                                                       compute_permutation=False)
    except RuntimeError:  # torch.linalg.LinAlgError: singular system (e.g. a pure tone)
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(ref, est, filter_length=filter_length,
                                                       compute_permutation=False, load_diag=1e-6)
    return sdr.numpy(), sir.numpy(), sar.numpy()


def separation_metrics(estimates: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                       sample_rate: int | None = None, chunk_seconds: float = CHUNK_SECONDS,
                       silence_threshold: float = SILENCE_THRESHOLD, filter_length: int = 512) -> pd.DataFrame:
    """SDR, SIR and SAR (dB) of one track's estimated parts against its ideal parts (thesis Table 3.1).

    How it is computed: the signals are cut into non-overlapping chunks of ``chunk_seconds`` (the last partial one
    dropped; a signal shorter than one chunk, or ``sample_rate=None``, is one chunk). In each chunk the parts
    whose reference is non-silent (mean power >= ``silence_threshold``, the thesis's silence rule) are evaluated
    together with ``fast_bss_eval.bss_eval_sources`` (distortion filters of ``filter_length`` taps; the other
    non-silent references are the interference); silent or absent references are skipped. A part's value is the
    mean over the chunks where it was evaluated. Infinite values (a perfect or an all-zero estimate) are clamped
    to +-:data:`METRIC_CLAMP_DB`; SIR is undefined (NaN, left out of its mean) in a chunk where no other part
    plays and where the estimate is all zeros.

    Args:
        estimates: Part -> estimated signal (all :data:`~partsim_core.INSTRUMENTS` present in ``references``).
        references: Part -> ideal signal; parts may be missing (absent from the track).
        sample_rate: Rate of the signals (needed to cut chunks).
        chunk_seconds: Chunk length (museval uses 1 s windows; longer chunks give steadier filters).
        silence_threshold: Mean power below which a reference chunk is silent.
        filter_length: Taps of the allowed distortion filter (bss_eval's default 512).

    Returns:
        One row per part in :data:`~partsim_core.INSTRUMENTS` order (index ``part``) with columns ``sdr``,
        ``sir``, ``sar`` (NaN when never evaluated) and ``chunks`` (chunks evaluated).

    Raises:
        PartsimError: a reference without estimate, signals of different lengths, or non-finite samples.
    """
    parts = [part for part in INSTRUMENTS if part in references]
    unknown = sorted(set(references) - set(INSTRUMENTS))
    if unknown:
        raise PartsimError(f"unknown part(s) {', '.join(unknown)} in the references; expected {INSTRUMENTS}")
    missing = [part for part in parts if part not in estimates]
    if missing:
        raise PartsimError(f"no estimate for part(s) {', '.join(missing)}")
    reference = {part: np.asarray(references[part], dtype=np.float64) for part in parts}
    estimate = {part: np.asarray(estimates[part], dtype=np.float64) for part in parts}
    lengths = {len(signal) for signal in (*reference.values(), *estimate.values())}
    if len(lengths) > 1 or any(signal.ndim != 1 for signal in (*reference.values(), *estimate.values())):
        raise PartsimError(f"estimates and references must be mono signals of one length, got lengths "
                           f"{sorted(lengths)}")
    for name, signals in (("estimate", estimate), ("reference", reference)):
        for part, signal in signals.items():
            if not np.all(np.isfinite(signal)):
                raise PartsimError(f"the {part} {name} contains NaN or infinite samples")
    length = lengths.pop() if lengths else 0
    if parts and length == 0:
        raise PartsimError("estimates and references are empty signals")
    chunk = length if sample_rate is None else max(1, int(round(chunk_seconds * sample_rate)))
    starts = list(range(0, length - chunk + 1, chunk)) if length >= chunk else [0]
    chunk = min(chunk, length)
    values: dict[str, dict[str, list[float]]] = {part: {"sdr": [], "sir": [], "sar": []} for part in parts}
    for start in starts if parts else []:
        window = slice(start, start + chunk)
        active = [part for part in parts if np.mean(reference[part][window] ** 2) >= silence_threshold]
        if not active:
            continue
        refs = np.stack([reference[part][window] for part in active])
        ests = np.stack([estimate[part][window] for part in active])
        sdr, sir, sar = _bss_eval(refs, ests, min(filter_length, chunk))
        for i, part in enumerate(active):
            zero_estimate = not np.any(ests[i])
            values[part]["sdr"].append(float(np.clip(np.nan_to_num(sdr[i], nan=-METRIC_CLAMP_DB),
                                                     -METRIC_CLAMP_DB, METRIC_CLAMP_DB)))
            values[part]["sar"].append(float(np.clip(np.nan_to_num(sar[i], nan=-METRIC_CLAMP_DB),
                                                     -METRIC_CLAMP_DB, METRIC_CLAMP_DB)))
            undefined_sir = len(active) == 1 or zero_estimate or np.isnan(sir[i])
            values[part]["sir"].append(math.nan if undefined_sir else
                                       float(np.clip(sir[i], -METRIC_CLAMP_DB, METRIC_CLAMP_DB)))
    rows = []
    for part in INSTRUMENTS:
        metrics = values.get(part, {"sdr": [], "sir": [], "sar": []})
        row = {"part": part, "chunks": len(metrics["sdr"])}
        for name in ("sdr", "sir", "sar"):
            finite = [value for value in metrics[name] if not math.isnan(value)]
            row[name] = float(np.mean(finite)) if finite else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["part", "sdr", "sir", "sar", "chunks"]).set_index("part")


def evaluate_separation(separated: Any, reference: StemCache, tracks: Sequence[Track],
                        chunk_seconds: float = CHUNK_SECONDS, silence_threshold: float = SILENCE_THRESHOLD,
                        progress: bool = True) -> pd.DataFrame:
    """Per-track separation quality of a :class:`SeparatedSource` (or any signal source) against the ideal parts.

    Returns:
        Long table with columns ``track_id``, ``part``, ``sdr``, ``sir``, ``sar``, ``chunks`` (one row per track and
        part whose reference was non-silent in at least one chunk);
        :func:`~partsim_core.baseline.tables.table_3_1` turns it into Table 3.1's per-part means.
    """
    rows = []
    for track in tqdm(tracks, desc="separation metrics", disable=not progress, leave=False):
        estimates = {part: separated.get(track, part) for part in INSTRUMENTS}
        references = {part: reference.get(track, part) for part in INSTRUMENTS}
        table = separation_metrics(estimates, references, sample_rate=reference.sample_rate,
                                   chunk_seconds=chunk_seconds, silence_threshold=silence_threshold)
        for part, row in table.iterrows():
            if row["chunks"] > 0:
                rows.append({"track_id": track.track_id, "part": part, **row.to_dict()})
    return pd.DataFrame(rows, columns=["track_id", "part", "sdr", "sir", "sar", "chunks"])




def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def separation_quality(data: DatasetHandle, source: Any, train_tracks: int | None = None,
                       progress: bool = True) -> pd.DataFrame:
    """SDR/SIR/SAR of the separated stems of the training tracks and of every test track of ``data``.

    Each split's per-track table is a verified artefact (kind ``ch3_separation_quality``) keyed by the separator's
    key, the silence threshold and the audio fingerprint of the tracks, so a second run does not recompute it and
    new audio never reuses it.

    Args:
        data: the chapter's dataset (its ``test_tracks`` are the test tracks measured).
        source: the separated signal source (with a ``key``).
        train_tracks: how many training tracks (the first ones) are measured; ``None`` = all of them.
        progress: progress bars.

    Returns:
        One row per (split, track, part) with columns :data:`QUALITY_COLUMNS`; parts whose reference is silent
        throughout a track are left out (see :func:`separation_metrics`).
    """
    columns = list(QUALITY_COLUMNS)
    measured = data.train_tracks if train_tracks is None else data.train_tracks[:train_tracks]
    frames = []
    for split, tracks in (("train", measured), ("test", data.test_tracks)):
        if not tracks:
            continue

        def compute(folder: Path, tracks: list[Track] = tracks, split: str = split) -> None:
            per_track = evaluate_separation(source, data.cache, tracks,
                                            silence_threshold=data.preset.silence_threshold, progress=progress)
            frame = per_track.rename(columns={"track_id": "track"}).assign(split=split)[columns]
            records = [{name: (_finite_or_none(value) if name in ("sdr", "sir", "sar") else value)
                        for name, value in row.items()} for row in frame.to_dict(orient="records")]
            atomic_write_json(folder / "quality.json", records)

        config = {"source": str(getattr(source, "key", type(source).__name__)), "split": split,
                  "threshold": data.preset.silence_threshold, "chunk_seconds": CHUNK_SECONDS, "format": 2}
        folder = cached_artefact("ch3_separation_quality", config, data.fingerprint(list(tracks)), compute)
        records = json.loads((folder / "quality.json").read_text(encoding="utf-8"))
        frames.append(pd.DataFrame(records, columns=columns))
    if not frames:
        return pd.DataFrame(columns=columns).astype({"sdr": float, "sir": float, "sar": float})
    table = pd.concat(frames, ignore_index=True)
    return table.astype({"sdr": float, "sir": float, "sar": float})
