"""What the benchmarks share: where results go, one experiment run in process, the machine."""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Message

from bouquet.grid import run_cell

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"


def run_in_process(
    overrides: dict[str, Any],
    run_name: str,
    clients: int,
    reply_hook: Callable[[Message, Message], Message] | None = None,
    node_extras: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One experiment through the in-process grid (Fashion-MNIST unless overridden), started
    afresh; returns its summary plus wall seconds. ``reply_hook`` and ``node_extras`` make
    an attacker (:func:`bouquet.grid.run_cell`)."""
    shutil.rmtree(OUT / "runs" / run_name, ignore_errors=True)  # never read a stale run
    settings = {"dataset": "fmnist", "num-partitions": clients, "run-name": run_name, **overrides}
    t0 = time.time()
    summary = run_cell(settings, str(OUT / "runs"), reply_hook=reply_hook, node_extras=node_extras)
    return {**summary, "wall-seconds": round(time.time() - t0, 1)}


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}"
    )
