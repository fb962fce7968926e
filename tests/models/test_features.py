"""A shared feature width across the zoo (FedProto)."""

import pytest
import torch

from models.experts import last_linear, penultimate_features
from models.features import logits_and_features, with_feature_width
from models.zoo import ARCHITECTURES, build_model


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_gets_a_head_reading_the_shared_width(name):
    torch.manual_seed(0)
    model = with_feature_width(build_model(name, (1, 28, 28), 10), 96)
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    logits, features = logits_and_features(model, x)
    assert logits.shape == (3, 10) and features.shape == (3, 96)
    assert last_linear(model).in_features == 96
    # The features are exactly what the head reads: head(features) is the logits, and the
    # eval-mode extractor FedProto's nodes average agrees with the differentiable one.
    assert torch.allclose(last_linear(model)(features), logits, atol=1e-5)
    assert torch.allclose(penultimate_features(model, x), features.detach(), atol=1e-5)
    assert features.requires_grad


def test_a_head_of_the_right_width_is_left_as_it_is():
    model = build_model("cnn-small", (1, 28, 28), 10)  # its head reads 128 features
    before = [p.clone() for p in model.parameters()]
    assert with_feature_width(model, 128) is model
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert len(before) == len(list(model.parameters()))
