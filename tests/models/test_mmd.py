"""PRISM's losses and its DP release: moment matching with trackers, pixel MMD, clipping,
the Gaussian mechanism's noise scale and the accountant."""

import numpy as np
import pytest
import torch
from torch import nn

from models.mmd import (
    MomentMatching,
    PixelMMD,
    gaussian_epsilon,
    mmd2,
    noise_for_epsilon,
    privatise_statistics,
    real_statistics,
    to_generator_size,
)
from models.training import images_to_tensor


def test_moment_matching_pulls_fake_moments_to_the_real_ones():
    torch.manual_seed(0)
    real_mean, real_var = np.full(16, 2.0, np.float32), np.full(16, 0.25, np.float32)
    loss_fn = MomentMatching(nn.Flatten(), real_mean, real_var, lr=0.05)
    mu = nn.Parameter(torch.zeros(16))
    log_sd = nn.Parameter(torch.zeros(16))
    opt = torch.optim.Adam([mu, log_sd], lr=0.05)
    for _ in range(400):
        fake = mu + log_sd.exp() * torch.randn(256, 16)
        loss = loss_fn(fake.view(256, 1, 4, 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(float(mu.detach().mean()) - 2.0) < 0.2
    assert abs(float((2 * log_sd.detach()).exp().mean()) - 0.25) < 0.1
    # the trackers follow the gaps, which are now small
    assert float(loss_fn.track_mean.abs().mean()) < 0.2


def test_pixel_mmd_separates_distributions():
    torch.manual_seed(0)
    real = torch.randn(400, 1, 4, 4)
    loss = PixelMMD(real, bandwidths=(1.0, 4.0))
    same = float(loss(torch.randn(200, 1, 4, 4)))
    shifted = float(loss(torch.randn(200, 1, 4, 4) + 1.5))
    assert shifted > 10 * max(same, 1e-4)
    x = torch.randn(50, 8)
    assert abs(float(mmd2(x, x, (1.0,)))) < 1e-6


def test_clipped_statistics_bound_every_feature_vector():
    images = (np.random.default_rng(0).random((64, 1, 28, 28)) * 255).astype(np.uint8)
    mean, var, n = real_statistics(nn.Flatten(), images, clip=1.0)
    assert n == 64 and mean.shape == (1024,) and (var >= 0).all()
    assert np.linalg.norm(mean) <= 1.0 + 1e-5
    raw_mean, _, _ = real_statistics(nn.Flatten(), images)
    assert np.linalg.norm(raw_mean) > 1.0  # unclipped features are far larger


def test_gaussian_mechanism_noise_scale():
    d, n, clip, z = 200_000, 500, 1.0, 2.0
    mean, var = np.zeros(d, np.float32), np.zeros(d, np.float32)
    noisy_mean, noisy_var = privatise_statistics(
        mean, var, n, clip=clip, noise_multiplier=z, rng=np.random.default_rng(0)
    )
    sigma = z * 2 * np.sqrt(clip**2 + clip**4) / n
    assert abs(noisy_mean.std() / sigma - 1) < 0.01
    assert (noisy_var >= 0).all()


def test_accountant_matches_the_rdp_bound_and_calibrates_epsilon():
    delta = 1e-5
    for z in (0.8, 1.0, 2.0):
        # the classic RDP -> (epsilon, delta) conversion, an upper bound on the accountant's
        classic = min(
            a / (2 * z * z) + np.log(1 / delta) / (a - 1) for a in np.arange(1.1, 200, 0.01)
        )
        eps = gaussian_epsilon(z, delta)
        assert 0.5 * classic < eps <= classic + 1e-6
    assert gaussian_epsilon(2.0, delta) < gaussian_epsilon(1.0, delta)
    z = noise_for_epsilon(9.8, delta)
    assert gaussian_epsilon(z, delta) <= 9.8
    assert gaussian_epsilon(z * 0.99, delta) > 9.8  # the smallest noise that meets it


def test_impossible_epsilon_is_a_clear_error():
    with pytest.raises(ValueError, match="needs more noise"):
        noise_for_epsilon(1e-9, 1e-5)


def test_clipped_matching_compares_clipped_fakes():
    # Real statistics of clipped features are matched by a batch of the same images only if
    # the loss clips the generated features the same way.
    images = (np.random.default_rng(1).random((64, 1, 28, 28)) * 255).astype(np.uint8)
    mean, var, _ = real_statistics(nn.Flatten(), images, clip=1.0)
    fake = to_generator_size(images_to_tensor(images))
    gap_mean, gap_var = MomentMatching(nn.Flatten(), mean, var, clip=1.0).gaps(fake)
    assert float(gap_mean.abs().max()) < 1e-6 and float(gap_var.abs().max()) < 1e-6
    raw_gap, _ = MomentMatching(nn.Flatten(), mean, var).gaps(fake)
    assert float(raw_gap.abs().max()) > 0.1


def test_folded_batch_norms_compute_the_same_features_and_gradients():
    from models.mmd import EfficientNetFeatures

    torch.manual_seed(0)
    plain, folded = EfficientNetFeatures(fold=False), EfficientNetFeatures()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert folded.id != plain.id  # cached real statistics are never mixed
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    grads = []
    for phi in (plain, folded):
        xi = x.clone().requires_grad_(True)
        f = phi(xi)
        f.pow(2).sum().backward()
        grads.append((f.detach(), xi.grad))
    (f0, g0), (f1, g1) = grads
    torch.testing.assert_close(f1, f0, rtol=1e-4, atol=1e-4 * float(f0.abs().max()))
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-4 * float(g0.abs().max()))
