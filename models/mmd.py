"""PRISM's local objectives: moment matching of pretrained features (GFMN, "MMD with a
pretrained kernel") and a pixel-space Gaussian-kernel MMD (GMMN) that needs no network.

Moment matching compares the mean and per-dimension variance of features phi(G(z)) with a
client's cached real statistics (mu, v). As in GFMN the generator does not follow the noisy
batch gaps directly: two vectors track them (``m_mean ~ mu - mean(phi)``, ``m_var ~ v -
var(phi)``), each fitted by Adam to the latest gap, and the generator loss is ``m_mean .
(mu - mean(phi)) + m_var . (v - var(phi))`` with the trackers held fixed. With the trackers
equal to the gaps the mean term is the squared MMD under the linear kernel of phi.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .training import images_to_tensor

PRISM_LOSSES = ("efficientnet-lite0", "pixel-mmd")  # moment matching of these features, or GMMN
IMAGE_SIZE = 32  # the generator's output; 28x28 data are resized to it


def to_generator_size(x: torch.Tensor) -> torch.Tensor:
    """Real images in [-1, 1] resized (bilinear) to the generator's 32x32."""
    if x.shape[-1] == IMAGE_SIZE and x.shape[-2] == IMAGE_SIZE:
        return x
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


class EfficientNetFeatures(nn.Module):
    """All intermediate activations of the frozen ImageNet EfficientNet-Lite0 (stem, the 16
    block outputs and the head), flattened and concatenated: the offline stand-in for the
    reference's VGG19 ReLU features. Input: images in [-1, 1] (grey repeated to 3 channels,
    the normalisation the weights expect).

    The network is frozen in eval mode, so every batch norm is a fixed affine map and is folded
    into the convolution before it (``fold=True``): the same function, up to float rounding,
    without the batch-norm passes forward and backward."""

    def __init__(self, weights_path: str | None = None, *, fold: bool = True) -> None:
        super().__init__()
        from .teachers import EfficientNetTeacher

        self.net = EfficientNetTeacher(10, image_size=IMAGE_SIZE, weights_path=weights_path).model
        self.net.eval()
        self.id = "efficientnet-lite0-all-activations"
        if fold:
            _fold_batch_norms(self.net)
            self.id += "-folded"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        feats = [h.flatten(1)]
        for block in net._blocks:
            h = block(h, drop_connect_rate=None)
            feats.append(h.flatten(1))
        feats.append(net._swish(net._bn1(net._conv_head(h))).flatten(1))
        return torch.cat(feats, dim=1)


def _fold_batch_norms(net: nn.Module) -> None:
    """Fold each eval-mode batch norm into the convolution that feeds it (in place)."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:  # type: ignore[union-attr]
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    with torch.no_grad():
        for owner, conv_name, bn_name in pairs:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            assert bn.running_var is not None and bn.running_mean is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(owner, bn_name, nn.Identity())


def feature_map(name: str) -> nn.Module:
    if name == "efficientnet-lite0":
        return EfficientNetFeatures()
    raise ValueError(f"no feature network {name!r}; allowed: efficientnet-lite0")


def real_statistics(
    phi: nn.Module, images: np.ndarray, *, clip: float = 0.0, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and unbiased per-dimension variance of phi over uint8 images (N, C, H, W).

    With ``clip > 0`` every feature vector is first scaled to L2 norm ``<= clip`` (the bound
    the DP release needs). Returns (mean, variance, n).
    """
    total = sq = None
    n = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            f = phi(to_generator_size(images_to_tensor(images[start : start + batch_size])))
            f = _clip_rows(f.double(), clip)
            total = f.sum(0) if total is None else total + f.sum(0)
            sq = (f**2).sum(0) if sq is None else sq + (f**2).sum(0)
            n += len(f)
    if total is None or sq is None or n < 2:
        raise ValueError(f"feature statistics need at least 2 images, got {n}")
    mean = total / n
    var = (sq - n * mean**2) / (n - 1)
    return mean.float().numpy(), var.clamp_min(0).float().numpy(), n


def _clip_rows(f: torch.Tensor, clip: float) -> torch.Tensor:
    if clip <= 0:
        return f
    norms = f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return f * (clip / norms).clamp(max=1.0)


def privatise_statistics(
    mean: np.ndarray,
    var: np.ndarray,
    n: int,
    *,
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mechanism on (mean, second moment) of clipped features, released once.

    Each feature vector has ``||phi|| <= clip``, so ``[phi, phi^2]`` has norm <= ``sqrt(clip^2
    + clip^4)`` and replacing one example moves the pair of means by at most ``2 sqrt(clip^2 +
    clip^4) / n`` (L2 sensitivity). Noise N(0, (noise_multiplier * sensitivity)^2) on both;
    the variance is then post-processing, clamped at 0.
    """
    sensitivity = 2.0 * float(np.sqrt(clip**2 + clip**4)) / n
    sigma = noise_multiplier * sensitivity
    second = var.astype(np.float64) * (n - 1) / n + mean.astype(np.float64) ** 2
    noisy_mean = mean + rng.normal(0.0, sigma, size=mean.shape)
    noisy_second = second + rng.normal(0.0, sigma, size=second.shape)
    noisy_var = np.maximum(noisy_second - noisy_mean**2, 0.0) * n / (n - 1)
    return noisy_mean.astype(np.float32), noisy_var.astype(np.float32)


def gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """epsilon of one Gaussian release at ``delta`` (RDP accountant of ``dp-accounting``)."""
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier=noise_multiplier))
    return float(accountant.get_epsilon(delta))


def noise_for_epsilon(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier whose single Gaussian release is (epsilon, delta)-DP."""
    low, high = 1e-3, 1e3
    if gaussian_epsilon(high, delta) > epsilon:
        raise ValueError(f"epsilon={epsilon} at delta={delta} needs more noise than {high:g}")
    for _ in range(60):  # bisection on a monotone function
        mid = (low * high) ** 0.5
        if gaussian_epsilon(mid, delta) > epsilon:
            low = mid
        else:
            high = mid
    return high


class MomentMatching(nn.Module):
    """GFMN's loss with Adam-tracked moving averages of the mean and variance gaps."""

    real_mean: torch.Tensor
    real_var: torch.Tensor

    def __init__(
        self,
        phi: nn.Module,
        mean: np.ndarray,
        var: np.ndarray,
        *,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.5, 0.999),
        clip: float = 0.0,
    ) -> None:
        super().__init__()
        self.phi = phi
        # Real statistics of clipped features (the DP release) are matched by clipped fakes.
        self.clip = clip
        self.register_buffer("real_mean", torch.from_numpy(np.asarray(mean, np.float32)))
        self.register_buffer("real_var", torch.from_numpy(np.asarray(var, np.float32)))
        self.track_mean = nn.Parameter(torch.zeros(len(mean)))
        self.track_var = nn.Parameter(torch.zeros(len(var)))
        self.optimizer = torch.optim.Adam([self.track_mean, self.track_var], lr=lr, betas=betas)

    def gaps(self, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real minus generated feature mean and variance."""
        f = _clip_rows(self.phi(fake), self.clip)
        return self.real_mean - f.mean(0), self.real_var - f.var(0)

    def forward(self, fake: torch.Tensor) -> torch.Tensor:
        gap_mean, gap_var = self.gaps(fake)
        # 1. fit the trackers to the detached gaps (one Adam step on their squared error)
        self.optimizer.zero_grad()
        track_loss = F.mse_loss(self.track_mean, gap_mean.detach()) + F.mse_loss(
            self.track_var, gap_var.detach()
        )
        track_loss.backward()
        self.optimizer.step()
        # 2. the generator follows the trackers (fixed) instead of the noisy batch gaps
        return (self.track_mean.detach() * gap_mean).sum() + (
            self.track_var.detach() * gap_var
        ).sum()


class PixelMMD(nn.Module):
    """Squared MMD with a sum of Gaussian kernels on raw pixels (GMMN-style) against
    random batches of the client's real images."""

    real: torch.Tensor

    def __init__(
        self,
        real: torch.Tensor,
        *,
        bandwidths: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0),
        sampler: Callable[[int], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("real", real)
        self.bandwidths = bandwidths
        self.sampler = sampler or (lambda n: torch.randint(0, len(self.real), (n,)))

    def forward(self, fake: torch.Tensor) -> torch.Tensor:
        real = self.real[self.sampler(len(fake))]
        return mmd2(fake.flatten(1), real.flatten(1), self.bandwidths)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """Biased squared MMD between samples x and y under sum_s exp(-|a-b|^2 / (2 s^2))."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    k = sum(torch.exp(-d2 / (2.0 * s * s)) for s in bandwidths)
    assert isinstance(k, torch.Tensor)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


def statistics_cache_path(cache_dir: Path, key: dict[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / "prism-statistics" / f"{digest}.npz"
