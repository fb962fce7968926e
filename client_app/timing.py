"""Where a ClientApp message's time goes, sent back with the reply.

In a deployment every message runs in a fresh ``flwr-clientapp`` process, so a round's latency
is process start-up, imports, data loading and compute plus the polling between SuperLink,
SuperNode and SuperExec. Each handler is wrapped by :func:`timed`, which adds a
``timing`` metric record to the reply (seconds):

``startup``   process creation -> handler entry, on a process's first message only (0 in a
              warm process, e.g. a simulation's Ray actor): interpreter, Flower, app loading
``imports``   the handler's lazy imports (torch and the model code)
``load``      rebuilding the node's data (:func:`client_app.node.load_node`)
``handler``   handler entry -> reply built (contains ``imports`` and ``load``)
``threads``   torch's intra-op threads after the handler (a count, not seconds; 0 = torch
              not imported: client_app/threads.py)

The server adds the round trip it observed and writes all of it to ``metrics.jsonl``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from pathlib import Path

from flwr.app import Context, Message, MetricRecord

from protocol import TIMING_KEY

from .threads import threads_in_use

_stages: ContextVar[dict[str, float] | None] = ContextVar("bouquet_timing", default=None)
_messages_handled = 0  # diagnostics only: whether this process is fresh


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the time spent inside the block to the current message's ``name`` stage."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        stages = _stages.get()
        if stages is not None:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0


def process_age() -> float:
    """Seconds since this process was created (Linux /proc; 0 where unavailable)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after "(comm)"
        lines = Path("/proc/stat").read_text().splitlines()
        boot = next(int(line.split()[1]) for line in lines if line.startswith("btime"))
        return max(0.0, time.time() - boot - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


Handler = Callable[[Message, Context], Message]


def timed(handler: Handler) -> Handler:
    """Wrap a ClientApp handler so that its reply carries the ``timing`` record."""

    @wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        global _messages_handled
        startup = process_age() if _messages_handled == 0 else 0.0
        _messages_handled += 1
        stages: dict[str, float] = {}
        token = _stages.set(stages)
        t0 = time.perf_counter()
        try:
            reply = handler(msg, context)
        finally:
            _stages.reset(token)
        if reply.has_content():
            reply.content[TIMING_KEY] = MetricRecord(
                {
                    "startup": startup,
                    **stages,
                    "handler": time.perf_counter() - t0,
                    "threads": threads_in_use(),
                }
            )
        return reply

    return wrapper
