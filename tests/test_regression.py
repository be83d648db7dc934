"""Regression guard: a fresh smoke run of the chapter commands must reproduce ``data/regression/smoke.json``.

In the style of open-unmix's ``tests/test_regression.py``: the stored JSON holds the smoke-preset metrics of every
chapter command, each with the reason it has that value: every leaf of the result keys of its JSON output (every
``table_*`` key and the chapter's :data:`RESULT_KEYS`, e.g. chapter 6's retrieval cells, chapter 3's separator quality
curve, chapter 4's chance levels and separator crossover), less the fields of :data:`NOT_RESULT_FIELDS` (timings,
reuse flags, cache keys); a top-level key in neither :data:`RESULT_KEYS` nor :data:`NOT_RESULT_KEYS` fails the guard.
The test runs the commands again from nothing, each in a fresh ``python -m partsim_core.cli`` process with one
BLAS/OpenMP thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1`` in its environment, so the pytest process's torch
settings are never touched) and a private ``PARTSIM_CACHE`` under ``tmp_path`` (the data are generated, the separator
and networks trained), and compares every metric under the tolerance stored in the file's header:

* numbers: ``|fresh - stored| <= atol + rtol * |stored|`` (header ``tolerance``; the smoke run is deterministic on
  one machine with one torch thread, so the tolerance only absorbs float printing, not training noise);
* strings (verdicts) and missing values (``null``) must be equal;
* a metric that appears or disappears fails too.

Changing a metric means regenerating the file in the same commit, with the reason::

    PYTHONPATH=$PWD python tests/test_regression.py --update --reason "what changed and why"

which reruns the commands (about as long as the test), keeps the entries that still match (and their reasons),
writes the new values with the given reason, and prints what changed. ``--abx DIR`` names the Inst-Sim ABX folder
(default ``../shared/abx`` beside the repository, or ``$PARTSIM_ABX_DIR``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from chapter_schema import schema_problems

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE = REPO_ROOT / "data" / "regression" / "smoke.json"

#: Environment variable naming the Inst-Sim ABX folder (else ``../shared/abx`` beside the repository).
ABX_ENV = "PARTSIM_ABX_DIR"

#: Default tolerance written into a new store's header.
DEFAULT_TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}

#: Per chapter, the top-level keys of its JSON whose leaves are results: numbers (cells, rates, accuracies, SDRs,
#: counts, losses) and verdicts that a change in code could silently move. Every ``table_*`` key is a result too.
RESULT_KEYS: dict[str, tuple[str, ...]] = {
    # n_tracks: split sizes; the curve and leakage: issue 13 item 4; networks: each part network's accuracy,
    # test segments/tracks, epochs and loss history; separator: the U-Net's loss history.
    "ch3": ("n_tracks", "findings", "separator_quality_curve", "leakage_track_id", "networks", "separator"),
    # identification / stem_mix_correlation: the Table 4.3 / 4.4 inputs; style_leakage: kNN precision per subspace;
    # histories: loss per epoch; n_segments: counts; chance: random embeddings scored like Tables 4.1/4.2;
    # separator_crossover: baseline vs (i) per separator (only written when condition (a) runs).
    "ch4": ("findings", "identification", "stem_mix_correlation", "style_leakage", "histories", "n_segments",
            "chance", "separator_crossover"),
    "ch4-crossover": ("findings", "identification", "stem_mix_correlation", "style_leakage", "histories",
                      "n_segments", "chance", "separator_crossover"),
    "ch5": ("findings", "valid_responses"),
    # catalog: counts of the pseudo catalog; distances / csn_distance_selection: the chosen distance and the
    # validation recall behind it; ground_truth: the generated queries and their relevant pieces.
    "ch6": ("findings", "catalog", "distances", "csn_distance_selection", "retrieval", "retrieval_differences",
            "figure_6_8_simulated", "figure_6_8_simulated_by_part", "simulated_abx", "ground_truth"),
}

#: Top-level keys that are not results, with why; a key in neither list fails the guard (classify it here).
NOT_RESULT_KEYS: dict[str, str] = {
    "partsim": "provenance (version, command)",
    "chapter": "the chapter number, fixed",
    "preset": "echo of --preset",
    "backend": "echo of the separator backend option",
    "seeds": "echo of --seed/--seeds",
    "epochs": "echo of the preset's epochs",
    "conditions": "echo of --conditions",
    "verdict_rule": "fixed prose stating the rule (the verdicts themselves are in findings)",
    "intervals": "fixed prose naming the interval methods",
    "random_ranking": "fixed prose naming the random-ranking reference",
    "listening_test": "provenance: 'simulated' or the real data's name",
    "timings": "wall-clock seconds: not deterministic",
    "seconds": "wall-clock seconds: not deterministic",
    "reused": "cache-reuse flags: depend on the cache, not on the code",
}

#: Fields dropped at any depth inside a result key, with why.
NOT_RESULT_FIELDS: dict[str, str] = {
    "seconds": "wall-clock seconds per epoch (histories): not deterministic",
    "train_seconds": "wall-clock training seconds (networks): not deterministic",
    "reused": "cache-reuse flags (networks, catalog): depend on the cache",
    "key": "cache key of the separator: a hash of the configuration, provenance",
    "location": "cache path of the catalog: provenance",
}

#: The chapter commands, as ``partsim`` argument lists; ``{out}`` and ``{abx}`` are filled in.
COMMANDS: dict[str, list[str]] = {
    "ch3": ["baseline", "run", "--preset", "smoke", "--device", "cpu", "--seed", "0", "--no-progress",
            "--out", "{out}"],
    "ch4": ["csn", "run", "--preset", "smoke", "--device", "cpu", "--seed", "0", "--conditions", "g,i,k",
            "--no-progress", "--out", "{out}"],
    # Condition (a) (the separation baseline) with (i): the Table 4.1 baseline columns and the separator crossover
    # (issue 13 item 4); its own entry, so that adding it left the (g, i, k) run's stored metrics as they were.
    "ch4-crossover": ["csn", "run", "--preset", "smoke", "--device", "cpu", "--seed", "0", "--conditions", "a,i",
                      "--no-progress", "--out", "{out}"],
    "ch5": ["perceptual", "tables", "--abx", "{abx}", "--out", "{out}"],
    "ch6": ["mixquery", "run", "--preset", "smoke", "--device", "cpu", "--seed", "0", "--backends", "csn",
            "--no-track-level", "--no-progress", "--out", "{out}"],
}


def abx_folder() -> Path | None:
    """The Inst-Sim ABX folder: ``$PARTSIM_ABX_DIR``, else ``../shared/abx`` beside the repository."""
    candidate = Path(os.environ[ABX_ENV]) if os.environ.get(ABX_ENV) else REPO_ROOT.parent / "shared" / "abx"
    return candidate if (candidate / "csvs").is_dir() else None


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Leaves of a JSON value under dotted keys; findings are keyed by their claim, lists by their index;
    fields named in :data:`NOT_RESULT_FIELDS` are left out at any depth."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            if key not in NOT_RESULT_FIELDS:
                flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    if isinstance(value, list):
        flat = {}
        for index, item in enumerate(value):
            key = item["claim"] if isinstance(item, Mapping) and "claim" in item else str(index)
            flat.update(flatten(item, f"{prefix}[{key}]"))
        return flat
    if isinstance(value, float) and not math.isfinite(value):
        return {prefix: None}
    return {prefix: value}


def metrics_of(result: Mapping[str, Any], chapter: str) -> dict[str, Any]:
    """The metrics of one chapter's JSON: every leaf under ``table_*`` and the chapter's :data:`RESULT_KEYS`.

    Raises:
        ValueError: a top-level key is in neither :data:`RESULT_KEYS` nor :data:`NOT_RESULT_KEYS` (a new output
            must be classified before the guard can say whether it moved).
    """
    results = RESULT_KEYS[chapter]
    unclassified = [key for key in result
                    if not key.startswith("table_") and key not in results and key not in NOT_RESULT_KEYS]
    if unclassified:
        raise ValueError(f"{chapter}: top-level key(s) {', '.join(unclassified)} neither a result nor excluded: "
                         "add them to RESULT_KEYS or NOT_RESULT_KEYS in tests/test_regression.py")
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if key.startswith("table_") or key in results:
            flat.update(flatten(value, key))
    return flat


def command_environment(workdir: Path) -> dict[str, str]:
    """The environment of one chapter command: one BLAS/OpenMP thread, the private cache, this checkout first.

    One thread gives the same float reductions on every machine size. It is set in the child's environment,
    never with ``torch.set_num_threads`` in this (pytest) process, which would break later LAPACK calls here.
    """
    python_path = [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PARTSIM_CACHE": str(workdir / "cache"),
            "PYTHONPATH": os.pathsep.join(python_path)}


def run_commands(workdir: Path, abx: Path | None, say: Callable[[str], None] = lambda _: None
                 ) -> dict[str, dict[str, Any]]:
    """Run every chapter command, each in a fresh ``python -m partsim_core.cli`` process, with a private cache
    under ``workdir``; chapter -> metrics.

    Chapter 5 is left out when no ABX folder is found.

    Raises:
        RuntimeError: a command exited non-zero (its exit status and standard error in the message).
    """
    environment = command_environment(workdir)
    found: dict[str, dict[str, Any]] = {}
    for chapter, template in COMMANDS.items():
        if "{abx}" in template and abx is None:
            say(f"{chapter}: no ABX folder (set {ABX_ENV}); skipped")
            continue
        out = workdir / f"{chapter}.json"
        arguments = [part.format(out=out, abx=abx) for part in template]
        say(f"{chapter}: partsim {' '.join(template)}")
        completed = subprocess.run([sys.executable, "-m", "partsim_core.cli", *arguments], cwd=REPO_ROOT,
                                   env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"partsim {' '.join(template)} exited {completed.returncode}; its stderr:\n"
                               f"{completed.stderr[-4000:]}")
        found[chapter] = metrics_of(json.loads(out.read_text(encoding="utf-8")), chapter)
    return found


def matches(fresh: Any, stored: Any, tolerance: Mapping[str, float]) -> bool:
    """Whether a fresh metric equals the stored one under ``tolerance`` (numbers) or exactly (anything else)."""
    numbers = (int, float)
    if isinstance(fresh, numbers) and isinstance(stored, numbers) and not isinstance(fresh, bool):
        return abs(fresh - stored) <= tolerance["atol"] + tolerance["rtol"] * abs(stored)
    return fresh == stored


def differences(fresh: Mapping[str, Any], stored: Mapping[str, Mapping[str, Any]],
                tolerance: Mapping[str, float]) -> list[str]:
    """Human-readable list of metrics that differ, appeared or disappeared (one chapter)."""
    lines = []
    for key in sorted(set(fresh) | set(stored)):
        if key not in stored:
            lines.append(f"{key}: new metric {fresh[key]!r}")
        elif key not in fresh:
            lines.append(f"{key}: gone (stored {stored[key]['value']!r})")
        elif not matches(fresh[key], stored[key]["value"], tolerance):
            lines.append(f"{key}: {fresh[key]!r} != stored {stored[key]['value']!r} ({stored[key]['reason']})")
    return lines


def dump_store(store: Mapping[str, Any]) -> str:
    """The store as JSON with one metric per line, so that a changed value reads as one diff line.

    Each reason text is written once, in ``reasons`` (in order of first use); a metric's ``reason`` is its index
    there (:func:`expand_reasons` turns them back into texts).
    """
    texts: dict[str, int] = {}
    for metrics in store["metrics"].values():
        for entry in metrics.values():
            texts.setdefault(entry["reason"], len(texts))
    lines = ["{", f' "header": {json.dumps(store["header"], indent=1).replace(chr(10), chr(10) + " ")},',
             ' "reasons": [', ",\n".join(f"  {json.dumps(text)}" for text in texts), " ],", ' "metrics": {']
    chapters = list(store["metrics"].items())
    for number, (chapter, metrics) in enumerate(chapters):
        lines.append(f"  {json.dumps(chapter)}: {{")
        entries = [f"   {json.dumps(key)}: {json.dumps({**entry, 'reason': texts[entry['reason']]})}"
                   for key, entry in metrics.items()]
        lines.append(",\n".join(entries))
        lines.append("  }" + ("," if number < len(chapters) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def expand_reasons(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The store of :func:`dump_store`'s text with every ``reason`` index replaced by its text."""
    reasons = raw["reasons"]
    return {"header": raw["header"],
            "metrics": {chapter: {key: {**entry, "reason": reasons[entry["reason"]]} for key, entry in metrics.items()}
                        for chapter, metrics in raw["metrics"].items()}}


def load_store(path: Path = STORE) -> dict[str, Any]:
    """The stored metrics (``header`` and ``metrics``: chapter -> key -> {value, reason text})."""
    return expand_reasons(json.loads(path.read_text(encoding="utf-8")))


def updated_store(store: Mapping[str, Any] | None, fresh: Mapping[str, Mapping[str, Any]],
                  reason: str | None) -> tuple[dict[str, Any], list[str]]:
    """A new store from fresh metrics: matching entries keep value and reason, the others get ``reason``.

    Raises:
        SystemExit: metrics changed but no reason was given.
    """
    header = dict(store["header"]) if store else {
        "description": "smoke-preset metrics of every chapter command, compared by tests/test_regression.py",
        "preset": "smoke",
        "tolerance": DEFAULT_TOLERANCE,
        "commands": {chapter: "partsim " + " ".join(template) for chapter, template in COMMANDS.items()},
        "update": 'PYTHONPATH=$PWD python tests/test_regression.py --update --reason "..."',
    }
    header["commands"] = {chapter: "partsim " + " ".join(template) for chapter, template in COMMANDS.items()}
    tolerance = header["tolerance"]
    old = store["metrics"] if store else {}
    metrics: dict[str, dict[str, Any]] = {}
    changes: list[str] = []
    for chapter, values in fresh.items():
        before = old.get(chapter, {})
        changes += [f"{chapter}: {line}" for line in differences(values, before, tolerance)]
        metrics[chapter] = {}
        for key, value in values.items():
            if key in before and matches(value, before[key]["value"], tolerance):
                metrics[chapter][key] = before[key]
            else:
                if not reason:
                    raise SystemExit("metrics changed; pass --reason saying why (it is stored with each new value)")
                metrics[chapter][key] = {"value": value, "reason": reason}
    for chapter in set(old) - set(fresh):
        metrics[chapter] = old[chapter]  # not rerun (e.g. no ABX folder here): kept as they were
    return {"header": header, "metrics": metrics}, changes


@pytest.mark.slow
def test_fresh_smoke_run_reproduces_the_stored_metrics(tmp_path: Path) -> None:
    store = load_store()
    abx = abx_folder()
    fresh = run_commands(tmp_path, abx)
    tolerance = store["header"]["tolerance"]
    problems = []
    for chapter, stored in store["metrics"].items():
        if chapter not in fresh:
            assert chapter == "ch5" and abx is None, f"{chapter} was not run"
            continue
        problems += [f"{chapter}: {line}" for line in differences(fresh[chapter], stored, tolerance)]
    # Issue 13's contract on each chapter run's JSON (cells, findings, verdicts by the interval rule, no NaN).
    for chapter in ("ch3", "ch4", "ch4-crossover", "ch6"):
        payload = json.loads((tmp_path / f"{chapter}.json").read_text(encoding="utf-8"))
        problems += [f"{chapter} JSON contract: {line}" for line in schema_problems(payload)]
    assert set(fresh) <= set(store["metrics"]), f"chapters without stored metrics: {set(fresh) - set(store['metrics'])}"
    assert not problems, ("fresh smoke metrics differ from data/regression/smoke.json (update it with "
                          "tests/test_regression.py --update --reason ... if the change is intended):\n"
                          + "\n".join(problems))
    if abx is None:
        pytest.skip(f"chapter 5 not compared: no ABX folder (../shared/abx or ${ABX_ENV})")


def test_comparison_rules() -> None:
    tolerance = {"rtol": 1e-6, "atol": 1e-6}
    stored = {"a": {"value": 50.0, "reason": "r"}, "b": {"value": "holds", "reason": "r"},
              "c": {"value": None, "reason": "r"}, "gone": {"value": 1, "reason": "r"}}
    fresh = {"a": 50.0000001, "b": "inconclusive", "c": None, "new": 2.0}
    assert differences(fresh, stored, tolerance) == [
        "b: 'inconclusive' != stored 'holds' (r)", "gone: gone (stored 1)", "new: new metric 2.0"]
    assert differences({"a": 50.001}, {"a": stored["a"]}, tolerance) == ["a: 50.001 != stored 50.0 (r)"]
    assert metrics_of({"table_3_2": {"x": {"drums": 1.5}}, "timings": {"total": 3.0},
                       "findings": [{"claim": "c1", "verdict": "holds", "interval": [0.5, float("nan")]}]},
                      "ch3") == {
        "table_3_2.x.drums": 1.5, "findings[c1].claim": "c1", "findings[c1].verdict": "holds",
        "findings[c1].interval[0]": 0.5, "findings[c1].interval[1]": None}


def test_metrics_keep_the_chapters_result_keys_and_drop_timings() -> None:
    chapter_6 = {"chapter": 6, "seconds": {"catalog": 5.4},
                 "retrieval": {"csn": {"drums+bass": {"MRR": {"value": 0.25, "low": 0.125, "high": 0.5}}}},
                 "catalog": {"songs": 4, "location": "<cache>/catalog/abc", "reused": True}}
    assert metrics_of(chapter_6, "ch6") == {
        "retrieval.csn.drums+bass.MRR.value": 0.25, "retrieval.csn.drums+bass.MRR.low": 0.125,
        "retrieval.csn.drums+bass.MRR.high": 0.5, "catalog.songs": 4}
    chapter_4 = {"timings": {"training": 8.1}, "reused": {"csn-g/seed0": False},
                 "chance": {"table_4_2": {"drums": {"value": 10.0}}},
                 "histories": {"csn-g/seed0": [{"epoch": 1, "train_loss": 1.5, "seconds": 0.6}]}}
    assert metrics_of(chapter_4, "ch4") == {"chance.table_4_2.drums.value": 10.0,
                                            "histories.csn-g/seed0[0].epoch": 1,
                                            "histories.csn-g/seed0[0].train_loss": 1.5}
    chapter_3 = {"networks": [{"accuracy": 50.0, "train_seconds": 0.5, "reused": False}],
                 "separator": {"key": "unet-0123", "history": [{"epoch": 1, "val_loss": 2.0}]},
                 "leakage_track_id": {"chance": 25.0}}
    assert metrics_of(chapter_3, "ch3") == {"networks[0].accuracy": 50.0, "separator.history[0].epoch": 1,
                                            "separator.history[0].val_loss": 2.0, "leakage_track_id.chance": 25.0}


def test_an_unclassified_top_level_key_fails() -> None:
    with pytest.raises(ValueError, match="new_result.*RESULT_KEYS or NOT_RESULT_KEYS"):
        metrics_of({"findings": [], "new_result": {"value": 1.0}}, "ch6")
    # A key that is a result in one chapter is not silently kept in another.
    with pytest.raises(ValueError, match="retrieval"):
        metrics_of({"retrieval": {}}, "ch3")


def test_every_chapter_command_has_an_allow_list() -> None:
    assert set(COMMANDS) == set(RESULT_KEYS)
    assert not set().union(*RESULT_KEYS.values()) & set(NOT_RESULT_KEYS)


def test_commands_run_in_a_child_with_one_thread_and_the_private_cache(tmp_path: Path) -> None:
    environment = command_environment(tmp_path)
    assert environment["OMP_NUM_THREADS"] == "1" and environment["MKL_NUM_THREADS"] == "1"
    assert environment["PARTSIM_CACHE"] == str(tmp_path / "cache")
    assert environment["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)


def test_a_failing_command_reports_its_status_and_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    threads = torch.get_num_threads()
    bad = ["baseline", "run", "--preset", "no-such-preset", "--out", "{out}"]
    monkeypatch.setattr(sys.modules[__name__], "COMMANDS", {"ch3": bad})
    with pytest.raises(RuntimeError, match=r"(?s)exited 2; its stderr:.*no-such-preset"):
        run_commands(tmp_path, abx=None)
    assert torch.get_num_threads() == threads, "the pytest process's torch thread count changed"
    assert not (tmp_path / "ch3.json").exists()


def test_each_reason_is_written_once_and_read_back_per_metric() -> None:
    store = {"header": {"tolerance": {"rtol": 0.0, "atol": 0.0}},
             "metrics": {"ch3": {"a": {"value": 1.0, "reason": "first"}, "b": {"value": 2.0, "reason": "b fixed"}},
                         "ch4": {"c": {"value": "holds", "reason": "first"}}}}
    raw = json.loads(dump_store(store))
    assert raw["reasons"] == ["first", "b fixed"]
    assert raw["metrics"]["ch4"]["c"] == {"value": "holds", "reason": 0}
    assert expand_reasons(raw) == store


def test_update_keeps_reasons_of_unchanged_metrics() -> None:
    store = {"header": {"tolerance": {"rtol": 0.0, "atol": 0.0}},
             "metrics": {"ch3": {"a": {"value": 1.0, "reason": "first"}, "b": {"value": 2.0, "reason": "first"}}}}
    new, changes = updated_store(store, {"ch3": {"a": 1.0, "b": 3.0}}, reason="b fixed")
    assert new["metrics"]["ch3"] == {"a": {"value": 1.0, "reason": "first"}, "b": {"value": 3.0, "reason": "b fixed"}}
    assert changes == ["ch3: b: 3.0 != stored 2.0 (first)"]
    assert new["header"]["commands"]["ch4-crossover"].startswith("partsim csn run"), "header commands not refreshed"
    with pytest.raises(SystemExit, match="--reason"):
        updated_store(store, {"ch3": {"a": 1.0, "b": 4.0}}, reason=None)


def test_store_is_well_formed() -> None:
    store = load_store()
    raw = json.loads(dump_store(store))
    assert expand_reasons(raw) == store
    assert raw == json.loads(STORE.read_text(encoding="utf-8")), "the file is not in dump_store's form"
    used = {entry["reason"] for metrics in raw["metrics"].values() for entry in metrics.values()}
    assert used == set(range(len(raw["reasons"]))) and len(set(raw["reasons"])) == len(raw["reasons"])
    assert {"rtol", "atol"} <= set(store["header"]["tolerance"])
    assert "ch3" in store["metrics"]
    for chapter, metrics in store["metrics"].items():
        assert metrics, f"{chapter} has no metrics"
        for key, entry in metrics.items():
            assert set(entry) == {"value", "reason"} and entry["reason"].strip(), f"{chapter} {key}: no reason"


def main(argv: list[str] | None = None) -> int:
    """``python tests/test_regression.py --update --reason TEXT [--abx DIR]``: regenerate the stored metrics."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rerun the smoke commands and rewrite the store")
    parser.add_argument("--reason", default=None, help="why metrics changed (stored with every changed value)")
    parser.add_argument("--abx", default=None, help="Inst-Sim ABX folder (default: ../shared/abx or $PARTSIM_ABX_DIR)")
    args = parser.parse_args(argv)
    if not args.update:
        parser.error("nothing to do: pass --update (run the comparison with pytest -m slow tests/test_regression.py)")
    if args.abx:
        os.environ[ABX_ENV] = args.abx
    store = load_store() if STORE.is_file() else None
    with tempfile.TemporaryDirectory(prefix="partsim-regression-") as workdir:
        fresh = run_commands(Path(workdir), abx_folder(), say=lambda message: print(message, file=sys.stderr))
    new, changes = updated_store(store, fresh, args.reason)
    STORE.parent.mkdir(parents=True, exist_ok=True)
    STORE.write_text(dump_store(new), encoding="utf-8")
    print("\n".join(changes) if changes else "no metric changed", file=sys.stderr)
    print(f"wrote {STORE.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
