"""Feature extractors: every backbone maps (B, C, H, W) images to (B, out_features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtl_envs.utils import check_widths

# VGG16 configuration "D": numbers are conv widths, "M" a 2x2 max-pool.
VGG16_LAYERS: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class Backbone(nn.Module):
    """A feature extractor with a known output width."""

    out_features: int


class VGG16(Backbone):
    """VGG16 with batch norm for small images (RL-AUX appendix C.1, as in MAXL).

    Thirteen 3x3 conv + BN + ReLU layers in five pooled stages; for 32x32 inputs the last
    stage leaves 512 x 1 x 1, which an adaptive average pool turns into 512 features.
    """

    def __init__(self, in_channels: int, image_size: int, width_multiplier: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                width = max(1, int(round(int(item) * width_multiplier)))
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SmallCNN(Backbone):
    """Three conv-BN-ReLU stages with pooling: the CPU default, fine for 8x8 to 32x32 inputs."""

    def __init__(self, in_channels: int, image_size: int, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        widths = check_widths("backbone_kwargs.widths", widths)
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if size >= 8:  # keep at least a 4x4 map before the global pool
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MLP(Backbone):
    """Flatten, then ``hidden`` fully connected ReLU layers."""

    def __init__(self, in_channels: int, image_size: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        hidden = check_widths("backbone_kwargs.hidden", hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
