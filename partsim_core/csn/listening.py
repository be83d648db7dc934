"""Table 4.6: agreement of the CSN and of the separation baseline with (simulated or published) listeners.

For each xab sample set kept by chapter 5's 80 % filter, the model says which of A/B is nearer to X: the CSN in
the category's subspace of the mix excerpt, the baseline with its per-part network on the excerpt separated by
chapter 3's separator (from the whole track, as the thesis's Spleeter baseline did). The rate counts the listener
evaluations that chose the same file; the unit is one response, so the interval is Clopper-Pearson
(:func:`partsim_core.perceptual.model_listener_agreement`), printed as "±" half its width. Unless real ABX audio
is given, the listeners are simulated from the generator's ground truth.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


def _agreement(data: DatasetHandle, embedders: dict[str, tuple[Callable[[np.ndarray, str], np.ndarray], Any]],
               abx_dir: str, slakh_root: str, seed: int) -> tuple[dict[str, pd.DataFrame], str]:
    """Table 4.6 per perspective for each embedder ``{"baseline": (fn, stimulus source), ...}`` where the source is
    ``"mix"`` or a callable ``root -> signal_for`` (see :func:`partsim_core.perceptual.extract_stimuli`)."""
    if abx_dir:
        abx_root, published = abx_dir, True
        if not slakh_root:
            return {}, ("skipped: the published stimuli are Slakh2100 test excerpts; pass slakh_root (a local "
                        "Slakh2100 copy) to compute Table 4.6 on the published test")
        source_root = slakh_root
    else:
        if ground_truth_styles(data) is None:
            return {}, "skipped: this dataset has no generator ground truth to simulate a listening test from"
        abx_root, published, source_root = str(perceptual.ensure_simulated_test(data.root, seed=seed)), False, \
            str(data.root)
    abx = perceptual.load_abx(abx_root)
    responses = abx.responses
    parts = responses[responses["category"].isin(perceptual.PART_CATEGORIES)]
    kept_keys = set(perceptual.agreement_filter(parts).query("kept")["set_key"])
    kept = parts[parts["set_key"].isin(kept_keys)]
    needed = sorted(set(kept["reference"]) | set(kept["sample_a"]) | set(kept["sample_b"]))
    rate = data.preset.frontend.sample_rate
    frames = []
    for name, (embed_fn, source) in embedders.items():
        if callable(source):
            stimuli = perceptual.extract_stimuli(abx.configs, source(source_root), rate, paths=needed,
                                                 progress=False)
        else:
            stimuli = perceptual.extract_from_slakh(abx.configs, source_root, sample_rate=rate, paths=needed,
                                                    source=source, progress=False)
        agreement = perceptual.model_listener_agreement(responses, stimuli, embed_fn,
                                                        perspectives=("overall", "timbre"), progress=False)
        frames.append(agreement[agreement["set_type"] == "xab"].assign(row=name))
    tidy = pd.concat(frames, ignore_index=True)
    out = {}
    for perspective in ("overall", "timbre"):
        part = tidy[tidy["perspective"] == perspective]
        table = pd.DataFrame(index=pd.Index(list(embedders), name="row"))
        for category in INSTRUMENTS:
            found = part[part["category"] == category].set_index("row")
            table[category] = found["percent"].reindex(table.index)
            table[f"{category}_pm"] = ((found["ci_high"] - found["ci_low"]) / 2).reindex(table.index)
        out[perspective] = table
    return out, "published" if published else "simulated"


def table_4_6(data: DatasetHandle, proposed: torch.nn.Module | None, baseline: dict[str, torch.nn.Module] | None,
              separated: Any, device: str, abx_dir: str = "", slakh_root: str = "", seed: int = 0,
              ) -> tuple[dict[str, pd.DataFrame], str]:
    """Table 4.6 per perspective (``overall``, ``timbre``): rows baseline/proposed, columns part and part_pm (%),
    and what it ran on (``simulated``, ``published`` or ``skipped: ...``)."""
    frontend = data.preset.frontend
    embedders: dict[str, tuple[Callable[[np.ndarray, str], np.ndarray], Any]] = {}
    if baseline:
        def baseline_embed(audio: np.ndarray, category: str) -> np.ndarray:
            return embed_one(baseline[category], audio, frontend, device)

        def separated_stimuli(root: str) -> Callable[[int, str], np.ndarray]:
            # On the book's dataset the separated stems are already cached.
            same = str(root) == str(data.root)
            source = separated if same else _separated_view(separated, root, data.cache.sample_rate)
            dataset = data.dataset if same else source.cache.dataset

            def signal_for(track_number: int, category: str) -> np.ndarray:
                return source.get(dataset.track(f"Track{int(track_number):05d}"), category)
            return signal_for
        embedders["baseline"] = (baseline_embed, separated_stimuli)
    if proposed is not None:
        def proposed_embed(audio: np.ndarray, category: str) -> np.ndarray:
            return subspace(embed_one(proposed, audio, frontend, device)[None], category)[0]
        embedders["proposed"] = (proposed_embed, "mix")
    if not embedders:
        return {}, "skipped: needs condition (i) or (a)"
    return _agreement(data, embedders, abx_dir, slakh_root, seed)
