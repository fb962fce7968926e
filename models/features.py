"""A classifier's features: the input of its linear head, at a width shared across architectures.

FedProto exchanges per-class mean features, which only average if every client's features have
the same width; the zoo's heads read 64 to 512 features. :func:`with_feature_width` gives any
zoo model that width by putting a learned projection (linear + ReLU, so that features stay
non-negative like the zoo's own ReLU and pooling outputs) in front of a new head, and leaves a
model whose head already reads that many features untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from .experts import last_linear


def with_feature_width(model: nn.Module, width: int) -> nn.Module:
    """``model`` with a head reading ``width`` features (changed in place and returned)."""
    head = last_linear(model)
    if head.in_features == width:
        return model
    parent, name = _parent_of(model, head)
    projected = nn.Sequential(
        nn.Linear(head.in_features, width), nn.ReLU(), nn.Linear(width, head.out_features)
    )
    setattr(parent, name, projected)
    return model


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits for ``x`` and its head's input, both differentiable."""
    captured: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[0]


def _parent_of(model: nn.Module, child: nn.Module) -> tuple[nn.Module, str]:
    for module in model.modules():
        for name, sub in module.named_children():
            if sub is child:
                return module, name
    raise ValueError(f"{type(child).__name__} is not a submodule of {type(model).__name__}")


def head_name(model: nn.Module) -> str:
    """The module name of the model's head (its last linear layer), e.g. ``fc`` or ``head.2``."""
    head = last_linear(model)
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ValueError(f"{type(model).__name__} has no linear head")  # unreachable: last_linear


class FeatureGenerator(nn.Module):
    """FedGen's generator: features of a requested class, from noise, in a head's input space.

    ``(noise, one-hot label) -> linear -> batch norm -> ReLU -> linear -> ReLU``; the last ReLU
    keeps the features non-negative, as the zoo's extractors' are (ReLU and pooling outputs),
    so that a head sees generated features in the range it is trained on.

    Parameters
    ----------
    num_classes : int
    width : int
        Features produced (the heads' input width).
    noise_dim : int (default: 32)
    hidden : int (default: 256)
    """

    def __init__(
        self, num_classes: int, width: int, *, noise_dim: int = 32, hidden: int = 256
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.noise_dim = noise_dim
        self.net = nn.Sequential(
            nn.Linear(noise_dim + num_classes, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, width),
            nn.ReLU(),
        )

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(labels, self.num_classes).to(noise.dtype)
        return self.net(torch.cat([noise, onehot], dim=1))

    def sample(self, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Features for ``labels``, with noise drawn from ``gen``."""
        noise = torch.randn(len(labels), self.noise_dim, generator=gen).to(labels.device)
        return self(noise, labels)
