"""SRResNet generator as in the paper (Fig. 4), each residual block with its own weights."""

from __future__ import annotations

import torch
from torch import nn

from srgan_deploy.config import ModelConfig


class ResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return x + y


class UpsampleBlock(nn.Module):
    """conv3x3 to 4x channels, PixelShuffle(2), PReLU: one 2x step."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class Generator(nn.Module):
    """SRResNet: RGB in [0, 1] at low resolution to RGB at ``scale`` times the size.

    The output is not clamped here so the MSE gradient is not cut at the range
    ends during training; inference wrappers clamp.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        ch = self.config.channels
        self.head = nn.Conv2d(self.config.in_channels, ch, 9, padding=4)
        self.head_act = nn.PReLU(ch)
        self.body = nn.Sequential(*[ResidualBlock(ch) for _ in range(self.config.blocks)])
        self.body_conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.body_bn = nn.BatchNorm2d(ch)
        self.upsample = nn.Sequential(*[UpsampleBlock(ch) for _ in range(self.config.upsample_steps)])
        self.tail = nn.Conv2d(ch, self.config.in_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head_act(self.head(x))
        trunk = self.body_bn(self.body_conv(self.body(features)))
        return self.tail(self.upsample(features + trunk))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(parent, conv attribute, bn attribute) for every conv followed by a BN."""
        pairs: list[tuple[nn.Module, str, str]] = []
        for block in self.body:
            pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
        pairs.append((self, "body_conv", "body_bn"))
        return pairs


class InferenceGenerator(nn.Module):
    """A generator with the output clamped to [0, 1]: what the runtime and the ONNX graph compute."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x).clamp(0.0, 1.0)
