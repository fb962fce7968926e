"""Shared strategy machinery: node sampling and discovery, per-node messages, validation,
fault tolerance and communication accounting.

A strategy is ``initial_state`` + ``train_round`` over an explicit :class:`ServerState`; the
server app owns the round loop, evaluation, checkpoints and outputs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode as FlowerError
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from federated_data import ArrayDataset, Federation
from models.training import evaluate_classifier, seeded_generator
from models.zoo import ARCHITECTURES, count_flops, count_parameters
from protocol import CONFIG_KEY, INFO_KEY, QUERY_INFO, TIMING_KEY, serialized_size

from .state import Arrays, ServerState
from .validation import InvalidReply, check_no_error

T = TypeVar("T")
ConfigValue = Any
# Seconds between pulls for replies (the ``poll-interval`` setting). Flower's own
# Grid.send_and_receive sleeps 3 s between pulls, which adds 1.5 s on average to every message
# phase of a deployment.
POLL_INTERVAL = 0.1
# Later in a phase the wait grows to this share of the time elapsed, up to POLL_CAP seconds:
# a pull costs the SuperLink an access-log line, and 10 per second through a 10-minute phase
# flood its log, while a reply that arrives after t seconds is then noticed at most 5% late.
POLL_GROWTH, POLL_CAP = 0.05, 1.0
# Flower's error codes for a node that went away, as opposed to what its ClientApp did.
TRANSIENT_ERRORS = frozenset(
    {
        FlowerError.MESSAGE_UNAVAILABLE,
        FlowerError.REPLY_MESSAGE_UNAVAILABLE,
        FlowerError.NODE_UNAVAILABLE,
        FlowerError.CLIENT_APP_CRASHED,
    }
)
# Seconds between samplings while too few nodes are usable because some went away.
RESAMPLE_WAIT = 2.0


def poll_wait(elapsed: float, poll_interval: float = POLL_INTERVAL) -> float:
    """Seconds to wait before the next pull, ``elapsed`` seconds into a message phase."""
    return max(poll_interval, min(POLL_GROWTH * elapsed, POLL_CAP))


def require_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    """A strategy setting must be one of ``allowed``; the error names the key and the options."""
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is unknown; allowed: {', '.join(allowed)}")


def module_arrays(model: nn.Module) -> Arrays:
    """A module's state dict as named numpy arrays (copies, on the CPU)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_arrays(model: nn.Module, arrays: Arrays) -> nn.Module:
    """Load named numpy arrays into ``model``; returns it."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return model


M = TypeVar("M", bound=nn.Module)


def kept_module(state: ServerState, prefix: str, factory: Callable[[], M], *seed_keys: int) -> M:
    """The module a strategy keeps in ``state`` under ``prefix`` (its arrays from the previous
    rounds), or a new one from ``factory`` whose initialisation is seeded by ``seed_keys`` (the
    same on every machine and after a resume: FedFTG's and FedGen's generators)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence(list(seed_keys)).generate_state(1)[0]))
        module = factory()
    saved = state.data_under(prefix)
    if saved:
        load_arrays(module, saved)
    return module


# What the method registry calls to build a strategy: (resolved config, federation, device,
# the base strategy's keyword arguments) -> strategy. The config is server_app's
# ExperimentConfig (attribute = run-config key with ``_``).
Builder = Callable[[Any, "Federation", torch.device, dict[str, Any]], "FederatedStrategy"]


class FederationError(RuntimeError):
    """The federation cannot continue (too few nodes or valid replies); the run stops."""


@dataclass(frozen=True)
class NodeInfo:
    """What a node reported through ``query.info``."""

    node_id: int
    partition_id: int
    architecture: str
    num_examples: int
    label_counts: tuple[int, ...]


@dataclass
class Exchange:
    """Outcome of one message phase: valid parsed replies, drops and bytes per node."""

    replies: dict[int, Any] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    # node id -> seconds: the round trip seen by the server and the node's own ``timing``
    seconds: dict[int, dict[str, float]] = field(default_factory=dict)
    # node id -> the code of its error reply (protocol.ErrorCode for bouquet's own errors)
    error_codes: dict[int, int] = field(default_factory=dict)
    # nodes that sent nothing within the round timeout
    silent: set[int] = field(default_factory=set)

    def went_away(self, node_id: int) -> bool:
        """Whether the node's drop says it was gone (no reply, or the SuperLink's word that it
        is unavailable or crashed), not that it answered badly: it may be back soon."""
        return node_id in self.silent or self.error_codes.get(node_id) in TRANSIENT_ERRORS


@dataclass
class RoundReport:
    """What a round produced besides the new state."""

    num_sampled: int = 0
    num_ok: int = 0
    dropped: dict[int, str] = field(default_factory=dict)
    # partition id -> [bytes down, bytes up], summed over the round's phases
    bytes: dict[int, list[int]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # partition id -> seconds (round trip, start-up, imports, load, handler), summed likewise
    seconds: dict[int, dict[str, float]] = field(default_factory=dict)

    def add(self, ex: Exchange, partition_of: dict[int, int]) -> None:
        for node in set(ex.bytes_down) | set(ex.bytes_up):
            key = partition_of.get(node, -1 - node % 10**6)
            b = self.bytes.setdefault(key, [0, 0])
            b[0] += ex.bytes_down.get(node, 0)
            b[1] += ex.bytes_up.get(node, 0)
        for node, seconds in ex.seconds.items():
            _add_seconds(self.seconds, partition_of.get(node, -1 - node % 10**6), seconds)
        self.dropped.update(ex.dropped)

    def merge(self, other: RoundReport) -> None:
        """Add another phase's bytes, drops and metrics (FMD: the probe phase of round 1)."""
        for key, (down, up) in other.bytes.items():
            b = self.bytes.setdefault(key, [0, 0])
            b[0] += down
            b[1] += up
        for key, seconds in other.seconds.items():
            _add_seconds(self.seconds, key, seconds)
        self.dropped.update(other.dropped)
        self.metrics.update(other.metrics)


def _add_seconds(total: dict[int, dict[str, float]], key: int, seconds: dict[str, float]) -> None:
    entry = total.setdefault(key, {})
    for name, value in seconds.items():
        # ``threads`` is a count that every phase reports, not a duration to add up.
        entry[name] = (
            max(entry.get(name, 0.0), value)
            if name == "threads"
            else (entry.get(name, 0.0) + value)
        )


class FederatedStrategy(ABC):
    """Base of every bouquet strategy.

    Parameters
    ----------
    model_fn : Callable[[str], nn.Module]
        Builds a fresh model of an architecture (input shape and classes already bound).
    node_config : dict[str, ConfigValue]
        Config sent with every message (data spec, architecture assignment, hyperparameters).
    min_nodes : int (default: 2)
        Fewest valid replies a round may proceed with; fewer stops the run.
    clients_per_round : int (default: 0)
        Nodes sampled per round; 0 means every connected node.
    round_timeout : float (default: 600.0)
        Seconds to wait for the replies of one phase; missing replies count as failures.
    poll_interval : float (default: 0.1)
        Seconds between pulls for replies (Flower's ``Grid.send_and_receive`` uses 3 s).
    max_reply_bytes : int (default: 0)
        A reply whose serialised content is larger is dropped before any of its arrays is
        decoded; 0 = no bound of ours (gRPC's 2 GiB message limit still holds).
    seed : int (default: 0)
        Root of every server-side random choice (sampling, initial weights, distillation).
    """

    name = "base"
    # The metric that ranks rounds (best checkpoint, summary): test accuracy for classifiers;
    # PRISM's generators are ranked by a Frechet distance, where lower is better.
    score_metric = "accuracy"
    higher_is_better = True

    def __init__(
        self,
        *,
        model_fn: Callable[[str], nn.Module],
        node_config: dict[str, ConfigValue],
        min_nodes: int = 2,
        clients_per_round: int = 0,
        round_timeout: float = 600.0,
        poll_interval: float = POLL_INTERVAL,
        max_reply_bytes: int = 0,
        seed: int = 0,
    ) -> None:
        self.model_fn = model_fn
        self.node_config = dict(node_config)
        self.min_nodes = min_nodes
        self.clients_per_round = clients_per_round
        self.round_timeout = round_timeout
        self.poll_interval = poll_interval
        self.max_reply_bytes = max_reply_bytes
        self.seed = seed
        self.nodes: dict[int, NodeInfo] = {}  # node id -> info, learnt lazily

    # ----------------------------------------------------------------- to implement

    @abstractmethod
    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        """Run one round and return the new state with its report."""

    def summary(self) -> None:
        """Log the strategy's settings as a tree, like Flower's strategies."""
        log(INFO, "\t├── %s", type(self).__name__)
        log(INFO, "\t│   ├── min nodes: %d", self.min_nodes)
        per_round = self.clients_per_round or "all"
        log(INFO, "\t│   ├── clients per round: %s", per_round)
        log(INFO, "\t│   ├── round timeout: %.0f s", self.round_timeout)
        log(INFO, "\t│   └── poll interval: %.2f s", self.poll_interval)

    def take_images(self) -> dict[str, np.ndarray]:
        """Images produced since the last call, to be saved as grids (Mosaic: generator
        samples); name -> uint8 (N, C, H, W)."""
        return {}

    def extra_summary(self, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        """Method-specific entries for ``summary.json`` (FMD: the teacher)."""
        return {}

    def export(self, state: ServerState, directory: Path) -> dict[str, Any]:
        """Write the run's final artefact to ``directory`` (PRISM: the sparse generator);
        returns what ``summary.json`` should say about it."""
        return {}

    def model_costs(self, input_shape: tuple[int, int, int]) -> dict[str, dict[str, int]]:
        """Parameters and MACs of every architecture the run trained."""
        out = {}
        for arch in sorted({i.architecture for i in self.nodes.values()}):
            m = self.model_fn(arch)
            out[arch] = {"parameters": count_parameters(m), "macs": count_flops(m, input_shape)}
        return out

    # ----------------------------------------------------------------- evaluation

    def evaluate(
        self, state: ServerState, test: ArrayDataset, device: torch.device
    ) -> dict[str, dict[str, float]]:
        """Test metrics per model: here every global model (one per architecture) on the
        server's held-out split. Strategies whose models stay on the clients override this."""
        out = {}
        for arch, arrays in sorted(state.models.items()):
            out[arch] = evaluate_classifier(self.load_model(arch, arrays), test.x, test.y, device)
        return out

    # ----------------------------------------------------------------- models

    def load_model(self, architecture: str, arrays: Arrays) -> nn.Module:
        """A fresh model of ``architecture`` holding ``arrays``."""
        return load_arrays(self.model_fn(architecture), arrays)

    def initial_arrays(self, architecture: str) -> Arrays:
        """Initial weights of an architecture, identical for the same seed on any machine."""
        gen = seeded_generator(self.seed, 0x1417, sum(map(ord, architecture)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            model = self.model_fn(architecture)
        return module_arrays(model)

    def initial_state(self) -> ServerState:
        return ServerState()

    def ensure_models(self, state: ServerState, architectures: set[str]) -> None:
        """Create a global model for every architecture seen for the first time."""
        for arch in sorted(architectures - set(state.models)):
            state.models[arch] = self.initial_arrays(arch)

    # ----------------------------------------------------------------- nodes

    def sample_nodes(self, grid: Grid, server_round: int) -> list[int]:
        """Wait for ``min_nodes`` connected nodes, then sample (sorted ids, seeded by round)."""
        deadline = time.monotonic() + self.round_timeout
        node_ids = sorted(grid.get_node_ids())
        while len(node_ids) < self.min_nodes:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(node_ids)} nodes connected after {self.round_timeout:.0f} s; "
                    f"min-nodes={self.min_nodes}"
                )
            log(
                INFO,
                "Waiting for nodes: %d connected, %d needed",
                len(node_ids),
                self.min_nodes,
            )
            time.sleep(1.0)
            node_ids = sorted(grid.get_node_ids())
        k = self.clients_per_round
        if 0 < k < len(node_ids):
            rng = np.random.default_rng([self.seed, server_round, 0x5A3])
            # Sample positions, not ids: node ids use all 64 bits and numpy would round them.
            picked = rng.choice(len(node_ids), size=k, replace=False)
            node_ids = [node_ids[i] for i in sorted(picked)]
        return node_ids

    def select_participants(self, grid: Grid, server_round: int, report: RoundReport) -> list[int]:
        """Sample this round's nodes and return those whose ``query.info`` is known.

        While fewer than ``min_nodes`` are usable because sampled nodes went away (restarting
        nodes are still listed for a while), sample again every few seconds until
        ``round_timeout``; when the drops are the nodes' own answers, stop at once, naming them.
        """
        deadline = time.monotonic() + self.round_timeout
        while True:
            node_ids = self.sample_nodes(grid, server_round)
            report.num_sampled = len(node_ids)
            discovery = self.discover(grid, node_ids, server_round)
            report.add(discovery, self.partition_of())
            known = [n for n in node_ids if n in self.nodes]
            if len(known) >= self.min_nodes:
                for n in known:  # an earlier try's drop of a node that answered since
                    report.dropped.pop(n, None)
                return known
            gone = [n for n in discovery.dropped if discovery.went_away(n)]
            if not gone or time.monotonic() + RESAMPLE_WAIT > deadline:
                raise FederationError(  # say why now: later phases would only see no nodes
                    f"round {server_round}: {len(known)} of {len(node_ids)} sampled nodes are "
                    f"usable, fewer than min-nodes={self.min_nodes}; query.info drops: "
                    f"{discovery.dropped}"
                )
            log(
                WARNING,
                "Round %d: %d of %d sampled nodes usable (min-nodes=%d), %d went away; "
                "sampling again in %.0f s",
                server_round,
                len(known),
                len(node_ids),
                self.min_nodes,
                len(gone),
                RESAMPLE_WAIT,
            )
            time.sleep(RESAMPLE_WAIT)

    def discover(self, grid: Grid, node_ids: list[int], server_round: int) -> Exchange:
        """``query.info`` the nodes not seen before; cache what they report."""
        unknown = [n for n in node_ids if n not in self.nodes]
        payloads = {n: RecordDict({CONFIG_KEY: ConfigRecord(self.node_config)}) for n in unknown}
        num_classes = self.node_config.get("num-classes")
        ex = self.exchange(
            grid, payloads, QUERY_INFO, server_round, lambda r: _parse_info(r, num_classes)
        )
        connected = set(grid.get_node_ids()) if ex.replies else set()
        for node_id, info in sorted(ex.replies.items()):
            holder = self._claim_partition(node_id, info[0], connected)
            if holder is not None:
                del ex.replies[node_id]
                ex.dropped[node_id] = (
                    f"{QUERY_INFO}: partition-id={info[0]} is already node {holder}'s"
                )
                log(WARNING, "Round %d: node %d %s", server_round, node_id, ex.dropped[node_id])
                continue
            self.nodes[node_id] = NodeInfo(node_id, *info)
            log(
                INFO,
                "Node %d: partition %d, %s, %d examples, label counts %s",
                node_id,
                info[0],
                info[1],
                info[2],
                list(info[3]),
            )
        return ex

    def _claim_partition(self, node_id: int, partition: int, connected: set[int]) -> int | None:
        """The connected node that already holds ``partition``, if any; a holder that left
        (a restarted SuperNode comes back with a new id) is forgotten instead."""
        for other, known in list(self.nodes.items()):
            if other != node_id and known.partition_id == partition:
                if other in connected:
                    return other
                del self.nodes[other]
        return None

    # ----------------------------------------------------------------- messaging

    def exchange(
        self,
        grid: Grid,
        payloads: dict[int, RecordDict],
        message_type: str,
        server_round: int,
        parse: Callable[[Message], T],
    ) -> Exchange:
        """Send one message per node, wait up to ``round_timeout``, validate every reply.

        Replies that are missing, carry an error or fail ``parse`` are dropped and logged
        with the node id; they never reach the aggregate.
        """
        ex = Exchange()
        if not payloads:
            return ex
        messages = []
        for node_id, content in payloads.items():
            ex.bytes_down[node_id] = serialized_size(content)
            messages.append(
                Message(
                    content=content,
                    dst_node_id=node_id,
                    message_type=message_type,
                    group_id=str(server_round),
                )
            )
        replies = send_and_receive(grid, messages, self.round_timeout, self.poll_interval)
        # A reply answers the message whose id it names: when a node dies, the SuperLink
        # replies for it with an error from node id 1. Grids that assign no ids (the in-process
        # one) are matched by sender.
        addressee = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        addressee.pop("", None)
        for reply, round_trip in replies:
            sender = reply.metadata.src_node_id
            node_id = addressee.get(reply.metadata.reply_to_message_id, sender)
            if node_id not in payloads or node_id in ex.replies or node_id in ex.dropped:
                log(WARNING, "Ignoring unexpected reply from node %d", sender)
                continue
            self._accept(ex, node_id, reply, round_trip, message_type, server_round, parse)
        for node_id in payloads:
            if node_id not in ex.replies and node_id not in ex.dropped:
                ex.silent.add(node_id)
                ex.dropped[node_id] = f"{message_type}: no reply within {self.round_timeout:.0f} s"
                log(
                    WARNING,
                    "Round %d: node %d did not reply to %s within %.0f s",
                    server_round,
                    node_id,
                    message_type,
                    self.round_timeout,
                )
        return ex

    def _accept(
        self,
        ex: Exchange,
        node_id: int,
        reply: Message,
        round_trip: float,
        message_type: str,
        server_round: int,
        parse: Callable[[Message], Any],
    ) -> None:
        """Account ``node_id``'s reply and keep it parsed, or drop it with the reason."""
        ex.seconds[node_id] = {"round-trip": round_trip}
        if reply.has_content():
            ex.bytes_up[node_id] = serialized_size(reply.content)
            ex.seconds[node_id].update(_node_timing(reply.content))
        if reply.has_error():
            ex.error_codes[node_id] = int(reply.error.code)
        try:
            check_no_error(reply)
            self._check_size(ex.bytes_up.get(node_id, 0))
            ex.replies[node_id] = parse(reply)
        except Exception as err:  # whatever one reply holds, it costs that reply, not the run
            reason = str(err) if isinstance(err, InvalidReply) else f"{type(err).__name__}: {err}"
            ex.dropped[node_id] = f"{message_type}: {reason}"
            log(
                WARNING,
                "Round %d: dropped %s reply of node %d: %s",
                server_round,
                message_type,
                node_id,
                err,
            )

    def _check_size(self, size: int) -> None:
        if self.max_reply_bytes and size > self.max_reply_bytes:
            raise InvalidReply(
                f"reply of {size / 2**20:.1f} MiB exceeds max-reply-mb="
                f"{self.max_reply_bytes / 2**20:g}"
            )

    def phase(
        self,
        grid: Grid,
        payloads: dict[int, RecordDict],
        message_type: str,
        server_round: int,
        parse: Callable[[Message], T],
        report: RoundReport,
        *,
        require: bool = True,
    ) -> Exchange:
        """One message phase of a round: :meth:`exchange`, its bytes, drops and seconds added
        to ``report``, and (``require``) the run stopped when fewer than ``min-nodes`` valid
        replies came back."""
        ex = self.exchange(grid, payloads, message_type, server_round, parse)
        report.add(ex, self.partition_of())
        if require:
            self.require_replies(ex, server_round, message_type)
        return ex

    def known_examples(self, reply: Message) -> int | None:
        """The example count the reply's sender reported in ``query.info``."""
        info = self.nodes.get(reply.metadata.src_node_id)
        return None if info is None else info.num_examples

    def by_partition(self, node_ids: Iterable[int]) -> list[int]:
        """Node ids ordered by partition id: sums over replies in this order are reproducible."""
        return sorted(node_ids, key=lambda n: self.nodes[n].partition_id)

    def require_replies(self, ex: Exchange, server_round: int, phase: str) -> None:
        if len(ex.replies) < self.min_nodes:
            raise FederationError(
                f"round {server_round} {phase}: {len(ex.replies)} valid replies, fewer than "
                f"min-nodes={self.min_nodes}; dropped: {ex.dropped}"
            )

    def partition_of(self) -> dict[int, int]:
        return {n: info.partition_id for n, info in self.nodes.items()}


def _parse_info(
    reply: Message, num_classes: int | None = None
) -> tuple[int, str, int, tuple[int, ...]]:
    info = reply.content[INFO_KEY]
    if not isinstance(info, ConfigRecord):
        raise InvalidReply(f"'{INFO_KEY}' is not a ConfigRecord")
    partition_id, arch = info["partition-id"], info["architecture"]
    num_examples, counts = info["num-examples"], info["label-counts"]
    if not isinstance(partition_id, int) or partition_id < 0:
        raise InvalidReply(f"partition-id={partition_id!r} is not a non-negative integer")
    if arch not in ARCHITECTURES:
        raise InvalidReply(f"architecture={arch!r} is not in the zoo")
    if not isinstance(num_examples, int) or num_examples < 0:
        raise InvalidReply(f"num-examples={num_examples!r} is not a non-negative integer")
    if not isinstance(counts, list) or any(not isinstance(c, int) or c < 0 for c in counts):
        raise InvalidReply("label-counts is not a list of non-negative integers")
    if num_classes is not None and len(counts) != num_classes:
        raise InvalidReply(f"label-counts has {len(counts)} entries for {num_classes} classes")
    total = sum(int(c) for c in counts)
    if total != num_examples:
        raise InvalidReply(f"label-counts sum to {total}, num-examples is {num_examples}")
    return partition_id, arch, num_examples, tuple(int(c) for c in counts)


def send_and_receive(
    grid: Grid, messages: list[Message], timeout: float, poll_interval: float = POLL_INTERVAL
) -> list[tuple[Message, float]]:
    """Push ``messages``, then pull (every ``poll_interval`` seconds at first, see
    :func:`poll_wait`) until all replies arrived or ``timeout`` passed; returns the replies
    with the seconds each took to arrive."""
    t0 = time.monotonic()
    try:
        pending = set(grid.push_messages(messages))
    except NotImplementedError:  # the in-process test grid answers synchronously
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        return [(r, time.monotonic() - t0) for r in replies]
    out: list[tuple[Message, float]] = []
    while pending:
        arrived = list(grid.pull_messages(pending))
        now = time.monotonic() - t0
        out += [(r, now) for r in arrived]
        pending -= {r.metadata.reply_to_message_id for r in arrived}
        if not pending or now >= timeout:
            break
        time.sleep(min(poll_wait(now, poll_interval), max(0.0, timeout - now)))
    return out


def _node_timing(content: RecordDict) -> dict[str, float]:
    """The node's ``timing`` record, if well formed (it is diagnostics: a malformed one is
    ignored, never a reason to drop the reply)."""
    if TIMING_KEY not in content.metric_records:
        return {}
    record = content.metric_records[TIMING_KEY]
    timing = {}
    for name, value in record.items():
        if isinstance(value, (int, float)) and np.isfinite(value) and 0 <= value < 1e6:
            timing[str(name)] = float(value)
    return timing
