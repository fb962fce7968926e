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


def _models(values):
    return [
        {"w": np.full(3, v, np.float32), "n": np.array(i, np.int64)} for i, v in enumerate(values)
    ]


def test_robust_aggregations_resist_one_outlier():
    from strategies.aggregate import robust_average

    models = _models([1.0, 2.0, 3.0, 1e6])
    weights = [10, 10, 10, 10]
    assert robust_average(models, weights, "mean")["w"][0] > 1e5
    assert robust_average(models, weights, "median")["w"][0] == 2.5
    assert robust_average(models, weights, "trimmed-mean", fraction=0.25)["w"][0] == 2.5
    krum = robust_average(models, weights, "multi-krum", fraction=0.25)  # keeps 3 of 4
    assert krum["w"][0] == pytest.approx(2.0)
    assert krum["n"] == robust_average(models, weights, "mean")["n"]  # counters: heaviest
    assert list(krum) == ["w", "n"]  # the state dict's order: replies are checked against it
    with pytest.raises(ValueError, match="aggregation='max' is unknown"):
        robust_average(models, weights, "max")


def test_clip_updates_bounds_each_update_by_the_median_norm():
    from strategies.aggregate import clip_updates

    reference = {"w": np.zeros(4, np.float32)}
    models = [{"w": np.full(4, v, np.float32)} for v in (1.0, 1.0, 1.0, 100.0)]
    clipped = clip_updates(models, reference, factor=2.0)
    assert np.allclose(clipped[3]["w"], 2.0)  # norm 200 scaled to 2 x median norm (2)
    assert clipped[0] is models[0]  # within the bound: untouched
    assert clip_updates(models, reference, factor=0.0) is models


def test_a_non_finite_group_aggregate_keeps_the_previous_model():
    from strategies.base import RoundReport
    from strategies.fedavg import FedAvg
    from strategies.state import ServerState

    strategy = FedAvg(model_fn=lambda arch: None, node_config={})
    previous = {"w": np.ones(3, np.float32)}
    state, report = ServerState(models={"mlp": previous}), RoundReport()
    bad = {"w": np.array([np.inf, 0, 0], np.float32)}
    strategy._aggregate_group(state, "mlp", [(bad, 5, {})], 1, report)
    assert state.models["mlp"] is previous
    assert report.metrics == {"rejected-aggregate/mlp": 1.0}
