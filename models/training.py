"""Supervised training, evaluation and distillation loops shared by clients and the server."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from protocol.settings import Section, Setting


def images_to_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    t = torch.tensor(x, device=device)  # a copy: inputs may be read-only (np.load, Arrow)
    return t.float().div_(127.5).sub_(1.0)


class SGD:
    """``torch.optim.SGD``'s update (momentum without dampening, L2 weight decay), without
    its cost: constructing or stepping any ``torch.optim`` optimizer first imports
    ``torch._dynamo`` (1.5 s on this CPU), paid by every message of a deployment, where each
    message runs in a fresh process. Equal to ``torch.optim.SGD`` to the bit (tested)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = torch.clone(d).detach()
                else:
                    buf.mul_(self.momentum).add_(d)
                d = buf
            p.add_(d, alpha=-self.lr)


@torch.no_grad()
def clip_gradient(model: nn.Module, max_norm: float) -> float:
    """Scale the parameters' gradients so that their global L2 norm is at most ``max_norm``;
    returns the norm before clipping."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = float(torch.stack([(g * g).sum() for g in grads]).sum().sqrt()) if grads else 0.0
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm


def seeded_generator(*keys: int) -> torch.Generator:
    """A torch generator keyed by (seed, round, partition, ...), identical on every machine."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


def batch_indices(
    n: int, batch_size: int, steps: int, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """``steps`` mini-batches of indices, reshuffling after every pass over ``n`` items."""
    perm = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos : pos + min(batch_size, n)]
        pos += batch_size


TRAINING_SETTINGS = Section(
    "local training",
    (
        Setting(
            "local-epochs",
            0,
            "local epochs per round (local-steps wins when > 0)",
            low=0,
            travel="all",
        ),
        Setting("local-steps", 50, "local SGD steps per round", low=0, travel="all"),
        Setting("batch-size", 32, "local mini-batch size", low=1, travel="all"),
        Setting("lr", 0.05, "local SGD learning rate", low=0.0, low_open=True, travel="all"),
        Setting("momentum", 0.9, "local SGD momentum", low=0.0, high=1.0, travel="all"),
        Setting("weight-decay", 0.0, "local SGD weight decay", low=0.0, travel="all"),
    ),
)

# The student's loss in FMD: (1 - kd-mu) * CE + kd-mu * T^2 * KL(teacher || student).
KD_WEIGHTINGS = ("fixed", "class-accuracy", "teacher-correct")
KD_SETTINGS = Section(
    "distillation into the student",
    (
        Setting(
            "kd-mu",
            0.5,
            "weight of the teacher's KL term in the student's loss",
            low=0.0,
            high=1.0,
            travel="all",
        ),
        Setting(
            "kd-temperature",
            4.0,
            "temperature T of that KL term",
            low=0.0,
            low_open=True,
            travel="all",
        ),
        Setting(
            "kd-weighting",
            "fixed",
            "kd-mu for every example (the paper), or scaled per example by the node's trust in "
            "the teacher: class-accuracy (its accuracy on the node's examples of that class) "
            "or teacher-correct (1 where its top class is the label, else 0)",
            choices=KD_WEIGHTINGS,
            travel="method",
        ),
    ),
)


@dataclass
class TrainConfig:
    """Local optimisation settings; ``steps`` wins over ``epochs`` when both are set."""

    epochs: int = TRAINING_SETTINGS.default("local-epochs")
    steps: int = TRAINING_SETTINGS.default("local-steps")
    batch_size: int = TRAINING_SETTINGS.default("batch-size")
    lr: float = TRAINING_SETTINGS.default("lr")
    momentum: float = TRAINING_SETTINGS.default("momentum")
    weight_decay: float = TRAINING_SETTINGS.default("weight-decay")
    proximal_mu: float = 0.0
    # Distillation from a teacher: (1 - kd_mu) * CE + kd_mu * T^2 * KL(teacher || student).
    kd_mu: float = 0.0
    kd_temperature: float = KD_SETTINGS.default("kd-temperature")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainConfig:
        """From a message config (the server's run-config keys)."""
        return cls(
            epochs=int(config["local-epochs"]),
            steps=int(config["local-steps"]),
            batch_size=int(config["batch-size"]),
            lr=float(config["lr"]),
            momentum=float(config["momentum"]),
            weight_decay=float(config["weight-decay"]),
            proximal_mu=float(config.get("proximal-mu", 0.0)),
            kd_mu=float(config.get("kd-mu", 0.0)),  # 0: no teacher unless the config says
            kd_temperature=float(
                config.get("kd-temperature", KD_SETTINGS.default("kd-temperature"))
            ),
        )

    def num_steps(self, n: int) -> int:
        if self.steps > 0:
            return self.steps
        return self.epochs * max(1, -(-n // self.batch_size))


def train_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    gen: torch.Generator,
    device: torch.device,
    teacher_logits: torch.Tensor | None = None,
    kd_weights: torch.Tensor | None = None,
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> dict[str, float]:
    """SGD on cross-entropy, plus FedProx's (mu/2)||w - w_global||^2 when ``proximal_mu`` > 0,
    and with ``teacher_logits`` (one row per example) the distillation loss
    ``(1 - kd_mu) * CE + kd_mu * kd_loss``; with ``kd_weights`` (one per example, in [0, 1],
    :func:`teacher_trust`) example i's mix is ``mu_i = kd_mu * kd_weights[i]`` instead;
    ``regulariser()``, when given, is added to every step's loss (FedGen: its generated
    features' cross-entropy through the head).

    The model's weights on entry are taken as the global weights for the proximal term.
    Returns the mean training loss and accuracy over the steps taken.
    """
    model.to(device).train()
    if len(y) == 0:
        return {"train-loss": 0.0, "train-accuracy": 0.0}
    anchor = [p.detach().clone() for p in model.parameters()] if cfg.proximal_mu > 0 else []
    opt = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    xs = images_to_tensor(x)  # normalised once; batches are views
    ys = torch.tensor(y)  # a copy: labels may be read-only (the shared dataset)
    loss_sum, correct, seen = 0.0, 0, 0
    for idx in batch_indices(len(y), cfg.batch_size, cfg.num_steps(len(y)), gen):
        xb, yb = xs[idx].to(device), ys[idx].to(device)
        if len(yb) < 2 and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            continue  # BatchNorm cannot train on a single example
        logits = model(xb)
        if teacher_logits is None:
            loss = nn.functional.cross_entropy(logits, yb)
        elif kd_weights is None:
            kd = kd_loss(logits, teacher_logits[idx].to(device), cfg.kd_temperature)
            loss = (1.0 - cfg.kd_mu) * nn.functional.cross_entropy(logits, yb) + cfg.kd_mu * kd
        else:
            mu = cfg.kd_mu * kd_weights[idx].to(device)
            ce = nn.functional.cross_entropy(logits, yb, reduction="none")
            kd = kd_rows(logits, teacher_logits[idx].to(device), cfg.kd_temperature)
            loss = ((1.0 - mu) * ce + mu * kd).mean()
        if anchor:
            prox = sum(
                ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
            )
            loss = loss + 0.5 * cfg.proximal_mu * prox
        if regulariser is not None:
            loss = loss + regulariser()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(yb)
    return {
        "train-loss": loss_sum / max(seen, 1),
        "train-accuracy": correct / max(seen, 1),
    }


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """Eval-mode logits for all of ``x``, on the CPU."""
    model.to(device).eval()
    out = [
        model(images_to_tensor(x[i : i + batch_size], device)).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0)


def evaluate_classifier(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device
) -> dict[str, float]:
    """Cross-entropy loss, accuracy and per-class accuracy in eval mode."""
    if len(y) == 0:
        return {"loss": 0.0, "accuracy": 0.0}
    return score_logits(predict_logits(model, x, device), y)


def score_logits(logits: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    """Loss, accuracy, worst-class accuracy and ``class-accuracy/<k>`` for every class in ``y``.

    On a balanced test set the worst class is where non-IID training hurts most.
    """
    target = torch.tensor(np.asarray(y, dtype=np.int64))  # a copy: y may be read-only
    correct = (logits.argmax(1) == target).numpy()
    per_class = {int(k): float(correct[y == k].mean()) for k in np.unique(y)}
    return {
        "loss": float(nn.functional.cross_entropy(logits.float(), target)),
        "accuracy": float(correct.mean()),
        "worst-class-accuracy": min(per_class.values()),
        **{f"class-accuracy/{k}": v for k, v in per_class.items()},
    }


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch."""
    t = temperature
    return nn.functional.kl_div(
        nn.functional.log_softmax(student_logits / t, dim=1),
        nn.functional.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def kd_rows(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """:func:`kd_loss` per example: T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    t = temperature
    return nn.functional.kl_div(
        nn.functional.log_softmax(student_logits / t, dim=1),
        nn.functional.log_softmax(teacher_logits / t, dim=1),
        reduction="none",
        log_target=True,
    ).sum(1) * (t * t)


def teacher_trust(teacher_logits: torch.Tensor, y: np.ndarray, weighting: str) -> torch.Tensor:
    """Per-example trust in the teacher, in [0, 1], from the node's own labels.

    ``class-accuracy``: the teacher's accuracy on the node's examples of the example's class (a
    class the teacher gets wrong here is learnt from the labels alone); ``teacher-correct``: 1
    where the teacher's top class is the example's label, else 0. A teacher wrong everywhere
    thus weighs 0 and the student trains on CE alone, as under FedAvg.
    """
    if weighting not in KD_WEIGHTINGS[1:]:
        raise ValueError(f"kd-weighting={weighting!r} has no per-example trust")
    correct = (teacher_logits.argmax(1).cpu().numpy() == y).astype(np.float64)
    if weighting == "class-accuracy" and len(y):
        _, inverse = np.unique(y, return_inverse=True)
        correct = (np.bincount(inverse, weights=correct) / np.bincount(inverse))[inverse]
    return torch.from_numpy(correct.astype(np.float32))


def distill(
    student: nn.Module,
    x: np.ndarray,
    teacher_logits: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    temperature: float,
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """Adam on :func:`kd_loss` toward fixed teacher logits; returns the last 10 steps' mean loss.

    Dropout draws from torch's global generator, which the server never seeds: it is reseeded
    from ``gen`` inside a forked RNG, so a student with dropout (cnn-large) distils the same
    way in every process (before, FedDF's heterogeneous runs differed from run to run).
    """
    student.to(device).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    xs = images_to_tensor(x)
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        for idx in batch_indices(len(x), batch_size, steps, gen):
            if len(idx) < 2:
                continue
            logits = student(xs[idx].to(device))
            loss = kd_loss(logits, teacher_logits[idx].to(device), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return float(np.mean(losses[-10:])) if losses else 0.0
