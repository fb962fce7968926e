"""PRISM's server math: smoothing, MADA (both variants) and the ablation, on hand cases."""

import numpy as np
import pytest

from protocol import logit
from strategies.prism import aggregate_scores, sigmoid, smoothed_mean


class FixedUniforms:
    """An rng whose draws are given: MADA's two masks become hand-computable."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def random(self, n):
        out = np.asarray(self.draws.pop(0), dtype=float)
        assert len(out) == n
        return out


def test_smoothing_maps_bits_to_one_and_ninety_nine_percent():
    bits = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]], np.uint8)
    np.testing.assert_allclose(
        smoothed_mean(bits),
        [(0.99 + 0.99 + 0.01) / 3, (0.01 + 0.99 + 0.01) / 3, (0.99 + 0.01 + 0.99) / 3],
    )
    assert smoothed_mean(np.ones((4, 2), np.uint8)).max() == pytest.approx(0.99)


PREV = logit(np.array([0.9, 0.2, 0.6, 0.5]))
AGG = np.array([0.99, 0.01, 0.5, 0.99])
HALF = [0.5, 0.5, 0.5, 0.5]
# masks with u = 0.5: previous [1, 0, 1, 0], aggregate [1, 0, 0, 1] -> Hamming distance 2 / 4


def test_mada_code_variant_blends_scores_by_the_hamming_distance():
    new, d = aggregate_scores(PREV, AGG, "mada", FixedUniforms(HALF, HALF))
    assert d == 0.5
    np.testing.assert_allclose(new, 0.5 * logit(AGG) + 0.5 * PREV, rtol=1e-6)


def test_mada_paper_variant_blends_probabilities():
    new, d = aggregate_scores(PREV, AGG, "mada-probability", FixedUniforms(HALF, HALF))
    assert d == 0.5
    np.testing.assert_allclose(sigmoid(new), 0.5 * sigmoid(PREV) + 0.5 * AGG, rtol=1e-5)


def test_identical_masks_keep_the_previous_scores():
    same = [0.05, 0.95, 0.05, 0.95]  # previous [1,0,1,0]; aggregate [1,0,1,0] too
    new, d = aggregate_scores(PREV, AGG, "mada", FixedUniforms(same, [0.5, 0.5, 0.4, 0.995]))
    assert d == 0.0
    np.testing.assert_allclose(new, PREV, rtol=1e-6)


def test_no_mada_takes_the_aggregate():
    new, d = aggregate_scores(PREV, AGG, "mean", FixedUniforms())
    assert np.isnan(d)
    np.testing.assert_allclose(new, logit(AGG), rtol=1e-6)


def test_unknown_aggregation_names_the_choices():
    with pytest.raises(ValueError, match=r"prism-aggregation.*mada"):
        aggregate_scores(PREV, AGG, "median", FixedUniforms())
