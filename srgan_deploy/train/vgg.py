"""VGG19 feature extractor with torchvision's state-dict layout, without a torchvision dependency.

ImageNet weights cannot be downloaded at run time, so they come from a file the
user supplies (torchvision's ``vgg19-dcbb9e9d.pth``, or a safetensors file with
the same keys) or from the torch hub cache where torchvision would have put it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srgan_deploy.errors import TrainingError

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _layer_names() -> dict[str, int]:
    """'relu5_4' -> index of that layer in ``features`` (torchvision numbering)."""
    names: dict[str, int] = {}
    block, conv, idx = 1, 1, 0
    for item in _CFG:
        if item == "M":
            names[f"pool{block}"] = idx
            idx += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = idx
            names[f"relu{block}_{conv}"] = idx + 1
            idx += 2
            conv += 1
    return names


LAYERS = _layer_names()
HELP = (
    f"VGG19 ImageNet weights are needed for the SRGAN content loss: download {VGG19_URL} on a machine "
    f"with internet, then pass --vgg-weights PATH (or place it in the torch hub cache, "
    f"<torch hub dir>/checkpoints/{VGG19_FILE})"
)


class VGG19Features(nn.Module):
    """``torchvision.models.vgg19().features`` cut after ``layer``, frozen, with ImageNet normalisation."""

    def __init__(self, layer: str = "relu5_4") -> None:
        super().__init__()
        if layer not in LAYERS:
            raise TrainingError(f"unknown VGG layer '{layer}'; use e.g. relu2_2 or relu5_4")
        modules: list[nn.Module] = []
        prev = 3
        for item in _CFG:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(item, int)
                modules += [nn.Conv2d(prev, item, 3, padding=1), nn.ReLU(inplace=False)]
                prev = item
        self.features = nn.Sequential(*modules[: LAYERS[layer] + 1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        return self.features((x - mean) / std)

    def load_torchvision_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.features.state_dict()
        picked = {}
        for key in own:
            full = f"features.{key}"
            if full not in state:
                raise TrainingError(f"VGG weights lack '{full}': not a torchvision VGG19 state dict. {HELP}")
            if tuple(state[full].shape) != tuple(own[key].shape):
                raise TrainingError(f"VGG weights '{full}' have shape {tuple(state[full].shape)}: not VGG19. {HELP}")
            picked[key] = state[full].float()
        self.features.load_state_dict(picked)


def find_vgg_weights(path: Path | None) -> Path:
    if path is not None:
        if not path.is_file():
            raise TrainingError(f"--vgg-weights {path} does not exist. {HELP}")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    if cached.is_file():
        return cached
    raise TrainingError(f"no VGG19 weights found. {HELP}")


def load_vgg(path: Path | None, layer: str, random_for_tests: bool = False) -> VGG19Features:
    """The frozen feature extractor; random weights only behind the explicit test-only switch."""
    vgg = VGG19Features(layer)
    if random_for_tests:
        return vgg
    file = find_vgg_weights(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot read VGG weights {file}: {exc}. {HELP}") from exc
    if not isinstance(state, dict):
        raise TrainingError(f"{file} does not hold a state dict. {HELP}")
    vgg.load_torchvision_state(state)
    return vgg
