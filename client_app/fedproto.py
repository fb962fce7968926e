"""FedProto on a node: a private model whose features (the input of its head, at the run's
shared width) are pulled toward the global prototype of each example's class; only per-class
mean features leave the node.

Tan et al., "FedProto: Federated Prototype Learning across Heterogeneous Clients" (AAAI 2022,
arXiv:2105.00243), Algorithm 1 (see ``strategies/fedproto.py`` for the server side and what we
chose where the paper is silent).
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import RecordDict
from torch import nn

from protocol import CLASS_PROTOTYPES_KEY

from .class_means import ClassMeanMethod, class_mean_round


def proto_loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor | None,
    present: torch.Tensor | None,
    lam: float,
) -> torch.Tensor:
    """``CE(labels) + lam * mean squared difference between each row's features and its class's
    global prototype``; the mean runs over every element of the batch's features, rows whose
    class has no prototype counting as zero (the scale of the authors' ``MSELoss``).
    """
    loss = nn.functional.cross_entropy(logits, labels)
    if prototypes is None or present is None or lam == 0:
        return loss
    rows = present[labels]
    if not bool(rows.any()):
        return loss
    diff = features[rows] - prototypes[labels[rows]]
    return loss + lam * (diff * diff).sum() / features.numel()


def _loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor | None,
    present: torch.Tensor | None,
    config: dict[str, Any],
) -> torch.Tensor:
    return proto_loss(logits, features, labels, prototypes, present, float(config["proto-lambda"]))


FEDPROTO_NODE = ClassMeanMethod(
    state_key="fedproto-model",
    record_key=CLASS_PROTOTYPES_KEY,
    array_name="prototypes",
    loss=_loss,
    feature_width=lambda config: int(config["proto-width"]),
    max_grad_norm=lambda config: float(config["proto-max-grad-norm"]),
)


def train_fedproto(
    content: RecordDict, node_config: dict[str, Any], state: RecordDict
) -> RecordDict:
    """One FedProto round: local training toward the global prototypes (none in round 1), then
    this node's prototypes and its scores."""
    return class_mean_round(FEDPROTO_NODE, content, node_config, state)
