"""Atomic writes of ``.npz`` files: caches and checkpoints shared by concurrent processes
(Ray workers, SuperNodes on one host, a ServerApp killed mid-write) are either the old file or
the whole new one, never half of either."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike


def save_npz(path: str | Path, **arrays: ArrayLike) -> Path:
    """Write ``arrays`` to ``path`` through a temporary file named by this process, then
    rename it into place; creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return path
