import numpy as np
import pytest
import torch

from models.data_free import (
    BatchNormStatistics,
    class_client_weights,
    disagreement_kl,
    discrepancy,
    diversity_loss,
    ensemble_targets,
    fidelity_loss,
    soft_cross_entropy,
)


def test_class_client_weights_are_each_clients_share_of_the_class():
    counts = np.array([[30, 0, 5], [10, 0, 0]])  # 2 clients x 3 classes; class 1 held by none
    w = class_client_weights(counts)
    assert w.shape == (3, 2)
    np.testing.assert_allclose(w, [[0.75, 0.25], [0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match="clients, classes"):
        class_client_weights(np.zeros(3))


def test_a_client_without_the_class_has_no_say_on_it():
    t_holder = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    t_other = torch.tensor([[-9.0, 9.0], [9.0, -9.0]])  # confidently wrong
    labels = torch.tensor([0, 1])
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # only client 0 holds the classes
    only_holder = fidelity_loss([t_holder], labels, torch.ones(2, 1))
    assert torch.isclose(fidelity_loss([t_holder, t_other], labels, w), only_holder)
    targets = ensemble_targets([t_holder, t_other], w)
    torch.testing.assert_close(targets, torch.softmax(t_holder, 1))
    assert torch.allclose(targets.sum(1), torch.ones(2))


def test_discrepancy_moves_only_the_samples_not_the_teachers():
    x = torch.randn(4, 3, requires_grad=True)
    teacher = torch.nn.Linear(3, 2)
    student = torch.nn.Linear(3, 2)
    w = torch.full((4, 1), 1.0)
    d = discrepancy(student(x), [teacher(x)], w)
    expected = (student(x) - teacher(x)).abs().mean()
    assert torch.isclose(d, expected)
    d.backward()
    assert teacher.weight.grad is None and x.grad is not None and student.weight.grad is not None


def test_diversity_is_one_for_a_collapsed_generator_and_smaller_otherwise():
    z = torch.randn(8, 5)
    same = torch.ones(8, 1, 4, 4)
    assert diversity_loss(z, same).item() == pytest.approx(1.0)
    assert diversity_loss(z, torch.randn(8, 1, 4, 4)).item() < 0.5


def test_soft_cross_entropy_is_cross_entropy_on_one_hot_targets():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 1, 2])
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close(
        soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, y)
    )


def test_disagreement_kl_counts_only_the_samples_where_the_argmax_differs():
    teacher = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # agrees on 0, disagrees on 1
    kl_1 = torch.nn.functional.kl_div(
        torch.log_softmax(student[1:], 1), torch.softmax(teacher[1:], 1), reduction="sum"
    )
    assert torch.isclose(disagreement_kl(student, teacher), kl_1 / 2)
    assert disagreement_kl(teacher, teacher).item() == 0.0


def test_batch_norm_statistics_vanish_on_data_with_the_running_statistics():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    model.train()
    data = torch.randn(512, 1, 4, 4) * 2 + 1
    with torch.no_grad():
        for _ in range(200):  # the running statistics converge to the data's
            model(data)
    model.eval()
    with BatchNormStatistics([model, torch.nn.Linear(16, 2)]) as stats:  # the Linear: no BN
        model(data)
        matched = stats.loss()
        model(torch.zeros(512, 1, 4, 4))
        off = stats.loss()
        assert stats.loss().item() == 0.0  # nothing since the last call
    assert matched.item() < 0.05 < off.item()
    model(data)
    assert stats.loss().item() == 0.0  # unhooked on exit
