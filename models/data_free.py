"""Losses of data-free knowledge distillation from an ensemble of client models through a
generator: FedFTG's [Zhang et al., CVPR 2022, arXiv:2203.09249] and DENSE's [Zhang et al.,
NeurIPS 2022, arXiv:2112.12371].

Written from the papers; the reference code (ZhangLin-PKU/FedFTG, zj-jayzhang/DENSE) was read for
its defaults. FedFTG's ensemble is *customised per class*: for a sample of class y, client k
speaks with weight ``n_ky / n_y``, its share of that class's training examples, so a client that
never saw a class has no say on it. DENSE's is the plain mean of the clients' logits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def class_client_weights(label_counts: np.ndarray) -> np.ndarray:
    """(clients, classes) label counts -> (classes, clients) weights ``n_ky / n_y``.

    Each row sums to 1. A class no client holds weighs every client equally (its samples then
    come only from a generator that was never asked for it).
    """
    counts = np.asarray(label_counts, dtype=np.float64)
    if counts.ndim != 2 or len(counts) == 0:
        raise ValueError(f"label counts must be (clients, classes), got shape {counts.shape}")
    totals = counts.sum(0)
    shares = counts / np.where(totals > 0, totals, 1.0)
    shares[:, totals == 0] = 1.0 / len(counts)
    return shares.T.astype(np.float32)


def fidelity_loss(
    teacher_logits: list[torch.Tensor], labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_k mean_i w_k(y_i) CE(t_k(x_i), y_i): the generator's samples of class y must be
    classified as y by the clients that hold y. ``weights`` is (batch, clients)."""
    return sum(  # type: ignore[return-value]
        (weights[:, k] * nn.functional.cross_entropy(t, labels, reduction="none")).mean()
        for k, t in enumerate(teacher_logits)
    )


def discrepancy(
    student_logits: torch.Tensor, teacher_logits: list[torch.Tensor], weights: torch.Tensor
) -> torch.Tensor:
    """sum_k mean_i w_k(y_i) mean_c |s(x_i) - t_k(x_i)|: how far the global model is from the
    clients on these samples. The generator *maximises* it (hard samples), so the teachers'
    logits are detached: only the samples move toward disagreement."""
    return sum(  # type: ignore[return-value]
        (weights[:, k] * (student_logits - t.detach()).abs().mean(1)).mean()
        for k, t in enumerate(teacher_logits)
    )


def diversity_loss(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """exp(-mean_ij d1(x_i, x_j) * d2(z_i, z_j)) with mean absolute and mean squared
    differences: small when distant codes give distant images (mode seeking), 1 when every
    code gives the same image."""
    flat = x.reshape(len(x), -1)
    image_dist = (flat[:, None, :] - flat[None, :, :]).abs().mean(2)
    code_dist = (z[:, None, :] - z[None, :, :]).pow(2).mean(2)
    return torch.exp(-(image_dist * code_dist).mean())


def ensemble_targets(
    teacher_logits: list[torch.Tensor], weights: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """sum_k w_k(y_i) softmax(t_k(x_i) / T): the class-customised ensemble's probabilities."""
    probs = torch.stack([torch.softmax(t / temperature, 1) for t in teacher_logits], 1)
    return (weights[:, :, None] * probs).sum(1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_c q_c log softmax(logits)_c, batch-averaged (KL to ``targets`` up to a constant)."""
    return -(targets * torch.log_softmax(logits, 1)).sum(1).mean()


def disagreement_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """mean_i 1[argmax s_i != argmax t_i] KL(softmax(t_i) || softmax(s_i)): DENSE's adversarial
    term, which its generator *maximises*, so that it makes samples on which the student still
    disagrees with the ensemble (where they agree the term is 0 and pushes nothing)."""
    kl = nn.functional.kl_div(
        torch.log_softmax(student_logits, 1),
        torch.log_softmax(teacher_logits, 1),
        reduction="none",
        log_target=True,
    ).sum(1)
    disagree = (student_logits.argmax(1) != teacher_logits.argmax(1)).float()
    return (kl * disagree).mean()


class BatchNormStatistics:
    """DeepInversion's feature-statistics loss [Yin et al., CVPR 2020], as DENSE uses it: for
    every ``BatchNorm2d`` of the given models, ``||var - running_var||_2 + ||mean -
    running_mean||_2`` of the batch statistics of its input, summed over layers and models.

    A context manager that hooks the layers and unhooks them on exit; :meth:`loss` returns the
    sum over the forward passes since the previous call. Models without batch norm (the mlp)
    add nothing: they steer the generator through the other terms only.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        self.layers = [
            m for model in models for m in model.modules() if isinstance(m, nn.BatchNorm2d)
        ]
        self._terms: list[torch.Tensor] = []
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> BatchNormStatistics:
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        x = inputs[0]
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        assert isinstance(module, nn.BatchNorm2d)
        assert module.running_mean is not None and module.running_var is not None
        self._terms.append(
            torch.linalg.vector_norm(module.running_var - var)
            + torch.linalg.vector_norm(module.running_mean - mean)
        )

    def loss(self) -> torch.Tensor:
        total = torch.stack(self._terms).sum() if self._terms else torch.zeros(())
        self._terms = []
        return total
