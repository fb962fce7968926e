"""FedGen on a node: the regulariser trains the head alone, on labels from the prior."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from client_app.fedgen import feature_regulariser, load_generator
from models.features import FeatureGenerator, head_name, with_feature_width
from models.zoo import build_model
from protocol import GENERATOR_KEY


def test_the_generated_features_train_the_head_and_nothing_else():
    torch.manual_seed(0)
    model = with_feature_width(build_model("mlp", (1, 28, 28), 10), 32)
    generator = FeatureGenerator(10, 32, noise_dim=4, hidden=16)
    losses: list[float] = []
    prior = np.zeros(10)
    prior[[2, 7]] = 1.0  # labels are drawn from the prior only
    term = feature_regulariser(generator, prior, 16, 0.5, torch.Generator().manual_seed(0), losses)(
        model
    )
    loss = term()
    loss.backward()
    head = model.get_submodule(head_name(model))
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    others = [p for n, p in model.named_parameters() if not n.startswith(head_name(model) + ".")]
    assert others and all(p.grad is None for p in others)
    assert all(p.grad is None for p in generator.parameters())  # frozen on the node
    assert len(losses) == 1 and loss.item() == pytest.approx(0.5 * losses[0])
    # Only classes 2 and 7 were asked for: the bias gradient of the other classes comes from
    # the softmax alone (negative rows would mean they were targets).
    grad = head.bias.grad
    assert bool((grad[[0, 1, 3, 4, 5, 6, 8, 9]] >= 0).all()) and bool((grad[[2, 7]] < 0).any())


def test_a_generator_of_another_shape_is_refused_with_a_clear_error():
    config = {"fedgen-width": 32, "fedgen-noise-dim": 4, "fedgen-generator-hidden": 16}
    wrong = FeatureGenerator(10, 64, noise_dim=4, hidden=16)  # another width
    content = RecordDict(
        {GENERATOR_KEY: ArrayRecord(wrong.state_dict()), "config": ConfigRecord(config)}
    )
    with pytest.raises(ValueError, match="FedGen generator does not load"):
        load_generator(content, config, 10)
    right = FeatureGenerator(10, 32, noise_dim=4, hidden=16)
    content[GENERATOR_KEY] = ArrayRecord(right.state_dict())
    loaded = load_generator(content, config, 10)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), right.state_dict().values(), strict=True)
    )
