"""PRISM's masked generator: the estimator's gradient, mask statistics, frozen weights from a
seed, bit packing, and export/import."""

import numpy as np
import pytest
import torch

from models.masked import (
    GeneratorSpec,
    MaskedConv2d,
    MaskedConvTranspose2d,
    export_generator,
    final_mask,
    flat,
    get_layer_arrays,
    load_generator,
    masked_layers,
    num_masked,
    pack_mask,
    sample_mask,
    set_fixed_mask,
    unpack_mask,
)


def test_gradient_is_fedpm_scaled_straight_through():
    torch.manual_seed(0)
    s = torch.randn(5000, requires_grad=True)
    c = torch.randn(5000)
    (c * sample_mask(s)).sum().backward()
    theta = torch.sigmoid(s.detach())
    # dL/dM = c; dL/dtheta = theta * c; dL/ds = c * theta^2 * (1 - theta)
    torch.testing.assert_close(s.grad, c * theta**2 * (1 - theta))


def test_layer_gradient_through_frozen_weight():
    gen = torch.Generator().manual_seed(1)
    layer = MaskedConv2d(2, 3, 3, padding=1, generator=gen)
    x = torch.randn(4, 2, 5, 5)
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)  # the same mask again, to differentiate by hand
    mask = torch.bernoulli(torch.sigmoid(layer.scores.detach()))
    w_eff = (layer.weight * mask).requires_grad_(True)
    torch.nn.functional.conv2d(x, w_eff, padding=1).pow(2).sum().backward()
    out.pow(2).sum().backward()
    theta = torch.sigmoid(layer.scores.detach())
    expected = w_eff.grad * layer.weight * theta**2 * (1 - theta)
    torch.testing.assert_close(layer.scores.grad, expected)
    assert layer.weight.grad is None  # frozen


def test_mask_statistics_and_a_fresh_mask_every_pass():
    torch.manual_seed(0)
    s = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0]).repeat(4000, 1)
    draws = torch.stack([sample_mask(s).detach() for _ in range(5)])
    freq = draws.mean((0, 1))
    torch.testing.assert_close(freq, torch.sigmoid(s[0]), atol=0.01, rtol=0)
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(draws[0], draws[1])


def test_signed_kaiming_constant_weights_regrow_from_the_seed():
    gen = torch.Generator().manual_seed(0)
    conv = MaskedConv2d(4, 6, 3, padding=1, generator=gen)
    convt = MaskedConvTranspose2d(8, 5, 4, generator=gen)
    assert torch.allclose(conv.weight.abs(), torch.tensor((2 / (4 * 9)) ** 0.5))
    assert torch.allclose(convt.weight.abs(), torch.tensor((2 / (5 * 16)) ** 0.5))  # out * k^2
    assert 0.4 < (conv.weight > 0).float().mean() < 0.6
    a, b = GeneratorSpec(1, "small", 3).build(), GeneratorSpec(1, "small", 3).build()
    c = GeneratorSpec(1, "small", 4).build()
    for (_, la), (_, lb), (_, lc) in zip(
        masked_layers(a), masked_layers(b), masked_layers(c), strict=True
    ):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.scores, lb.scores)
        assert not torch.equal(la.weight, lc.weight)
    assert all(not p.requires_grad for n, p in a.named_parameters() if n.endswith("weight"))


def test_generator_shapes_and_the_papers_size():
    for channels in (1, 3):
        g = GeneratorSpec(channels, "small").build()
        assert g(torch.randn(2, 128)).shape == (2, channels, 32, 32)
    # 128*512*16 + 3 residual blocks + 64*3*9: the paper's "about 3.54 M" masked weights
    assert num_masked(GeneratorSpec(3, "full").build()) == 3_544_768
    assert GeneratorSpec(1, "full").build().stem.weight.shape == (128, 512, 4, 4)


@pytest.mark.parametrize("length", [1, 8, 13, 1000, 4099])
def test_bit_packing_round_trip(length):
    bits = np.random.default_rng(length).integers(0, 2, length).astype(np.uint8)
    packed = pack_mask(bits)
    assert packed.dtype == np.uint8 and len(packed) == (length + 7) // 8
    np.testing.assert_array_equal(unpack_mask(packed, length), bits)


def test_unpack_rejects_bad_masks():
    packed = pack_mask(np.ones(13, np.uint8))
    with pytest.raises(ValueError, match="bytes, expected"):
        unpack_mask(packed, 20)
    with pytest.raises(ValueError, match="padding"):
        unpack_mask(np.array([255, 255], np.uint8), 13)
    with pytest.raises(ValueError, match="1-D uint8"):
        unpack_mask(packed.astype(np.int32), 13)


def test_final_mask_threshold_and_seeded_sample():
    scores = np.array([-3.0, -0.1, 0.1, 3.0] * 1000, np.float32)
    np.testing.assert_array_equal(final_mask(scores, "threshold", 0)[:4], [0, 0, 1, 1])
    a, b = final_mask(scores, "sample", 5), final_mask(scores, "sample", 5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, final_mask(scores, "sample", 6))
    assert abs(a[3::4].mean() - 1 / (1 + np.exp(-3))) < 0.03


def test_export_reproduces_the_same_images(tmp_path):
    spec = GeneratorSpec(1, "small", seed=11)
    model = spec.build()
    bits = final_mask(flat(get_layer_arrays(model, "scores"), model), "sample", 11)
    info = export_generator(tmp_path / "g.npz", spec, bits)
    assert info["masked-weights"] == len(bits) and abs(info["density"] - bits.mean()) < 1e-12
    set_fixed_mask(model, bits)
    loaded = load_generator(tmp_path / "g.npz")
    torch.manual_seed(3)
    a = model.eval().sample(8)
    torch.manual_seed(3)
    b = loaded.sample(8)
    torch.testing.assert_close(a, b)


def test_full_generator_exports_under_half_a_megabyte(tmp_path):
    spec = GeneratorSpec(3, "full", seed=0)
    model = spec.build()
    bits = final_mask(flat(get_layer_arrays(model, "scores"), model), "threshold", 0)
    info = export_generator(tmp_path / "full.npz", spec, bits)
    assert info["bytes"] <= 500_000
    assert info["bytes"] >= 3_544_768 // 8  # 1 bit per weight is the floor of this format
