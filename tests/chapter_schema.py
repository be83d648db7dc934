"""The chapter JSON contract of issue 13 as a check a test can run on any chapter's output (README, *How findings
are decided*): ``findings`` of ``{"claim", "verdict", "estimate", "interval"}`` decided by the interval rule, and
every cell of a top-level ``table_*`` a ``{"value", "low", "high"}`` dict. Undefined numbers are ``null`` (never
NaN): a cell all ``null``, a finding ``inconclusive`` with ``estimate`` ``null``, ``interval`` ``[null, null]`` and
a ``note``. Written independently of ``partsim_core.stats`` (the rule restated here, not imported)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

VERDICTS = ("holds", "does not hold", "inconclusive")
CELL_KEYS = ("value", "low", "high")
#: Slack for "the estimate lies in its interval" (floats printed and re-read).
EPS = 1e-9


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _non_finite(value: Any, where: str) -> list[str]:
    """NaN or infinities anywhere (a strict JSON file cannot hold them)."""
    if isinstance(value, Mapping):
        return [problem for key, item in value.items() for problem in _non_finite(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [problem for index, item in enumerate(value) for problem in _non_finite(item, f"{where}[{index}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: {value} (write null)"]
    return []


def _cell_problems(cell: Mapping[str, Any], where: str) -> list[str]:
    values = [cell[key] for key in CELL_KEYS]
    if all(value is None for value in values):
        return []
    if not all(_number(value) for value in values):
        return [f"{where}: a cell needs three numbers or three nulls, got {dict(zip(CELL_KEYS, values))}"]
    value, low, high = values
    if not low - EPS <= value <= high + EPS:
        return [f"{where}: value {value} outside [{low}, {high}]"]
    return []


def _table_problems(node: Any, where: str) -> list[str]:
    if isinstance(node, Mapping):
        if set(CELL_KEYS) <= set(node):
            return _cell_problems(node, where)
        return [problem for key, item in node.items() for problem in _table_problems(item, f"{where}.{key}")]
    if isinstance(node, list):
        return [problem for index, item in enumerate(node) for problem in _table_problems(item, f"{where}[{index}]")]
    if _number(node):
        return [f"{where}: bare number {node} (a table cell is {{'value', 'low', 'high'}})"]
    return []


def _finding_problems(item: Any, where: str) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{where}: not an object"]
    missing = [key for key in ("claim", "verdict", "estimate", "interval") if key not in item]
    if missing:
        return [f"{where}: missing {', '.join(missing)}"]
    problems = []
    if not isinstance(item["claim"], str) or not item["claim"]:
        problems.append(f"{where}: claim must be a non-empty string")
    verdict, estimate, interval = item["verdict"], item["estimate"], item["interval"]
    if verdict not in VERDICTS:
        problems.append(f"{where}: verdict {verdict!r} is none of {VERDICTS}")
    if not isinstance(interval, list) or len(interval) != 2:
        return problems + [f"{where}: interval must be [low, high], got {interval!r}"]
    low, high = interval
    if estimate is None:
        if interval != [None, None] or verdict != "inconclusive" or not item.get("note"):
            problems.append(f"{where}: an undefined estimate needs interval [null, null], verdict inconclusive "
                            "and a note")
        return problems
    if not all(_number(value) for value in (estimate, low, high)):
        return problems + [f"{where}: estimate and interval must be numbers, got {estimate!r}, {interval!r}"]
    if not low - EPS <= estimate <= high + EPS:
        problems.append(f"{where}: estimate {estimate} outside its interval [{low}, {high}]")
    threshold = item.get("threshold", 0.0)
    expected = "holds" if low > threshold else "does not hold" if high <= threshold else "inconclusive"
    if _number(threshold) and verdict in VERDICTS and verdict != expected:
        problems.append(f"{where}: verdict {verdict!r} but [{low}, {high}] against {threshold} reads {expected!r}")
    return problems


def schema_problems(payload: Mapping[str, Any]) -> list[str]:
    """Every way ``payload`` (a chapter's JSON, parsed) breaks the contract; empty when it keeps it."""
    problems = _non_finite(payload, "$")
    findings = payload.get("findings")
    if not isinstance(findings, list) or not findings:
        problems.append("findings: missing or empty")
    else:
        for index, item in enumerate(findings):
            problems += _finding_problems(item, f"findings[{index}]")
    for key, table in payload.items():
        if key.startswith("table_"):
            problems += _table_problems(table, key)
    return problems
