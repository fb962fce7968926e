"""FedGen end to end on digits: FedAvg's rounds, a generator learnt from the heads and sent
down, one head shared across architectures."""

import numpy as np
from federate import rows, run

from models.features import head_name, with_feature_width
from models.zoo import build_model
from strategies.fedgen import GENERATOR_PREFIX
from strategies.state import ServerState

GEN = {
    "method": "fedgen",
    "models": "heterogeneous",
    "local-steps": 10,
    "fedgen-generator-steps": 20,
    "fedgen-width": 32,
    "fedgen-generator-hidden": 32,
}
HEADS = {
    a: head_name(with_feature_width(build_model(a, (1, 28, 28), 10), 32))
    for a in ("cnn-small", "mlp", "cnn-large")
}


def test_no_generator_and_no_regulariser_is_fedavg(tmp_path):
    """cnn-small's head reads 128 features: at that width its FedGen model is the zoo's."""
    only = {"models": "cnn-small", "fedgen-width": 128}
    fedavg = run(tmp_path / "avg", {**GEN, **only, "method": "fedavg"})
    off = run(tmp_path / "off", {**GEN, **only, "fedgen-generator-steps": 0})
    assert off["final-per-model"] == fedavg["final-per-model"]


def test_the_generator_is_learnt_sent_and_used_and_heads_are_shared(tmp_path):
    summary = run(tmp_path, {**GEN, "num-server-rounds": 3})
    first, second, third = rows(summary)
    generator_metrics = {"fedgen-fidelity", "fedgen-diversity", "fedgen-generator-accuracy"}
    assert generator_metrics <= set(first["train"])
    assert "fedgen-feature-loss" not in first["train"]  # round 1 has no generator yet
    assert second["train"]["fedgen-feature-loss"] > 0  # later rounds regularise with it
    # The generator travels down from round 2: 3 nodes x its float32 parameters and buffers.
    state = ServerState.load(summary["paths"]["checkpoint-last"])
    generator = {k: v for k, v in state.data.items() if k.startswith(GENERATOR_PREFIX)}
    size = sum(v.nbytes for v in generator.values())
    assert size > 0
    extra = second["bytes-down"] - first["bytes-down"]
    assert size * 3 <= extra < size * 3 + 3 * 2000  # + record framing and names
    assert third["bytes-down"] == second["bytes-down"]
    # One head for every architecture (each model's last linear layer).
    heads = [
        (state.models[a][f"{h}.weight"], state.models[a][f"{h}.bias"]) for a, h in HEADS.items()
    ]
    for w, b in heads[1:]:
        assert np.array_equal(w, heads[0][0]) and np.array_equal(b, heads[0][1])
    assert heads[0][0].shape == (10, 32)


def test_heads_stay_per_architecture_when_not_shared(tmp_path):
    summary = run(tmp_path, {**GEN, "fedgen-share-head": False, "fedgen-generator-steps": 0})
    state = ServerState.load(summary["paths"]["checkpoint-last"])
    small, mlp = (state.models[a][f"{HEADS[a]}.weight"] for a in ("cnn-small", "mlp"))
    assert not np.array_equal(small, mlp)
    assert not any(k.startswith(GENERATOR_PREFIX) for k in state.data)
