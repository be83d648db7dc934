"""The files of a training run (:mod:`partsim_core.training`): their names, how they are written and read back.

A run's folder holds ``checkpoint.pt`` while it trains and, once it has finished, ``history.json``,
``config.json`` (the config, key, seed, git commit, package versions and device: the run's provenance),
``model.pt.blake2b`` and ``model.pt`` (key + weights), written in that order: the presence of ``model.pt`` marks a
finished run. Every file is written atomically; :func:`load_trained` checks a finished model's checksum, key,
fit and finiteness before it hands the weights out.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import platform
import re
import subprocess
from pathlib import Path

import torch

from partsim_core.data.artefacts import file_checksum
from partsim_core.data.cache import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    repository_root,
)
from partsim_core.errors import PartsimError

CHECKPOINT_FILE, MODEL_FILE, CONFIG_FILE, HISTORY_FILE = "checkpoint.pt", "model.pt", "config.json", "history.json"
#: BLAKE2b of ``model.pt``'s bytes, written just before it: a finished model verifies itself when loaded.
MODEL_CHECKSUM_FILE = "model.pt.blake2b"
#: Every file a training run writes into its folder.
RUN_FILES = (CHECKPOINT_FILE, MODEL_FILE, MODEL_CHECKSUM_FILE, HISTORY_FILE, CONFIG_FILE)


def save_training_file(path: Path, payload: dict) -> None:
    """Write ``payload`` (tensors and plain containers, with a ``"key"``) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_file(path: Path) -> dict:
    """Read a checkpoint or model file written by the training engine (tensors and plain containers only).

    Raises:
        PartsimError: the file cannot be unpickled safely or holds no ``"key"``.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise PartsimError(f"{path} is not a readable partsim training file: {error}") from None
    if not isinstance(payload, dict) or "key" not in payload:
        raise PartsimError(f"{path} is not a partsim training file (no key)")
    return payload


def write_finished_run(out_dir: Path, model: torch.nn.Module, *, run_name: str, key: str, seed: int,
                       config: dict, history: list[dict], device: torch.device, world_size: int,
                       autocast: str = "off") -> None:
    """history.json and config.json (``config`` is the run's settings as a dict; ``autocast`` the dtype the
    run's mixed precision resolved to on this device, ``"off"`` for full precision), then model.pt last."""
    atomic_write_json(out_dir / HISTORY_FILE, history)
    tracked_changes = _git("status", "--porcelain", "--untracked-files=no")
    atomic_write_json(out_dir / CONFIG_FILE, {
        "run_name": run_name, "key": key, "seed": seed, "config": config,
        "git_commit": _git_commit(), "git_dirty": None if tracked_changes is None else bool(tracked_changes),
        "packages": _package_versions(), "python": platform.python_version(),
        "torch_version": torch.__version__, "device": str(device), "world_size": world_size,
        "autocast": autocast,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
    })
    weights = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"key": key, "state_dict": weights}, buffer)
    data = buffer.getvalue()
    atomic_write_text(out_dir / MODEL_CHECKSUM_FILE, hashlib.blake2b(data, digest_size=16).hexdigest() + "\n")
    atomic_write_bytes(out_dir / MODEL_FILE, data)


def load_trained(out_dir: Path, model: torch.nn.Module, expected_key: str | None = None) -> torch.nn.Module:
    """Load the weights of a finished run from ``out_dir/model.pt`` into ``model`` (returned in eval mode on CPU).

    Raises:
        PartsimError: no finished model there, a model of another key, or weights that do not fit ``model``.
    """
    path = Path(out_dir) / MODEL_FILE
    if not path.is_file():
        raise PartsimError(f"{path} not found: the run in {out_dir} has not finished training")
    checksum_path = Path(out_dir) / MODEL_CHECKSUM_FILE
    # Models written before checksums existed have no sidecar; every model written since is verified.
    if checksum_path.is_file() and file_checksum(path) != checksum_path.read_text().strip():
        raise PartsimError(f"{path} does not match its checksum ({checksum_path.name}): the file changed or is "
                           "corrupt; retrain it (the command's --fresh)")
    payload = load_training_file(path)
    if expected_key is not None and payload["key"] != expected_key:
        raise PartsimError(f"{path} holds the model of key {payload['key']}, expected key {expected_key}")
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise PartsimError(f"{path} does not fit {type(model).__name__} (written by an older partsim?): "
                           f"{' '.join(str(error).split())[:300]}; retrain it (the command's --fresh)") from None
    bad = [name for name, value in payload["state_dict"].items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise PartsimError(f"{path} holds non-finite weights ({', '.join(bad[:3])}); retrain it (the command's --fresh)")
    return model.cpu().eval()


def _git(*arguments: str) -> str | None:
    """Output of a git command in the source checkout, or ``None`` when there is none (never fails)."""
    with contextlib.suppress(Exception):
        root = repository_root()
        if root is not None:
            result = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, timeout=10)
            if result.returncode == 0:
                return result.stdout.strip()
    return None


def _git_commit() -> str:
    """``git rev-parse HEAD`` of the source checkout, or ``"unknown"``."""
    return _git("rev-parse", "HEAD") or "unknown"


def _package_versions() -> dict[str, str]:
    """Installed versions of partsim and of every package it depends on."""
    names = ["partsim"]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        names += [re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
                  for requirement in importlib.metadata.requires("partsim") or [] if "extra ==" not in requirement]
    versions = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions
