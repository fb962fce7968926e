"""The pooled-feature probe table's scoring: accuracy, worst class, sharpness at T = 4."""

import numpy as np
import pytest

from benchmarks.fmd_probes import _score


def test_a_head_is_scored_on_accuracy_worst_class_and_its_soft_labels():
    features = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
    labels = np.array([0, 1, 2, 0])  # the last example is a class-0 image the head calls 2
    head = {"weight": 8 * np.eye(3, dtype=np.float32), "bias": np.zeros(3, np.float32)}
    scores = _score(head, features, labels)
    assert scores["accuracy"] == 0.75 and scores["worst-class-accuracy"] == 0.5
    # logits (8, 0, 0) at T = 4: e^2 / (e^2 + 2) on the top class for every example
    assert scores["top-probability-t4"] == pytest.approx(np.e**2 / (np.e**2 + 2), rel=1e-6)
    assert scores["logit-spread"] == pytest.approx(np.std([8, 0, 0], ddof=1), rel=1e-6)
