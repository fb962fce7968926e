import numpy as np

from federated_data.splits import balanced_holdout, carve_public, carve_seed_set


def test_balanced_holdout():
    y = np.repeat(np.arange(4), 25)
    held, rest = balanced_holdout(y, 5, seed=0)
    assert np.bincount(y[held]).tolist() == [5] * 4
    assert len(np.intersect1d(held, rest)) == 0 and len(held) + len(rest) == 100


def test_public_split_is_disjoint_and_sized():
    public, private = carve_public(np.arange(1000), 0.1, seed=0)
    assert len(public) == 100 and len(private) == 900
    assert len(np.intersect1d(public, private)) == 0


def test_seed_set_takes_per_class_from_held_classes_only():
    labels = np.array([0] * 30 + [1] * 30 + [2] * 3)
    parts = [
        np.arange(0, 30),
        np.arange(30, 63),
    ]  # client 0: class 0; client 1: classes 1, 2
    seed_idx, remaining = carve_seed_set(parts, labels, per_class=10, seed=0)
    assert np.bincount(labels[seed_idx]).tolist() == [10, 10, 3]  # class 2 has only 3
    for part, rest in zip(parts, remaining, strict=True):
        assert len(np.intersect1d(rest, seed_idx)) == 0
        assert set(rest) | (set(part) & set(seed_idx)) == set(part)
