"""FedGen's server side: the generator learns features the weighted heads label correctly."""

import numpy as np
import torch

from models.data_free import class_client_weights
from models.zoo import build_model
from strategies.fedgen import FedGen
from strategies.state import ServerState

COUNTS = np.array([[50, 0, 10, 5], [0, 40, 10, 5], [5, 5, 30, 40]], dtype=np.float64)


def _strategy(steps):
    return FedGen(
        num_classes=4,
        width=16,
        noise_dim=8,
        hidden=32,
        generator_steps=steps,
        model_fn=lambda arch: build_model(arch, (1, 28, 28), 4),
        node_config={},
    )


def _heads():
    gen = np.random.default_rng(0)
    return [
        {"weight": gen.normal(size=(4, 16)).astype(np.float32), "bias": np.zeros(4, np.float32)}
        for _ in COUNTS
    ]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_training_the_generator_makes_the_heads_label_its_features_as_asked():
    strategy = _strategy(150)
    generator = strategy._generator(ServerState())
    linears = [strategy._linear(h) for h in _heads()]
    weights = torch.as_tensor(class_client_weights(COUNTS))
    prior = COUNTS.sum(0)
    before = strategy._accuracy(generator, linears, weights, prior, _gen(1))
    metrics = strategy._train_generator(generator, _heads(), COUNTS, _gen(0))
    assert before < 0.6  # an untrained generator: about chance (0.25) for these heads
    assert metrics["fedgen-generator-accuracy"] > 0.9
    assert metrics["fedgen-fidelity"] < 0.5


def test_a_new_generator_is_the_same_for_the_same_seed():
    a, b = (_strategy(1)._generator(ServerState()) for _ in range(2))
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
