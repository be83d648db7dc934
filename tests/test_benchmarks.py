"""The benchmark scripts CI runs: ``gpu_check.sh --dry-run`` and ``scale.py --quick`` print their JSON keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

GPU_CHECK_KEYS = {
    "mode", "device_name", "torch", "frontend_cpu_segments_per_s", "frontend_cuda_segments_per_s", "frontend_speedup",
    "frontend_max_abs_diff", "csn_width", "csn_batch_size", "csn_triplets_per_s", "csn_peak_gpu_mib", "part_width",
    "part_batch_size", "part_triplets_per_s", "part_peak_gpu_mib", "separator_width", "separator_batch_size",
    "separator_examples_per_s", "separator_peak_gpu_mib", "condition", "condition_steps", "condition_first_loss",
    "condition_last_loss", "condition_loss_falls", "condition_s", "torchrun_backend", "torchrun_ok", "torchrun_s",
    "projected_paper_book_gpu_s", "projected_paper_book_gpu_h", "projection", "total_s",
}


@pytest.fixture(scope="module")
def smoke_root() -> Path:
    """The embedded smoke dataset (generated into the normal cache when absent)."""
    from partsim_core.data.dataset import resolve_dataset_root

    return resolve_dataset_root("smoke", "")


def _environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "PARTSIM_PYTHON": sys.executable, "PARTSIM_CACHE": str(cache),
            "PYTHONPATH": str(REPO_ROOT)}


def _json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_gpu_check_dry_run_prints_every_key(smoke_root: Path, tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--data-root",
                           str(smoke_root)], env=_environment(tmp_path / "cache"), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = _json_line(done.stdout)
    assert set(result) >= GPU_CHECK_KEYS, GPU_CHECK_KEYS - set(result)
    assert result["mode"] == "dry-run" and result["torchrun_backend"] == "gloo"
    assert result["torchrun_ok"] is True
    assert isinstance(result["condition_loss_falls"], bool) and result["condition_steps"] > 0
    assert result["frontend_max_abs_diff"] == 0.0          # the "CUDA" side is the CPU in a dry run
    # ... so the CPU timed against itself is about 1 (wide bounds: shared cores; the bug this guards gave 51x)
    assert 0.1 <= result["frontend_speedup"] <= 10.0
    assert result["csn_peak_gpu_mib"] is None and result["part_peak_gpu_mib"] is None
    for key in ("csn_triplets_per_s", "part_triplets_per_s", "separator_examples_per_s"):
        assert result[key] > 0
    assert result["projected_paper_book_gpu_s"] == pytest.approx(sum(result["projection"].values()), abs=5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is only seen without a CUDA device")
def test_gpu_check_refuses_without_a_gpu(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")],
                          env=_environment(tmp_path / "cache"), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode != 0
    assert "no CUDA device was found" in done.stderr
    assert done.stdout.strip() == ""


SCALE_KEYS = {"tracks", "peak_rss_mib", "rss_growth", "projected_full_rss_gib", "projected_full_cpu_s",
              "peak_anon_mib", "seconds_per_track", "stage_peak_anon_mib", "streaming", "full_tracks",
              "projection_valid", "projection_note"}


@pytest.mark.slow
def test_scale_quick_prints_every_key(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "scale.py"), "--quick", "--tracks", "2",
                           "3"], env=_environment(tmp_path / "cache"), capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = _json_line(done.stdout)
    assert set(result) >= SCALE_KEYS, SCALE_KEYS - set(result)
    assert result["tracks"] == [2, 3]
    assert len(result["peak_rss_mib"]) == len(result["peak_anon_mib"]) == 2
    # ru_maxrss counts the stem cache's mapped pages on top of the anonymous memory.
    assert all(total >= anon > 0 for total, anon in zip(result["peak_rss_mib"], result["peak_anon_mib"]))
    assert result["rss_growth"] == pytest.approx(result["peak_anon_mib"][1] / result["peak_anon_mib"][0], abs=1e-3)
    assert result["projected_full_rss_gib"] > 0 and result["projected_full_cpu_s"] > 0
    # 11-13 s tracks: the projection to full size is flagged as meaningless, with the reason.
    assert result["projection_valid"] is False and "--quick" in result["projection_note"]
    assert result["full_tracks"] == {"train": 1289, "validation": 270, "test": 151}
    assert result["summaries"]["3"]["kept_tracks"] >= 2


@pytest.mark.slow
def test_training_benchmark_times_the_engines_default_step(smoke_root: Path) -> None:
    """``benchmarks/training.py`` prints the keys issue 14 reads, timing the step as the engine trains by default
    (no prefetch thread) under the allocator policy the ``partsim`` command runs with, or glibc's on request."""
    from partsim_core.host_memory import HUGE_PAGE_TUNABLE, TUNABLES_VARIABLE, is_glibc
    from partsim_core.training import TrainConfig

    environment = {name: value for name, value in os.environ.items() if name != TUNABLES_VARIABLE}
    environment["PYTHONPATH"] = str(REPO_ROOT)   # the smoke dataset of the fixture: the normal cache
    results = {}
    for allocator in ("tunable", "system"):
        flags = ["--system-allocator"] if allocator == "system" else []
        done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "training.py"), "--preset", "smoke",
                               "--steps", "1", "--rounds", "1", *flags], env=environment, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        results[allocator] = _json_line(done.stdout)
    for result in results.values():
        assert result["csn_triplets_per_s"] > 0 and result["step_triplets_per_s"] > 0
        assert result["prefetch"] is TrainConfig(run_name="default").prefetch is False
    assert results["system"]["host_allocator"] == "glibc default"
    assert results["tunable"]["host_allocator"] == (HUGE_PAGE_TUNABLE if is_glibc() else "glibc default")


@pytest.mark.parametrize("arguments", [["--steps", "0"], ["--rounds", "0"], ["--repeats", "0"],
                                       ["--part", "vocals"], ["--torch-threads", "0"], ["--frontend", "1024,512"],
                                       ["--frontend", "1024,0,96"], ["--amp", "int8"]])
def test_training_benchmark_refuses_bad_arguments_before_any_work(arguments: list[str],
                                                                  capsys: pytest.CaptureFixture) -> None:
    module = _training_benchmark()
    with pytest.raises(SystemExit) as stopped:
        module.main(arguments)   # argv given: never relaunches this process
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in message and arguments[0] in message


def _training_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_benchmark", REPO_ROOT / "benchmarks" / "training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_benchmark_front_end_override_changes_only_the_front_end() -> None:
    from partsim_core.presets import get_preset

    module = _training_benchmark()
    default = get_preset("default")
    pinned = module.with_frontend(default, "1024,512,96")
    assert (pinned.frontend.n_fft, pinned.frontend.hop_length, pinned.frontend.n_mels) == (1024, 512, 96)
    assert pinned.frontend.sample_rate == default.frontend.sample_rate
    assert pinned.csn == default.csn and pinned.part_network == default.part_network
    assert module.with_frontend(default, None) is default


def test_training_benchmark_refuses_to_compare_different_computations(capsys: pytest.CaptureFixture) -> None:
    """A peer comparison of runs with other front ends (e.g. an older checkout's default preset) is refused, so no
    speed-up ratio ever compares two different computations; settings only one side reports are not compared."""
    module = _training_benchmark()
    own = {"preset": "default", "n_mels": 64, "n_fft": 2048, "hop_length": 1024, "segment_seconds": 3.0}
    older_peer = {"preset": "default", "n_mels": 96, "segment_seconds": 3.0}   # reports no hop (older version)
    with pytest.raises(SystemExit) as stopped:
        module.check_comparable(own, older_peer)
    assert stopped.value.code == 2
    assert "n_mels 64 here vs 96 in the peer" in capsys.readouterr().err
    module.check_comparable({**own, "n_mels": 96, "n_fft": 1024, "hop_length": 512}, older_peer)   # same: passes
    # A peer from before mixed precision on the CPU timed float32: a bf16 run of this version is not comparable.
    with pytest.raises(SystemExit):
        module.check_comparable({**own, "n_mels": 96, "n_fft": 1024, "hop_length": 512, "autocast": "bfloat16"},
                                older_peer)
    assert "autocast bfloat16 here vs off in the peer" in capsys.readouterr().err
