import numpy as np
import pytest
import torch

from models.training import predict_logits
from models.zoo import build_model
from strategies.base import RoundReport, load_arrays, module_arrays
from strategies.distillation import EnsembleDistillation
from strategies.state import ServerState

SHAPE = (1, 28, 28)


def _model(seed):
    torch.manual_seed(seed)
    return build_model("mlp", SHAPE, 10)


def test_mean_logits_average_the_members():
    x = np.random.default_rng(0).integers(0, 255, (16, *SHAPE), dtype=np.uint8)
    a, b = _model(0), _model(1)
    d = EnsembleDistillation()
    expected = (predict_logits(a, x, d.device) + predict_logits(b, x, d.device)) / 2
    assert torch.allclose(d.mean_logits([a, b], x), expected)
    with pytest.raises(ValueError, match="at least one model"):
        d.mean_logits([], x)


def test_distill_moves_each_global_model_toward_the_targets_and_reports_it():
    x = np.random.default_rng(1).integers(0, 255, (64, *SHAPE), dtype=np.uint8)
    start = module_arrays(_model(2))
    teacher = _model(3)
    d = EnsembleDistillation(steps=60, lr=1e-2, batch_size=32)
    targets = d.mean_logits([teacher], x)

    def load(arch, arrays):
        return load_arrays(build_model(arch, SHAPE, 10), arrays)

    def gap(arrays):
        logits = predict_logits(load("mlp", arrays), x, d.device)
        return float(((logits - targets) ** 2).mean())

    state, report = ServerState(models={"mlp": start}), RoundReport()
    d.distill(state, ["mlp"], load, x, targets, server_round=1, report=report)
    assert gap(state.models["mlp"]) < 0.5 * gap(start)
    assert set(report.metrics) == {"distill-loss/mlp"}
