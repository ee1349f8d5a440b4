from __future__ import annotations

import pytest
import torch

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError
from srgan_deploy.models import DeployGenerator, Discriminator, Generator, InferenceGenerator, fold_batchnorm
from srgan_deploy.models.subpixel import subpixel_conv_weight
from tests.conftest import TINY, make_generator


def test_default_generator_has_paper_parameter_count() -> None:
    n = sum(p.numel() for p in Generator().parameters())
    assert 1.53e6 < n < 1.57e6, n  # paper SRResNet: ~1.55 M


def test_residual_blocks_have_their_own_weights() -> None:
    gen = Generator()
    ptrs = {block.conv1.weight.data_ptr() for block in gen.body}
    assert len(ptrs) == 16


@pytest.mark.parametrize("h,w", [(37, 53), (1, 1), (8, 5)])
def test_output_is_scale_times_input_for_odd_sizes(h: int, w: int) -> None:
    gen = make_generator()
    with torch.no_grad():
        y = gen(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, 4 * h, 4 * w)


@pytest.mark.parametrize("scale", [2, 8])
def test_other_scales(scale: int) -> None:
    gen = Generator(ModelConfig(scale=scale, channels=4, blocks=1)).eval()
    with torch.no_grad():
        assert gen(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


def test_invalid_scale_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scale"):
        ModelConfig(scale=3)


def test_bn_folding_matches_unfolded_model() -> None:
    gen = make_generator(ModelConfig(channels=16, blocks=3), seed=3)
    folded = fold_batchnorm(gen)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        diff = (gen(x) - folded(x)).abs().max().item()
    assert diff < 1e-5


def test_discriminator_takes_any_crop_and_returns_logits() -> None:
    disc = Discriminator(dropout=0.3).eval()
    for size in (96, 64, 128):
        with torch.no_grad():
            out = disc(torch.rand(2, 3, size, size))
        assert out.shape == (2, 1)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]


def test_receptive_radius_bounds_the_influence_of_one_pixel() -> None:
    """Perturb one input pixel: output changes stay within scale * radius of it, and reach near it."""
    gen = make_generator(ModelConfig(channels=4, blocks=2))
    radius = gen.config.receptive_radius
    assert radius == 12  # head 4 + blocks 2x2 + trunk 1 + upsample 1 + 0.5 + tail 1 = 11.5, rounded up
    x = torch.rand(1, 3, 41, 41)
    x2 = x.clone()
    x2[0, :, 20, 20] += 0.5
    with torch.no_grad():
        diff = (gen(x) - gen(x2)).abs().sum(dim=(0, 1))
    ys, xs = torch.nonzero(diff > 0, as_tuple=True)
    s = gen.config.scale
    reach = max((ys // s - 20).abs().max().item(), (xs // s - 20).abs().max().item())
    assert reach <= radius
    assert reach >= radius - 1


def test_tiny_fixture_config() -> None:
    assert TINY.blocks == 2


@pytest.mark.parametrize("kernel,factor", [(9, 2), (3, 2), (5, 3), (1, 2)])
def test_subpixel_conv_before_shuffle_equals_conv_after_it(kernel: int, factor: int) -> None:
    torch.manual_seed(kernel * 10 + factor)
    weight = torch.randn(3, 4, kernel, kernel)
    x = torch.randn(2, 4 * factor * factor, 7, 6)
    after = torch.nn.functional.conv2d(torch.nn.functional.pixel_shuffle(x, factor), weight, padding=kernel // 2)
    sub = subpixel_conv_weight(weight, factor)
    assert sub.shape[2] == 2 * ((kernel // 2 + factor - 1) // factor) + 1
    before = torch.nn.functional.pixel_shuffle(torch.nn.functional.conv2d(x, sub, padding=sub.shape[2] // 2), factor)
    assert before.shape == after.shape
    assert (before - after).abs().max().item() < 1e-4


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_deploy_generator_matches_the_model_as_trained(scale: int) -> None:
    """Folded BN + sub-pixel tail compute what the unfolded model computes, clamp included."""
    gen = make_generator(ModelConfig(scale=scale, channels=8, blocks=2), seed=scale)
    deploy = DeployGenerator(gen)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.modules())
    assert deploy.tail.out_channels == 12 and deploy.tail.kernel_size == (5, 5)
    x = torch.rand(2, 3, 13, 17)
    with torch.no_grad():
        expected = InferenceGenerator(gen)(x)
        got = deploy(x)
    assert got.shape == (2, 3, 13 * scale, 17 * scale)
    assert (got - expected).abs().max().item() < 1e-5
    assert 0.01 < float((expected > 0).float().mean()) < 0.99 or float(expected.std()) > 0.01  # not all clamped
