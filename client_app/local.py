"""Local training and evaluation of a node's model on its own data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord

from models.device import resolve_device
from models.features import with_feature_width
from models.training import TrainConfig, seeded_generator, train_classifier
from models.zoo import build_model

from .node import NodeSetup, load_node


def node_model(
    node: NodeSetup, arrays: ArrayRecord, feature_width: int | None = None
) -> torch.nn.Module:
    """The node's architecture holding ``arrays`` (with a head reading ``feature_width``
    features when given: FedGen)."""
    model = build_model(node.architecture, node.input_shape, node.num_classes)
    if feature_width is not None:
        model = with_feature_width(model, feature_width)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


def train_locally(
    arrays: ArrayRecord, config: dict[str, Any], node_config: dict[str, Any]
) -> tuple[ArrayRecord, dict[str, int | float]]:
    """Train from the received weights; return new weights and metrics (``num-examples``)."""
    return train_node(load_node(config, node_config), arrays, config)


def train_node(
    node: NodeSetup,
    arrays: ArrayRecord,
    config: dict[str, Any],
    teacher_logits: torch.Tensor | None = None,
    kd_weights: torch.Tensor | None = None,
    *,
    feature_width: int | None = None,
    regulariser: Callable[[torch.nn.Module], Callable[[], torch.Tensor]] | None = None,
) -> tuple[ArrayRecord, dict[str, int | float]]:
    """Train the node's model from ``arrays`` on its data (with distillation from
    ``teacher_logits`` when given, per example weighted by ``kd_weights`` when given: FMD;
    with ``regulariser(model)()`` added to every step's loss when given: FedGen)."""
    device = resolve_device(node.device)
    model = node_model(node, arrays, feature_width)
    cfg = TrainConfig.from_config(config)
    # Seeded by (run seed, round, partition): the same on every machine and after a resume.
    gen = seeded_generator(int(config["data.seed"]), int(config["server-round"]), node.partition_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # dropout
        metrics = train_classifier(
            model,
            node.data.x,
            node.data.y,
            cfg,
            gen,
            device,
            teacher_logits=teacher_logits,
            kd_weights=kd_weights,
            regulariser=regulariser(model) if regulariser else None,
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return ArrayRecord(state), {
        "num-examples": len(node.data),
        **metrics,
        "partition-id": node.partition_id,
    }
