"""Regression guard: a fresh smoke run of the chapter commands must reproduce ``data/regression/smoke.json``.

In the style of open-unmix's ``tests/test_regression.py``: the stored JSON holds the smoke-preset metrics of every
chapter command (the tables and findings of its JSON output), each with the reason it has that value. The test runs
the commands again from nothing, each in a fresh ``python -m partsim_core.cli`` process with one BLAS/OpenMP thread
(``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1`` in its environment, so the pytest process's torch settings are never
touched) and a private ``PARTSIM_CACHE`` under ``tmp_path`` (the data are generated, the separator and networks
trained), and compares every metric under the tolerance stored in the file's header:

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

#: Top-level keys of a chapter's JSON whose leaves are metrics (timings, reuse flags and provenance are not).
METRIC_KEYS = ("findings", "valid_responses", "n_tracks")

#: The chapter commands, as ``partsim`` argument lists; ``{out}`` and ``{abx}`` are filled in.
COMMANDS: dict[str, list[str]] = {
    "ch3": ["baseline", "run", "--preset", "smoke", "--device", "cpu", "--seed", "0", "--no-progress",
            "--out", "{out}"],
    "ch4": ["csn", "run", "--preset", "smoke", "--device", "cpu", "--seed", "0", "--conditions", "g,i,k",
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
    """Leaves of a JSON value under dotted keys; findings are keyed by their claim, lists by their index."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
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


def metrics_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of one chapter's JSON: every leaf under ``table_*`` and :data:`METRIC_KEYS`."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if key.startswith("table_") or key in METRIC_KEYS:
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
        found[chapter] = metrics_of(json.loads(out.read_text(encoding="utf-8")))
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
    """The store as JSON with one metric per line, so that a changed value and its reason read as one diff line."""
    lines = ["{", f' "header": {json.dumps(store["header"], indent=1).replace(chr(10), chr(10) + " ")},',
             ' "metrics": {']
    chapters = list(store["metrics"].items())
    for number, (chapter, metrics) in enumerate(chapters):
        lines.append(f"  {json.dumps(chapter)}: {{")
        entries = [f"   {json.dumps(key)}: {json.dumps(entry)}" for key, entry in metrics.items()]
        lines.append(",\n".join(entries))
        lines.append("  }" + ("," if number < len(chapters) - 1 else ""))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def load_store(path: Path = STORE) -> dict[str, Any]:
    """The stored metrics (``header`` and ``metrics``: chapter -> key -> {value, reason})."""
    return json.loads(path.read_text(encoding="utf-8"))


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
    for chapter in ("ch3", "ch4", "ch6"):
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
                       "findings": [{"claim": "c1", "verdict": "holds", "interval": [0.5, float("nan")]}]}) == {
        "table_3_2.x.drums": 1.5, "findings[c1].claim": "c1", "findings[c1].verdict": "holds",
        "findings[c1].interval[0]": 0.5, "findings[c1].interval[1]": None}


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


def test_update_keeps_reasons_of_unchanged_metrics() -> None:
    store = {"header": {"tolerance": {"rtol": 0.0, "atol": 0.0}},
             "metrics": {"ch3": {"a": {"value": 1.0, "reason": "first"}, "b": {"value": 2.0, "reason": "first"}}}}
    new, changes = updated_store(store, {"ch3": {"a": 1.0, "b": 3.0}}, reason="b fixed")
    assert new["metrics"]["ch3"] == {"a": {"value": 1.0, "reason": "first"}, "b": {"value": 3.0, "reason": "b fixed"}}
    assert changes == ["ch3: b: 3.0 != stored 2.0 (first)"]
    with pytest.raises(SystemExit, match="--reason"):
        updated_store(store, {"ch3": {"a": 1.0, "b": 4.0}}, reason=None)


def test_store_is_well_formed() -> None:
    store = load_store()
    assert json.loads(dump_store(store)) == store
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
