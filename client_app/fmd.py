"""FMD client: the teacher's cached features, the linear-probe step and distillation training.

The teacher's featuriser runs once per sample on this node and is cached on disk
(``models/teacher_cache.py``); every later message of every run reads the cache. Only the
student and the small head travel in messages.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict

from models.device import resolve_device
from models.lda_probe import class_statistics, scaled_nll_sums
from models.teacher_cache import teacher_features
from models.teachers import Teacher, build_teacher, head_logits, train_head
from models.training import teacher_trust
from protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    TEACHER_HEAD_KEY,
    array_record,
    arrays_to_record,
    record_to_arrays,
)

from .local import train_node
from .node import NodeSetup, load_node


def probe_round(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """A few full-batch steps of the teacher's linear head on this node's cached features."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    features, computed, seconds = _node_features(config, node)
    head, loss = train_head(
        record_to_arrays(array_record(content, ARRAYS_KEY)),
        features,
        node.data.y,
        steps=int(config["probe-local-steps"]),
        lr=float(config["probe-lr"]),
    )
    metrics = {
        "num-examples": len(node.data),
        "probe-loss": loss,
        "teacher-featurised": computed,
        "teacher-seconds": seconds,
    }
    return RecordDict(
        {ARRAYS_KEY: arrays_to_record(head), METRICS_KEY: MetricRecord(metrics)}  # type: ignore[arg-type]
    )


def feature_statistics(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """FMD ``probe=lda``: this node's class sums, class counts and second moment of its cached
    teacher features (the server adds every node's into the pooled data's)."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    features, computed, seconds = _node_features(config, node)
    stats = class_statistics(features, node.data.y, int(config["num-classes"]))
    metrics = {
        "num-examples": len(node.data),
        "teacher-featurised": computed,
        "teacher-seconds": seconds,
    }
    return RecordDict(
        {ARRAYS_KEY: arrays_to_record(stats), METRICS_KEY: MetricRecord(metrics)}  # type: ignore[arg-type]
    )


def head_loss(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """FMD ``probe=lda``: the summed cross-entropy of the head, scaled by each factor in the
    config's ``probe-scales``, on this node's examples (the server picks the factor)."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    features, _, _ = _node_features(config, node)
    logits = head_logits(
        torch.from_numpy(features), record_to_arrays(array_record(content, ARRAYS_KEY))
    )
    sums = scaled_nll_sums(logits.numpy(), node.data.y, np.asarray(config["probe-scales"]))
    metrics = {"num-examples": len(node.data)}
    return RecordDict(
        {ARRAYS_KEY: arrays_to_record({"nll-sums": sums}), METRICS_KEY: MetricRecord(metrics)}  # type: ignore[arg-type]
    )


def train_student(content: RecordDict, node_config: dict[str, Any]) -> RecordDict:
    """Train the student on (1 - kd-mu) * CE + kd-mu * T^2 * KL(teacher || student), kd-mu
    scaled per example by the node's trust in the teacher unless ``kd-weighting=fixed``."""
    config: dict[str, Any] = dict(content[CONFIG_KEY])
    node = load_node(config, node_config)
    features, computed, seconds = _node_features(config, node)
    teacher = head_logits(
        torch.from_numpy(features), record_to_arrays(array_record(content, TEACHER_HEAD_KEY))
    )
    weighting = str(config.get("kd-weighting", "fixed"))
    trust = None if weighting == "fixed" else teacher_trust(teacher, node.data.y, weighting)
    arrays, metrics = train_node(node, array_record(content, ARRAYS_KEY), config, teacher, trust)
    agree = float((teacher.argmax(1).numpy() == node.data.y).mean()) if len(node.data) else 0.0
    if trust is not None:
        metrics["kd-mean-trust"] = float(trust.mean()) if len(trust) else 0.0
    metrics.update(
        {
            "teacher-local-accuracy": agree,
            "teacher-featurised": computed,
            "teacher-seconds": seconds,
        }
    )
    return RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord(metrics)})  # type: ignore[arg-type]


def node_teacher(config: dict[str, Any], device: str = "") -> Teacher:
    """The run's teacher on this node (memoised: simulation shares one process between nodes)."""
    return _teacher(
        str(config["teacher"]),
        str(config["data.dataset"]),
        tuple(int(d) for d in config["input-shape"]),
        int(config["num-classes"]),
        str(config.get("teacher-path", "")),
        int(config.get("teacher-image-size", 64)),
        str(config.get("clip-model", "ViT-B-32")),
        str(resolve_device(device)),
    )


@lru_cache(maxsize=2)
def _teacher(
    name: str,
    dataset: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    path: str,
    image_size: int,
    clip_model: str,
    device: str,
) -> Teacher:
    return build_teacher(
        name,
        dataset=dataset,
        input_shape=input_shape,  # type: ignore[arg-type]
        num_classes=num_classes,
        path=path,
        image_size=image_size,
        clip_model=clip_model,
        device=device,
    )


def _node_features(config: dict[str, Any], node: NodeSetup) -> tuple[np.ndarray, int, float]:
    t0 = time.perf_counter()
    assert node.indices is not None
    features, computed = teacher_features(
        node_teacher(config, node.device),
        node.data.x,
        node.indices,
        node.data_key,
        node.cache_dir / "teachers",
    )
    return features, computed, time.perf_counter() - t0
