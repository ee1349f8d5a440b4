"""SRGAN discriminator (paper Fig. 4) with adaptive pooling so any crop size works."""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, stride) of the conv layers after the first one, as in the paper.
_LAYERS = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2))


class Discriminator(nn.Module):
    """Eight 3x3 conv layers, LeakyReLU(0.2), BN except the first, dense 1024, dense 1 -> logits.

    ``dropout`` is the seed notebook's addition before the last dense layer;
    0 gives the paper's network. Logits out: train with BCE-with-logits.
    """

    def __init__(self, in_channels: int = 3, base: int = 64, dropout: float = 0.3, pool: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        prev = base
        for out, stride in _LAYERS:
            out = out * base // 64
            layers += [
                nn.Conv2d(prev, out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            prev = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * pool * pool, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
