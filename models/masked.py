"""PRISM's generator: a frozen random network whose weights are kept or dropped by stochastic
binary masks (a "strong lottery ticket"), plus the dense twin the FedAvg baseline trains.

Every masked layer holds a frozen weight regenerated from a seed (signed Kaiming constant,
``sign(w0) * sqrt(2 / fan_in)``) and a trainable score per weight; ``theta = sigmoid(score)``
is the probability that the weight is kept. Each forward pass draws a fresh mask
``M ~ Bernoulli(theta)`` unless a fixed mask is set (an exported generator). The gradient
through the sample is FedPM's scaled straight-through estimator: ``dL/dtheta = theta * dL/dM``,
so ``dL/ds = dL/dM * theta^2 (1 - theta)``.

Masks travel bit-packed (:func:`pack_mask`): one bit per weight, in :func:`masked_layers`
order, least significant bit first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from federated_data.atomic import save_npz

# Base width of the residual generator: "full" is the paper's network (512-256-128-64
# channels, about 3.54 M masked weights), "small" a 16x lighter one for tests, CPU
# benchmarks and edge devices.
GENERATOR_SIZES = {"full": 64, "small": 16}
Z_DIM = 128
EXPORT_FORMAT = "bouquet-prism-generator-v1"


class _SampledMask(torch.autograd.Function):
    """M ~ Bernoulli(theta) forward; dL/dtheta = theta * dL/dM backward (FedPM)."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(theta)
        return torch.bernoulli(theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (theta,) = ctx.saved_tensors
        return grad * theta


def sample_mask(scores: torch.Tensor) -> torch.Tensor:
    """A Bernoulli(sigmoid(scores)) mask that lets the scaled straight-through gradient pass."""
    return _SampledMask.apply(torch.sigmoid(scores))


class _MaskedMixin(nn.Module):
    """Weight (frozen unless dense) x mask; the mask is sampled, fixed, or absent (dense)."""

    weight: torch.Tensor
    scores: nn.Parameter
    fixed_mask: torch.Tensor | None
    dense: bool

    def _init_masked(self, fan_in: int, generator: torch.Generator, dense: bool) -> None:
        self.dense = dense
        self.fixed_mask = None
        w0 = torch.randn(self.weight.shape, generator=generator)
        with torch.no_grad():
            if dense:  # the baseline trains ordinary Kaiming-normal weights
                self.weight.copy_(w0 * (2.0 / fan_in) ** 0.5)
            else:
                self.weight.copy_(torch.sign(w0) * (2.0 / fan_in) ** 0.5)
        self.weight.requires_grad_(dense)
        scores = torch.randn(self.weight.shape, generator=generator)
        self.scores = nn.Parameter(scores, requires_grad=not dense)

    def masked_weight(self) -> torch.Tensor:
        if self.dense:
            return self.weight
        if self.fixed_mask is not None:
            return self.weight * self.fixed_mask
        return self.weight * sample_mask(self.scores)


class MaskedConv2d(nn.Conv2d, _MaskedMixin):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        padding: int,
        generator: torch.Generator,
        dense: bool = False,
    ) -> None:
        nn.Conv2d.__init__(self, cin, cout, kernel, padding=padding, bias=False)
        self._init_masked(cin * kernel * kernel, generator, dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), None, self.stride, self.padding)


class MaskedConvTranspose2d(nn.ConvTranspose2d, _MaskedMixin):
    def __init__(
        self, cin: int, cout: int, kernel: int, *, generator: torch.Generator, dense: bool = False
    ) -> None:
        nn.ConvTranspose2d.__init__(self, cin, cout, kernel, bias=False)
        # fan_in of a transposed convolution: out_channels * k^2 (the spec's convention)
        self._init_masked(cout * kernel * kernel, generator, dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.conv_transpose2d(x, self.masked_weight(), None, self.stride)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # Affine frozen at identity and always batch statistics, as in the reference.
    return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


class _UpBlock(nn.Module):
    """BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3; skip: conv1x1 then nearest x2."""

    def __init__(self, cin: int, cout: int, generator: torch.Generator, dense: bool) -> None:
        super().__init__()
        self.bn1, self.bn2 = _batch_norm(cin), _batch_norm(cout)
        self.conv1 = MaskedConv2d(cin, cout, 3, padding=1, generator=generator, dense=dense)
        self.conv2 = MaskedConv2d(cout, cout, 3, padding=1, generator=generator, dense=dense)
        self.skip = MaskedConv2d(cin, cout, 1, padding=0, generator=generator, dense=dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + F.interpolate(self.skip(x), scale_factor=2.0, mode="nearest")


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything that regenerates a generator's frozen weights anywhere."""

    channels: int
    size: str = "small"
    seed: int = 0
    dense: bool = False

    def build(self) -> MaskedGenerator:
        return MaskedGenerator(self)


class MaskedGenerator(nn.Module):
    """z in R^128 -> ConvT 4x4 -> three residual up-blocks -> BN, ReLU, conv3x3, tanh: 32x32."""

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        if spec.size not in GENERATOR_SIZES:
            raise ValueError(f"generator size {spec.size!r} is unknown; allowed: {GENERATOR_SIZES}")
        self.spec = spec
        w = GENERATOR_SIZES[spec.size]
        gen = torch.Generator().manual_seed(int(spec.seed))
        d = spec.dense
        self.stem = MaskedConvTranspose2d(Z_DIM, 8 * w, 4, generator=gen, dense=d)
        self.blocks = nn.Sequential(
            _UpBlock(8 * w, 4 * w, gen, d),
            _UpBlock(4 * w, 2 * w, gen, d),
            _UpBlock(2 * w, w, gen, d),
        )
        self.bn = _batch_norm(w)
        self.out = MaskedConv2d(w, spec.channels, 3, padding=1, generator=gen, dense=d)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(z.view(len(z), Z_DIM, 1, 1)))
        return torch.tanh(self.out(F.relu(self.bn(h))))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1], (n, C, 32, 32), without gradients."""
        z = torch.randn(n, Z_DIM, generator=generator)
        with torch.no_grad():
            return self(z.to(self.out.weight.device))


def masked_layers(model: nn.Module) -> Iterator[tuple[str, _MaskedMixin]]:
    """The masked layers in a fixed order (the order of the packed mask)."""
    for name, module in model.named_modules():
        if isinstance(module, _MaskedMixin):
            yield name, module


def num_masked(model: nn.Module) -> int:
    return sum(layer.weight.numel() for _, layer in masked_layers(model))


def get_layer_arrays(model: nn.Module, attr: str) -> dict[str, np.ndarray]:
    """Per masked layer, a copy of ``attr``: ``scores`` (PRISM) or ``weight`` (the dense
    baseline's trainable weights)."""
    return {
        name: getattr(layer, attr).detach().cpu().numpy().copy()
        for name, layer in masked_layers(model)
    }


def set_layer_arrays(model: nn.Module, attr: str, arrays: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, layer in masked_layers(model):
            value = torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))
            getattr(layer, attr).copy_(value)


def flat(arrays: dict[str, np.ndarray], model: nn.Module) -> np.ndarray:
    """Concatenate per-layer arrays in mask order."""
    return np.concatenate([np.asarray(arrays[name]).ravel() for name, _ in masked_layers(model)])


def unflat(vector: np.ndarray, model: nn.Module) -> dict[str, np.ndarray]:
    """Split a mask-ordered vector back into per-layer arrays."""
    out, start = {}, 0
    for name, layer in masked_layers(model):
        n = layer.weight.numel()
        out[name] = vector[start : start + n].reshape(tuple(layer.weight.shape))
        start += n
    if start != len(vector):
        raise ValueError(f"vector has {len(vector)} entries, the generator {start}")
    return out


def pack_mask(bits: np.ndarray) -> np.ndarray:
    """0/1 vector -> uint8, 1 bit per entry (least significant bit first)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8), bitorder="little")


def unpack_mask(packed: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`pack_mask`; checks the length and that padding bits are zero."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError(
            f"a packed mask is a 1-D uint8 array, got {packed.dtype}{list(packed.shape)}"
        )
    expected = (length + 7) // 8
    if len(packed) != expected:
        raise ValueError(
            f"packed mask has {len(packed)} bytes, expected {expected} for {length} bits"
        )
    bits = np.unpackbits(packed, bitorder="little")
    if bits[length:].any():
        raise ValueError("packed mask has non-zero padding bits")
    return bits[:length]


def set_fixed_mask(model: nn.Module, bits: np.ndarray | None) -> None:
    """Use one mask for every forward pass (``None``: sample afresh again)."""
    layers = dict(masked_layers(model))
    per_layer = unflat(bits, model) if bits is not None else {}
    for name, layer in layers.items():
        layer.fixed_mask = (
            torch.from_numpy(per_layer[name].astype(np.float32)) if bits is not None else None
        )


def final_mask(scores: np.ndarray, how: str, seed: int) -> np.ndarray:
    """The exported mask: ``threshold`` keeps theta > 0.5, ``sample`` draws once with ``seed``."""
    theta = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
    if how == "threshold":
        return (theta > 0.5).astype(np.uint8)
    if how == "sample":
        return (np.random.default_rng([seed, 0xE4]).random(len(theta)) < theta).astype(np.uint8)
    raise ValueError(f"final mask {how!r} is unknown; allowed: threshold, sample")


def export_generator(path: str | Path, spec: GeneratorSpec, bits: np.ndarray) -> dict[str, Any]:
    """Write the sparse generator as seed + bit-packed mask; returns its size and density."""
    if spec.dense:
        raise ValueError("only a masked generator exports as seed + mask")
    meta = {
        "format": EXPORT_FORMAT,
        "channels": spec.channels,
        "size": spec.size,
        "seed": spec.seed,
    }
    header = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    length = np.int64(len(bits))
    path = save_npz(path, header=header, mask=pack_mask(bits), length=length)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "density": float(np.mean(bits)),
        "masked-weights": len(bits),
    }


def load_generator(path: str | Path) -> MaskedGenerator:
    """Rebuild an exported generator: frozen weights from the seed, the stored fixed mask."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["header"].tobytes().decode())
        packed, length = z["mask"], int(z["length"])
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not a bouquet PRISM generator (format {meta.get('format')!r})")
    model = GeneratorSpec(int(meta["channels"]), str(meta["size"]), int(meta["seed"])).build()
    set_fixed_mask(model, unpack_mask(packed, length))
    return model.eval()
