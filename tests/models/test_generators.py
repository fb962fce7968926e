import numpy as np
import pytest
import torch

from models.generators import (
    Discriminator,
    Generator,
    GeneratorConfig,
    diversity_term,
    generate,
    to_uint8,
    train_gan,
)
from models.training import seeded_generator
from models.zoo import build_model


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
@pytest.mark.parametrize("kind", ["unconditional", "conditional"])
def test_generator_and_discriminator_shapes(shape, kind):
    cfg = GeneratorConfig(kind=kind, z_dim=12, width=4)
    g, d = Generator(shape, 10, cfg), Discriminator(shape, 10, cfg)
    labels = torch.tensor([0, 3, 9]) if kind == "conditional" else None
    images = g(torch.randn(3, 12), labels)
    assert images.shape == (3, *shape)
    assert images.abs().max() <= 1.0  # tanh: the same range as images_to_tensor
    assert d(images, labels).shape == (3,)
    assert all(not m.bias for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d))


def test_image_size_must_divide_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator((1, 30, 30), 10, GeneratorConfig())


def test_conditional_generator_needs_labels_and_samples_held_classes():
    g = Generator((1, 8, 8), 10, GeneratorConfig(kind="conditional", z_dim=4, width=4))
    with pytest.raises(ValueError, match="labels"):
        g(torch.randn(2, 4))
    with pytest.raises(ValueError, match="prior"):
        generate(g, 4, seeded_generator(0))
    prior = np.zeros(10)
    prior[[2, 7]] = 1.0
    _, labels = generate(g, 50, seeded_generator(0), prior=prior)
    assert labels is not None and set(labels.tolist()) <= {2, 7}


def test_diversity_term_with_uniform_prior_is_the_reference_negative_entropy():
    probs = torch.softmax(torch.randn(16, 10, generator=torch.Generator().manual_seed(1)), 1)
    mean = probs.mean(0)
    reference = (mean * mean.log()).sum()  # sum_c p_c log p_c
    ours = diversity_term(probs, torch.full((10,), 0.1))
    assert torch.isclose(ours, reference + np.log(10.0), atol=1e-6)
    # Matching the prior exactly costs nothing.
    assert diversity_term(probs, mean).abs() < 1e-6


def test_one_training_run_moves_both_networks_and_reports_finite_losses(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    cfg = GeneratorConfig(z_dim=8, width=4, steps=3, batch_size=32)
    aux = build_model("mlp", x.shape[1:], 10)
    torch.manual_seed(0)
    before = Generator(x.shape[1:], 10, cfg)
    torch.manual_seed(0)  # train_gan's generator starts from the same weights
    trained, metrics = train_gan(x, y, 10, cfg, aux, seeded_generator(0), torch.device("cpu"))
    moved = [
        not torch.equal(a, b)
        for a, b in zip(before.state_dict().values(), trained.state_dict().values(), strict=True)
        if a.is_floating_point()
    ]
    assert any(moved)
    assert all(np.isfinite(v) for v in metrics.values())
    assert set(metrics) == {"generator-d-loss", "generator-g-loss", "generator-diversity"}
    assert not any(p.requires_grad for p in aux.parameters())  # the aux classifier is frozen


def test_train_gan_needs_two_examples(digits):
    with pytest.raises(ValueError, match="at least 2"):
        train_gan(
            digits.x_train[:1],
            digits.y_train[:1],
            10,
            GeneratorConfig(width=4),
            build_model("mlp", (1, 28, 28), 10),
            seeded_generator(0),
            torch.device("cpu"),
        )


def test_to_uint8_inverts_the_normalisation():
    x = np.array([[[[0, 1, 127, 128, 254, 255]]]], dtype=np.uint8)
    from models.training import images_to_tensor

    assert np.array_equal(to_uint8(images_to_tensor(x)), x)
