import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from models.training import (
    SGD,
    TrainConfig,
    clip_gradient,
    distill,
    evaluate_classifier,
    kd_loss,
    predict_logits,
    seeded_generator,
    teacher_trust,
    train_classifier,
)
from models.zoo import build_model


def test_kd_loss_matches_the_formula():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    T = 2.0
    p_t = torch.softmax(t / T, 1)
    expected = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(kd_loss(s, t, T), expected, atol=1e-6)
    assert float(kd_loss(t, t, T)) < 1e-6


def test_training_is_deterministic_and_learns(digits):
    x, y = digits.x_train[:400], digits.y_train[:400]
    cfg = TrainConfig(steps=60, batch_size=32, lr=0.05)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_model("cnn-small", (1, 28, 28), 10)
        train_classifier(m, x, y, cfg, seeded_generator(0, 1, 2), torch.device("cpu"))
        models.append(m)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    acc = evaluate_classifier(models[0], digits.x_test, digits.y_test, torch.device("cpu"))
    assert acc["accuracy"] > 0.6


def test_proximal_term_keeps_weights_closer_to_the_start(digits):
    x, y = digits.x_train[:300], digits.y_train[:300]
    dist = {}
    for mu in (0.0, 10.0):
        torch.manual_seed(0)
        m = build_model("mlp", (1, 28, 28), 10)
        start = [p.detach().clone() for p in m.parameters()]
        train_classifier(
            m,
            x,
            y,
            TrainConfig(steps=40, lr=0.05, proximal_mu=mu),
            seeded_generator(1),
            torch.device("cpu"),
        )
        dist[mu] = sum(
            float(((p.detach() - s) ** 2).sum()) for p, s in zip(m.parameters(), start, strict=True)
        )
    assert dist[10.0] < 0.5 * dist[0.0]


def test_distillation_moves_student_toward_teacher(digits):
    x = digits.x_train[:256]
    torch.manual_seed(0)
    teacher = build_model("mlp", (1, 28, 28), 10)
    student = build_model("cnn-small", (1, 28, 28), 10)
    t_logits = predict_logits(teacher, x, torch.device("cpu")) * 3
    before = float(kd_loss(predict_logits(student, x, torch.device("cpu")), t_logits, 1.0))
    distill(
        student,
        x,
        t_logits,
        steps=80,
        batch_size=64,
        lr=1e-3,
        temperature=1.0,
        gen=seeded_generator(0),
        device=torch.device("cpu"),
    )
    after = float(kd_loss(predict_logits(student, x, torch.device("cpu")), t_logits, 1.0))
    assert after < 0.5 * before


def test_distillation_with_dropout_does_not_depend_on_the_global_rng(digits):
    """cnn-large has dropout; the global torch RNG the server never seeds must not matter."""
    x = digits.x_train[:128]
    torch.manual_seed(0)
    start = build_model("cnn-large", (1, 28, 28), 10).state_dict()
    t_logits = torch.randn(len(x), 10)
    results = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        student = build_model("cnn-large", (1, 28, 28), 10)
        student.load_state_dict(start)
        distill(
            student,
            x,
            t_logits,
            steps=3,
            batch_size=32,
            lr=1e-3,
            temperature=1.0,
            gen=seeded_generator(0),
            device=torch.device("cpu"),
        )
        results.append(student.state_dict())
    for key in start:
        assert torch.equal(results[0][key], results[1][key]), key


def test_empty_data_is_harmless():
    m = build_model("mlp", (1, 28, 28), 10)
    empty_x, empty_y = np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int64)
    out = train_classifier(
        m, empty_x, empty_y, TrainConfig(), seeded_generator(0), torch.device("cpu")
    )
    assert out == {"train-loss": 0.0, "train-accuracy": 0.0}


def test_distillation_term_pulls_the_student_toward_the_teacher(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    torch.manual_seed(1)  # the teacher: another network, its logits unrelated to the labels
    teacher = 3 * predict_logits(build_model("mlp", (1, 28, 28), 10), x, torch.device("cpu"))
    torch.manual_seed(0)
    student = build_model("mlp", (1, 28, 28), 10)
    before = float(kd_loss(predict_logits(student, x, torch.device("cpu")), teacher, 4.0))
    cfg = TrainConfig(steps=150, batch_size=50, lr=0.01, kd_mu=1.0, kd_temperature=4.0)
    train_classifier(
        student, x, y, cfg, seeded_generator(0), torch.device("cpu"), teacher_logits=teacher
    )
    after = float(kd_loss(predict_logits(student, x, torch.device("cpu")), teacher, 4.0))
    assert after < 0.5 * before


def test_kd_mu_zero_ignores_the_teacher(digits):
    x, y = digits.x_train[:100], digits.y_train[:100]
    states = []
    for teacher in (None, torch.randn(len(y), 10)):
        torch.manual_seed(0)
        m = build_model("mlp", (1, 28, 28), 10)
        cfg = TrainConfig(steps=5, lr=0.05, kd_mu=0.0)
        train_classifier(m, x, y, cfg, seeded_generator(1), torch.device("cpu"), teacher)
        states.append(m.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4)])
def test_sgd_equals_torch_sgd_to_the_bit(momentum, weight_decay):
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    ref = copy.deepcopy(ours)
    settings = {"lr": 0.05, "momentum": momentum, "weight_decay": weight_decay}
    opt, ref_opt = SGD(ours.parameters(), **settings), torch.optim.SGD(ref.parameters(), **settings)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(5):
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


def test_local_training_does_not_import_the_compiler():
    """torch.optim imports torch._dynamo (1.5 s of every deployed message); ours must not."""
    code = (
        "import sys, numpy as np, torch\n"
        "from models.training import TrainConfig, seeded_generator, train_classifier\n"
        "from models.zoo import build_model\n"
        "x = np.zeros((8, 1, 28, 28), np.uint8); y = np.arange(8) % 2\n"
        "m = build_model('cnn-small', (1, 28, 28), 2)\n"
        "train_classifier(m, x, y, TrainConfig(steps=2, batch_size=4, lr=0.1, momentum=0.9),"
        " seeded_generator(0), torch.device('cpu'))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_teacher_trust_from_the_nodes_labels():
    y = np.array([0, 0, 0, 0, 1, 1])
    right, wrong = [5.0, 0.0], [0.0, 5.0]
    teacher = torch.tensor([right, right, right, wrong, wrong, wrong])  # class 0: 3/4 right
    torch.testing.assert_close(
        teacher_trust(teacher, y, "class-accuracy"), torch.tensor([0.75] * 4 + [1.0] * 2)
    )
    torch.testing.assert_close(
        teacher_trust(teacher, y, "teacher-correct"), torch.tensor([1.0, 1, 1, 0, 1, 1])
    )
    with pytest.raises(ValueError, match="fixed"):
        teacher_trust(teacher, y, "fixed")


@pytest.mark.parametrize("weighting", ["class-accuracy", "teacher-correct"])
def test_a_teacher_wrong_everywhere_weighs_nothing_when_trust_is_measured(digits, weighting):
    """A confidently wrong teacher (it names the next class) drags a student with the paper's
    fixed kd-mu far below CE alone; weighted by the node's trust, the student trains as if
    there were no teacher."""
    x, y = digits.x_train[:300], digits.y_train[:300]
    x_test, y_test = digits.x_test, digits.y_test
    wrong = 8 * nn.functional.one_hot(torch.tensor((y + 1) % 10), 10).float()
    cfg = TrainConfig(steps=150, batch_size=32, lr=0.05, kd_mu=0.5, kd_temperature=4.0)
    cpu = torch.device("cpu")

    def accuracy(**kd) -> float:
        torch.manual_seed(0)
        model = build_model("mlp", (1, 28, 28), 10)
        train_classifier(model, x, y, cfg, seeded_generator(0), cpu, **kd)
        return evaluate_classifier(model, x_test, y_test, cpu)["accuracy"]

    alone = accuracy()
    fixed = accuracy(teacher_logits=wrong)
    trust = teacher_trust(wrong, y, weighting)
    assert float(trust.max()) == 0.0
    weighted = accuracy(teacher_logits=wrong, kd_weights=trust)
    assert fixed < alone - 0.2
    assert weighted == pytest.approx(alone, abs=0.01)


def test_clip_gradient_scales_the_global_norm_down_to_the_limit_and_no_further():
    model = nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 2.0)  # global norm sqrt(8 * 4) = 5.657
    before = [p.grad.clone() for p in model.parameters()]
    assert clip_gradient(model, 1.0) == pytest.approx(32**0.5)
    grads = [p.grad for p in model.parameters()]
    assert float(torch.cat([g.flatten() for g in grads]).norm()) == pytest.approx(1.0)
    for g, b in zip(grads, before, strict=True):  # the direction is kept
        assert torch.allclose(g, b / 32**0.5)
    assert clip_gradient(model, 10.0) == pytest.approx(1.0)  # under the limit: untouched
    assert float(torch.cat([g.flatten() for g in grads]).norm()) == pytest.approx(1.0)
