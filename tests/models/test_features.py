"""A shared feature width across the zoo (FedProto, FedGen), and FedGen's feature generator."""

import pytest
import torch

from models.experts import last_linear, penultimate_features
from models.features import FeatureGenerator, head_name, logits_and_features, with_feature_width
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


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_head_name_names_the_last_linear_layer(name):
    model = with_feature_width(build_model(name, (1, 28, 28), 10), 96)
    assert model.get_submodule(head_name(model)) is last_linear(model)
    assert f"{head_name(model)}.weight" in model.state_dict()


def test_the_feature_generator_makes_non_negative_features_of_the_asked_width():
    torch.manual_seed(0)
    generator = FeatureGenerator(10, 96, noise_dim=8, hidden=32)
    labels = torch.tensor([0, 3, 3, 9])
    features = generator.sample(labels, torch.Generator().manual_seed(1))
    assert features.shape == (4, 96) and bool((features >= 0).all())
    # The label conditions the output: the same noise with other labels gives other features.
    noise = torch.randn(4, 8)
    generator.eval()
    assert not torch.allclose(generator(noise, labels), generator(noise, labels.flip(0)))
