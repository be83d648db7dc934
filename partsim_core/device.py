"""The one device resolver: every chapter, the trainer and the separators agree on where tensors live."""

from __future__ import annotations

import os

import torch

from partsim_core.errors import PartsimError


def resolve_device(spec: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` (or ``None``) -> ``cuda`` when available else ``cpu``; under torchrun each process takes GPU
    ``LOCAL_RANK`` when the spec names no index.

    Raises:
        PartsimError: an unknown device string, or CUDA requested where torch sees no GPU.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    spec = "auto" if spec is None else spec
    if str(spec) == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise PartsimError(f"unknown device {spec!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PartsimError(f"device {str(spec)!r} requested but this torch build sees no CUDA GPU; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    elif device.type != "cpu":
        raise PartsimError(f"unsupported device {str(spec)!r}; use auto, cpu or cuda[:N]")
    return device
