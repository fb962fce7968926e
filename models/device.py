"""Device choice: CUDA when present, overridable per node (``--node-config device=cpu``)."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "") -> torch.device:
    """``""``/``auto`` picks ``cuda`` when available, else ``cpu``; anything else is checked."""
    if requested in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(
            f"device={requested!r} is not a torch device (try cpu, cuda, cuda:1)"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} requested but CUDA is not available on this node")
    return device
