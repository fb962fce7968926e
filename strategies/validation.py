"""Reply validation: a bad reply is dropped with a reason, never aggregated."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from protocol import ARRAYS_KEY, METRICS_KEY

from .state import Arrays

# No metric a node reports (losses, accuracies, counts, seconds) comes near this.
METRIC_BOUND = 1e15


class InvalidReply(ValueError):
    """A reply that must not enter the aggregate; the message says why."""


def check_no_error(reply: Message) -> None:
    if reply.has_error():
        raise InvalidReply(f"error reply: {reply.error.reason} (code {reply.error.code})")


def check_arrays(record: object, expected: Arrays) -> Arrays:
    """Return the record's arrays if keys, shapes, dtypes and finiteness match ``expected``."""
    if not isinstance(record, ArrayRecord):
        raise InvalidReply(f"'{ARRAYS_KEY}' is {type(record).__name__}, not an ArrayRecord")
    if list(record.keys()) != list(expected):
        missing = sorted(set(expected) - set(record.keys()))
        extra = sorted(set(record.keys()) - set(expected))
        raise InvalidReply(f"array keys differ (missing {missing[:3]}, unexpected {extra[:3]})")
    out: Arrays = {}
    for name, ref in expected.items():
        arr = record[name].numpy()
        if arr.shape != ref.shape or arr.dtype != ref.dtype:
            raise InvalidReply(
                f"array {name!r} is {arr.dtype}{list(arr.shape)}, "
                f"expected {ref.dtype}{list(ref.shape)}"
            )
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise InvalidReply(f"array {name!r} holds NaN or Inf")
        out[name] = arr
    return out


def check_num_examples(metrics: object, at_most: int | None = None) -> int:
    """``num-examples`` must be a non-negative integer, and no more than ``at_most`` (what the
    node reported in ``query.info``: a reply cannot inflate its weight in an average)."""
    if not isinstance(metrics, MetricRecord):
        raise InvalidReply(f"'{METRICS_KEY}' is missing or not a MetricRecord")
    n = metrics.get("num-examples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InvalidReply(f"num-examples={n!r} is not a non-negative integer")
    if at_most is not None and n > at_most:
        raise InvalidReply(
            f"num-examples={n} exceeds the {at_most} examples the node reported in query.info"
        )
    return n


def check_train_reply(
    reply: Message, expected: Arrays, at_most: int | None = None
) -> tuple[Arrays, int, dict[str, float]]:
    """Validate a ``train`` reply; return (arrays, num-examples, metrics)."""
    check_no_error(reply)
    content = reply.content
    if ARRAYS_KEY not in content or METRICS_KEY not in content:
        raise InvalidReply(f"reply lacks '{ARRAYS_KEY}' or '{METRICS_KEY}'")
    arrays = check_arrays(content[ARRAYS_KEY], expected)
    metrics = content[METRICS_KEY]
    n = check_num_examples(metrics, at_most)
    floats = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if not all(np.isfinite(list(floats.values()))):
        raise InvalidReply("metrics hold NaN or Inf")
    if any(abs(v) > METRIC_BOUND for v in floats.values()):  # sums of them would overflow
        raise InvalidReply(f"metrics hold values beyond +-{METRIC_BOUND:g}")
    return arrays, n, floats
