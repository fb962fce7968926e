"""FMD's LDA probe: statistics that add up exactly, the head sklearn's LDA gives, honest bounds."""

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from federated_data.partition import partition_indices
from models.lda_probe import (
    ABSENT_LOGIT,
    SCALES,
    check_statistics,
    class_statistics,
    expected_statistics,
    lda_head,
    pack_symmetric,
    scaled_head,
    scaled_nll_sums,
    unpack_symmetric,
)


def _unit_features(n=600, dim=16, classes=4, seed=0):
    """Unit-norm features whose class means differ (as a normalised featuriser gives)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)  # balanced: class frequencies = equal priors
    centres = rng.normal(size=(classes, dim))
    f = centres[y] + rng.normal(size=(n, dim))
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32), y


def _head(stats, shrinkage=0.05):
    return lda_head(
        stats["class-sums"], stats["class-counts"], stats["second-moment"], shrinkage=shrinkage
    )


def _summed(parts):
    return {k: sum(p[k].astype(np.float64) for p in parts) for k in parts[0]}


def test_statistics_summed_over_any_skewed_split_are_the_pooled_datas():
    f, y = _unit_features()
    pooled = class_statistics(f, y, 4)
    parts = partition_indices(y, 5, "pathological", seed=0, classes_per_client=1)
    summed = _summed([class_statistics(f[p], y[p], 4) for p in parts])
    assert summed["class-counts"].tolist() == pooled["class-counts"].tolist()
    for key in ("class-sums", "second-moment"):
        np.testing.assert_allclose(summed[key], pooled[key], rtol=1e-5, atol=1e-5)
    head_split = _head(summed)
    head_pooled = _head(pooled)
    np.testing.assert_allclose(head_split["weight"], head_pooled["weight"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shrinkage", [0.05, 0.5])
def test_the_head_predicts_what_sklearns_shrunk_lda_predicts(shrinkage):
    f, y = _unit_features(seed=1)
    test_f, _ = _unit_features(n=300, seed=2)
    head = _head(class_statistics(f, y, 4), shrinkage)
    ours = (test_f @ head["weight"].T + head["bias"]).argmax(1)
    # sklearn weighs each class's covariance by its prior (here its frequency: the data are
    # balanced) and divides by n, we by n - classes: a common factor on every discriminant.
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage, priors=[0.25] * 4)
    theirs = reference.fit(f, y).predict(test_f)
    assert (ours == theirs).mean() == 1.0


def test_a_class_no_node_holds_is_never_named():
    f, y = _unit_features()
    keep = y != 2
    head = _head(class_statistics(f[keep], y[keep], 4))
    assert head["bias"][2] == ABSENT_LOGIT and not head["weight"][2].any()
    assert 2 not in (f @ head["weight"].T + head["bias"]).argmax(1)
    assert scaled_head(head, 0.01)["bias"][2] == ABSENT_LOGIT


def test_packing_round_trips_a_symmetric_matrix():
    a = np.random.default_rng(0).normal(size=(5, 5))
    sym = a + a.T
    assert len(pack_symmetric(sym)) == 15
    np.testing.assert_array_equal(unpack_symmetric(pack_symmetric(sym), 5), sym)


def test_scaled_losses_are_torchs_summed_cross_entropy():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(50, 4)) * 20, rng.integers(0, 4, 50)
    sums = scaled_nll_sums(logits, y, np.asarray(SCALES))
    for i in (0, 20, 40):
        z = torch.tensor(logits * SCALES[i])
        expected = torch.nn.functional.cross_entropy(z, torch.tensor(y), reduction="sum")
        assert sums[i] == pytest.approx(float(expected), rel=1e-9)


def test_genuine_statistics_pass_and_forged_ones_are_named():
    f, y = _unit_features()
    stats = class_statistics(f, y, 4)
    assert check_statistics(stats, len(y)) is None
    assert {k: (v.shape, v.dtype) for k, v in stats.items()} == {
        k: (v.shape, v.dtype) for k, v in expected_statistics(4, 16).items()
    }
    inflated = {**stats, "class-counts": stats["class-counts"] * 100}
    assert "do not sum to num-examples" in str(check_statistics(inflated, len(y)))
    loud = {**stats, "second-moment": stats["second-moment"] * 100}
    assert "trace" in str(check_statistics(loud, len(y)))
    long_sums = {**stats, "class-sums": stats["class-sums"] * 100}
    assert "longer than its count" in str(check_statistics(long_sums, len(y)))


def test_shrinkage_outside_0_1_is_refused():
    f, y = _unit_features()
    with pytest.raises(ValueError, match="shrinkage"):
        _head(class_statistics(f, y, 4), 0.0)
