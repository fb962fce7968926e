"""FD on a node: a private model trained with cross-entropy plus a distillation term toward the
peers' mean logits of each example's class; only per-class mean logits leave the node.

Jeong et al., "Communication-efficient on-device machine learning: federated distillation and
augmentation under non-IID private data" (arXiv:1811.11479), section 2 (see
``strategies/fd.py`` for the server side and what we chose where the paper is silent).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from torch import nn

from federated_data import ArrayDataset
from models.device import resolve_device
from models.training import (
    SGD,
    TrainConfig,
    batch_indices,
    images_to_tensor,
    predict_logits,
    seeded_generator,
)
from protocol import CLASS_LOGITS_KEY, CONFIG_KEY, METRICS_KEY, arrays_to_record

from .node import load_node
from .private import keep_model, local_split, restore_model, scores

MODEL_STATE_KEY = "fd-model"


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


def class_mean_logits(
    model: nn.Module, data: ArrayDataset, num_classes: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, classes) float32 mean eval-mode logits per class held (zero rows elsewhere)
    and (classes,) int64 example counts."""
    counts = np.bincount(data.y, minlength=num_classes).astype(np.int64)
    means = np.zeros((num_classes, num_classes), dtype=np.float32)
    if len(data):
        logits = predict_logits(model, data.x, device).numpy().astype(np.float64)
        sums = np.zeros((num_classes, num_classes))
        np.add.at(sums, data.y, logits)
        held = counts > 0
        means[held] = (sums[held] / counts[held, None]).astype(np.float32)
    return means, counts


def train_fd(content: RecordDict, node_config: dict[str, Any], state: RecordDict) -> RecordDict:
    """One FD round: local training with the peers' class means (none in round 1), then this
    node's class means and its scores."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])  # type: ignore[arg-type]
    node = load_node(config, node_config)
    device = resolve_device(node.device)
    train, local_test = local_split(node, int(config["data.seed"]))
    model = restore_model(node, state, int(config["data.seed"]), MODEL_STATE_KEY)
    teacher, present = _peer_means(content)
    gen = seeded_generator(int(config["data.seed"]), int(config["server-round"]), node.partition_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        loss = _train(model, train, teacher, present, config, gen, device)
    keep_model(model, state, MODEL_STATE_KEY)
    means, counts = class_mean_logits(model, train, node.num_classes, device)
    metrics: dict[str, Any] = {
        "num-examples": len(train),
        "partition-id": node.partition_id,
        "train-loss": loss,
        **scores(model, node, local_test, config, device),
    }
    return RecordDict(
        {
            CLASS_LOGITS_KEY: arrays_to_record({"logits": means, "counts": counts}),
            METRICS_KEY: MetricRecord(dict(metrics)),
        }
    )


def _peer_means(content: RecordDict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if CLASS_LOGITS_KEY not in content:
        return None, None
    record = content[CLASS_LOGITS_KEY]
    assert isinstance(record, ArrayRecord)
    teacher = torch.from_numpy(record["logits"].numpy().astype(np.float32))
    present = torch.from_numpy(record["counts"].numpy() > 0)
    return teacher, present


def _train(
    model: nn.Module,
    train: ArrayDataset,
    teacher: torch.Tensor | None,
    present: torch.Tensor | None,
    config: dict[str, Any],
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """SGD with momentum on :func:`fd_loss` over the node's training split."""
    model.to(device).train()
    if len(train) == 0:
        return 0.0
    cfg = TrainConfig.from_config(config)
    lam, temperature = float(config["fd-lambda"]), float(config["fd-temperature"])
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    xs, ys = images_to_tensor(train.x), torch.from_numpy(train.y)
    if teacher is not None and present is not None:
        teacher, present = teacher.to(device), present.to(device)
    losses = []
    for idx in batch_indices(len(train), cfg.batch_size, cfg.num_steps(len(train)), gen):
        if len(idx) < 2:  # BatchNorm needs two examples
            continue
        logits = model(xs[idx].to(device))
        loss = fd_loss(logits, ys[idx].to(device), teacher, present, lam, temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else 0.0
