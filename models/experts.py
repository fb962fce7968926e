"""Mosaic's Mixture-of-Experts at the server: class experts, the meta model that fuses them,
and the distillation loss.

Expert ``c`` specialises in class ``c``: it mixes the client models by their counts of that
class, ``w[k, c] = n[k, c] / sum_k n[k, c]``. With one shared architecture the mixture is a
parameter average (the reference's faithful mode); with different architectures it is taken
in output space, ``expert_c(x) = sum_k w[k, c] f_k(x)``. Either way an input becomes ``C``
tokens, one per expert, each holding that expert's ``C`` logits; the meta model maps the tokens
to one prediction.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .training import seeded_generator


def expert_weights(counts: np.ndarray) -> np.ndarray:
    """(K clients, C classes) label counts -> column-normalised weights ``w[k, c]``.

    A class no client holds gets uniform weights (its expert is the plain average).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or (counts < 0).any():
        raise ValueError("label counts must be a (clients, classes) array of non-negative counts")
    totals = counts.sum(0, keepdims=True)
    uniform = np.full_like(counts, 1.0 / counts.shape[0])
    return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), uniform)


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier head of a zoo model: its last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear head")
    return linears[-1]


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode inputs of the model's head (its penultimate features) for images ``x``."""
    head = last_linear(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0].detach()))
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured) if captured else torch.empty(0)


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(fit, check)``: about ``fraction`` of every class's examples held out
    for checking, chosen at random (seeded); a class keeps at least one example to fit on, so
    a class with a single example is never checked."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x6A7E])
    check: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, round(fraction * len(idx)))
        if k > 0:
            check.extend(int(i) for i in rng.choice(idx, k, replace=False))
    held = np.sort(np.asarray(check, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels), dtype=np.int64), held), held


class ExpertPanel:
    """``C`` class experts over ``K`` client models, evaluated as tokens ``(B, C, C)``.

    Parameters
    ----------
    models : Sequence[nn.Module]
        The experts themselves (``parameter`` mixtures, one per class) or the client models
        (``output`` mixtures).
    weights : np.ndarray | None
        ``w[k, c]`` for output-space mixing; None when ``models`` are already the experts.
    """

    def __init__(self, models: Sequence[nn.Module], weights: np.ndarray | None) -> None:
        self.models = list(models)
        for m in self.models:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if self.weights is not None and self.weights.shape[0] != len(self.models):
            raise ValueError(f"{self.weights.shape[0]} weight rows for {len(self.models)} models")

    @property
    def output_space(self) -> bool:
        return self.weights is not None

    def to(self, device: torch.device | str) -> ExpertPanel:
        """Move the experts to ``device`` (in place, like ``nn.Module.to``)."""
        self.models = [m.to(device) for m in self.models]
        return self

    def _mix(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(outputs, 1)  # (B, models, C)
        if self.weights is None:
            return stacked  # the models are the experts
        return torch.einsum("kc,bkj->bcj", self.weights.to(stacked.device), stacked)

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Expert logits on images ``x`` (already in [-1, 1])."""
        return self._mix([m(x) for m in self.models])

    @torch.no_grad()
    def head_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Expert logits on penultimate features: each expert's head only (feature prototypes;
        parameter mixtures of one architecture only)."""
        if self.output_space:
            raise ValueError("feature prototypes need parameter-space experts (one architecture)")
        return self._mix([last_linear(m)(features) for m in self.models])


class MetaModel(nn.Module):
    """Fuses ``C`` expert tokens: Linear(C -> 10C), a one-layer encoder-decoder Transformer
    (C heads, the tokens as source and target), sum over tokens, Linear(10C -> C)."""

    def __init__(self, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        d = 10 * num_classes
        self.embed = nn.Linear(num_classes, d)
        self.transformer = nn.Transformer(
            d_model=d,
            nhead=num_classes,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dim_feedforward=4 * d,
            dropout=dropout,
            batch_first=True,
        )
        self.out = nn.Linear(d, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.out(self.transformer(h, h).sum(1))


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


def train_meta(
    tokens: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    ema_decay: float = 0.99,
    seed: int = 0,
) -> tuple[MetaModel, MetaModel, dict[str, float]]:
    """Cross-entropy on prototype tokens with shuffled mini-batches over *all* prototypes
    (the reference only ever used each pass's first batch); returns (model, EMA, metrics).

    The EMA starts from the model's initial weights, so with few steps it still carries them:
    both are returned and reported.
    """
    if len(labels) == 0:
        raise ValueError("the meta model needs at least one prototype")
    gen = seeded_generator(seed, 0x3E7A)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = MetaModel(num_classes)
        ema = copy.deepcopy(model)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses: list[float] = []
        model.train()
        perm, pos = torch.randperm(len(labels), generator=gen), 0
        for _ in range(steps):
            if pos >= len(labels):
                perm, pos = torch.randperm(len(labels), generator=gen), 0
            idx = perm[pos : pos + batch_size]
            pos += batch_size
            loss = nn.functional.cross_entropy(model(tokens[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_update(ema, model, ema_decay)
            losses.append(float(loss.detach()))
    model.eval()
    ema.eval()
    head = float(np.mean(losses[:10])) if losses else float("nan")
    tail = float(np.mean(losses[-10:])) if losses else float("nan")
    return model, ema, {"meta-loss-first": head, "meta-loss-last": tail}


def mosaic_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kl_weight: float = 0.8,
    ce_weight: float = 0.2,
    js_weight: float = 1.0,
) -> torch.Tensor:
    """``0.8 KL(teacher || student) + 0.2 CE(student, argmax teacher) + 1.0 JS(teacher,
    student)`` at temperature 1 (the reference's weights; its JSD-like term is taken here as the
    Jensen-Shannon divergence)."""
    log_s = nn.functional.log_softmax(student_logits, 1)
    log_t = nn.functional.log_softmax(teacher_logits, 1)
    kl = nn.functional.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    ce = nn.functional.cross_entropy(student_logits, teacher_logits.argmax(1))
    log_m = torch.logsumexp(torch.stack([log_s, log_t]), 0) - np.log(2.0)
    js = 0.5 * (
        nn.functional.kl_div(log_m, log_t, reduction="batchmean", log_target=True)
        + nn.functional.kl_div(log_m, log_s, reduction="batchmean", log_target=True)
    )
    return kl_weight * kl + ce_weight * ce + js_weight * js


def distill_toward(
    students: Sequence[nn.Module],
    sample: Callable[[], torch.Tensor],
    teacher: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    lr: float,
) -> list[float]:
    """Adam on :func:`mosaic_loss` toward ``teacher`` on fresh batches from ``sample``.

    Every student sees the same batch and target each step (the teacher, a whole panel of
    experts, is the expensive part). Students stay in eval mode so that synthetic batches
    never enter their BatchNorm statistics. Returns each student's last-10-step mean loss.
    """
    opts = [torch.optim.Adam(s.parameters(), lr=lr) for s in students]
    for s in students:
        s.eval()
    losses: list[list[float]] = [[] for _ in students]
    for _ in range(steps):
        x = sample()
        with torch.no_grad():
            target = teacher(x)
        for student, opt, history in zip(students, opts, losses, strict=True):
            loss = mosaic_loss(student(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    return [float(np.mean(h[-10:])) if h else 0.0 for h in losses]


def kmeans_prototypes(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    per_class: int,
    min_cluster: int,
    seed: int,
    iterations: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class k-means centroids, only of clusters with at least ``min_cluster`` members.

    ``k = min(per_class, n_c // min_cluster)``: a class with fewer than ``min_cluster``
    examples yields no prototype at all (the reference sent a single example's features as a
    "centroid").
    """
    rng = np.random.default_rng([seed, 0xC1])
    out_x: list[np.ndarray] = []
    out_y: list[int] = []
    for c in np.unique(labels):
        pts = features[labels == c].astype(np.float64)
        k = min(per_class, len(pts) // max(min_cluster, 1))
        if k < 1:
            continue
        centres = pts[rng.choice(len(pts), size=k, replace=False)]
        for _ in range(iterations):
            assign = ((pts[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
            for j in range(k):
                if (assign == j).any():
                    centres[j] = pts[assign == j].mean(0)
        assign = ((pts[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        sizes = np.bincount(assign, minlength=k)
        for j in range(k):
            if sizes[j] >= min_cluster:
                out_x.append(centres[j].astype(np.float32))
                out_y.append(int(c))
    if not out_x:
        return np.zeros((0, features.shape[1]), np.float32), np.zeros(0, np.int64)
    return np.stack(out_x), np.asarray(out_y, dtype=np.int64)
