"""Losses of the two training phases.

Fixes of the seed notebook: the adversarial term is computed on the generator's
output *with* its graph (so it carries gradient), and VGG sees ImageNet-normalised
input (done inside ``VGG19Features``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srgan_deploy.train.vgg import VGG19Features

VGG_RESCALE = 1.0 / 12.75  # the paper's rescaling of VGG feature maps


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """MSE is the paper's loss; L1 tends to reach a higher PSNR for SRResNet-type models (EDSR's finding)."""
    if kind == "l1":
        return F.l1_loss(sr, hr)
    return F.mse_loss(sr, hr)


class ContentLoss(nn.Module):
    """MSE between (rescaled) VGG19 feature maps of SR and HR."""

    def __init__(self, vgg: VGG19Features) -> None:
        super().__init__()
        self.vgg = vgg

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.vgg(hr) * VGG_RESCALE
        return F.mse_loss(self.vgg(sr) * VGG_RESCALE, target)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)) in its numerically stable form."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake
