"""Local image generators (Mosaic): a DCGAN, unconditional or class-conditional, trained on one
client's data with a DeGAN-style class-diversity term from an auxiliary classifier.

Images live in [-1, 1] on both sides (``images_to_tensor`` for real data, ``tanh`` for
generated data), so the discriminator never sees two different ranges; every class, class 0
included, trains the discriminator (both are defects of the reference code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # progress on a terminal only (disable=None)

from protocol.settings import Section, Setting

from .training import batch_indices, images_to_tensor
from .zoo import ARCHITECTURES

GENERATOR_KINDS = ("unconditional", "conditional")
DIVERSITY_PRIORS = ("client", "uniform")

GENERATOR_SETTINGS = Section(
    "local generators",
    (
        Setting(
            "generator",
            "unconditional",
            "the clients' DCGAN (conditional: class-conditional)",
            choices=GENERATOR_KINDS,
            travel="method",
        ),
        Setting("generator-z-dim", 100, "latent size", low=1, travel="method"),
        Setting("generator-width", 32, "base channel width", low=1, travel="method"),
        Setting(
            "generator-steps",
            400,
            "GAN training steps (once per client, cached)",
            low=1,
            travel="method",
        ),
        Setting("generator-batch-size", 64, "GAN batch size", low=2, travel="method"),
        Setting(
            "generator-lr",
            0.0002,
            "Adam learning rate, betas (0.5, 0.999)",
            low=0.0,
            low_open=True,
            travel="method",
        ),
        Setting(
            "generator-diversity-weight",
            5.0,
            "weight of KL(batch-mean class distribution || prior)",
            low=0.0,
            travel="method",
        ),
        Setting(
            "generator-diversity-prior",
            "client",
            "that prior: the client's label distribution, or uniform (the reference's)",
            choices=DIVERSITY_PRIORS,
            travel="method",
        ),
        Setting(
            "generator-aux-model",
            "cnn-small",
            "the local auxiliary classifier of the diversity term",
            choices=tuple(ARCHITECTURES),
            travel="method",
        ),
        Setting("generator-aux-steps", 200, "its local training steps", low=0, travel="method"),
    ),
    "Mosaic's local generators (models/generators.py).",
)


@dataclass(frozen=True)
class GeneratorConfig:
    """Generator architecture and training settings (run-config keys ``generator-*``)."""

    kind: str = GENERATOR_SETTINGS.default("generator")
    z_dim: int = GENERATOR_SETTINGS.default("generator-z-dim")
    width: int = GENERATOR_SETTINGS.default("generator-width")
    steps: int = GENERATOR_SETTINGS.default("generator-steps")
    batch_size: int = GENERATOR_SETTINGS.default("generator-batch-size")
    lr: float = GENERATOR_SETTINGS.default("generator-lr")
    diversity_weight: float = GENERATOR_SETTINGS.default("generator-diversity-weight")
    diversity_prior: str = GENERATOR_SETTINGS.default("generator-diversity-prior")

    @property
    def conditional(self) -> bool:
        return self.kind == "conditional"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GeneratorConfig:
        return cls(
            kind=str(config["generator"]),
            z_dim=int(config["generator-z-dim"]),
            width=int(config["generator-width"]),
            steps=int(config["generator-steps"]),
            batch_size=int(config["generator-batch-size"]),
            lr=float(config["generator-lr"]),
            diversity_weight=float(config["generator-diversity-weight"]),
            diversity_prior=str(config["generator-diversity-prior"]),
        )


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _check_shape(image_shape: tuple[int, int, int]) -> None:
    _, h, w = image_shape
    if h % 4 or w % 4:
        raise ValueError(f"generator image size {h}x{w} must be divisible by 4")


class Generator(nn.Module):
    """z (and a one-hot class when conditional) -> image in [-1, 1].

    A transposed convolution maps the 1x1 code to (H/4, W/4); two stride-2 layers double it
    twice; a 3x3 layer gives the channels. Bias-free, BatchNorm + ReLU, tanh output.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int, cfg: GeneratorConfig
    ) -> None:
        super().__init__()
        _check_shape(image_shape)
        c, h, w = image_shape
        self.z_dim, self.num_classes, self.conditional = cfg.z_dim, num_classes, cfg.conditional
        k = cfg.width
        in_dim = cfg.z_dim + (num_classes if cfg.conditional else 0)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_dim, 4 * k, (h // 4, w // 4), bias=False),
            nn.BatchNorm2d(4 * k),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * k, 2 * k, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * k),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * k, k, 4, 2, 1, bias=False),
            nn.BatchNorm2d(k),
            nn.ReLU(True),
            nn.Conv2d(k, c, 3, 1, 1, bias=False),
            nn.Tanh(),
        )
        self.apply(_init_dcgan)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, nn.functional.one_hot(labels, self.num_classes).float()], 1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Image (with one-hot class planes when conditional) -> one real/fake logit."""

    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int, cfg: GeneratorConfig
    ) -> None:
        super().__init__()
        _check_shape(image_shape)
        c, h, w = image_shape
        self.num_classes, self.conditional = num_classes, cfg.conditional
        k = cfg.width
        in_ch = c + (num_classes if cfg.conditional else 0)
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, k, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(k, 2 * k, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * k),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * k, 4 * k, 3, 1, 1, bias=False),
            nn.BatchNorm2d(4 * k),
            nn.LeakyReLU(0.2, True),
            nn.Flatten(),
            nn.Linear(4 * k * (h // 4) * (w // 4), 1, bias=False),
        )
        self.apply(_init_dcgan)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            planes = nn.functional.one_hot(labels, self.num_classes).float()
            x = torch.cat([x, planes[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        return self.net(x).squeeze(1)


def sample_labels(prior: np.ndarray, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` class labels drawn from ``prior`` (a client's label frequencies)."""
    p = torch.as_tensor(prior, dtype=torch.float64)
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=gen)


@torch.no_grad()
def generate(
    generator: Generator,
    n: int,
    gen: torch.Generator,
    prior: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images in [-1, 1] (eval mode) and, for a conditional generator, their labels."""
    generator.to(device).eval()
    z = torch.randn(n, generator.z_dim, generator=gen).to(device)
    labels = None
    if generator.conditional:
        if prior is None:
            raise ValueError("a conditional generator needs a label prior to sample from")
        labels = sample_labels(prior, n, gen).to(device)
    return generator(z, labels), labels


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float images -> uint8, the dataset's own encoding."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def diversity_term(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """KL(batch-mean class distribution || prior).

    With a uniform prior this is the reference's ``sum_c p_c log p_c`` up to the constant
    ``log C``: it rewards covering every class equally. Under label skew that pushes the
    generator toward classes the client never saw, so the default prior is the client's own
    label frequencies (``generator-diversity-prior=client``).
    """
    mean = probs.mean(0).clamp_min(1e-8)
    return (mean * (mean.log() - prior.clamp_min(1e-8).log())).sum()


def train_gan(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    cfg: GeneratorConfig,
    aux: nn.Module,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[Generator, dict[str, float]]:
    """Train a generator on one client's images (uint8, NCHW) and labels.

    Discriminator: BCE on real vs generated. Generator: non-saturating BCE plus
    ``diversity_weight`` times :func:`diversity_term` on the frozen auxiliary classifier's
    softmax of the generated batch (unconditional only: a conditional generator draws its
    classes from the client's label frequencies). Adam (lr, betas 0.5 / 0.999) for both.
    """
    if len(y) < 2:
        raise ValueError(f"a generator needs at least 2 local examples, got {len(y)}")
    shape = tuple(int(d) for d in x.shape[1:])
    g_net = Generator(shape, num_classes, cfg).to(device)  # type: ignore[arg-type]
    d_net = Discriminator(shape, num_classes, cfg).to(device)  # type: ignore[arg-type]
    aux.to(device).eval()
    for p in aux.parameters():
        p.requires_grad_(False)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    prior_np = counts if cfg.diversity_prior == "client" else np.ones(num_classes)
    prior = torch.as_tensor(prior_np / prior_np.sum(), dtype=torch.float32, device=device)
    opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    xs, ys = images_to_tensor(x), torch.from_numpy(y.astype(np.int64))
    sums = {"d-loss": 0.0, "g-loss": 0.0, "diversity": 0.0}
    steps = 0
    batches = batch_indices(len(y), cfg.batch_size, cfg.steps, gen)
    for idx in tqdm(batches, total=cfg.steps, desc="generator", unit="step", disable=None):
        if len(idx) < 2:
            continue
        real, real_y = xs[idx].to(device), ys[idx].to(device)
        b = len(idx)
        z = torch.randn(b, cfg.z_dim, generator=gen).to(device)
        fake_y = sample_labels(counts, b, gen).to(device) if cfg.conditional else None
        fake = g_net(z, fake_y)
        cond_real = real_y if cfg.conditional else None
        d_loss = bce(d_net(real, cond_real), torch.ones(b, device=device)) + bce(
            d_net(fake.detach(), fake_y), torch.zeros(b, device=device)
        )
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = bce(d_net(fake, fake_y), torch.ones(b, device=device))
        div = torch.zeros((), device=device)
        if not cfg.conditional and cfg.diversity_weight > 0:
            div = diversity_term(torch.softmax(aux(fake), 1), prior)
        opt_g.zero_grad(set_to_none=True)
        (g_loss + cfg.diversity_weight * div).backward()
        opt_g.step()
        sums["d-loss"] += float(d_loss.detach())
        sums["g-loss"] += float(g_loss.detach())
        sums["diversity"] += float(div.detach())
        steps += 1
    return g_net.cpu(), {f"generator-{k}": v / max(steps, 1) for k, v in sums.items()}
