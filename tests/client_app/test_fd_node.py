"""FD on a node: the loss against a hand computation, and the class means it sends."""

import numpy as np
import pytest
import torch
from torch import nn

from client_app.class_means import _train
from client_app.fd import FD_NODE, fd_loss
from client_app.private import class_means
from federated_data import ArrayDataset
from models.training import predict_logits


def test_fd_loss_is_ce_plus_scaled_kl_toward_the_class_mean_of_each_row():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    teacher = torch.randn(3, 3)
    present = torch.tensor([True, True, False])  # no peer holds class 2
    lam, t = 0.5, 2.0
    got = fd_loss(logits, labels, teacher, present, lam, t)
    ce = nn.functional.cross_entropy(logits, labels)
    kl = 0.0
    for i in (0, 1, 3):  # row 2's class has no peer mean: CE only
        q = torch.softmax(teacher[labels[i]] / t, 0)
        kl += float((q * (q.log() - torch.log_softmax(logits[i] / t, 0))).sum())
    assert torch.isclose(got, ce + lam * t**2 * kl / 4, atol=1e-6)
    assert torch.isclose(fd_loss(logits, labels, None, None, lam, t), ce)  # round 1: no peers
    assert torch.isclose(fd_loss(logits, labels, teacher, present, 0.0, t), ce)


class _Identity(nn.Module):
    """Logits = the first three pixels (as floats in [-1, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3]


def test_class_means_average_the_logits_of_each_class_held():
    x = np.zeros((4, 1, 1, 3), np.uint8)
    x[:, 0, 0, :] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 0]]
    y = np.array([0, 0, 2, 2])
    logits = predict_logits(_Identity(), x, torch.device("cpu")).numpy()
    means, counts = class_means(logits, y, 3, 3)
    assert counts.tolist() == [2, 0, 2] and means.dtype == np.float32
    assert np.allclose(means[0], [0, 0, 0])  # (-1 + 1) / 2
    assert np.allclose(means[1], 0)  # not held: a zero row
    assert np.allclose(means[2], [0, -1, -1])


def test_a_clipped_step_moves_the_weights_by_lr_times_the_limit():
    """FD's fd-max-grad-norm: with plain SGD (lr 1, no momentum) one step's change is the
    clipped gradient, so its norm is the limit; unclipped, the step is the gradient."""
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.integers(0, 256, (8, 1, 4, 4), dtype=np.uint8), np.arange(8) % 2)
    teacher = torch.tensor([[-50.0, 50.0], [50.0, -50.0]])  # every class's mean says the other
    present = torch.tensor([True, True])
    config = {
        "local-epochs": 0,
        "local-steps": 1,
        "batch-size": 8,
        "lr": 1.0,
        "momentum": 0.0,
        "weight-decay": 0.0,
        "fd-lambda": 1.0,
        "fd-temperature": 1.0,
    }

    def step_norm(clip):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        gen = torch.Generator().manual_seed(0)
        _train(model, data, teacher, present, FD_NODE.loss, config, gen, torch.device("cpu"), clip)
        end = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((end - start).norm())

    free = step_norm(0.0)
    assert free > 0.1
    assert step_norm(0.05) == pytest.approx(0.05, rel=1e-4)
    assert step_norm(10.0) == pytest.approx(free)  # under the limit: the same step
