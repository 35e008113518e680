"""Choose the torch device once, at load time."""

from __future__ import annotations

import torch

from engine.errors import EngineError


def pick_device(spec: str = "auto") -> torch.device:
    """"auto" means the first CUDA device when one is present, the CPU otherwise."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise EngineError(f"unknown device {spec!r}") from exc
    if device.type == "cuda" and not _cuda_index_exists(device):
        raise EngineError(f"device {spec!r} requested but not available")
    if device.type not in ("cpu", "cuda"):
        raise EngineError(f"device type {device.type!r} is not supported")
    return device


def _cuda_index_exists(device: torch.device) -> bool:
    if not torch.cuda.is_available():
        return False
    return device.index is None or device.index < torch.cuda.device_count()
