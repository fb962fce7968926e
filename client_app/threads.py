"""How many torch threads a node's work uses: one rule for every mode.

Whoever starts the worker divides the cores it may use among the workers it runs side by side,
and a node's ``threads`` setting overrides that in every mode:

=====================  =====================================================================
in-process grid        ``bouquet grid --jobs J``: cores / J per cell (torch, in the process)
deployed SuperNodes    ``scripts/deploy.py``: cores / nodes (``OMP_NUM_THREADS`` per node)
docker compose         ``BOUQUET_THREADS_PER_NODE`` (default 1) -> ``OMP_NUM_THREADS``
Flower simulation      Ray runs cores / ``client-resources-num-cpus`` actors side by side and
                       starts each with ``OMP_NUM_THREADS`` = its num-cpus (Flower's default
                       2; ``scripts/simulate.py --client-cpus``)
=====================  =====================================================================

Torch's results depend on the thread count (reductions are split differently), so the same
count gives the same numbers in every mode; the count used is reported in every reply's
``timing`` record (``threads``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # deploy.py and the grid use this module without loading Flower
    from flwr.app import Context, Message
    from flwr.clientapp.typing import ClientAppCallable


def node_threads(node_config: Mapping[str, Any]) -> int:
    """The thread count this node should use; 0 leaves the process's setting alone.

    Raises
    ------
    ValueError
        ``threads`` is not a non-negative integer.
    """
    raw = node_config.get("threads", 0)
    try:
        value = -1.0 if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if value < 0 or not value.is_integer():
        raise ValueError(f"node config threads={raw!r}: expected an integer >= 0 (0 = auto)")
    return int(value)


def apply_threads(node_config: Mapping[str, Any]) -> None:
    """Set torch's intra-op threads for this node's work (torch is imported only when a count
    is set, so a fresh process answering ``query.info`` stays cheap)."""
    threads = node_threads(node_config)
    if threads:
        import torch

        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)


def thread_policy(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """ClientApp mod: every message runs with the node's thread count."""
    apply_threads(context.node_config)
    return call_next(msg, context)


def threads_in_use() -> int:
    """Torch's intra-op threads in this process (0 when torch is not imported yet)."""
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 0


def host_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(requested: int, workers: int) -> int:
    """The one division rule: ``requested`` when > 0, else this host's cores divided among
    the ``workers`` run side by side (at least one thread each)."""
    return requested if requested > 0 else max(1, host_cores() // max(1, workers))
