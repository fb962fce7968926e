"""Label-skew partitioning through flwr-datasets partitioners, on labels only.

Partitions are index arrays into the training pool: they are cheap to compute, cache and
send to disk, and they never copy images.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

PARTITIONERS = ("iid", "dirichlet", "pathological", "shard")
log = logging.getLogger(__name__)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    partitioner: str,
    *,
    seed: int,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    shards_per_client: int = 2,
    min_partition_size: int = 0,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` index arrays.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels of the training pool.
    num_partitions : int
        Number of clients.
    partitioner : str
        ``iid``, ``dirichlet`` (per-class Dirichlet(alpha)), ``pathological``
        (``classes_per_client`` classes per client) or ``shard`` (``shards_per_client``
        label-sorted shards per client, as in McMahan et al.).
    seed : int
        Every random choice derives from it.
    min_partition_size : int (default: 0)
        Dirichlet only. flwr-datasets resamples until every client holds at least this
        many examples and gives up after 10 tries; at alpha = 0.01 any value above 0 can
        fail, so the default accepts what the draw gives (empty clients included) and the
        label counts are logged instead.
    """
    from datasets import Dataset

    if num_partitions < 1:
        raise ValueError(f"num-partitions must be >= 1, got {num_partitions}")
    if num_partitions > len(labels):
        raise ValueError(
            f"num-partitions={num_partitions} exceeds the {len(labels)} training examples"
        )
    ds = Dataset.from_dict({"label": labels.astype(np.int64), "idx": np.arange(len(labels))})
    part = _flower_partitioner(
        partitioner,
        num_partitions,
        seed=seed,
        alpha=alpha,
        classes_per_client=classes_per_client,
        shards_per_client=shards_per_client,
        min_partition_size=min_partition_size,
    )
    if partitioner == "iid":
        ds = ds.shuffle(seed=seed)  # IidPartitioner splits in order
    part.dataset = ds
    try:
        out = [
            np.asarray(part.load_partition(i)[:]["idx"], dtype=np.int64)
            for i in range(num_partitions)
        ]
    except ValueError as err:
        if partitioner == "dirichlet" and min_partition_size > 0:
            raise ValueError(
                f"dirichlet alpha={alpha} over {num_partitions} clients could not give every "
                f"client >= {min_partition_size} examples in 10 draws; lower "
                "min-partition-size (0 accepts small or empty clients)"
            ) from err
        raise
    return [np.sort(p) for p in out]


def _flower_partitioner(
    partitioner: str,
    num_partitions: int,
    *,
    seed: int,
    alpha: float,
    classes_per_client: int,
    shards_per_client: int,
    min_partition_size: int,
) -> Any:
    """The flwr-datasets partitioner behind each of our names."""
    from flwr_datasets import partitioner as fp

    if partitioner == "iid":
        return fp.IidPartitioner(num_partitions=num_partitions)
    if partitioner == "dirichlet":
        return fp.DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min_partition_size,
            self_balancing=False,
            seed=seed,
        )
    if partitioner == "pathological":
        return fp.PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    if partitioner == "shard":
        return fp.ShardPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_shards_per_partition=shards_per_client,
            seed=seed,
        )
    raise ValueError(f"partitioner={partitioner!r} is unknown; allowed: {PARTITIONERS}")


def label_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_partitions, num_classes) matrix of examples per class per client."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
