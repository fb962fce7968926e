"""What FD and FedProto share: each node trains a private model of its own architecture and
sends one vector per class (FD: mean logits; FedProto: mean features) with the examples behind
each; the server checks them, keeps every partition's latest, and sends each participant a
count-weighted pool of them (FD: of its peers only; FedProto: of everyone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from federated_data import ArrayDataset
from protocol import CONFIG_KEY, METRICS_KEY, arrays_to_record

from .base import FederatedStrategy, RoundReport
from .relay import check_scores, client_scores, close_round
from .state import ServerState
from .validation import InvalidReply

# A class mean beyond this is no model's output: refused rather than relayed to every peer.
MAX_ABS_MEAN = 1e4


class ClassMeanRelay(FederatedStrategy):
    """Relay of per-class mean vectors between private models of any architectures.

    Subclasses name the message type, the record key and array name, the vectors' width, and
    whether a node's own means enter the pool it receives.

    Parameters
    ----------
    num_classes : int
    weight : float (default: 1.0)
        The nodes' distillation weight; at 0 (every node trains alone) no pool is sent.
    """

    message_type: str
    record_key: str
    array_name: str
    leave_one_out: bool

    def __init__(self, *, num_classes: int, weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.weight = weight

    @property
    def width(self) -> int:
        """Length of one class's vector."""
        raise NotImplementedError

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        report = RoundReport()
        participants = self.select_participants(grid, server_round, report)
        pid = {n: self.nodes[n].partition_id for n in participants}
        payloads = {n: self._payload(state, pid[n], server_round) for n in participants}
        ex = self.phase(grid, payloads, self.message_type, server_round, self._parse, report)
        report.num_ok = len(ex.replies)
        client_metrics: dict[str, dict[str, float]] = {}
        for n in self.by_partition(ex.replies):
            (means, counts), scores = ex.replies[n]
            state.data[f"{self.name}/means/{pid[n]}"] = means
            state.data[f"{self.name}/counts/{pid[n]}"] = counts
            client_metrics[f"p{pid[n]}-{self.nodes[n].architecture}"] = scores
        return close_round(state, report, client_metrics, server_round)

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
        exclude = partition if self.leave_one_out else None
        pool = pooled_class_means(state.data, self.name, exclude)
        if pool is not None and self.weight > 0:
            means, counts = pool
            content[self.record_key] = arrays_to_record({self.array_name: means, "counts": counts})
        return content

    def _parse(self, reply: Message) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, float]]:
        scores = check_scores(reply.content[METRICS_KEY], self.known_examples(reply))
        info = self.nodes.get(reply.metadata.src_node_id)
        held = None if info is None else np.asarray(info.label_counts)
        if self.record_key not in reply.content:
            raise InvalidReply(f"reply has no {self.record_key!r} record")
        shape = (self.num_classes, self.width)
        means = check_class_means(reply.content[self.record_key], self.array_name, shape, held)
        return means, scores


def check_class_means(
    record: object, name: str, shape: tuple[int, int], label_counts: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """A node's per-class means, checked: ``name`` (classes, width) finite float32 within
    ``MAX_ABS_MEAN``, ``counts`` (classes,) non-negative integers, at most the examples of each
    class the node reported in ``query.info`` (``label_counts``), and zero rows where the count
    is zero.

    Raises
    ------
    InvalidReply
        Naming the first problem found.
    """
    if not isinstance(record, ArrayRecord) or set(record.keys()) != {name, "counts"}:
        raise InvalidReply(f"class means must be an ArrayRecord with {name!r} and 'counts'")
    means, counts = record[name].numpy(), record["counts"].numpy()
    if means.dtype != np.float32 or means.shape != shape:
        raise InvalidReply(
            f"class {name} are {means.dtype}{list(means.shape)}, expected float32{list(shape)}"
        )
    if counts.dtype.kind not in "iu" or counts.shape != shape[:1] or (counts < 0).any():
        raise InvalidReply(f"class counts are {counts.dtype}{list(counts.shape)} or negative")
    if not np.isfinite(means).all() or np.abs(means).max(initial=0.0) > MAX_ABS_MEAN:
        raise InvalidReply(f"class {name} hold NaN, Inf or values beyond {MAX_ABS_MEAN:g}")
    if label_counts is not None and (counts > label_counts).any():
        raise InvalidReply(
            f"class counts {counts.tolist()} exceed the node's label counts {label_counts.tolist()}"
        )
    if np.abs(means[counts == 0]).max(initial=0.0) > 0:
        raise InvalidReply(f"class {name} of a class with no examples must be zero")
    return means.copy(), counts.astype(np.int64)


def pooled_class_means(
    data: Mapping[str, np.ndarray], prefix: str, exclude: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The count-weighted mean of the latest class means of every partition but ``exclude``
    (stored as ``<prefix>/means/<partition>`` and ``<prefix>/counts/<partition>``), with the
    examples behind each row (0: no partition holds the class, the row is zero); None before
    any has sent one."""
    parts = sorted(  # a fixed order: the sum is reproducible
        int(key.rsplit("/", 1)[1]) for key in data if key.startswith(f"{prefix}/means/")
    )
    parts = [q for q in parts if q != exclude]
    if not parts:
        return None
    first = data[f"{prefix}/means/{parts[0]}"]
    sums = np.zeros(first.shape)
    counts = np.zeros(first.shape[0], dtype=np.int64)
    for q in parts:
        n = data[f"{prefix}/counts/{q}"]
        sums += n[:, None] * data[f"{prefix}/means/{q}"].astype(np.float64)
        counts += n
    means = np.zeros(first.shape, dtype=np.float32)
    held = counts > 0
    means[held] = (sums[held] / counts[held, None]).astype(np.float32)
    return means, counts
