"""FedGen on a node: local training whose head also learns the server generator's features.

Zhu, Hong, Zhou, "Data-Free Knowledge Distillation for Heterogeneous Federated Learning"
(ICML 2021, arXiv:2105.10056), eq. 5: the node minimises its cross-entropy plus
``fedgen-alpha`` times the cross-entropy of its head on generated features ``G(noise, y)`` for
labels ``y`` drawn from the federation's label distribution, which the server sends. Classes
the node lacks thus reach its head as the other nodes' heads see them. The generator is frozen
here; its gradient-free samples only train the head (round 1 has no generator: plain local
training). See ``strategies/fedgen.py`` for the server side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict
from torch import nn

from models.experts import last_linear
from models.features import FeatureGenerator
from models.generators import sample_labels
from models.training import seeded_generator
from protocol import ARRAYS_KEY, CONFIG_KEY, GENERATOR_KEY, METRICS_KEY, array_record

from .local import train_node
from .node import load_node


def feature_regulariser(
    generator: FeatureGenerator,
    prior: np.ndarray,
    batch_size: int,
    alpha: float,
    gen: torch.Generator,
    losses: list[float],
) -> Callable[[nn.Module], Callable[[], torch.Tensor]]:
    """For a model, the closure adding ``alpha * CE(head(G(noise, y)), y)`` on a fresh batch of
    ``y ~ prior`` to each training step (the mean of each step's term is appended to
    ``losses``)."""
    generator.eval().requires_grad_(False)

    def for_model(model: nn.Module) -> Callable[[], torch.Tensor]:
        head = last_linear(model)

        def term() -> torch.Tensor:
            device = head.weight.device
            labels = sample_labels(prior, batch_size, gen)
            with torch.no_grad():
                features = generator.to(device).sample(labels.to(device), gen)
            loss = nn.functional.cross_entropy(head(features), labels.to(device))
            losses.append(float(loss.detach()))
            return alpha * loss

        return term

    return for_model


def load_generator(
    content: RecordDict, config: dict[str, Any], num_classes: int
) -> FeatureGenerator:
    """The server's generator from the message (a wrong shape is the server's error)."""
    generator = FeatureGenerator(
        num_classes,
        int(config["fedgen-width"]),
        noise_dim=int(config["fedgen-noise-dim"]),
        hidden=int(config["fedgen-generator-hidden"]),
    )
    try:
        generator.load_state_dict(array_record(content, GENERATOR_KEY).to_torch_state_dict())
    except (RuntimeError, KeyError, TypeError) as err:
        raise ValueError(f"FedGen generator does not load: {err}") from err
    return generator


def train_fedgen(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """One FedGen round on the node: the new weights and metrics, as FedAvg's reply."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])  # type: ignore[arg-type]
    node = load_node(config, node_config)
    losses: list[float] = []
    regulariser = None
    alpha = float(config["fedgen-alpha"])
    if GENERATOR_KEY in content and alpha > 0:
        prior = np.asarray(config["fedgen-label-prior"], dtype=np.float64)
        if prior.shape != (node.num_classes,) or not np.all(prior >= 0) or prior.sum() <= 0:
            raise ValueError(
                f"fedgen-label-prior must be {node.num_classes} non-negative weights, not all 0",
            )
        # Its own stream, so that the data order is the same as without a generator.
        gen = seeded_generator(
            int(config["data.seed"]), int(config["server-round"]), node.partition_id, 0xFE6
        )
        regulariser = feature_regulariser(
            load_generator(content, config, node.num_classes),
            prior,
            int(config["batch-size"]),
            alpha,
            gen,
            losses,
        )
    arrays, metrics = train_node(
        node,
        array_record(content, ARRAYS_KEY),
        config,
        feature_width=int(config["fedgen-width"]),
        regulariser=regulariser,
    )
    if losses:
        metrics["fedgen-feature-loss"] = float(np.mean(losses))
    return RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord(dict(metrics))})
