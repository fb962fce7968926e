"""Flower's ``flower-supernode`` with a shorter idle poll (Flower 1.39 hard-codes 3 s).

An idle SuperNode asks the SuperLink for a message and, when there is none, sleeps 3 s
(``flwr/supernode/start_client_internal.py``): every message waits 1.5 s on average before a
node even sees it, and a finished reply waits up to 0.5 s more before it is pushed. This runs
Flower's own SuperNode unchanged except that those sleeps are capped at ``--poll-interval``
seconds: it replaces the module's reference to ``time`` with one whose ``sleep`` is capped.
The cost is more requests to the SuperLink (one per node per interval while idle), so keep the
default for large federations.

Refuses to run on a Flower whose loop no longer matches (another version), rather than
silently doing nothing. ``scripts/deploy.py --node-poll-interval S`` starts SuperNodes with it.

    python scripts/fast_supernode.py --poll-interval 0.25 <flower-supernode arguments>
"""

from __future__ import annotations

import inspect
import sys
import time
from typing import Any

import flwr
from flwr.supernode import start_client_internal

EXPECTED_VERSION = "1.39."
HARD_CODED = "time.sleep(3)"


class CappedTime:
    """The ``time`` module with ``sleep`` capped at ``cap`` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch(cap: float) -> None:
    """Cap the SuperNode loop's sleeps at ``cap`` seconds (checks the Flower it patches)."""
    if not 0.01 <= cap <= 3.0:
        raise SystemExit(f"--poll-interval must be between 0.01 and 3 s, got {cap}")
    source = inspect.getsource(start_client_internal)
    if not flwr.__version__.startswith(EXPECTED_VERSION) or HARD_CODED not in source:
        raise SystemExit(
            f"fast_supernode: written for Flower {EXPECTED_VERSION}x, whose SuperNode loop "
            f"sleeps with `{HARD_CODED}`; this is Flower {flwr.__version__}. Start "
            "`flower-supernode` directly (drop --node-poll-interval)."
        )
    start_client_internal.time = CappedTime(cap)  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] != "--poll-interval":
        raise SystemExit("usage: fast_supernode.py --poll-interval S <flower-supernode args>")
    patch(float(argv[1]))
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *argv[2:]]
    flower_supernode()


if __name__ == "__main__":
    main(sys.argv[1:])
