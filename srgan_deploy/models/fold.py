"""BatchNorm folding: inference needs no BN, and the exported graph is smaller and faster without it."""

from __future__ import annotations

import copy

import torch
from torch import nn

from srgan_deploy.models.generator import Generator


def fold_batchnorm(generator: Generator) -> Generator:
    """Return an eval-mode copy whose BNs are merged into the preceding convs.

    The BN running statistics become a per-channel scale and shift of the
    conv's weight and bias; the BN is replaced by an identity.
    """
    folded = copy.deepcopy(generator).eval()
    with torch.no_grad():
        for parent, conv_name, bn_name in folded.conv_bn_pairs():
            conv = getattr(parent, conv_name)
            bn = getattr(parent, bn_name)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                continue  # already folded
            assert bn.running_var is not None and bn.running_mean is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            new_bias = (bias - bn.running_mean) * scale + bn.bias
            conv.bias = nn.Parameter(new_bias)
            setattr(parent, bn_name, nn.Identity())
    return folded
