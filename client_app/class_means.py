"""What FD's and FedProto's nodes share: a private model trained with cross-entropy plus a pull
toward a pool of per-class means received from the server, after which the node replies with
its own per-class means (of logits or of features) and its scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from federated_data import ArrayDataset
from models.device import resolve_device
from models.experts import penultimate_features
from models.features import logits_and_features
from models.training import (
    SGD,
    TrainConfig,
    batch_indices,
    clip_gradient,
    images_to_tensor,
    predict_logits,
    seeded_generator,
)
from protocol import CONFIG_KEY, METRICS_KEY, arrays_to_record

from .node import load_node
from .private import class_means, keep_model, local_split, restore_model, scores

# (logits, features, labels, pooled means, classes with a pooled mean, config) -> loss
PoolLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, dict],
    torch.Tensor,
]


@dataclass(frozen=True)
class ClassMeanMethod:
    """One method's node side.

    Attributes
    ----------
    state_key : str
        Where the private model lives in ``context.state``.
    record_key, array_name : str
        The record (both ways) and its array of means.
    loss : PoolLoss
        The training loss given the pool (None in a round without one).
    feature_width : Callable[[dict], int] | None
        The shared feature width from the config (the means are of features); None: the means
        are of logits.
    max_grad_norm : Callable[[dict], float] | None
        Each step's gradient is clipped to this global norm from the config (0 or None: off).
    """

    state_key: str
    record_key: str
    array_name: str
    loss: PoolLoss
    feature_width: Callable[[dict[str, Any]], int] | None = None
    max_grad_norm: Callable[[dict[str, Any]], float] | None = None


def class_mean_round(
    method: ClassMeanMethod,
    content: RecordDict,
    node_config: dict[str, Any],
    state: RecordDict,
) -> RecordDict:
    """One round on this node: local training with the received pool (none in round 1), then
    this node's class means and its scores."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])  # type: ignore[arg-type]
    node = load_node(config, node_config)
    device = resolve_device(node.device)
    seed = int(config["data.seed"])
    train, local_test = local_split(node, seed)
    width = method.feature_width(config) if method.feature_width else None
    model = restore_model(node, state, seed, method.state_key, feature_width=width)
    pool, present = _pool(content, method)
    gen = seeded_generator(seed, int(config["server-round"]), node.partition_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        clip = method.max_grad_norm(config) if method.max_grad_norm else 0.0
        loss = _train(model, train, pool, present, method.loss, config, gen, device, clip)
    keep_model(model, state, method.state_key)
    if width is None:
        vectors = predict_logits(model, train.x, device).numpy()
    else:
        x = images_to_tensor(train.x, device)
        vectors = penultimate_features(model.to(device), x).cpu().numpy()
    means, counts = class_means(vectors, train.y, node.num_classes, width or node.num_classes)
    metrics: dict[str, Any] = {
        "num-examples": len(train),
        "partition-id": node.partition_id,
        "train-loss": loss,
        **scores(model, node, local_test, config, device),
    }
    return RecordDict(
        {
            method.record_key: arrays_to_record({method.array_name: means, "counts": counts}),
            METRICS_KEY: MetricRecord(dict(metrics)),
        }
    )


def _pool(
    content: RecordDict, method: ClassMeanMethod
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if method.record_key not in content:
        return None, None
    record = content[method.record_key]
    assert isinstance(record, ArrayRecord)
    pool = torch.from_numpy(record[method.array_name].numpy().astype(np.float32))
    present = torch.from_numpy(record["counts"].numpy() > 0)
    return pool, present


def _train(
    model: torch.nn.Module,
    train: ArrayDataset,
    pool: torch.Tensor | None,
    present: torch.Tensor | None,
    loss_fn: PoolLoss,
    config: dict[str, Any],
    gen: torch.Generator,
    device: torch.device,
    max_grad_norm: float = 0.0,
) -> float:
    """SGD with momentum on ``loss_fn`` over the node's training split, each step's gradient
    clipped to ``max_grad_norm`` when > 0."""
    model.to(device).train()
    if len(train) == 0:
        return 0.0
    cfg = TrainConfig.from_config(config)
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    xs, ys = images_to_tensor(train.x), torch.from_numpy(train.y)
    if pool is not None and present is not None:
        pool, present = pool.to(device), present.to(device)
    losses = []
    for idx in batch_indices(len(train), cfg.batch_size, cfg.num_steps(len(train)), gen):
        if len(idx) < 2:  # BatchNorm needs two examples
            continue
        logits, features = logits_and_features(model, xs[idx].to(device))
        loss = loss_fn(logits, features, ys[idx].to(device), pool, present, config)
        opt.zero_grad()
        loss.backward()
        if max_grad_norm > 0:
            clip_gradient(model, max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else 0.0
