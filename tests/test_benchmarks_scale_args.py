"""``benchmarks/scale.py`` refuses arguments it cannot measure with a usage error (exit 2), before generating
anything: N below 2, an empty or reversed track-length range, a ``--keep`` dataset with fewer test tracks than N."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _scale(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PARTSIM_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "scale.py"), *arguments], env=environment,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("arguments, fragment", [
    (("--quick", "--tracks", "0"), "--tracks: every N must be at least 2"),
    (("--quick", "--tracks", "1", "3"), "--tracks: every N must be at least 2"),
    (("--tracks", "2", "--track-seconds", "5", "1"), "--track-seconds: need 0 < MIN <= MAX"),
    (("--tracks", "2", "--track-seconds", "0", "1"), "--track-seconds: need 0 < MIN <= MAX"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, arguments: tuple[str, ...], fragment: str) -> None:
    done = _scale(tmp_path, *arguments)
    assert done.returncode == 2, done.stderr[-2000:]
    assert fragment in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "" and not (tmp_path / "cache").exists()


def test_keep_with_fewer_test_tracks_than_n_is_refused(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    for number in (1, 2):
        (keep / "test" / f"Track{number:05d}").mkdir(parents=True)
        (keep / "test" / f"Track{number:05d}" / "metadata.yaml").write_text("stems: {}\n")
    before = sorted(str(path) for path in keep.rglob("*"))
    done = _scale(tmp_path, "--quick", "--tracks", "2", "3", "--keep", str(keep))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "holds 2 test track(s), fewer than N = 3" in done.stderr and "Traceback" not in done.stderr
    assert sorted(str(path) for path in keep.rglob("*")) == before


def _scale_module():
    spec = importlib.util.spec_from_file_location("scale_benchmark", REPO_ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("quick, seconds, valid", [
    (False, (180.0, 240.0), True),    # the default: Slakh-length tracks
    (False, (300.0, 300.0), True),
    (True, (11.0, 13.0), False),      # --quick
    (True, (200.0, 240.0), False),    # --quick is never a measurement of the projection
    (False, (30.0, 40.0), False),     # shorter than Slakh's tracks
])
def test_projection_is_valid_only_for_slakh_length_tracks(quick: bool, seconds: tuple[float, float],
                                                          valid: bool) -> None:
    is_valid, note = _scale_module().projection_validity(quick, seconds)
    assert is_valid is valid and note
    assert ("--quick" in note) is quick
