"""What the relay methods share (FedH2L, FD, FedProto): the server holds no model and averages no
weights; each node trains a private model, scores it, and the server reports those scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import RoundReport
from .state import ServerState
from .validation import InvalidReply, check_num_examples

CLIENT_METRICS = "client-metrics"  # ServerState.extra: "p<partition>-<architecture>" -> scores


def check_scores(metrics: Any, known_examples: int | None) -> dict[str, float]:
    """A node's reply metrics with its private model's scores, checked: they become the run's
    headline, so out-of-range values are refused rather than reported."""
    check_num_examples(metrics, known_examples)
    values: dict[str, Any] = dict(metrics)
    for key in ("test-accuracy", "test-loss", "local-accuracy"):
        if not isinstance(values.get(key), int | float) or not np.isfinite(values[key]):
            raise InvalidReply(f"metric {key}={values.get(key)!r} missing or not finite")
    for key in ("test-accuracy", "local-accuracy"):
        if not 0.0 <= values[key] <= 1.0:
            raise InvalidReply(f"metric {key}={values[key]!r} is not in [0, 1]")
    if values["test-loss"] < 0:
        raise InvalidReply(f"metric test-loss={values['test-loss']!r} is negative")
    return {k: float(v) for k, v in values.items()}


def round_metrics(client_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """The round's summary of the clients' scores."""
    test = [m["test-accuracy"] for m in client_metrics.values()]
    local = [m["local-accuracy"] for m in client_metrics.values()]
    return {
        "mean-test-accuracy": float(np.mean(test)),
        "min-test-accuracy": float(np.min(test)),
        "mean-local-accuracy": float(np.mean(local)),
    }


def client_scores(state: ServerState) -> dict[str, dict[str, float]]:
    """The clients' own scores of their private models on the balanced test split (what a
    relay strategy's ``evaluate`` reports)."""
    return {
        name: {
            "accuracy": m["test-accuracy"],
            "loss": m["test-loss"],
            "local-accuracy": m["local-accuracy"],
        }
        for name, m in state.extra.get(CLIENT_METRICS, {}).items()
    }


def close_round(
    state: ServerState,
    report: RoundReport,
    client_metrics: dict[str, dict[str, float]],
    server_round: int,
) -> tuple[ServerState, RoundReport]:
    """Keep the clients' scores in the state (the run's evaluation) and summarise them."""
    state.extra[CLIENT_METRICS] = client_metrics
    report.metrics.update(round_metrics(client_metrics))
    state.round = server_round
    return state, report
