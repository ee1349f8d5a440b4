"""Warm-start a larger generator from a trained smaller one, computing exactly the same function.

Why: training the paper-size SRResNet (64 channels x 16 blocks) from scratch on a
CPU takes days; starting it from the trained lite model (32 x 8) means it begins
at the lite model's quality and every step goes into what the extra capacity can
add (Net2Net-style "function-preserving" growth, Chen et al. 2016).

How the function is kept, in train mode (batch-statistics BN) and eval mode:
- the old channels and blocks keep their weights; the residual stream's new
  channels are held at exactly zero: every BN that writes into new channels has gamma = beta = 0 (BN's output
  is then 0 whatever the statistics, yet gamma still gets a gradient, so the
  channels start learning at the first step - the zero-gamma trick of Goyal et
  al. 2017);
- the new residual blocks end in a zero-gamma BN, so they start as identities;
- weights *reading* from the (zero) new channels keep their random init: they
  change nothing now and let gradients reach the new channels;
- the head's and the upsample convs' new outputs (no BN after them) get zero
  weights and bias, so those channels are 0 and PReLU(0) = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError
from srgan_deploy.models.generator import Generator, ResidualBlock, UpsampleBlock


def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d, zero_new_outputs: bool) -> None:
    """Old weights into the top-left corner; new outputs zeroed where no BN follows to silence them.

    Weights from new *inputs* keep their random init: those inputs are 0 for now,
    and random weights give the new channels a gradient from the first step.
    """
    n_out, n_in = src.out_channels, src.in_channels
    assert dst.bias is not None and src.bias is not None
    if zero_new_outputs:
        dst.weight[n_out:] = 0.0
        dst.bias[n_out:] = 0.0
    dst.weight[:n_out, :n_in] = src.weight
    dst.bias[:n_out] = src.bias


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    """Old channels copied; new channels output exactly 0 (gamma = beta = 0)."""
    n = src.num_features
    dst.weight.zero_()
    dst.bias.zero_()
    dst.weight[:n] = src.weight
    dst.bias[:n] = src.bias
    assert dst.running_mean is not None and src.running_mean is not None
    assert dst.running_var is not None and src.running_var is not None
    dst.running_mean[:n] = src.running_mean
    dst.running_var[:n] = src.running_var


def _copy_prelu(dst: nn.PReLU, src: nn.PReLU) -> None:
    dst.weight[: src.num_parameters] = src.weight


def widen_generator(small: Generator, config: ModelConfig, seed: int = 0) -> Generator:
    """A ``config``-sized generator equal to ``small`` as a function (see the module docstring)."""
    old = small.config
    if config.scale != old.scale or config.in_channels != old.in_channels:
        raise ConfigError(f"can only grow channels/blocks, not change scale or colours ({old} -> {config})")
    if config.channels < old.channels or config.blocks < old.blocks:
        raise ConfigError(f"cannot shrink {old.channels}x{old.blocks} to {config.channels}x{config.blocks}")
    torch.manual_seed(seed)
    big = Generator(config)
    c_old = old.channels
    with torch.no_grad():
        _copy_conv(big.head, small.head, zero_new_outputs=True)
        _copy_prelu(big.head_act, small.head_act)
        for i, block in enumerate(big.body):
            assert isinstance(block, ResidualBlock)
            if i < old.blocks:
                src = small.body[i]
                assert isinstance(src, ResidualBlock)
                _copy_conv(block.conv1, src.conv1, zero_new_outputs=False)
                _copy_bn(block.bn1, src.bn1)
                _copy_prelu(block.act, src.act)
                _copy_conv(block.conv2, src.conv2, zero_new_outputs=False)
                _copy_bn(block.bn2, src.bn2)
            else:  # a new block: identity until its last BN's gamma grows
                block.bn2.weight.zero_()
                block.bn2.bias.zero_()
        _copy_conv(big.body_conv, small.body_conv, zero_new_outputs=False)
        _copy_bn(big.body_bn, small.body_bn)
        for step_big, step_small in zip(big.upsample, small.upsample, strict=True):
            assert isinstance(step_big, UpsampleBlock) and isinstance(step_small, UpsampleBlock)
            # PixelShuffle takes channel c from conv outputs c*f^2 .. c*f^2+f^2-1, so the old
            # channels' outputs are the first rows and the new channels' are the rest
            _copy_conv(step_big.conv, step_small.conv, zero_new_outputs=True)
            _copy_prelu(step_big.act, step_small.act)
        big.tail.weight[:, :c_old] = small.tail.weight
        assert big.tail.bias is not None and small.tail.bias is not None
        big.tail.bias.copy_(small.tail.bias)
    return big.train(small.training)
