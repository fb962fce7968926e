"""Classifier zoo: genuinely different architectures, built by name for any (C, H, W) input.

=============  ===========================================================================
name           architecture
=============  ===========================================================================
mlp            2 hidden layers of 200 (McMahan et al.'s "2NN")
cnn-small      2 conv (16, 32 channels, 5x5) + 2 max-pools + FC 128
cnn-large      3 VGG-style stages of 2 conv-BN-ReLU (32, 64, 128) + FC 256, dropout
resnet8        CIFAR ResNet with one basic block per stage (16, 32, 64), as in FedDF
resnet18       CIFAR ResNet-18 (3x3 stem, no max-pool; 64..512)
mobilenet      MobileNetV2-style inverted residuals with depthwise convolutions
=============  ===========================================================================

All models end in global pooling or a flatten sized from the input, so the same names serve
1x28x28 and 3x32x32 data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _mlp(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = in_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def _cnn_small(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (h // 4) * (w // 4), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def _cnn_large(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c = in_shape[0]
    layers: list[nn.Module] = []
    for cin, cout in ((c, 32), (32, 64), (64, 128)):
        layers += [*_conv_bn(cin, cout), *_conv_bn(cout, cout), nn.MaxPool2d(2)]
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 256),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(256, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stem, no max-pool, one stage per width."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0]))
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stages.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            *_conv_bn(cin, hidden, k=1),
            *_conv_bn(hidden, hidden, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_residual else out


def _mobilenet(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    # (expansion, out channels, blocks, first stride): a narrow MobileNetV2 for 28-32 px.
    config = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))
    layers: list[nn.Module] = [*_conv_bn(in_shape[0], 16)]
    cin = 16
    for expand, cout, n, stride in config:
        for j in range(n):
            layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, expand))
            cin = cout
    layers += [*_conv_bn(cin, 256, k=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, nn.Dropout(0.2), nn.Linear(256, num_classes))


ARCHITECTURES: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "mlp": _mlp,
    "cnn-small": _cnn_small,
    "cnn-large": _cnn_large,
    "resnet8": lambda s, k: CifarResNet(s[0], k, (16, 32, 64), (1, 1, 1)),
    "resnet18": lambda s, k: CifarResNet(s[0], k, (64, 128, 256, 512), (2, 2, 2, 2)),
    "mobilenet": _mobilenet,
}


def build_model(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build an architecture by name.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`ARCHITECTURES`.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture {name!r} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](tuple(in_shape), num_classes)  # type: ignore[arg-type]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulate operations of one forward pass on one input (conv, transposed
    conv and linear layers)."""
    macs = 0

    def hook(module: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            macs += inp[0].numel() * k
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += out.numel() * k
        elif isinstance(module, nn.Linear):
            macs += out.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *in_shape))
    model.train(was_training)
    for h in handles:
        h.remove()
    return macs
