"""What a node is for this run: its partition, architecture, data and device.

Everything is rebuilt from the message config and the node config, so a node holds no module
state (deployment runs every message in a fresh process; simulation shares globals between
virtual nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from federated_data import ArrayDataset, DataSpec, Federation
from federated_data.disk import read_partition_file
from federated_data.federation import fingerprint
from models.assignment import architecture_for, parse_assignment

from .timing import stage


@dataclass(frozen=True)
class NodeSetup:
    partition_id: int
    architecture: str
    data: ArrayDataset
    input_shape: tuple[int, int, int]
    num_classes: int
    device: str
    # The balanced global test split, when the node rebuilt its data from the source (not for
    # a dataset-path node); saves a second read of the source for client-side evaluation.
    test: ArrayDataset | None = None
    # Each example's index in its source (the training split, or the rows of a dataset-path
    # file) and a fingerprint of that source: the keys of per-sample caches (teacher outputs).
    indices: np.ndarray | None = None
    data_key: str = ""
    cache_dir: Path = Path()

    def label_counts(self) -> list[int]:
        return np.bincount(self.data.y, minlength=self.num_classes).astype(int).tolist()


def load_node(config: dict[str, Any], node_config: dict[str, Any]) -> NodeSetup:
    """Resolve the node from the message config and its ``--node-config``.

    Node config keys: ``partition-id`` and ``num-partitions`` (set by the simulation engine or
    by hand), ``dataset-path`` (a pre-partitioned ``.npz``: the edge route), ``device`` and
    ``architecture`` (override the run's assignment, e.g. a lighter model on a small device).
    """
    with stage("load"):
        return _load_node(config, node_config)


def _load_node(config: dict[str, Any], node_config: dict[str, Any]) -> NodeSetup:
    spec = DataSpec.from_config(config)
    c, h, w = (int(d) for d in config["input-shape"])
    input_shape = (c, h, w)
    num_classes = int(config["num-classes"])
    if "partition-id" not in node_config:
        raise ValueError(
            "node config lacks partition-id (start the SuperNode with "
            "--node-config 'partition-id=0 num-partitions=N')"
        )
    partition_id = int(node_config["partition-id"])
    path = str(node_config.get("dataset-path", ""))
    test = None
    if path:
        data = read_partition_file(
            path, dataset=spec.dataset, input_shape=input_shape, num_classes=num_classes
        )
        indices = np.arange(len(data))
        data_key = f"file-{Path(path).name}-{fingerprint(data.x)}"
        cache_dir = Path(path).parent / "cache"
    else:
        node_parts = int(node_config.get("num-partitions", 0))
        if spec.num_partitions == 0:
            if node_parts <= 0:
                raise ValueError(
                    "num-partitions is set neither in the run config nor in the node config"
                )
            spec = replace(spec, num_partitions=node_parts)
        elif node_parts and node_parts != spec.num_partitions:
            raise ValueError(
                f"node config num-partitions={node_parts} disagrees with the run's "
                f"num-partitions={spec.num_partitions}"
            )
        fed = Federation(spec)
        data, test = fed.partition(partition_id), fed.test
        indices = fed.partitions()[partition_id]
        data_key, cache_dir = fed.data_key("train"), fed.cache_dir
    if fault := str(node_config.get("inject-fault", "")):  # a test's or benchmark's bad actor
        from .faults import poison_data

        data = poison_data(data, fault, num_classes)
    arch = str(node_config.get("architecture", "")) or architecture_for(
        partition_id, parse_assignment(str(config["models"]))
    )
    return NodeSetup(
        partition_id,
        arch,
        data,
        input_shape,
        num_classes,  # type: ignore[arg-type]
        str(node_config.get("device", "")),
        test,
        indices,
        data_key,
        cache_dir,
    )
