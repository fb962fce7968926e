"""A node's private model, for the methods whose models never leave the node (FedH2L, FD,
FedProto).

The model lives in ``context.state`` between messages (in simulation and deployment alike);
the node scores it on the run's test split and on a held-out tenth of its own data, and the
server reports those scores (it holds no model to evaluate).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn

from federated_data import ArrayDataset
from federated_data.sources import load_source
from models.features import with_feature_width
from models.training import evaluate_classifier
from models.zoo import build_model

from .node import NodeSetup

LOCAL_TEST_FRACTION = 0.1


def local_split(node: NodeSetup, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """90/10 split of the node's data: the 10% scores the model on its own distribution."""
    rng = np.random.default_rng([seed, node.partition_id, 0x7E57])
    perm = rng.permutation(len(node.data))
    n_test = round(LOCAL_TEST_FRACTION * len(perm))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return (
        ArrayDataset(node.data.x[tr], node.data.y[tr]),
        ArrayDataset(node.data.x[te], node.data.y[te]),
    )


def restore_model(
    node: NodeSetup, state: RecordDict, seed: int, key: str, feature_width: int | None = None
) -> nn.Module:
    """The node's model from ``state[key]``; on its first round, fresh weights seeded by the
    run's seed and the partition (the same on every machine). ``feature_width``: a head that
    reads that many features (FedProto; :func:`models.features.with_feature_width`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(
            int(np.random.SeedSequence([seed, node.partition_id]).generate_state(1)[0])
        )
        model = build_model(node.architecture, node.input_shape, node.num_classes)
        if feature_width is not None:
            model = with_feature_width(model, feature_width)
    if key in state:
        record = state[key]
        assert isinstance(record, ArrayRecord)
        model.load_state_dict(record.to_torch_state_dict())
    return model


def keep_model(model: nn.Module, state: RecordDict, key: str) -> None:
    """Store the model's weights in ``state[key]`` for the node's next round."""
    state[key] = ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})


def scores(
    model: nn.Module,
    node: NodeSetup,
    local_test: ArrayDataset,
    config: dict[str, Any],
    device: torch.device,
) -> dict[str, float]:
    """``test-accuracy`` and ``test-loss`` on the run's test split, ``local-accuracy`` on the
    node's held-out tenth."""
    test_split = node.test
    if test_split is None:  # a dataset-path node: read the test split from the source
        source = load_source(
            str(config["data.dataset"]), str(config["data.data-dir"]), bool(config["data.download"])
        )
        test_split = ArrayDataset(source.x_test, source.y_test)
    test = evaluate_classifier(model, test_split.x, test_split.y, device)
    local = evaluate_classifier(model, local_test.x, local_test.y, device)
    return {
        "test-accuracy": test["accuracy"],
        "test-loss": test["loss"],
        "local-accuracy": local["accuracy"],
    }


def class_means(
    vectors: np.ndarray, labels: np.ndarray, num_classes: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, width) float32 mean of ``vectors`` (one row per example) over the examples of
    each class held, zero rows elsewhere, and (classes,) int64 counts: what FD's and FedProto's
    nodes send."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    sums = np.zeros((num_classes, width))
    if len(labels):
        np.add.at(sums, labels, vectors.astype(np.float64))
    means = np.zeros(sums.shape, dtype=np.float32)
    held = counts > 0
    means[held] = (sums[held] / counts[held, None]).astype(np.float32)
    return means, counts
