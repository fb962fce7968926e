"""FD: federated distillation [Jeong et al., arXiv:1811.11479], a low-bandwidth peer of FedH2L.

Each node keeps a private model of its own architecture. After local training it sends the
mean of its model's logits over its examples of each class (a classes x classes matrix and the
count behind every row); the server relays, to every participant, the mean of the *other*
participants' latest class means (their count-weighted average, so that every example counts
once), and the node adds to its cross-entropy a distillation term pulling its logits on each
example toward that mean for the example's class. No weights and no data travel.

Where the paper is silent or we differ (docs/methods/fd.md):

* the server averages class means weighted by the examples behind them (the paper averages per
  device); a class no peer holds gets no distillation term;
* the distillation term is the temperature-scaled KL of Hinton et al. (``fd-temperature``,
  ``fd-lambda``), as in FedH2L, rather than the paper's unspecified distance;
* each node scores its own model (test split and a held-out tenth of its data), as FedH2L's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from federated_data import ArrayDataset, Federation
from protocol import CLASS_LOGITS_KEY, CONFIG_KEY, METRICS_KEY, TRAIN_FD, arrays_to_record
from protocol.settings import Section, Setting

from .base import FederatedStrategy, RoundReport
from .relay import CLIENT_METRICS, check_scores, client_scores, round_metrics
from .state import ServerState
from .validation import InvalidReply

# A logit beyond this is no classifier's output: refused rather than relayed to every peer.
MAX_ABS_LOGIT = 1e4

FD_SETTINGS = Section(
    "fd",
    (
        Setting(
            "fd-lambda",
            1.0,
            "weight of the KL toward the peers' mean logits of each example's class",
            low=0.0,
            travel="method",
        ),
        Setting(
            "fd-temperature",
            1.0,
            "temperature of that KL",
            low=0.0,
            low_open=True,
            travel="method",
        ),
    ),
)


class FD(FederatedStrategy):
    """Relay of per-class mean logits between clients of any architectures.

    Parameters
    ----------
    num_classes : int
    fd_lambda : float (default: 1.0)
        The nodes' distillation weight; at 0 (every node trains alone) no means are sent.
    """

    name = "fd"

    def __init__(self, *, num_classes: int, fd_lambda: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.fd_lambda = fd_lambda

    def summary(self) -> None:
        super().summary()
        c = self.num_classes
        log(INFO, "\t│   └── %d x %d class-mean logits per node and round", c, c)

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        report = RoundReport()
        participants = self.select_participants(grid, server_round, report)
        pid = {n: self.nodes[n].partition_id for n in participants}
        payloads = {n: self._payload(state, pid[n], server_round) for n in participants}
        ex = self.phase(grid, payloads, TRAIN_FD, server_round, self._parse, report)
        report.num_ok = len(ex.replies)
        client_metrics: dict[str, dict[str, float]] = {}
        for n in self.by_partition(ex.replies):
            (means, counts), scores = ex.replies[n]
            state.data[f"fd/logits/{pid[n]}"] = means
            state.data[f"fd/counts/{pid[n]}"] = counts
            client_metrics[f"p{pid[n]}-{self.nodes[n].architecture}"] = scores
        state.extra[CLIENT_METRICS] = client_metrics
        report.metrics.update(round_metrics(client_metrics))
        state.round = server_round
        return state, report

    def evaluate(
        self, state: ServerState, test: ArrayDataset, device: torch.device
    ) -> dict[str, dict[str, float]]:
        """The clients' own scores of their private models on the balanced test split."""
        return client_scores(state)

    # ----------------------------------------------------------------- helpers

    def _payload(self, state: ServerState, partition: int, server_round: int) -> RecordDict:
        content = RecordDict(
            {CONFIG_KEY: ConfigRecord({**self.node_config, "server-round": server_round})}
        )
        peers = peer_class_means(state.data, partition, self.num_classes)
        if peers is not None and self.fd_lambda > 0:
            means, counts = peers
            content[CLASS_LOGITS_KEY] = arrays_to_record({"logits": means, "counts": counts})
        return content

    def _parse(self, reply: Message) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, float]]:
        scores = check_scores(reply.content[METRICS_KEY], self.known_examples(reply))
        info = self.nodes.get(reply.metadata.src_node_id)
        held = None if info is None else np.asarray(info.label_counts)
        class_logits = check_class_logits(reply.content[CLASS_LOGITS_KEY], self.num_classes, held)
        return class_logits, scores


def peer_class_means(
    data: Mapping[str, np.ndarray], partition: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The count-weighted mean of every *other* partition's latest class means, with the
    examples behind each row (0: no peer holds the class, the row is zero); None before any
    peer has sent one."""
    others = [
        int(key.rsplit("/", 1)[1])
        for key in data
        if key.startswith("fd/logits/") and int(key.rsplit("/", 1)[1]) != partition
    ]
    if not others:
        return None
    sums = np.zeros((num_classes, num_classes))
    counts = np.zeros(num_classes, dtype=np.int64)
    for q in sorted(others):  # a fixed order: the sum is reproducible
        n = data[f"fd/counts/{q}"]
        sums += n[:, None] * data[f"fd/logits/{q}"].astype(np.float64)
        counts += n
    means = np.zeros((num_classes, num_classes), dtype=np.float32)
    held = counts > 0
    means[held] = (sums[held] / counts[held, None]).astype(np.float32)
    return means, counts


def check_class_logits(
    record: object, num_classes: int, label_counts: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A node's class means: ``logits`` (classes, classes) finite float32 within
    ``MAX_ABS_LOGIT``, ``counts`` (classes,) non-negative integers, at most the examples of each
    class the node reported in ``query.info`` (``label_counts``), and zero rows where the count
    is zero."""
    if not isinstance(record, ArrayRecord) or set(record.keys()) != {"logits", "counts"}:
        raise InvalidReply("class-logits must be an ArrayRecord with 'logits' and 'counts'")
    logits, counts = record["logits"].numpy(), record["counts"].numpy()
    if logits.dtype != np.float32 or logits.shape != (num_classes, num_classes):
        raise InvalidReply(
            f"class logits are {logits.dtype}{list(logits.shape)}, expected float32"
            f"[{num_classes}, {num_classes}]"
        )
    if counts.dtype.kind not in "iu" or counts.shape != (num_classes,) or (counts < 0).any():
        raise InvalidReply(f"class counts are {counts.dtype}{list(counts.shape)} or negative")
    if not np.isfinite(logits).all() or np.abs(logits).max(initial=0.0) > MAX_ABS_LOGIT:
        raise InvalidReply(f"class logits hold NaN, Inf or values beyond {MAX_ABS_LOGIT:g}")
    if label_counts is not None and (counts > label_counts).any():
        raise InvalidReply(
            f"class counts {counts.tolist()} exceed the node's label counts {label_counts.tolist()}"
        )
    if np.abs(logits[counts == 0]).max(initial=0.0) > 0:
        raise InvalidReply("class logits of a class with no examples must be zero")
    return logits.copy(), counts.astype(np.int64)


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FD:
    return FD(num_classes=fed.num_classes, fd_lambda=cfg.fd_lambda, **common)
