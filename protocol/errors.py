"""Typed error codes of error replies: the server acts on a code, never on a message's text."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Codes a bouquet node sets on an error reply (Flower's own codes are below 100)."""

    # FedH2L: the node lost the seed set (a restarted SuperNode); the server sends it again.
    SEED_SET_MISSING = 4101


class NodeError(RuntimeError):
    """Raised by a ClientApp handler to reply with a typed error instead of a result."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
