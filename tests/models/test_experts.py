import numpy as np
import pytest
import torch
from torch import nn

from models.experts import (
    ExpertPanel,
    MetaModel,
    distill_toward,
    expert_weights,
    holdout_split,
    kmeans_prototypes,
    last_linear,
    mosaic_loss,
    penultimate_features,
    train_meta,
)
from strategies.aggregate import weighted_average


def test_expert_weights_normalise_each_class_over_clients():
    counts = np.array([[3, 0, 0], [1, 2, 0]])
    w = expert_weights(counts)
    assert np.allclose(w[:, 0], [0.75, 0.25])
    assert np.allclose(w[:, 1], [0.0, 1.0])
    assert np.allclose(w[:, 2], [0.5, 0.5])  # nobody holds class 2: plain average
    with pytest.raises(ValueError):
        expert_weights(np.array([1, 2]))


def _linear(weight: float, bias: float) -> nn.Module:
    m = nn.Linear(2, 3)
    nn.init.constant_(m.weight, weight)
    nn.init.constant_(m.bias, bias)
    return m


def test_parameter_space_experts_match_the_hand_computed_average():
    a = {k: v.numpy() for k, v in _linear(1.0, 0.0).state_dict().items()}
    b = {k: v.numpy() for k, v in _linear(3.0, 1.0).state_dict().items()}
    w = expert_weights(np.array([[3, 0, 1], [1, 2, 1]]))
    expert0 = weighted_average([a, b], list(w[:, 0]))
    # 0.75 * 1 + 0.25 * 3 = 1.5 and 0.75 * 0 + 0.25 * 1 = 0.25
    assert np.allclose(expert0["weight"], 1.5) and np.allclose(expert0["bias"], 0.25)
    experts = []
    for c in range(3):
        m = nn.Linear(2, 3)
        m.load_state_dict(
            {k: torch.from_numpy(v) for k, v in weighted_average([a, b], list(w[:, c])).items()}
        )
        experts.append(m)
    x = torch.tensor([[1.0, 1.0]])
    tokens = ExpertPanel(experts, None).tokens(x)
    # expert c's logits: 2 * weight_c + bias_c on every class
    expected = torch.tensor([2 * 1.5 + 0.25, 2 * 3.0 + 1.0, 2 * 2.0 + 0.5])
    assert tokens.shape == (1, 3, 3)
    assert torch.allclose(tokens[0], expected[:, None].expand(3, 3))


def test_output_space_experts_mix_client_logits_by_counts():
    torch.manual_seed(0)
    f1, f2 = nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    w = expert_weights(np.array([[3, 0, 1], [1, 2, 1]]))
    x = torch.randn(6, 4)
    tokens = ExpertPanel([f1, f2], w).tokens(x)
    with torch.no_grad():
        l1, l2 = f1(x), f2(x)
    for c in range(3):
        assert torch.allclose(tokens[:, c], w[0, c] * l1 + w[1, c] * l2, atol=1e-6)
    with pytest.raises(ValueError, match="parameter-space"):
        ExpertPanel([f1, f2], w).head_tokens(torch.randn(2, 4))


def test_feature_tokens_apply_each_experts_head_to_the_penultimate_features():
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)) for _ in range(3)]
    x = torch.randn(7, 4)
    feats = penultimate_features(models[0], x)
    assert feats.shape == (7, 5)
    assert torch.allclose(last_linear(models[0])(feats), models[0](x), atol=1e-6)
    panel = ExpertPanel(models, None)
    assert torch.allclose(panel.head_tokens(feats)[:, 0], models[0](x), atol=1e-6)


def test_meta_model_training_reduces_its_loss_and_returns_an_ema():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=g)
    tokens = torch.randn(200, 4, 4, generator=g) * 0.3
    tokens[torch.arange(200), labels, labels] += 3.0  # the right expert is confident
    model, ema, metrics = train_meta(tokens, labels, 4, steps=150, seed=0)
    assert isinstance(model, MetaModel) and model(tokens).shape == (200, 4)
    assert metrics["meta-loss-last"] < 0.5 * metrics["meta-loss-first"]
    with torch.no_grad():
        assert (model(tokens).argmax(1) == labels).float().mean() > 0.9
        assert any(
            not torch.equal(a, b) for a, b in zip(model.parameters(), ema.parameters(), strict=True)
        )
    with pytest.raises(ValueError, match="prototype"):
        train_meta(tokens[:0], labels[:0], 4, steps=1)


def test_mosaic_loss_is_minimal_at_the_teacher():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(32, 5, generator=g) * 3
    at_teacher = mosaic_loss(teacher, teacher)
    ce = nn.functional.cross_entropy(teacher, teacher.argmax(1))
    assert torch.isclose(at_teacher, 0.2 * ce, atol=1e-5)  # KL and JS vanish
    assert mosaic_loss(torch.randn(32, 5, generator=g), teacher) > at_teacher


def test_distillation_moves_the_student_toward_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    student = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    probe = torch.randn(256, 6)

    def disagreement() -> float:
        with torch.no_grad():
            return float((student(probe).argmax(1) != teacher(probe).argmax(1)).float().mean())

    before = disagreement()
    (loss,) = distill_toward([student], lambda: torch.randn(64, 6), teacher, steps=300, lr=1e-2)
    assert np.isfinite(loss)
    assert disagreement() < 0.5 * before


def test_kmeans_prototypes_respect_the_minimum_cluster_size():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 0.1, (30, 2)) + np.array([5, 0])
    b = rng.normal(0.0, 0.1, (30, 2)) - np.array([5, 0])
    feats = np.concatenate([a, b, rng.normal(0, 0.1, (3, 2))]).astype(np.float32)
    labels = np.array([0] * 60 + [1] * 3)
    x, y = kmeans_prototypes(feats, labels, per_class=2, min_cluster=5, seed=0)
    assert list(y) == [0, 0]  # class 1 has 3 < 5 examples: no prototype at all
    centres = sorted(x[:, 0].tolist())
    assert centres[0] == pytest.approx(-5, abs=0.1) and centres[1] == pytest.approx(5, abs=0.1)
    x, y = kmeans_prototypes(feats, labels, per_class=2, min_cluster=61, seed=0)
    assert len(y) == 0 and x.shape == (0, 2)


def test_holdout_split_checks_a_fraction_of_every_class_and_always_keeps_one_to_fit():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1 + [3] * 2)
    fit, check = holdout_split(labels, 0.3, seed=0)
    assert np.array_equal(np.sort(np.concatenate([fit, check])), np.arange(len(labels)))
    assert np.bincount(labels[check], minlength=4).tolist() == [3, 1, 0, 1]
    assert np.bincount(labels[fit], minlength=4).tolist() == [7, 2, 1, 1]
    again, other = holdout_split(labels, 0.3, seed=0), holdout_split(labels, 0.3, seed=1)
    assert np.array_equal(again[1], check)  # seeded
    assert not np.array_equal(other[1], check)
    assert holdout_split(np.array([5]), 0.5, seed=0)[1].size == 0
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(labels, 1.0, seed=0)
