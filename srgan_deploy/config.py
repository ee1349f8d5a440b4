"""Model configuration shared by training, export and the runtime."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from srgan_deploy.errors import ConfigError

MAX_CHANNELS = 1024  # 16x the paper's width; beyond it a weights file's config is damaged, not a model
MAX_BLOCKS = 256


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that fix the generator's weight shapes.

    Stored in every weights file so a file can be loaded without the user
    knowing how it was trained.
    """

    scale: int = 4
    channels: int = 64
    blocks: int = 16
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise ConfigError(
                f"scale must be 2, 4 or 8 (got {self.scale}); SRResNet upsamples in 2x PixelShuffle steps"
            )
        if self.channels < 1 or self.blocks < 0 or self.in_channels < 1:
            raise ConfigError(f"invalid model size channels={self.channels} blocks={self.blocks}; use positive numbers")
        if self.channels > MAX_CHANNELS or self.blocks > MAX_BLOCKS or self.in_channels > 4:
            # checked before anything is allocated: 200000 channels would ask for 1.4 TB of weights
            raise ConfigError(
                f"model size channels={self.channels} blocks={self.blocks} in_channels={self.in_channels} is beyond "
                f"this generator (at most {MAX_CHANNELS} channels, {MAX_BLOCKS} blocks, 4 input channels; "
                "the paper uses 64 and 16)"
            )

    @property
    def upsample_steps(self) -> int:
        return self.scale.bit_length() - 1

    @property
    def receptive_radius(self) -> int:
        """Radius in *input* pixels beyond which an input pixel cannot affect an output pixel.

        Why: tiling needs an overlap at least this large for tiles to stitch exactly.
        Head 9x9 (4), each block two 3x3 (2), the trunk-end 3x3 (1); the upsample
        3x3 convs run at 2^k times the input resolution, so each adds 1/2^k input
        pixels; the 9x9 tail runs at full output resolution and adds 4/scale.
        """
        radius = 4.0 + 2 * self.blocks + 1
        for k in range(self.upsample_steps):
            radius += 1.0 / (2**k)
        radius += 4.0 / self.scale
        return int(-(-radius // 1))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known: dict[str, int] = {}
        for key, value in data.items():
            if key not in cls.__dataclass_fields__:
                continue
            # exact integers only: "4.7" or 4.7 channels is a damaged file, not 4 channels
            if isinstance(value, bool) or not (
                isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
            ):
                raise ConfigError(f"model config field '{key}' must be an integer, got {value!r}")
            known[key] = int(value)
        return cls(**known)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise ConfigError("model config must be a JSON object")
        return cls.from_dict(data)
