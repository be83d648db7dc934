"""``benchmarks/gpu_check.sh`` refuses a ``--data-root`` that is not a Slakh-format folder at once (exit 2, one
``gpu_check: error:`` line, no traceback, no JSON), instead of a traceback after the timed steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("folder, fragment", [("nowhere", "is not a folder"), ("empty", "")])
def test_dry_run_refuses_a_bad_data_root(tmp_path: Path, folder: str, fragment: str) -> None:
    (tmp_path / "empty").mkdir()
    environment = {**os.environ, "PARTSIM_PYTHON": sys.executable, "PARTSIM_CACHE": str(tmp_path / "cache"),
                   "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--data-root",
                           str(tmp_path / folder)], env=environment, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: ") and fragment in lines[0], done.stderr
    assert str(tmp_path / folder) in lines[0]
    assert done.stdout == "" and not (tmp_path / "cache").exists()
