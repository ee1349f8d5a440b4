"""Shared fixtures: tiny models and images the tests make themselves (fast on a 2-core CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from srgan_deploy.config import ModelConfig
from srgan_deploy.models import Generator
from srgan_deploy.weights import save_generator

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY = ModelConfig(scale=4, channels=8, blocks=2)


def _randomise_bn(gen: Generator, seed: int) -> None:
    """Give BN non-trivial statistics so folding is actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for module in gen.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=g) * 0.1)


def make_generator(config: ModelConfig = TINY, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    gen = Generator(config)
    _randomise_bn(gen, seed)
    return gen.eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_generator(make_generator(), path, {"name": "tiny", "note": "test model"})
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-ish RGB uint8 image: smooth gradients plus texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / 7 + c) * np.cos(yy / 5 - c) for c in range(3)], axis=2)
    noise = rng.normal(0, 0.15, (h, w, 3))
    return np.clip((base * 0.4 + 0.5 + noise * 0.3) * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), smooth_image(37, 53)[:, :, ::-1])
    cv2.imwrite(str(folder / "b.jpg"), smooth_image(24, 32, 1)[:, :, ::-1])
    return folder


def make_backend(name: str, weights: str | Path | None = None, **request: Any) -> Any:
    """A not-yet-opened backend through the same registry path the CLI takes."""
    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import backend_for

    return backend_for(name, Request(**request), weights)[0]
