"""What FD and FedProto nodes share (``client_app/class_means.py``): the gradient clip each
method's own setting turns on."""

import numpy as np
import pytest
import torch
from torch import nn

from client_app.class_means import _train
from client_app.fd import FD_NODE
from client_app.fedproto import FEDPROTO_NODE
from federated_data import ArrayDataset

# Each method with its clip setting and a pool far from what the model gives, so that the
# unclipped step is large: FD's class means say the other class; FedProto's prototypes sit at
# 50 in every one of the 16 features the head reads.
METHODS = {
    "fd": (
        FD_NODE,
        {"fd-lambda": 1.0, "fd-temperature": 1.0},
        "fd-max-grad-norm",
        torch.tensor([[-50.0, 50.0], [50.0, -50.0]]),
    ),
    "fedproto": (
        FEDPROTO_NODE,
        {"proto-lambda": 1.0},
        "proto-max-grad-norm",
        torch.full((2, 16), 50.0),
    ),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_clipped_step_moves_the_weights_by_lr_times_the_limit(name):
    """With plain SGD (lr 1, no momentum) one step's change is the clipped gradient, so its
    norm is the method's limit; unclipped (0, the paper's behaviour) the step is the gradient."""
    method, loss_config, key, pool = METHODS[name]
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (8, 1, 4, 4), dtype=np.uint8), np.arange(8) % 2)
    config = {
        "local-epochs": 0,
        "local-steps": 1,
        "batch-size": 8,
        "lr": 1.0,
        "momentum": 0.0,
        "weight-decay": 0.0,
        **loss_config,
    }

    def step_norm(limit: float) -> float:
        assert method.max_grad_norm is not None, f"{name} has no clip setting"
        clip = method.max_grad_norm({**config, key: limit})
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        gen = torch.Generator().manual_seed(0)
        present = torch.tensor([True, True])
        _train(model, data, pool, present, method.loss, config, gen, torch.device("cpu"), clip)
        end = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((end - start).norm())

    free = step_norm(0.0)
    assert free > 0.1
    assert step_norm(0.05) == pytest.approx(0.05, rel=1e-4)
    assert step_norm(10.0) == pytest.approx(free)  # under the limit: the same step
