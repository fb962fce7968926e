"""The weight-space blend both Mosaic's server and its nodes build: floats interpolated in
float64 and cast back, integer counters from the heavier side, names both sides agree on."""

import numpy as np
import pytest

from models.interpolation import interpolate
from protocol import blend_name

PRE = {"w": np.array([0.0, 2.0], np.float32), "n": np.array(3, np.int64)}
POST = {"w": np.array([4.0, -2.0], np.float32), "n": np.array(9, np.int64)}


def test_floats_are_interpolated_and_counters_come_from_the_heavier_side():
    mixed = interpolate(PRE, POST, 0.25)
    np.testing.assert_array_equal(mixed["w"], np.array([1.0, 1.0], np.float32))
    assert mixed["w"].dtype == np.float32 and int(mixed["n"]) == 3
    assert (
        int(interpolate(PRE, POST, 0.5)["n"]) == 3 and int(interpolate(PRE, POST, 0.75)["n"]) == 9
    )
    np.testing.assert_array_equal(interpolate(PRE, POST, 0.0)["w"], PRE["w"])
    np.testing.assert_array_equal(interpolate(PRE, POST, 1.0)["w"], POST["w"])


def test_models_of_other_architectures_are_refused():
    with pytest.raises(ValueError, match="one architecture"):
        interpolate(PRE, {**POST, "w": np.zeros(3, np.float32)}, 0.5)
    with pytest.raises(ValueError, match="one architecture"):
        interpolate(PRE, {"w": POST["w"]}, 0.5)


def test_blend_names_are_exact():
    assert [blend_name(w) for w in (0.25, 0.5)] == ["blend-0.25", "blend-0.5"]
    assert blend_name(0.1234567891) != blend_name(0.1234567892)
