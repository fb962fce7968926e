"""FD on a node: the loss against a hand computation, and the class means it sends."""

import numpy as np
import torch
from torch import nn

from client_app.fd import fd_loss
from client_app.private import class_means
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
