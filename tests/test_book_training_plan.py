"""The book's training step (partsim_core.book.training_plan): the plan of every model, and the pool running it.

The pool tests use trivial jobs (module-level functions, picklable into spawned workers) that write what they see
into files; no model is trained there. The slow test trains the smoke plan with two workers into a private cache and
then runs the chapter runners, which must train nothing.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
from conftest import process_running

from partsim_core.book.training_plan import THREAD_VARIABLES, Job, run_training_jobs, worker_environment
from partsim_core.errors import PartsimError

# ---------------------------------------------------------------------------------------------------------------
# Trivial jobs (run in spawned workers: module-level, arguments picklable)
# ---------------------------------------------------------------------------------------------------------------


def _record(log: str, name: str, seconds: float = 0.0) -> dict:
    """Append ``start`` and ``end`` lines (with the pid) to ``log``, sleeping ``seconds`` between them."""
    with open(log, "a") as handle:
        handle.write(f"start {name} {os.getpid()} {time.time()}\n")
    time.sleep(seconds)
    with open(log, "a") as handle:
        handle.write(f"end {name} {os.getpid()} {time.time()}\n")
    return {"pid": os.getpid()}


def _fail(message: str) -> None:
    raise ValueError(message)


def _fail_once_started(log: str, other: str, message: str) -> None:
    """Wait until job ``other`` has started (its line in ``log``), then fail."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if Path(log).is_file() and f"start {other} " in Path(log).read_text():
            break
        time.sleep(0.1)
    raise ValueError(message)


def _fail_partsim(message: str) -> None:
    raise PartsimError(message)


def _threads() -> dict:
    import torch

    return {"omp": os.environ.get("OMP_NUM_THREADS"), "mkl": os.environ.get("MKL_NUM_THREADS"),
            "torch": torch.get_num_threads(), "pid": os.getpid()}


def _square(value: int) -> int:
    return value * value


def _uses_a_process_pool() -> list[int]:
    # What the crossover's style-mix job does when it renders: a process pool inside the worker.
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_square, [2, 3]))


def _events(log: Path) -> list[tuple[str, str, int]]:
    return [(kind, name, int(pid)) for kind, name, pid, _ in (line.split() for line in log.read_text().splitlines())]


# ---------------------------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------------------------


def test_pool_runs_jobs_in_dependency_order_on_two_workers(tmp_path):
    log = str(tmp_path / "log.txt")
    jobs = [
        Job("d", functools.partial(_record, log, "d"), after=("b", "c")),
        Job("b", functools.partial(_record, log, "b", 0.3), after=("a",)),
        Job("c", functools.partial(_record, log, "c", 0.3), after=("a",)),
        Job("a", functools.partial(_record, log, "a")),
    ]
    results = run_training_jobs(jobs, workers=2, progress=False)
    assert set(results) == {"a", "b", "c", "d"}
    events = _events(Path(log))
    position = {(kind, name): index for index, (kind, name, _) in enumerate(events)}
    assert position[("end", "a")] < position[("start", "b")]
    assert position[("end", "a")] < position[("start", "c")]
    assert position[("start", "d")] > max(position[("end", "b")], position[("end", "c")])
    pids = {pid for _, _, pid in events}
    # b and c are ready together with two idle workers: each gets one.
    assert len(pids) == 2 and os.getpid() not in pids
    assert results["b"]["pid"] != results["c"]["pid"]


def test_pool_never_uses_more_workers_than_asked(tmp_path):
    log = str(tmp_path / "log.txt")
    jobs = [Job(f"j{n}", functools.partial(_record, log, f"j{n}", 0.05)) for n in range(5)]
    results = run_training_jobs(jobs, workers=2, progress=False)
    assert len({value["pid"] for value in results.values()}) == 2
    assert len(results) == 5


def test_workers_run_torch_on_one_thread_and_leave_the_parent_environment_alone(tmp_path):
    before = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    results = run_training_jobs([Job("t1", _threads), Job("t2", _threads)], workers=2, progress=False)
    for value in results.values():
        assert value["omp"] == "1" and value["mkl"] == "1"
        assert value["torch"] == 1
        assert value["pid"] != os.getpid()
    assert {name: os.environ.get(name) for name in before} == before


def test_a_job_may_start_processes_of_its_own():
    # Daemonic workers could not (a real failure: the style-mix separator's rendering in the smoke book build).
    results = run_training_jobs([Job("pool", _uses_a_process_pool), Job("other", _threads)], workers=2,
                                progress=False)
    assert results["pool"] == [4, 9]


def test_a_failing_job_is_named_and_stops_the_others(tmp_path):
    log = tmp_path / "log.txt"
    jobs = [Job("slow", functools.partial(_record, str(log), "slow", 60.0)),
            Job("broken", functools.partial(_fail_once_started, str(log), "slow", "boom")),
            Job("later", functools.partial(_record, str(log), "later"), after=("broken",))]
    started = time.perf_counter()
    with pytest.raises(PartsimError, match=r"training job 'broken' failed: ValueError: boom"):
        run_training_jobs(jobs, workers=2, progress=False)
    assert time.perf_counter() - started < 55  # the 60-s job was stopped, not waited for
    events = _events(log)
    assert ("end", "slow") not in [(kind, name) for kind, name, _ in events]
    assert "later" not in {name for _, name, _ in events}
    slow_pid = next(pid for kind, name, pid in events if name == "slow")
    with pytest.raises(ProcessLookupError):
        os.kill(slow_pid, 0)


def test_a_partsim_error_keeps_its_message(tmp_path):
    jobs = [Job("x", functools.partial(_fail_partsim, "no triplets for bass"))]
    for workers in (1, 2):
        with pytest.raises(PartsimError, match=r"^training job 'x' failed: no triplets for bass$"):
            run_training_jobs(jobs + [Job("y", functools.partial(_record, str(tmp_path / "l"), "y"))],
                              workers=workers, progress=False)


def test_one_worker_runs_in_this_process_in_dependency_order(tmp_path):
    log = tmp_path / "log.txt"
    jobs = [Job("second", functools.partial(_record, str(log), "second"), after=("first",)),
            Job("first", functools.partial(_record, str(log), "first"))]
    results = run_training_jobs(jobs, workers=1, progress=False)
    assert [name for kind, name, _ in _events(log) if kind == "start"] == ["first", "second"]
    assert {value["pid"] for value in results.values()} == {os.getpid()}
    with pytest.raises(PartsimError, match=r"training job 'bad' failed: ValueError: nope"):
        run_training_jobs([Job("bad", functools.partial(_fail, "nope"))], workers=1, progress=False)


@pytest.mark.parametrize(("jobs", "message"), [
    ([Job("a", _threads), Job("a", _threads)], "two training jobs are named 'a'"),
    ([Job("a", _threads, after=("ghost",))], "unknown job"),
    ([Job("a", _threads, after=("b",)), Job("b", _threads, after=("a",))], "cycle"),
])
def test_bad_job_lists_are_refused_before_anything_runs(jobs, message):
    with pytest.raises(PartsimError, match=message):
        run_training_jobs(jobs, workers=2, progress=False)


def test_workers_must_be_positive():
    with pytest.raises(PartsimError, match="workers must be a positive integer"):
        run_training_jobs([Job("a", _threads)], workers=0, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# The plan (expected names and order written from the chapter runners' code)
# ---------------------------------------------------------------------------------------------------------------

PARTS = ("drums", "bass", "piano", "guitar", "others")

#: run_chapter3: the separator (first seed) and its separation, then per part ideal + separated, then the mix;
#: smoke's separator trains 1 epoch, so the quality curve adds no earlier U-Net. run_chapter4: the pre-training's
#: five target networks (on the first 8 training tracks, not chapter 3's 16), the pre-training (= (b)), then
#: (c)-(k); its (a) networks and chapter 6's models (seed 0) are the same as chapter 3's and 4's; last, the
#: crossover's style-mix separator.
SMOKE_NAMES = [
    "separator/seed0", "separated-stems/separator-seed0",
    *[name for part in PARTS for name in (f"part-{part}-ideal/seed0", f"part-{part}-separated/seed0")],
    "track-mix/seed0",
    *[f"pretraining-target-{part}/seed0" for part in PARTS],
    "csn-pretrain/seed0",
    "csn-c/seed0", "csn-d/seed0", "csn-e/seed0", "csn-f/seed0", "csn-g/seed0", "csn-h/seed0", "csn-i/seed0",
    "csn-j/seed0", "csn-k/seed0",
    # The crossover's U-Net trained on the shifted style mix (csn.crossover's smoke sweep has "style-mix").
    "separator-style-mix/seed0",
]


@pytest.fixture(scope="module")
def smoke_data():
    from partsim_core.data.dataset import load_dataset

    return load_dataset("smoke")


def test_smoke_plan_lists_every_model_once_with_its_dependencies(smoke_data):
    from partsim_core.book.training_plan import book_training_jobs

    jobs = book_training_jobs(smoke_data, seeds=[0], device="cpu")
    assert [job.name for job in jobs] == SMOKE_NAMES
    after = {job.name: set(job.after) for job in jobs}
    assert after["separated-stems/separator-seed0"] == {"separator/seed0"}
    for part in PARTS:
        assert after[f"part-{part}-separated/seed0"] == {"separated-stems/separator-seed0"}
        assert after[f"part-{part}-ideal/seed0"] == set()
    assert after["csn-pretrain/seed0"] == {f"pretraining-target-{part}/seed0" for part in PARTS}
    for letter in "ehij":
        assert after[f"csn-{letter}/seed0"] == {"csn-pretrain/seed0"}
    for letter in "cdfgk":
        assert after[f"csn-{letter}/seed0"] == set()


def test_plan_with_three_seeds_shares_one_separator_across_chapters(smoke_data):
    from partsim_core.book.training_plan import book_training_jobs

    names = [job.name for job in book_training_jobs(smoke_data, seeds=[0, 1, 2], device="cpu")]
    assert len(names) == len(set(names))
    # chapter 3: 2 + 3 x 11; chapter 4: 3 x (5 targets + pre-training + 9 conditions) + the style-mix U-Net;
    # chapter 6 adds nothing:
    # its separated backend uses the seed-0 U-Net for every seed (mixquery.backends.SEPARATOR_SEED), whose
    # networks chapters 3 and 4 already train.
    assert len(names) == 2 + 33 + 45 + 1
    assert "separator/seed1" not in names and "separator/seed2" not in names
    assert "part-drums-separated/seed1" in names and "part-drums-separated/seed2" in names
    without_6 = [job.name for job in book_training_jobs(smoke_data, seeds=[0, 1, 2], device="cpu", chapters=(3, 4))]
    assert len(without_6) == 2 + 33 + 45 + 1


def test_plan_refuses_bad_seeds_and_backends(smoke_data):
    from partsim_core.book.training_plan import book_training_jobs

    with pytest.raises(PartsimError, match="seeds"):
        book_training_jobs(smoke_data, seeds=[])
    with pytest.raises(PartsimError):
        book_training_jobs(smoke_data, seeds=[0], backend="nonsense")
    with pytest.raises(PartsimError, match="chapter"):
        book_training_jobs(smoke_data, seeds=[0], chapters=(5,))


def test_plan_of_one_chapter_lists_only_its_models(smoke_data):
    from partsim_core.book.training_plan import book_training_jobs

    names = [job.name for job in book_training_jobs(smoke_data, seeds=[3], device="cpu", chapters=(6,))]
    # chapter 6 alone: condition (i) (pre-training and its targets first), the one U-Net (seed 0, whatever the
    # training seed), its separation, the five separated networks of seed 3 on it, the track network.
    assert names == [*[f"pretraining-target-{part}/seed3" for part in PARTS], "csn-pretrain/seed3", "csn-i/seed3",
                     "separator/seed0", "separated-stems/separator-seed0",
                     *[f"part-{part}-separated-separator0/seed3" for part in PARTS], "track-mix/seed3"]


def _finished_models(cache: Path) -> set[str]:
    return {str(path.parent.relative_to(cache)) for path in (cache / "models").rglob("model.pt")}


@pytest.mark.slow
def test_smoke_plan_trains_everything_the_chapter_runners_use(tmp_path, monkeypatch):
    """Plan + two workers into a private cache; then chapters 4, 3 and 6's model calls reuse every model."""
    from partsim_core.baseline.run import run_chapter3
    from partsim_core.book.training_plan import book_training_jobs
    from partsim_core.csn.run import run_chapter4
    from partsim_core.data.dataset import load_dataset
    from partsim_core.mixquery.backends import get_backend

    cache = tmp_path / "cache"
    monkeypatch.setenv("PARTSIM_CACHE", str(cache))
    data = load_dataset("smoke")
    jobs = book_training_jobs(data, seeds=[0], device="cpu")
    results = run_training_jobs(jobs, workers=2, progress=False)
    assert set(results) == set(SMOKE_NAMES)
    assert not any(value.get("reused") for value in results.values())
    trained = _finished_models(cache)
    # 1 separator + 11 chapter-3 networks + 5 targets + pre-training + 9 conditions + the crossover's style-mix U-Net
    assert len(trained) == 28

    chapter4 = run_chapter4(data, conditions="all", seeds=1, seed=0, device="cpu", progress=False)
    assert chapter4.reused and all(chapter4.reused.values()), chapter4.reused
    chapter3 = run_chapter3(data, device="cpu", seeds=[0], progress=False)
    assert chapter3.reused and all(chapter3.reused.values()), chapter3.reused
    for backend in ("csn", "separated", "track"):
        get_backend(backend, data, device="cpu", progress=False, seed=0)
    assert _finished_models(cache) == trained


# ---------------------------------------------------------------------------------------------------------------
# The step in `partsim book build` and `partsim train all`
# ---------------------------------------------------------------------------------------------------------------


def _tiny_book(root: Path) -> Path:
    """A repository whose table of contents lists chapter 4's notebook name and one chapter that trains nothing."""
    repo = root / "repo"
    (repo / "book").mkdir(parents=True)
    (repo / "book" / "intro.md").write_text("# Intro\n", encoding="utf-8")
    (repo / "_config.yml").write_text("title: tiny\n", encoding="utf-8")
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/data\n"
                                   "  - file: notebooks/ch4_csn_ablations\n", encoding="utf-8")
    for name in ("data", "ch4_csn_ablations"):
        path = repo / "notebooks" / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('# %% tags=["parameters"]\npreset = "smoke"\ndata_root = ""\n\n# %%\nx = 1\n',
                        encoding="utf-8")
    return repo


@pytest.mark.parametrize("jobs", [2, 1])
def test_book_build_trains_the_toc_chapters_before_any_notebook(tmp_path, monkeypatch, jobs):
    import partsim_core.book.build as build

    calls: list[tuple] = []
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "resolve_dataset_root", lambda preset, root, progress=True: Path(root))
    monkeypatch.setattr(build, "load_dataset", lambda preset, root, progress=True: ("data", preset, str(root)))

    def plan(data, seeds, device="auto", chapters=()):
        calls.append(("plan", data, list(seeds), device, list(chapters)))
        return ["job"]

    def run(planned, workers=None, progress=True, log=None):
        calls.append(("run", planned, workers))
        return {"job": {"reused": True}}

    def execute(source, *args, **kwargs):
        calls.append(("notebook", Path(source).name))
        raise PartsimError("stop after the first notebook")

    monkeypatch.setattr(build, "book_training_jobs", plan)
    monkeypatch.setattr(build, "run_training_jobs", run)
    monkeypatch.setattr(build, "execute_notebook", execute)
    data_root = tmp_path / "data"
    data_root.mkdir()
    with pytest.raises(PartsimError, match="stop after"):
        build.build_book("smoke", data_root=data_root, out_dir=tmp_path / "out", device="cpu", seed=2, seeds=3,
                         repo=_tiny_book(tmp_path), progress=False, log=lambda message: None, jobs=jobs)
    if jobs == 1:
        assert calls == [("notebook", "data.py")]  # no training step: the notebooks train
    else:
        assert calls == [("plan", ("data", "smoke", str(data_root)), [2, 3, 4], "cpu", [4]),
                         ("run", ["job"], 2), ("notebook", "data.py")]


def test_cli_train_all_and_book_build_take_jobs(capsys):
    from partsim_core.cli import main as partsim_main

    for command in (["train", "all"], ["book", "build"]):
        with pytest.raises(SystemExit) as exited:
            partsim_main([*command, "--help"])
        assert exited.value.code == 0
        assert "--jobs" in capsys.readouterr().out
        with pytest.raises(SystemExit) as exited:
            partsim_main([*command, "--jobs", "0"])
        assert exited.value.code == 2
        assert "positive integer" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from Linux /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap

    log = tmp_path / "log.txt"
    script = textwrap.dedent(f"""
        import functools, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import test_book_training_plan as t
        jobs = [t.Job(name, functools.partial(t._record, {str(log)!r}, name, 300.0)) for name in ("a", "b")]
        t.run_training_jobs(jobs, workers=2, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and parent.poll() is None and len(workers) < 2:
            workers = [pid for kind, _, pid in _events(log) if kind == "start"] if log.is_file() else []
            time.sleep(0.2)
        assert parent.poll() is None and len(workers) == 2, "the pool did not start both jobs"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(process_running(pid) for pid in workers):
            time.sleep(0.2)
        assert not [pid for pid in workers if process_running(pid)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers:
            if process_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_start_single_threaded_with_the_huge_page_tunable(monkeypatch: pytest.MonkeyPatch) -> None:
    from partsim_core.host_memory import HOST_ALLOCATOR_VARIABLE, HUGE_PAGE_TUNABLE, TUNABLES_VARIABLE

    monkeypatch.delenv(HOST_ALLOCATOR_VARIABLE, raising=False)
    monkeypatch.setenv(TUNABLES_VARIABLE, "glibc.malloc.arena_max=2")
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with worker_environment():
        assert all(os.environ[name] == "1" for name in THREAD_VARIABLES)
        assert os.environ[TUNABLES_VARIABLE] == f"glibc.malloc.arena_max=2:{HUGE_PAGE_TUNABLE}"
    # Restored afterwards: this process's own environment is the caller's.
    assert os.environ[TUNABLES_VARIABLE] == "glibc.malloc.arena_max=2" and os.environ["OMP_NUM_THREADS"] == "7"
    assert all(name not in os.environ for name in THREAD_VARIABLES if name != "OMP_NUM_THREADS")


def _reused_model() -> dict:
    return {"reused": True}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_finished_job_is_one_log_line(workers: int) -> None:
    lines: list[str] = []
    jobs = [Job("square/3", functools.partial(_square, 3)), Job("reused/seed0", _reused_model, after=("square/3",))]
    results = run_training_jobs(jobs, workers=workers, progress=False, log=lines.append)
    assert results == {"square/3": 9, "reused/seed0": {"reused": True}}
    assert [line.rsplit(" in ", 1)[0] for line in lines] == ["training: square/3 done",
                                                             "training: reused/seed0 reused"]
    assert all(line.endswith(" s") and float(line.rsplit(" in ", 1)[1][:-2]) >= 0.0 for line in lines)
