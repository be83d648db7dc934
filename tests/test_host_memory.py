"""partsim_core.host_memory: partsim's processes start with glibc's huge-page tunable, which cuts page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from partsim_core.host_memory import (
    HOST_ALLOCATOR_VARIABLE,
    HUGE_PAGE_TUNABLE,
    TUNABLES_VARIABLE,
    huge_page_environment,
    is_glibc,
)

REPO = Path(__file__).resolve().parents[1]
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def transparent_huge_pages_usable() -> bool:
    """glibc, and the kernel's THP mode is ``always`` or ``madvise`` (the selected mode is in brackets)."""
    return is_glibc() and THP_SETTING.is_file() and "[never]" not in THP_SETTING.read_text()


def test_the_tunable_is_added_and_other_tunables_are_kept() -> None:
    assert huge_page_environment({"HOME": "/h"}) == {"HOME": "/h", TUNABLES_VARIABLE: "glibc.malloc.hugetlb=1"}
    found = huge_page_environment({TUNABLES_VARIABLE: "glibc.malloc.arena_max=2"})
    assert found[TUNABLES_VARIABLE] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_the_users_own_setting_and_the_opt_out_win() -> None:
    users = {TUNABLES_VARIABLE: "glibc.malloc.hugetlb=0"}
    assert huge_page_environment(users) == users
    opted_out = {HOST_ALLOCATOR_VARIABLE: "system"}
    assert huge_page_environment(opted_out) == opted_out


def run_python(code: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {**environment, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env=environment)


RELAUNCH_CODE = """
import sys
from partsim_core.host_memory import relaunch_with_huge_pages
relaunch_with_huge_pages([sys.executable, "-c", "import os; print('relaunched', os.environ['GLIBC_TUNABLES'])"])
print("not relaunched")
"""


@pytest.mark.skipif(not is_glibc(), reason="the tunable exists only in glibc")
def test_a_process_without_the_tunable_starts_again_once_with_it() -> None:
    environment = {name: value for name, value in os.environ.items()
                   if name not in (TUNABLES_VARIABLE, HOST_ALLOCATOR_VARIABLE)}
    completed = run_python(RELAUNCH_CODE, environment)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["relaunched", HUGE_PAGE_TUNABLE]
    already = run_python(RELAUNCH_CODE, huge_page_environment(environment))
    assert already.stdout.split() == ["not", "relaunched"]
    opted_out = run_python(RELAUNCH_CODE, {**environment, HOST_ALLOCATOR_VARIABLE: "system"})
    assert opted_out.stdout.split() == ["not", "relaunched"]


def test_the_partsim_command_still_answers_after_relaunching() -> None:
    environment = {name: value for name, value in os.environ.items() if name != TUNABLES_VARIABLE}
    completed = subprocess.run([sys.executable, "-m", "partsim_core.cli", "--version"], capture_output=True,
                               text=True, timeout=120, check=False, env={**environment, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().startswith("partsim ")


PAGE_FAULTS_CODE = """
import json, resource
import torch
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = torch.empty(16 * 2 ** 20)  # 64 MiB: above glibc's highest mmap threshold (32 MiB), mapped afresh
    buffer.fill_(1.0)
    del buffer
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


@pytest.mark.skipif(not transparent_huge_pages_usable(), reason="needs glibc and transparent huge pages")
def test_with_the_tunable_a_large_tensor_costs_far_fewer_page_faults() -> None:
    plain = {name: value for name, value in os.environ.items() if name != TUNABLES_VARIABLE}
    pages_of_64_mib = 2 ** 26 // os.sysconf("SC_PAGE_SIZE")
    default = json.loads(run_python(PAGE_FAULTS_CODE, plain).stdout.splitlines()[-1])
    tuned = json.loads(run_python(PAGE_FAULTS_CODE, huge_page_environment(plain)).stdout.splitlines()[-1])
    # Default: every page of every fresh 64 MiB buffer faults. Tunable: one fault per 2 MiB huge page (~32), plus
    # the odd 4 KiB page at the unaligned ends; a tenth of the default leaves ample room.
    assert min(default) > pages_of_64_mib // 2
    assert max(tuned) < pages_of_64_mib // 10
