import numpy as np
import pytest

from strategies.aggregate import weighted_average


def test_weighted_average_by_hand():
    a = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(5)}
    b = {"w": np.array([3.0, 6.0], np.float32), "n": np.array(9)}
    out = weighted_average([a, b], [1, 3])
    assert np.allclose(out["w"], [2.5, 5.0]) and out["w"].dtype == np.float32
    assert int(out["n"]) == 9  # counters come from the heaviest contributor


def test_zero_and_negative_weights_are_rejected():
    a = {"w": np.ones(2, np.float32)}
    with pytest.raises(ValueError, match="positive sum"):
        weighted_average([a], [0])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_average([a, a], [2, -1])
    with pytest.raises(ValueError, match="no models"):
        weighted_average([], [])
