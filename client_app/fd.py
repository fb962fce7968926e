"""FD on a node: a private model trained with cross-entropy plus a distillation term toward the
peers' mean logits of each example's class; only per-class mean logits leave the node.

Jeong et al., "Communication-efficient on-device machine learning: federated distillation and
augmentation under non-IID private data" (arXiv:1811.11479), section 2 (see
``strategies/fd.py`` for the server side and what we chose where the paper is silent).
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import RecordDict
from torch import nn

from protocol import CLASS_LOGITS_KEY

from .class_means import ClassMeanMethod, class_mean_round


def fd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    present: torch.Tensor | None,
    lam: float,
    temperature: float,
) -> torch.Tensor:
    """``CE(labels) + lam T^2 KL(softmax(teacher[y] / T) || softmax(logits / T))``, the KL
    averaged over the batch rows whose class has a peer mean (``present``; others get CE only).

    ``teacher`` is (classes, classes): row ``c`` is the peers' mean logit vector of class ``c``.
    """
    loss = nn.functional.cross_entropy(logits, labels)
    if teacher is None or present is None or lam == 0:
        return loss
    rows = present[labels]
    if not bool(rows.any()):
        return loss
    log_p = torch.log_softmax(logits[rows] / temperature, dim=1)
    q = torch.softmax(teacher[labels[rows]] / temperature, dim=1)
    kl = nn.functional.kl_div(log_p, q, reduction="sum") / len(labels)
    return loss + lam * temperature**2 * kl


def _loss(
    logits: torch.Tensor,
    _features: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    present: torch.Tensor | None,
    config: dict[str, Any],
) -> torch.Tensor:
    lam, temperature = float(config["fd-lambda"]), float(config["fd-temperature"])
    return fd_loss(logits, labels, teacher, present, lam, temperature)


FD_NODE = ClassMeanMethod(
    state_key="fd-model",
    record_key=CLASS_LOGITS_KEY,
    array_name="logits",
    loss=_loss,
    max_grad_norm=lambda config: float(config["fd-max-grad-norm"]),
)


def train_fd(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """One FD round: local training with the peers' class means (none in round 1), then this
    node's class means and its scores."""
    return class_mean_round(FD_NODE, content, node_config, state)
