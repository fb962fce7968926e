"""FedH2L: federated learning across heterogeneous models and data through mutual distillation
of posteriors on a shared seed set [Li, Hospedales et al., arXiv:2101.11296].

No code is public; this is a reconstruction on Deep Mutual Learning (Zhang et al., CVPR 2018)
that satisfies every statement of the abstract (docs/methods/fedh2l.md). The server is a pure
**relay**: it holds no model and averages no weights. Each round every participant receives its
peers' latest posterior matrices on the seed set (the leave-one-out mean by default, or each
peer's matrix), trains its own private model, and replies with its new posteriors and its own
test metrics. The seed set (``seed-per-class`` labelled examples of every class each client
holds) is gathered once and sent once to every node; that transfer is counted in the bytes.
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
from protocol import (
    CONFIG_KEY,
    METRICS_KEY,
    PEERS_KEY,
    POSTERIORS_KEY,
    QUERY_SEED,
    SEED_SET_KEY,
    TRAIN_H2L,
    ErrorCode,
    arrays_to_record,
)
from protocol.posteriors import PosteriorError, apply_update, check_encoding, decode, encode
from protocol.settings import ConfigError, Section, Setting

from .base import FederatedStrategy, FederationError, RoundReport, require_choice
from .relay import check_scores, client_scores, close_round
from .state import ServerState
from .topology import TOPOLOGIES, leave_one_out_means, neighbours, seed_agreement
from .validation import InvalidReply

RELAYS = ("loo-mean", "full")
PEER_WEIGHTINGS = ("uniform", "agreement")
ALIGNMENTS = ("none", "mldg", "fo-cos")
SEED_SOURCES = ("donated", "public")

FEDH2L_SETTINGS = Section(
    "fedh2l",
    (
        Setting(
            "seed-per-class",
            10,
            "seed-set examples per class (0 = no seed set: every client alone)",
            low=0,
        ),
        Setting(
            "seed-cap-per-class",
            0,
            "at most this many seed-set examples of each class over all clients, shared evenly "
            "among the clients that hold it (0 = no cap: seed-per-class from every holder, the "
            "paper); fewer images leave the nodes and every round's posteriors shrink",
            low=0,
        ),
        Setting(
            "seed-source",
            "donated",
            "donated labelled examples, or seed-per-class x classes unlabelled public images",
            choices=SEED_SOURCES,
        ),
        Setting(
            "h2l-lambda",
            1.0,
            "weight of the KL toward the peers' posteriors",
            low=0.0,
            travel="all",
        ),
        Setting(
            "h2l-temperature", 1.0, "temperature of that KL", low=0.0, low_open=True, travel="all"
        ),
        Setting("topology", "complete", "the peer graph", choices=TOPOLOGIES),
        Setting("topology-degree", 2, "degree of the k-regular graph (even)", low=2),
        Setting(
            "relay",
            "loo-mean",
            "one leave-one-out mean matrix per client, or every peer's matrix",
            choices=RELAYS,
        ),
        Setting(
            "peer-weighting",
            "uniform",
            "peers' posteriors count equally (the paper), or by their agreement with the seed "
            "labels above chance (a defence: uniform or adversarial posteriors weigh 0)",
            choices=PEER_WEIGHTINGS,
        ),
        Setting(
            "posterior-dtype",
            "float32",
            "encoding of the posteriors both ways: float32, float16, uint8 or uint4 (per-row "
            "scaled), top<k> (the k largest per row, e.g. top3): protocol/posteriors.py",
        ),
        Setting(
            "posterior-delta",
            0.0,
            "a node sends only the posterior rows that moved by more than this (largest "
            "absolute change of a probability) since the matrix the server holds from it; "
            "0 = every row every round",
            low=0.0,
        ),
        Setting(
            "align",
            "none",
            "gradient alignment of the two losses",
            choices=ALIGNMENTS,
            travel="all",
        ),
        Setting("align-weight", 0.01, "weight of fo-cos's cosine bonus", low=0.0, travel="all"),
        Setting(
            "h2l-max-grad-norm",
            5.0,
            "clip each local step's gradient to this global norm (0 = off, the paper's "
            "behaviour); keeps the gradient spikes of the first distillation rounds from "
            "killing a small client's ReLUs (docs/methods/fedh2l.md)",
            low=0.0,
            travel="method",
        ),
    ),
)


class FedH2L(FederatedStrategy):
    """Relay of seed-set posteriors between clients of any architectures.

    Parameters
    ----------
    num_classes : int
    seed_per_class : int (default: 10)
        Examples each client donates per class it holds; 0 means no seed set and no exchange
        (every client trains alone: the lower-bound baseline).
    seed_cap_per_class : int (default: 0)
        When positive, the seed set holds at most this many examples of each class: the cap is
        shared among the class's holders by :func:`seed_quotas`, and each node is asked for its
        quota only. 0 keeps the paper's ``seed_per_class`` from every holder.
    topology : str (default: "complete")
        ``complete``, ``ring`` or ``k-regular`` (see :mod:`strategies.topology`).
    degree : int (default: 2)
        Degree of the ``k-regular`` graph.
    relay : str (default: "loo-mean")
        ``loo-mean`` sends one matrix (exact for equal peer weights), ``full`` every peer's.
    posterior_dtype : str (default: "float32")
        The posteriors' encoding both ways (:mod:`protocol.posteriors`): ``float16`` halves the
        traffic, ``uint8``/``uint4`` quantise each row, ``top<k>`` keeps its k largest.
    peer_weighting : str (default: "uniform")
        ``uniform`` (the paper) or ``agreement``: each peer's matrix in the leave-one-out mean
        weighted by :func:`strategies.topology.seed_agreement` on the labelled seed rows.
    public_x : np.ndarray | None (default: None)
        When given, the seed set is ``seed_per_class x num_classes`` of these unlabelled public
        images (FedMD-style) instead of labelled donations; clients then drop CE(seed).
    """

    name = "fedh2l"

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        num_classes: int,
        seed_per_class: int = 10,
        seed_cap_per_class: int = 0,
        topology: str = "complete",
        degree: int = 2,
        relay: str = "loo-mean",
        posterior_dtype: str = "float32",
        posterior_delta: float = 0.0,
        peer_weighting: str = "uniform",
        public_x: np.ndarray | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_choice("relay", relay, RELAYS)
        require_choice("peer-weighting", peer_weighting, PEER_WEIGHTINGS)
        self.peer_weighting = peer_weighting
        self.num_classes = num_classes
        self.seed_per_class = seed_per_class
        self.seed_cap_per_class = seed_cap_per_class
        self.quotas: dict[int, np.ndarray] = {}  # node id -> its donation per class (capped)
        self.topology = topology
        self.degree = degree
        self.relay = relay
        self.posterior_dtype = posterior_dtype
        self.posterior_delta = posterior_delta
        self.public_x = public_x  # set: the seed set is unlabelled public data, not donations
        self.seeded: set[int] = set()  # node ids that hold the seed set

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t│   └── seed set: %d per class and client%s; %s topology; %s relay; %s posteriors%s",
            self.seed_per_class,
            f", at most {self.seed_cap_per_class} per class" if self.seed_cap_per_class else "",
            self.topology,
            self.relay,
            self.posterior_dtype,
            f", changed rows only (> {self.posterior_delta})" if self.posterior_delta else "",
        )

    # ----------------------------------------------------------------- round

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        report = RoundReport()
        participants = self.select_participants(grid, server_round, report)
        if self.seed_per_class > 0 and "seed/x" not in state.data:
            if self.public_x is not None:
                self._public_seed_set(state)
            else:
                self._gather_seed_set(grid, state, participants, server_round, report)

        pid = {n: self.nodes[n].partition_id for n in participants}
        graph = neighbours(
            sorted(pid.values()),
            self.topology,
            degree=self.degree,
            seed=self.seed,
            server_round=server_round,
        )
        previous = {int(k.split("/")[1]): v for k, v in state.data.items() if k.startswith("post/")}
        weights = self._peer_weights(state, previous)
        if weights is not None:
            report.metrics["min-peer-weight"] = min(weights.values(), default=1.0)
        payloads = {
            n: self._payload(state, n, pid[n], graph, previous, weights, server_round)
            for n in participants
        }
        num_seed = len(state.data.get("seed/y", ()))
        ex = self.phase(
            grid,
            payloads,
            TRAIN_H2L,
            server_round,
            lambda reply: self._parse(reply, num_seed, self._held(state, reply)),
            report,
            require=False,  # first learn which nodes lost the seed set
        )
        for n, code in ex.error_codes.items():
            if code == ErrorCode.SEED_SET_MISSING:
                self.seeded.discard(n)  # the node lost its state: send the seed set again
        for n in ex.replies:
            if n in payloads and SEED_SET_KEY in payloads[n]:
                self.seeded.add(n)
        self.require_replies(ex, server_round, TRAIN_H2L)
        report.num_ok = len(ex.replies)

        client_metrics: dict[str, dict[str, float]] = {}
        for n, (posteriors, metrics) in sorted(ex.replies.items(), key=lambda kv: pid[kv[0]]):
            if posteriors is not None:
                state.data[f"post/{pid[n]}"] = posteriors
                state.data[f"post-round/{pid[n]}"] = np.array([server_round], dtype=np.int64)
            client_metrics[f"p{pid[n]}-{self.nodes[n].architecture}"] = metrics
        if self.posterior_delta > 0:  # how much the changed-rows coding left out
            sent = [m.get("posterior-rows-sent", 0.0) for m in client_metrics.values()]
            report.metrics["posterior-rows-sent"] = float(sum(sent))
        return close_round(state, report, client_metrics, server_round)

    def evaluate(
        self, state: ServerState, test: ArrayDataset, device: torch.device
    ) -> dict[str, dict[str, float]]:
        """The clients' own scores of their private models on the balanced test split."""
        return client_scores(state)

    # ----------------------------------------------------------------- helpers

    def _config(self, server_round: int, held_round: int = 0) -> ConfigRecord:
        delta = (
            {"posterior-delta": self.posterior_delta, "posterior-held-round": held_round}
            if self.posterior_delta > 0
            else {}  # off: the messages are what they were before the option existed
        )
        return ConfigRecord(
            {
                **self.node_config,
                "server-round": server_round,
                "seed-per-class": self.seed_per_class,
                "posterior-dtype": self.posterior_dtype,
                **delta,
            }
        )

    @staticmethod
    def _held_round(state: ServerState, partition: int) -> int:
        """The round of the posteriors the server holds from ``partition`` (0: none)."""
        held = state.data.get(f"post-round/{partition}")
        return int(held[0]) if held is not None else 0

    def _held(self, state: ServerState, reply: Message) -> np.ndarray | None:
        """The matrix a reply's changed rows update: the one held from its node, of the round
        its payload named (None: none held, or changed rows are off)."""
        info = self.nodes.get(reply.metadata.src_node_id)
        if info is None or self.posterior_delta <= 0:
            return None
        return state.data.get(f"post/{info.partition_id}")

    def _public_seed_set(self, state: ServerState) -> None:
        """Unlabelled variant (FedMD-style): seed-per-class x classes public images, label -1."""
        assert self.public_x is not None
        size = min(len(self.public_x), self.seed_per_class * self.num_classes)
        idx = np.sort(
            np.random.default_rng([self.seed, 0x9B11C]).permutation(len(self.public_x))[:size]
        )
        state.data["seed/x"] = self.public_x[idx]
        state.data["seed/y"] = np.full(size, -1, dtype=np.int64)
        log(INFO, "Seed set: %d unlabelled public images (no client data leaves the nodes)", size)

    def _gather_seed_set(
        self,
        grid: Grid,
        state: ServerState,
        participants: list[int],
        server_round: int,
        report: RoundReport,
    ) -> None:
        payloads = {n: RecordDict({CONFIG_KEY: self._config(server_round)}) for n in participants}
        if self.seed_cap_per_class:
            order = sorted(participants, key=lambda n: self.nodes[n].partition_id)
            quotas = seed_quotas(
                np.array([self.nodes[n].label_counts for n in order]),
                self.seed_per_class,
                self.seed_cap_per_class,
                np.random.default_rng([self.seed, 0x5EED, 0xCA9]),
            )
            self.quotas = dict(zip(order, quotas, strict=True))
            for n in order:
                config = payloads[n][CONFIG_KEY]
                assert isinstance(config, ConfigRecord)
                config["seed-quota"] = [int(q) for q in self.quotas[n]]
        ex = self.phase(
            grid, payloads, QUERY_SEED, server_round, self._parse_donation, report, require=False
        )
        if not ex.replies:
            raise FederationError(f"round {server_round}: no node donated seed examples")
        order = self.by_partition(ex.replies)
        state.data["seed/x"] = np.concatenate([ex.replies[n][0] for n in order])
        state.data["seed/y"] = np.concatenate([ex.replies[n][1] for n in order])
        log(
            INFO,
            "Seed set: %d examples from %d clients, class counts %s",
            len(state.data["seed/y"]),
            len(order),
            np.bincount(state.data["seed/y"], minlength=self.num_classes).tolist(),
        )

    def _payload(
        self,
        state: ServerState,
        node_id: int,
        partition: int,
        graph: dict[int, list[int]],
        previous: dict[int, np.ndarray],
        weights: dict[int, float] | None,
        server_round: int,
    ) -> RecordDict:
        held_round = self._held_round(state, partition)
        content = RecordDict({CONFIG_KEY: self._config(server_round, held_round)})
        if "seed/x" in state.data and node_id not in self.seeded:
            content[SEED_SET_KEY] = arrays_to_record(
                {"x": state.data["seed/x"], "y": state.data["seed/y"]}
            )
        peers = [q for q in graph.get(partition, []) if q in previous]
        if peers:
            code = self.posterior_dtype
            if self.relay == "loo-mean":
                mean = leave_one_out_means(
                    {q: previous[q] for q in peers}, {partition: peers}, weights
                )
                if partition in mean:  # absent when every peer weighs 0
                    content[PEERS_KEY] = arrays_to_record(encode("mean", mean[partition], code))
            else:
                matrices = {
                    k: v for q in peers for k, v in encode(f"peer-{q}", previous[q], code).items()
                }
                content[PEERS_KEY] = arrays_to_record(matrices)
        return content

    def _peer_weights(
        self, state: ServerState, previous: dict[int, np.ndarray]
    ) -> dict[int, float] | None:
        """Per-partition weights of the posteriors relayed this round (None: uniform)."""
        if self.peer_weighting == "uniform" or "seed/y" not in state.data:
            return None
        labels = state.data["seed/y"]
        return {q: seed_agreement(p, labels, self.num_classes) for q, p in previous.items()}

    def _parse_donation(self, reply: Message) -> tuple[np.ndarray, np.ndarray]:
        record = reply.content[SEED_SET_KEY]
        if not isinstance(record, ArrayRecord) or set(record.keys()) != {"x", "y"}:
            raise InvalidReply("seed donation must be an ArrayRecord with 'x' and 'y'")
        x, y = record["x"].numpy(), record["y"].numpy()
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y) or y.ndim != 1:
            raise InvalidReply(f"seed donation has x {x.dtype}{list(x.shape)}, y {list(y.shape)}")
        if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
            raise InvalidReply(f"seed labels outside [0, {self.num_classes})")
        shape = [int(d) for d in self.node_config.get("input-shape", x.shape[1:])]
        if list(x.shape[1:]) != shape:
            raise InvalidReply(f"seed images are {list(x.shape[1:])}, the run's are {shape}")
        counts = np.bincount(y.astype(np.int64), minlength=self.num_classes)
        quota = self.quotas.get(reply.metadata.src_node_id)
        if quota is None:
            quota = np.full(self.num_classes, self.seed_per_class)
        over = np.flatnonzero(counts > quota)
        if len(over):
            c = int(over[0])
            raise InvalidReply(
                f"{int(counts[c])} seed examples of class {c}, more than the node was asked "
                f"for ({int(quota[c])})"
            )
        info = self.nodes.get(reply.metadata.src_node_id)
        if info is not None:
            foreign = [c for c in np.flatnonzero(counts) if info.label_counts[c] == 0]
            if foreign:
                raise InvalidReply(f"seed examples of classes {foreign} the node does not hold")
        return x, y.astype(np.int64)

    def _parse(
        self, reply: Message, num_seed: int, held: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, dict[str, float]]:
        scores = check_scores(reply.content[METRICS_KEY], self.known_examples(reply))
        posteriors = None
        if num_seed:
            record = reply.content[POSTERIORS_KEY]
            posteriors = check_posteriors(record, num_seed, self.num_classes, held)
        return posteriors, scores


def seed_quotas(
    label_counts: np.ndarray, per_client: int, cap: int, rng: np.random.Generator
) -> np.ndarray:
    """Each client's donation per class when every class may hold at most ``cap`` examples.

    Water-filling: a class's cap is handed out one example per holder at a time, in a seeded
    order of the clients (so no partition is favoured when the cap does not divide evenly),
    never more than ``per_client`` or than the client holds. ``label_counts`` is (clients,
    classes); so is the result. A class with fewer than ``cap`` examples available keeps them
    all.
    """
    room = np.minimum(label_counts, per_client).astype(np.int64)
    quotas = np.zeros_like(room)
    for c in range(room.shape[1]):
        order = rng.permutation(len(room))
        left = cap
        while left > 0:
            open_ = [i for i in order if quotas[i, c] < room[i, c]][:left]
            if not open_:
                break
            quotas[open_, c] += 1
            left -= len(open_)
    return quotas


def check_posteriors(
    record: object, num_rows: int, num_classes: int, held: np.ndarray | None = None
) -> np.ndarray:
    """A (num_rows, num_classes) matrix of probability rows in any :mod:`protocol.posteriors`
    encoding, decoded to float32; a changed-rows update is applied to ``held`` (the matrix the
    server holds from the same node, as of the round it told the node), and refused without
    one."""
    if not isinstance(record, ArrayRecord):
        raise InvalidReply("posteriors must be an ArrayRecord")
    arrays = {k: record[k].numpy() for k in record}
    if any(k != "p" and not k.startswith("p.") for k in arrays):
        raise InvalidReply(f"posteriors hold arrays {sorted(arrays)}, not one matrix 'p'")
    try:
        if "p.rows" not in arrays:
            p = decode(arrays, "p", num_classes)
        elif held is None or held.shape != (num_rows, num_classes):
            raise InvalidReply("changed posterior rows, but the server holds no matrix to update")
        else:
            p = apply_update(arrays, "p", num_classes, held)
    except PosteriorError as err:
        raise InvalidReply(f"posteriors: {err}") from None
    if p.shape != (num_rows, num_classes):
        raise InvalidReply(
            f"posteriors have shape {list(p.shape)}, expected [{num_rows}, {num_classes}]"
        )
    return p


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedH2L:
    try:
        check_encoding(cfg.posterior_dtype, fed.num_classes)
    except ValueError as err:
        raise ConfigError(f"posterior-dtype: {err}") from None
    return FedH2L(
        num_classes=fed.num_classes,
        seed_per_class=cfg.seed_per_class,
        seed_cap_per_class=cfg.seed_cap_per_class,
        topology=cfg.topology,
        degree=cfg.topology_degree,
        relay=cfg.relay,
        posterior_dtype=cfg.posterior_dtype,
        posterior_delta=cfg.posterior_delta,
        peer_weighting=cfg.peer_weighting,
        public_x=fed.public.x if cfg.seed_source == "public" else None,
        **common,
    )


def check_settings(values: Mapping[str, Any]) -> None:
    try:
        check_encoding(str(values["posterior-dtype"]))
    except ValueError as err:
        raise ConfigError(f"posterior-dtype: {err}") from None
    if values["seed-per-class"] == 0 and values["h2l-lambda"] > 0:
        raise ConfigError(
            "seed-per-class=0 (no seed set) requires h2l-lambda=0: there is nothing to distil on"
        )
    if values["seed-source"] == "public" and values["public-fraction"] == 0:
        raise ConfigError(
            "seed-source='public' draws the seed set from the public split: set "
            "public-fraction in (0, 0.9]"
        )
    if values["peer-weighting"] == "agreement" and values["relay"] != "loo-mean":
        raise ConfigError(
            "peer-weighting='agreement' weights the leave-one-out mean: it needs relay='loo-mean'"
        )
    if values["peer-weighting"] == "agreement" and values["seed-source"] == "public":
        raise ConfigError(
            "peer-weighting='agreement' scores peers against the seed labels; the public seed "
            "set has none (use seed-source='donated')"
        )
    if values["topology-degree"] % 2:
        raise ConfigError(f"topology-degree={values['topology-degree']} must be even")
