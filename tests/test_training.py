"""The training engine: determinism, exact resume, artefacts, early stopping, precision, workers and DDP.

Every task here is a tiny MLP (with dropout, so resume must also restore the RNG) regressing random data.

On this machine any ``torch.set_num_threads`` call (and a batch-making thread beside the training ops) breaks later
``torch.linalg.lu_solve`` calls in the same process (the BSS metrics). So this module's pytest process never changes
the thread count: an autouse fixture refuses ``torch.set_num_threads`` here (which also proves that the default
training path leaves it alone), and the tests of the prefetch thread and of the intra-op thread setting run their
bodies in a fresh Python process (:func:`run_in_fresh_process`) and assert on what it returns.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from partsim_core.errors import PartsimError
from partsim_core.training import TrainConfig, artefact_dir, train
from partsim_core.training_artefacts import load_trained

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def thread_count_stays_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse ``torch.set_num_threads`` in this (pytest) process: it would poison later LAPACK calls. Processes
    forked from it (DataLoader workers set 1 thread each) keep the real call."""
    original, pytest_process = torch.set_num_threads, os.getpid()

    def refuse(threads: int) -> None:
        if os.getpid() != pytest_process:
            return original(threads)
        raise AssertionError(f"torch.set_num_threads({threads}) in the pytest process breaks later LAPACK calls; "
                             "run the body with run_in_fresh_process")
    monkeypatch.setattr(torch, "set_num_threads", refuse)


FRESH_PROCESS_CODE = """
import pickle, sys
function, arguments, out = sys.argv[1], pickle.loads(bytes.fromhex(sys.argv[2])), sys.argv[3]
import test_training
result = getattr(test_training, function)(*arguments)
with open(out, "wb") as file:
    pickle.dump(result, file)
"""


def run_in_fresh_process(tmp_path: Path, function: str, *arguments: Any) -> Any:
    """``test_training.<function>(*arguments)`` run in a new Python process (same import path); its result.

    For bodies that change torch's thread settings or start a batch thread, so that this process never does.
    """
    out = tmp_path / f"{function}-result.pkl"
    path = os.pathsep.join([str(TESTS_DIR), *(entry for entry in sys.path if entry)])
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CODE, function, pickle.dumps(arguments).hex(), str(out)],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": path})
    assert completed.returncode == 0, completed.stderr[-3000:]
    return pickle.loads(out.read_bytes())


class Interrupted(Exception):
    """Raised by a task to simulate a crash."""


class LinearTask:
    """Regression y = x @ w + noise; batch (epoch, step) is a pure function of (seed, epoch, step)."""

    def __init__(self, seed: int = 0, fail_at: tuple[int, int] | None = None, sleep: float = 0.0,
                 validation: list[float] | None = None, nan_at_step: int | None = None) -> None:
        self.seed, self.fail_at, self.sleep, self.nan_at_step = seed, fail_at, sleep, nan_at_step
        self.validation = validation
        self.calls: list[tuple[int, int]] = []
        self.validation_calls = 0

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                   torch.nn.Linear(8, 1))

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (epoch, step) == self.fail_at:
            raise Interrupted(f"killed at epoch {epoch} step {step}")
        self.calls.append((epoch, step))
        if self.sleep:
            time.sleep(self.sleep)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step)
        x = torch.randn(8, 4, generator=generator)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(8, 1, generator=generator)
        if self.nan_at_step is not None and step == self.nan_at_step:
            x[0, 0] = float("nan")
        return x, y

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        if self.validation is None:
            return None
        self.validation_calls += 1
        return self.validation[self.validation_calls - 1]


class NoDropoutTask(LinearTask):
    """The same regression without dropout (DDP ranks draw different dropout masks than one process would)."""

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # Two forward passes per step, as a triplet loss makes three: DDP must still average the gradients.
        x, y = batch
        half = len(x) // 2
        mse = torch.nn.functional.mse_loss
        return (mse(model(x[:half]), y[:half]) + mse(model(x[half:]), y[half:])) / 2


def config(**overrides) -> TrainConfig:
    settings = {"run_name": "tiny", "seed": 7, "epochs": 3, "steps_per_epoch": 5, "batch_size": 8, "lr": 1e-2,
                "checkpoint_every": 4, "model": {"hidden": 8}, "data": {"dim": 4}}
    settings.update(overrides)
    return TrainConfig(**settings)


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_training_is_deterministic_and_writes_the_artefact(tmp_path: Path) -> None:
    initial = LinearTask().build_model()
    first = train(LinearTask(), config(), tmp_path / "a", progress=False)
    second = train(LinearTask(), config(), tmp_path / "b", progress=True)
    assert_same_weights(first.model, second.model)
    assert not first.reused and not first.model.training
    assert not torch.equal(initial[0].weight, first.model[0].weight)  # it did train
    assert [row["epoch"] for row in first.history] == [1, 2, 3]
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"model.pt", "model.pt.blake2b", "config.json",
                                                           "history.json"}
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert recorded["key"] == config().key() and recorded["seed"] == 7
    assert recorded["config"]["lr"] == 1e-2 and recorded["config"]["model"] == {"hidden": 8}
    assert recorded["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert recorded["device"] == "cpu" and isinstance(recorded["git_commit"], str) and recorded["git_commit"]
    assert json.loads((tmp_path / "a" / "history.json").read_text()) == first.history


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = train(LinearTask(), config(), tmp_path / "reference", progress=False)
    # global steps 1-5 in epoch 0 (checkpoint at 4 and at the epoch end), 6-8 in epoch 1 (checkpoint at 8 = step 3)
    with pytest.raises(Interrupted):
        train(LinearTask(fail_at=(1, 3)), config(), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "model.pt").exists()
    task = LinearTask()
    resumed = train(task, config(), tmp_path / "run", progress=False)
    assert task.calls == [(1, 3), (1, 4)] + [(2, step) for step in range(5)]  # continued, did not restart
    assert_same_weights(reference.model, resumed.model)
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in reference.history]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = {"epochs": 3, "steps_per_epoch": 30, "checkpoint_every": 7}
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_training import LinearTask, config
        from partsim_core.training import train
        train(LinearTask(sleep=0.03), config(**{settings!r}), {str(run_dir)!r}, progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(0.25)  # somewhere mid-epoch, possibly mid-write of a later checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "model.pt").exists(), "the run finished before it was killed"
    task = LinearTask()
    resumed = train(task, config(**settings), run_dir, progress=False)
    assert 0 < len(task.calls) < 90
    reference = train(LinearTask(), config(**settings), tmp_path / "reference", progress=False)
    assert_same_weights(reference.model, resumed.model)


def test_finished_run_is_reused_without_training(tmp_path: Path) -> None:
    first = train(LinearTask(), config(), tmp_path, progress=False)
    task = LinearTask()
    again = train(task, config(device="cpu", num_workers=0, checkpoint_every=99), tmp_path, progress=False)
    assert again.reused and task.calls == [] and again.history == first.history
    assert_same_weights(first.model, again.model)
    assert_same_weights(first.model, load_trained(tmp_path, LinearTask().build_model(), config().key()))
    fresh_task = LinearTask()
    fresh = train(fresh_task, config(), tmp_path, resume=False, progress=False)
    assert not fresh.reused and len(fresh_task.calls) == 15
    assert_same_weights(first.model, fresh.model)


def test_artefact_of_another_config_is_refused_naming_both_keys(tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        train(LinearTask(fail_at=(1, 0)), config(), tmp_path, progress=False)
    other = config(lr=5e-3)
    with pytest.raises(PartsimError) as error:
        train(LinearTask(), other, tmp_path, progress=False)
    assert config().key() in str(error.value) and other.key() in str(error.value)
    assert "checkpoint.pt" in str(error.value)
    result = train(LinearTask(), other, tmp_path, resume=False, progress=False)
    assert not result.reused
    with pytest.raises(PartsimError, match=other.key()):
        train(LinearTask(), config(), tmp_path, progress=False)  # finished model.pt of `other`
    with pytest.raises(PartsimError, match="expected key"):
        load_trained(tmp_path, LinearTask().build_model(), expected_key=config().key())
    with pytest.raises(PartsimError, match="not found"):
        load_trained(tmp_path / "missing", LinearTask().build_model())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PartsimError, match="checkpoint.pt"):
        train(LinearTask(), config(), tmp_path, progress=False)


def damage_checkpoint_weights(checkpoint: Path, damage: str) -> None:
    """Rewrite ``checkpoint``'s model weights as an older partsim with another model would have written them
    (same config key): an extra parameter (like the CSN's removed norm-loss bias), a missing one, another shape."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = payload["model"]
    if damage == "extra":
        weights["norm_bias"] = torch.zeros(5)
    elif damage == "missing":
        del weights["3.bias"]
    else:
        weights["0.weight"] = torch.zeros(8, 5)
    torch.save(payload, checkpoint)


@pytest.mark.parametrize("damage", ["extra", "missing", "reshaped"])
def test_incompatible_checkpoint_names_the_file_and_fresh_and_deletes_nothing(tmp_path: Path, damage: str) -> None:
    with pytest.raises(Interrupted):
        train(LinearTask(fail_at=(1, 2)), config(), tmp_path, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    damage_checkpoint_weights(checkpoint, damage)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(PartsimError) as raised:
        train(LinearTask(), config(), tmp_path, progress=False)
    message = str(raised.value)
    assert str(checkpoint) in message and "--fresh" in message and "\n" not in message
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    # The advice works: --fresh (resume=False) trains the run from the start.
    again = train(LinearTask(), config(), tmp_path, resume=False, progress=False)
    assert not again.reused and [row["epoch"] for row in again.history] == [1, 2, 3]


def test_a_finished_model_verifies_itself_when_loaded(tmp_path: Path) -> None:
    import os

    first = train(LinearTask(), config(), tmp_path, progress=False)
    model_path = tmp_path / "model.pt"
    assert (tmp_path / "model.pt.blake2b").is_file()
    # A bit flipped inside the stored weights: the file still unpickles, so only the checksum can tell.
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_path.write_bytes(bytes(data))
    os.utime(model_path, ns=(1, 1))
    with pytest.raises(PartsimError, match="checksum"):
        load_trained(tmp_path, LinearTask().build_model())
    with pytest.raises(PartsimError, match="checksum"):
        train(LinearTask(), config(), tmp_path, progress=False)
    # --fresh (resume=False) retrains and writes a verified model again.
    again = train(LinearTask(), config(), tmp_path, resume=False, progress=False)
    assert not again.reused
    assert_same_weights(first.model, load_trained(tmp_path, LinearTask().build_model()))


def test_non_finite_weights_are_refused_on_load(tmp_path: Path) -> None:
    train(LinearTask(), config(), tmp_path, progress=False)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))
    torch.save(payload, tmp_path / "model.pt")
    (tmp_path / "model.pt.blake2b").unlink()  # a model written before checksums existed
    with pytest.raises(PartsimError, match="non-finite"):
        load_trained(tmp_path, LinearTask().build_model())


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    task = LinearTask(validation=[1.0, 0.5, 0.6, 0.7, 0.8, 0.9])  # best after epoch 2, then rising
    result = train(task, config(epochs=6, early_stopping_patience=2), tmp_path / "stop", progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]  # 2 epochs without improvement
    assert [row["val_loss"] for row in result.history] == [1.0, 0.5, 0.6, 0.7]
    two_epochs = train(LinearTask(), config(epochs=2), tmp_path / "two", progress=False)
    assert_same_weights(two_epochs.model, result.model)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PartsimError, match="not finite"):
        train(LinearTask(nan_at_step=2), config(checkpoint_every=1), tmp_path, progress=False)
    assert not (tmp_path / "model.pt").exists()


def test_bf16_autocast_works_on_cpu_and_fp16_is_refused(tmp_path: Path) -> None:
    result = train(LinearTask(), config(amp="bf16", epochs=1), tmp_path / "bf16", progress=False)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)
    with pytest.raises(PartsimError, match="fp16"):
        train(LinearTask(), config(amp="fp16"), tmp_path / "fp16", progress=False)
    assert not (tmp_path / "fp16").exists()


@pytest.mark.parametrize("native", [True, False])
def test_native_amp_is_bf16_only_where_the_cpu_computes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            native: bool) -> None:
    """``amp="native"``: bf16 autocast on a CPU with native bf16 (the same run as ``amp="bf16"``), float32 elsewhere
    (the same run as ``amp="off"``); config.json records which."""
    import json

    import partsim_core.training as training

    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    result = train(LinearTask(), config(amp="native", epochs=2), tmp_path / "native", progress=False)
    peer = train(LinearTask(), config(amp="bf16" if native else "off", epochs=2), tmp_path / "peer", progress=False)
    assert_same_weights(result.model, peer.model)
    recorded = json.loads((tmp_path / "native" / "config.json").read_text())
    assert recorded["autocast"] == ("bfloat16" if native else "off")
    assert recorded["config"]["amp"] == "native"


def test_default_preset_trains_in_native_bf16_and_the_others_as_before() -> None:
    from partsim_core.presets import PRESETS

    assert PRESETS["default"].amp == "native"
    assert PRESETS["smoke"].amp == PRESETS["paper"].amp == "auto"   # smoke: float32 on CPU (the regression store)


def test_dataloader_workers_give_the_same_result(tmp_path: Path) -> None:
    inline = train(LinearTask(), config(epochs=2), tmp_path / "inline", progress=False)
    workers = train(LinearTask(), config(epochs=2, num_workers=2), tmp_path / "workers", progress=False)
    assert_same_weights(inline.model, workers.model)


def test_config_key_and_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = config()
    assert base.key() == config(device="cuda", num_workers=4, checkpoint_every=1).key()
    assert len({base.key(), config(lr=2e-2).key(), config(seed=8).key(), config(model={"hidden": 9}).key()}) == 4
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path))
    assert artefact_dir("part", base) == tmp_path / "models" / "part" / f"tiny-{base.key()}"
    for bad in ({"run_name": "../x"}, {"epochs": 0}, {"lr": float("nan")}, {"amp": "int8"},
                {"early_stopping_patience": 0}, {"model": {"f": object()}}, {"steps_per_epoch": 1.5}):
        with pytest.raises(PartsimError):
            config(**bad)
    with pytest.raises(PartsimError, match="device"):
        train(LinearTask(), config(device="tpu"), tmp_path / "x", progress=False)


DDP_CONFIG = TrainConfig(run_name="ddp", seed=3, epochs=2, steps_per_epoch=4, lr=1e-2, checkpoint_every=3)
DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
import partsim_core.training as training
import partsim_core.training_artefacts as training_artefacts
from test_training import DDP_CONFIG, NoDropoutTask

rank = os.environ["RANK"]
dump = Path({dump!r})
writes = []
original = training_artefacts.atomic_write_bytes
def recording_write(path, data):
    writes.append(Path(path).name)
    return original(path, data)
training_artefacts.atomic_write_bytes = recording_write
result = training.train(NoDropoutTask(), DDP_CONFIG, Path({out!r}), progress=False)
torch.save(result.model.state_dict(), dump / f"weights-{{rank}}.pt")
(dump / f"writes-{{rank}}.json").write_text(json.dumps({{"writes": writes, "history": result.history}}))
torch.distributed.destroy_process_group()
"""


class PairedTask(NoDropoutTask):
    """Single-process equivalent of 2 DDP ranks: step s concatenates the ranks' batches 2s and 2s+1."""

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = LinearTask.batch(self, epoch, 2 * step), LinearTask.batch(self, epoch, 2 * step + 1)
        return torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])


def test_ddp_with_two_cpu_processes_ends_with_identical_weights(tmp_path: Path) -> None:
    out, dump = tmp_path / "out", tmp_path / "dump"
    dump.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS_DIR), dump=str(dump), out=str(out)))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script)],
        capture_output=True, text=True, timeout=240, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0, rank1 = (torch.load(dump / f"weights-{rank}.pt") for rank in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    log0, log1 = (json.loads((dump / f"writes-{rank}.json").read_text()) for rank in (0, 1))
    assert log1["writes"] == [] and "model.pt" in log0["writes"] and "checkpoint.pt" in log0["writes"]
    assert [row["train_loss"] for row in log0["history"]] == [row["train_loss"] for row in log1["history"]]
    assert {p.name for p in out.iterdir()} == {"model.pt", "model.pt.blake2b", "config.json", "history.json"}
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    written = load_trained(out, NoDropoutTask().build_model()).state_dict()
    assert all(torch.equal(written[name], rank0[name]) for name in rank0)
    # DDP averages the ranks' gradients: the same as one process on both ranks' batches, up to float rounding.
    reference = train(PairedTask(), DDP_CONFIG, tmp_path / "paired", progress=False).model.state_dict()
    for name in reference:
        assert torch.allclose(rank0[name], reference[name], atol=1e-5), name
        assert not torch.equal(rank0[name], NoDropoutTask().build_model().state_dict()[name])


# ---------------------------------------------------------------------------------------------------------------
# The faster CPU step (issue 14 item 4): prefetch thread + intra-op thread setting compute the same thing
# ---------------------------------------------------------------------------------------------------------------


def test_prefetched_yields_every_batch_in_order_and_surfaces_errors() -> None:
    from partsim_core.training import prefetched

    made: list[int] = []

    def make(index: int) -> int:
        made.append(index)
        if index == 7:
            raise Interrupted("bad batch")
        return index * 10

    assert list(prefetched(make, [3, 1, 2])) == [30, 10, 20]
    assert list(prefetched(make, [])) == []
    iterator = prefetched(make, [5, 7, 9])
    assert next(iterator) == 50
    with pytest.raises(Interrupted, match="bad batch"):
        next(iterator)


def intra_op_threads_in_this_process() -> dict[str, int]:
    """Fresh-process body: the thread count before, inside and after ``intra_op_threads(1)``."""
    from partsim_core.training import intra_op_threads

    before = torch.get_num_threads()
    with intra_op_threads(1):
        inside = torch.get_num_threads()
    return {"before": before, "inside": inside, "after": torch.get_num_threads()}


def test_cpu_step_threads_and_their_restoration(tmp_path: Path) -> None:
    from partsim_core.training import cpu_step_threads, intra_op_threads, usable_cores

    cpu = torch.device("cpu")
    assert cpu_step_threads(cpu, None, prefetch=True) == max(1, usable_cores() - 1)
    assert cpu_step_threads(cpu, None, prefetch=False) is None
    assert cpu_step_threads(cpu, 3) == 3
    assert cpu_step_threads(torch.device("meta"), None) is None
    with pytest.raises(PartsimError, match="cpu_threads"):
        cpu_step_threads(cpu, 0)
    with intra_op_threads(None):  # None: torch's setting is left alone (no call at all)
        pass
    threads = run_in_fresh_process(tmp_path, "intra_op_threads_in_this_process")
    assert threads["inside"] == 1 and threads["after"] == threads["before"]
    with pytest.raises(PartsimError, match="cpu_threads"):
        TrainConfig(run_name="x", cpu_threads=0)
    # Speed settings are not part of what a run computes.
    assert TrainConfig(run_name="x", prefetch=False, cpu_threads=2).key() == TrainConfig(run_name="x").key()


def prefetch_and_inline_weights(folder: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Fresh-process body: the weights trained with the prefetch thread (and its thread setting), then inline."""
    prefetching = train(NoDropoutTask(), config(epochs=2, steps_per_epoch=5, prefetch=True), Path(folder) / "a",
                        progress=False)
    inline = train(NoDropoutTask(), config(epochs=2, steps_per_epoch=5, prefetch=False), Path(folder) / "b",
                   progress=False)
    return ([p.detach().clone() for p in prefetching.model.parameters()],
            [p.detach().clone() for p in inline.model.parameters()])


def test_prefetch_gives_the_same_weights_as_inline_batches(tmp_path: Path) -> None:
    prefetching, inline = run_in_fresh_process(tmp_path, "prefetch_and_inline_weights", str(tmp_path))
    assert len(prefetching) == len(inline) == 4
    for first, second in zip(prefetching, inline, strict=True):
        torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)
    assert not torch.equal(prefetching[0], NoDropoutTask().build_model()[0].weight)  # it did train


def test_default_training_leaves_the_thread_count_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default path (prefetch off, no cpu_threads) never calls set_num_threads (the autouse fixture refuses
    it) nor starts a batch thread."""
    from partsim_core import training

    defaults = TrainConfig(run_name="defaults")
    assert defaults.prefetch is False and defaults.cpu_threads is None and defaults.num_workers == 0

    def no_thread_pool(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the default training path started a batch thread")
    monkeypatch.setattr(training.concurrent.futures, "ThreadPoolExecutor", no_thread_pool)
    before = torch.get_num_threads()
    result = train(LinearTask(), TrainConfig(run_name="defaults", epochs=2, steps_per_epoch=3, device="cpu"),
                   tmp_path, progress=False)
    assert len(result.history) == 2 and torch.get_num_threads() == before


class _RandomCSNTask:
    """Random log-mel triplets for the CSN loss of condition (i) (basic + additional triplets + norm loss)."""

    def __init__(self) -> None:
        from partsim_core.csn.network import CSNLoss

        self.loss_fn = CSNLoss(additional=True, norm=True)

    def batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(1_000 * epoch + step)
        size = 6
        present = (torch.rand(size, 3, 5, generator=generator) > 0.4).float()
        return {"anchor": torch.rand(size, 24, 20, generator=generator),
                "positive": torch.rand(size, 24, 20, generator=generator),
                "negative": torch.rand(size, 24, 20, generator=generator),
                "condition": torch.randint(0, 5, (size,), generator=generator),
                "additional_condition": torch.tensor([-1, 0, 3, -1, 4, 1]),
                "powers": present * 0.1, "present": present}


def old_and_new_cpu_steps(network: str) -> tuple[list, list]:
    """Fresh-process body: loss and gradients of three steps, inline on torch's default threads ("old"), then with
    the prefetch thread and 1 intra-op thread ("new")."""
    from partsim_core.csn.network import CSNModel
    from partsim_core.losses import triplet_loss
    from partsim_core.models import PartCNN
    from partsim_core.training import intra_op_threads, prefetched

    task = _RandomCSNTask()
    torch.manual_seed(0)
    model = CSNModel(24, width=2) if network == "csn" else PartCNN(24, width=4)

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if network == "csn":
            return task.loss_fn(model, batch)
        anchor, positive, negative = model(torch.cat([batch["anchor"], batch["positive"],
                                                      batch["negative"]])).chunk(3)
        return triplet_loss(anchor, positive, negative)

    def gradients(batch: dict[str, torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        return loss.item(), [parameter.grad.clone() for parameter in model.parameters()]

    old = [gradients(task.batch(0, step)) for step in range(3)]             # inline, default threads
    with intra_op_threads(1):
        new = [gradients(batch) for batch in prefetched(lambda step: task.batch(0, step), [0, 1, 2])]
    return old, new


@pytest.mark.parametrize("network", ["csn", "part"])
def test_new_cpu_step_equals_the_old_inline_step(network: str, tmp_path: Path) -> None:
    """The step as the engine now runs it (prefetch thread, 1 intra-op thread) gives the loss and gradients of
    the old inline step on torch's default threads, to float tolerance, for the CSN and a part network."""
    old, new = run_in_fresh_process(tmp_path, "old_and_new_cpu_steps", network)
    assert len(new) == len(old) == 3
    for (old_loss, old_grads), (new_loss, new_grads) in zip(old, new, strict=True):
        assert old_loss > 0
        assert new_loss == pytest.approx(old_loss, rel=1e-5, abs=1e-6)
        for first, second in zip(old_grads, new_grads, strict=True):
            # Threads sum in another order: float32 reductions differ in the last digits, relative to the size
            # of each gradient (a single element near 0 can differ by more than its own size).
            scale = float(first.abs().max())
            assert scale > 0
            assert float((second - first).abs().max()) <= 1e-3 * scale
