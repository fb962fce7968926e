"""FedProto on a node: the loss against a hand computation, and the features it averages."""

import torch
from torch import nn

from client_app.fedproto import proto_loss


def test_proto_loss_is_ce_plus_mean_squared_distance_to_each_rows_class_prototype():
    torch.manual_seed(0)
    logits, features = torch.randn(4, 3), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 1])
    prototypes = torch.randn(3, 5)
    present = torch.tensor([True, True, False])  # no client holds class 2: no prototype
    lam = 0.7
    got = proto_loss(logits, features, labels, prototypes, present, lam)
    ce = nn.functional.cross_entropy(logits, labels)
    squared = sum(
        float(((features[i] - prototypes[labels[i]]) ** 2).sum())
        for i in (0, 1, 3)  # row 2 has no prototype: it adds zero but counts in the mean
    )
    assert torch.isclose(got, ce + lam * squared / (4 * 5), atol=1e-6)
    assert torch.isclose(proto_loss(logits, features, labels, None, None, lam), ce)  # round 1
    assert torch.isclose(proto_loss(logits, features, labels, prototypes, present, 0.0), ce)
    # A gradient reaches the features (the pull trains the feature extractor).
    features.requires_grad_()
    proto_loss(logits, features, labels, prototypes, present, lam).backward()
    assert features.grad is not None and float(features.grad[2].abs().sum()) == 0.0
