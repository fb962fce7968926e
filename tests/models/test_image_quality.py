"""Offline generative metrics against hand-computed and known cases."""

import numpy as np
from scipy import linalg

from models.image_quality import (
    class_coverage,
    frechet_distance,
    kernel_inception_style_distance,
    prdc,
)


def test_frechet_distance_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.5
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(
        s_a + s_b - 2 * np.real(linalg.sqrtm(s_a @ s_b))
    )
    assert abs(frechet_distance(a, b) - expected) < 1e-6 * max(1.0, expected)
    assert abs(frechet_distance(a, a)) < 1e-8
    # identical covariances: the distance is the squared mean shift
    assert abs(frechet_distance(a, a + 2.0) - 6 * 4.0) < 1e-6


def test_few_samples_in_many_dimensions_stay_finite():
    rng = np.random.default_rng(1)
    assert np.isfinite(frechet_distance(rng.normal(size=(20, 64)), rng.normal(size=(20, 64))))


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(800, 8)), rng.normal(size=(800, 8))
    same = kernel_inception_style_distance(a, b, subset_size=400)
    diff = kernel_inception_style_distance(a, b + 1.0, subset_size=400)
    assert abs(same) < 0.05 < diff


def test_prdc_extremes():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 4))
    same = prdc(real, real.copy())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = prdc(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # all fakes on one real point: precise, but covering almost nothing
    collapsed = prdc(real, np.repeat(real[:1], 300, axis=0))
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.05


def test_class_coverage_hand_case():
    predicted = np.array([0] * 50 + [1] * 45 + [2] * 5)
    out = class_coverage(predicted, np.array([0, 1, 2, 3] * 25), 4)
    # shares .5 .45 .05 0 vs .25 each; half the uniform share is .125
    assert out["classes-covered"] == 2.0
    assert abs(out["class-tv"] - 0.5 * (0.25 + 0.2 + 0.2 + 0.25)) < 1e-12
