"""``benchmarks/retrieval.py`` (issue 14 item 5): one JSON line with the keys the issue's checks read, on a tiny
catalogue. Checks keys and invariants only, never a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Keys the issue names ("keys as today plus ...").
ISSUE_KEYS = {"segments", "ann_recall_at_100", "ann_p95_ms", "exact_p95_ms", "numpy_p95_ms"}
#: Keys the benchmark printed before issue 14 (the exact FAISS index against numpy).
EARLIER_KEYS = {"faiss_p50_ms", "faiss_p95_ms", "numpy_p50_ms", "speedup_p95", "build_s", "results_equal",
                "peak_rss_mb"}


def _run(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PARTSIM_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "retrieval.py"), *arguments],
                          env=environment, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_retrieval_prints_one_json_line_with_the_issue_keys(tmp_path: Path) -> None:
    done = _run(tmp_path, "--segments", "2000", "--queries", "4", "--rounds", "1", "--check", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert set(result) >= ISSUE_KEYS | EARLIER_KEYS, (ISSUE_KEYS | EARLIER_KEYS) - set(result)
    assert result["segments"] == 2000 and result["k"] == 100
    assert 0.0 <= result["ann_recall_at_100"] <= 1.0
    # The headline recall is the lower of the two query kinds'.
    assert result["ann_recall_at_100"] == min(result["song_ann_recall_at_100"], result["stem_ann_recall_at_100"])
    for method in ("faiss", "ann", "numpy"):
        for kind in ("song", "stem"):
            assert 0.0 < result[f"{kind}_{method}_p50_ms"] <= result[f"{kind}_{method}_p95_ms"]
    assert result["exact_p95_ms"] == result["song_faiss_p95_ms"]
    assert result["results_equal"] is True and result["ann_reopened_equal"] is True


def test_retrieval_refuses_a_catalogue_of_one_segment(tmp_path: Path) -> None:
    done = _run(tmp_path, "--segments", "1")
    assert done.returncode == 2 and "--segments >= 2" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
