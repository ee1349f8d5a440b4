"""Write the clearly-labelled, randomly initialised placeholder weights (used until trained weights ship)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from srgan_deploy.config import ModelConfig
from srgan_deploy.models import Generator
from srgan_deploy.weights import save_generator


def main(out: str) -> None:
    torch.manual_seed(0)
    gen = Generator(ModelConfig(channels=32, blocks=8))
    save_generator(
        gen, Path(out), {"name": Path(out).stem, "placeholder": True, "note": "random init, NOT trained"}, half=True
    )


if __name__ == "__main__":
    main(sys.argv[1])
