import numpy as np
import pytest

from federated_data.partition import label_counts, partition_indices

LABELS = np.random.default_rng(0).integers(0, 10, 3000)


def _check_cover(parts):
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == len(LABELS)  # disjoint and complete


def test_iid_equal_sizes_and_all_classes():
    parts = partition_indices(LABELS, 10, "iid", seed=1)
    _check_cover(parts)
    assert {len(p) for p in parts} == {300}
    assert (label_counts(LABELS, parts, 10) > 0).all()


def test_dirichlet_small_alpha_is_skewed_and_does_not_raise():
    parts = partition_indices(LABELS, 10, "dirichlet", seed=1, alpha=0.01)
    _check_cover(parts)
    counts = label_counts(LABELS, parts, 10)
    nonempty = counts[counts.sum(1) > 0]
    # At alpha = 0.01 a client holds a few classes (each >= 5% of its data), not ten.
    major = (nonempty >= 0.05 * nonempty.sum(1, keepdims=True)).sum(1)
    assert major.mean() < 2.5


def test_dirichlet_large_alpha_is_close_to_uniform():
    counts = label_counts(
        LABELS, partition_indices(LABELS, 5, "dirichlet", seed=1, alpha=100.0), 10
    )
    share = counts / counts.sum(1, keepdims=True)
    assert np.abs(share - 0.1).max() < 0.06


def test_dirichlet_impossible_minimum_gives_clear_error():
    with pytest.raises(ValueError, match="lower min-partition-size"):
        partition_indices(LABELS, 10, "dirichlet", seed=1, alpha=0.01, min_partition_size=250)


def test_pathological_gives_k_classes_per_client():
    parts = partition_indices(LABELS, 10, "pathological", seed=1, classes_per_client=2)
    _check_cover(parts)
    assert ((label_counts(LABELS, parts, 10) > 0).sum(1) <= 2).all()


def test_shard_partitions_are_label_sorted_shards():
    parts = partition_indices(LABELS, 10, "shard", seed=1, shards_per_client=2)
    assert ((label_counts(LABELS, parts, 10) > 0).sum(1) <= 4).all()


def test_deterministic_from_seed():
    a = partition_indices(LABELS, 10, "dirichlet", seed=3, alpha=0.5)
    b = partition_indices(LABELS, 10, "dirichlet", seed=3, alpha=0.5)
    c = partition_indices(LABELS, 10, "dirichlet", seed=4, alpha=0.5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="partitioner='zipf'"):
        partition_indices(LABELS, 10, "zipf", seed=0)
    with pytest.raises(ValueError, match="num-partitions"):
        partition_indices(LABELS, 0, "iid", seed=0)
