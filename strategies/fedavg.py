"""Federated Averaging (FedAvg) [McMahan et al., AISTATS 2017, arXiv:1602.05629].

With heterogeneous architectures, clients are grouped by architecture and each group is
averaged on its own (one global model per architecture); no knowledge crosses groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from torch import nn

from federated_data import ArrayDataset, Federation
from models.training import evaluate_classifier
from protocol import ARRAYS_KEY, CONFIG_KEY, TRAIN, arrays_to_record
from protocol.settings import ConfigError, Section, Setting

from .aggregate import ROBUST_AGGREGATIONS, all_finite, clip_updates, robust_average
from .base import Exchange, FederatedStrategy, RoundReport, require_choice
from .state import Arrays, ServerState
from .validation import check_train_reply

TrainReply = tuple[Arrays, int, dict[str, float]]


def check_aggregation(values: Mapping[str, Any]) -> None:
    if values["loss-gate"] > 0 and values["gate-per-class"] == 0:
        raise ConfigError(
            f"loss-gate={values['loss-gate']} checks aggregates on the server's gate split: "
            "set gate-per-class > 0 (for example 20)"
        )
    if 0 < values["loss-gate"] <= 1:
        raise ConfigError(
            f"loss-gate={values['loss-gate']} would refuse aggregates that do not lower the "
            "loss; it is a multiple of the previous loss, > 1 (for example 3)"
        )


AGGREGATION_SETTINGS = Section(
    "aggregation",
    (
        Setting(
            "aggregation",
            "mean",
            "how each architecture group's client models are combined: the sample-weighted "
            "mean (the papers'), or robust trimmed-mean, median, multi-krum",
            choices=ROBUST_AGGREGATIONS,
        ),
        Setting(
            "robust-fraction",
            0.2,
            "share of clients assumed bad: trimmed from each end, or Krum's f",
            low=0.0,
            high=0.49,
        ),
        Setting(
            "update-clip",
            0.0,
            "clip each client's update to this multiple of the round's median update norm "
            "(0 = off)",
            low=0.0,
        ),
        Setting(
            "loss-gate",
            0.0,
            "refuse a group aggregate whose loss on the server's gate split (gate-per-class) "
            "exceeds this multiple of the previous model's (0 = off)",
            low=0.0,
        ),
    ),
    "Weight averaging of FedAvg, FedProx, FedDF, FMD and Mosaic. A group aggregate with NaN "
    "or Inf is never kept: the previous model stays and the drop is logged.",
    check=check_aggregation,
)


def aggregation_settings(cfg: Any, fed: Federation) -> dict[str, Any]:
    """FedAvg's keyword arguments from the run config's aggregation settings."""
    return {
        "aggregation": cfg.aggregation,
        "robust_fraction": cfg.robust_fraction,
        "update_clip": cfg.update_clip,
        "loss_gate": cfg.loss_gate,
        "gate_data": fed.gate if cfg.loss_gate > 0 else None,
    }


class FedAvg(FederatedStrategy):
    """Sample-weighted averaging of client models, per architecture group.

    Parameters
    ----------
    aggregation : str (default: "mean")
        ``mean``, ``trimmed-mean``, ``median`` or ``multi-krum`` (see
        :func:`strategies.aggregate.robust_average`).
    robust_fraction : float (default: 0.2)
        Share of clients the robust aggregations assume bad.
    update_clip : float (default: 0.0)
        Clip updates to this multiple of the median update norm; 0 = off.
    loss_gate : float (default: 0.0)
        Keep the previous model when the new aggregate's loss on ``gate_data`` exceeds this
        multiple of the previous model's; 0 = off.
    gate_data : ArrayDataset | None (default: None)
        The server's labelled gate split (required when ``loss_gate`` > 0).
    **kwargs
        The base strategy's arguments.
    """

    name = "fedavg"
    # FMD sends the same round with its own message type and the teacher's head.
    train_message_type = TRAIN
    # Client metrics reported as totals over the round's replies instead of weighted means.
    summed_metrics: tuple[str, ...] = ()

    def __init__(  # type: ignore[no-untyped-def]
        self,
        *,
        aggregation: str = "mean",
        robust_fraction: float = 0.2,
        update_clip: float = 0.0,
        loss_gate: float = 0.0,
        gate_data: ArrayDataset | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        require_choice("aggregation", aggregation, ROBUST_AGGREGATIONS)
        if loss_gate > 0 and (gate_data is None or len(gate_data) == 0):
            raise ValueError("loss_gate > 0 needs gate_data (the server's labelled gate split)")
        self.aggregation = aggregation
        self.robust_fraction = robust_fraction
        self.update_clip = update_clip
        self.loss_gate = loss_gate
        self.gate_data = gate_data

    def train_config(self, server_round: int) -> dict[str, int | float | str | bool]:
        """Per-round config added to the node config; FedProx adds its ``proximal-mu``."""
        return {"server-round": server_round, "proximal-mu": 0.0}

    def train_round(
        self, grid: Grid, state: ServerState, server_round: int
    ) -> tuple[ServerState, RoundReport]:
        report = RoundReport()
        participants = self.select_participants(grid, server_round, report)
        self.ensure_models(state, {self.nodes[n].architecture for n in participants})

        ex = self.train_phase(grid, state, participants, server_round, report)
        report.num_ok = len(ex.replies)
        report.metrics = self._mean_metrics(ex.replies)

        groups = self.group_by_architecture(ex.replies)
        for arch, replies in groups.items():
            weights = [n for _, n, _ in replies]
            if sum(weights) == 0:
                log(
                    INFO,
                    "Round %d: %s group reported no examples; kept",
                    server_round,
                    arch,
                )
                continue
            self._aggregate_group(state, arch, replies, server_round, report)
        self.after_aggregation(grid, state, ex.replies, server_round, report)
        state.round = server_round
        return state, report

    def _aggregate_group(
        self,
        state: ServerState,
        arch: str,
        replies: list[TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        """The group's new global model; one with NaN or Inf, or failing the loss gate, is
        refused (the previous model is kept, so it is never checkpointed)."""
        models = clip_updates([a for a, _, _ in replies], state.models[arch], self.update_clip)
        weights = [n for _, n, _ in replies]
        new = robust_average(models, weights, self.aggregation, self.robust_fraction)
        why = "holds NaN or Inf" if not all_finite(new) else self._gate(arch, new, state, report)
        if why:
            log(
                WARNING, "Round %d: the %s aggregate %s; kept the previous", server_round, arch, why
            )
            report.metrics[f"rejected-aggregate/{arch}"] = 1.0
            return
        state.models[arch] = new

    def _gate(self, arch: str, new: Arrays, state: ServerState, report: RoundReport) -> str:
        """Why ``new`` fails the loss gate ("" when it passes or the gate is off)."""
        if not self.loss_gate or self.gate_data is None:
            return ""
        x, y, cpu = self.gate_data.x, self.gate_data.y, torch.device("cpu")
        before = evaluate_classifier(self.load_model(arch, state.models[arch]), x, y, cpu)["loss"]
        after = evaluate_classifier(self.load_model(arch, new), x, y, cpu)["loss"]
        report.metrics[f"gate-loss/{arch}"] = after
        if np.isfinite(after) and after <= self.loss_gate * before:
            return ""
        return f"has gate loss {after:.3g} > loss-gate={self.loss_gate} x {before:.3g}"

    def after_aggregation(
        self,
        grid: Grid,
        state: ServerState,
        replies: dict[int, TrainReply],
        server_round: int,
        report: RoundReport,
    ) -> None:
        """Hook for server-side steps after averaging (FedDF distils here)."""

    def extra_content(self, state: ServerState) -> RecordDict:
        """Records sent to every node besides its model and the config (FMD: teacher head)."""
        return RecordDict()

    def train_phase(
        self,
        grid: Grid,
        state: ServerState,
        node_ids: list[int],
        server_round: int,
        report: RoundReport,
    ) -> Exchange:
        """Send every node the global model of its own architecture; validate the replies."""
        config = ConfigRecord({**self.node_config, **self.train_config(server_round)})
        payloads = {}
        expected: dict[int, Arrays] = {}
        extra = dict(self.extra_content(state))
        for n in node_ids:
            expected[n] = state.models[self.nodes[n].architecture]
            payloads[n] = RecordDict(
                {ARRAYS_KEY: arrays_to_record(expected[n]), CONFIG_KEY: config, **extra}
            )
        return self.phase(
            grid,
            payloads,
            self.train_message_type,
            server_round,
            lambda reply: check_train_reply(
                reply, expected[reply.metadata.src_node_id], self.known_examples(reply)
            ),
            report,
        )

    def client_models(self, replies: dict[int, TrainReply]) -> list[nn.Module]:
        """The received client models, in partition order (an ensemble's members)."""
        return [
            self.load_model(self.nodes[n].architecture, replies[n][0])
            for n in self.by_partition(replies)
        ]

    def group_by_architecture(self, replies: dict[int, TrainReply]) -> dict[str, list[TrainReply]]:
        """Replies per architecture, ordered by partition id so sums are reproducible."""
        groups: dict[str, list[TrainReply]] = {}
        for node_id in self.by_partition(replies):
            groups.setdefault(self.nodes[node_id].architecture, []).append(replies[node_id])
        return dict(sorted(groups.items()))

    def _mean_metrics(self, replies: dict[int, TrainReply]) -> dict[str, float]:
        """Example-weighted means of the clients' metrics; totals for ``summed_metrics``."""
        total = sum(n for _, n, _ in replies.values())
        if total == 0:
            return {}
        keys = set.intersection(*(set(m) for _, _, m in replies.values()))
        keys -= {"num-examples", "partition-id"}  # ids, not quantities to average
        return {
            k: float(np.sum([m[k] for _, _, m in replies.values()]))
            if k in self.summed_metrics
            else float(np.sum([m[k] * n for _, n, m in replies.values()]) / total)
            for k in sorted(keys)
        }


def build(cfg: Any, fed: Federation, device: torch.device, common: dict[str, Any]) -> FedAvg:
    return FedAvg(**aggregation_settings(cfg, fed), **common)
