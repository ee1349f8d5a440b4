"""Training options as one frozen dataclass, saved beside the run so a resume can check it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError, InputFileError
from srgan_deploy.train.data import DegradationConfig

PHASES = ("srresnet", "srgan")
PIXEL_LOSSES = ("mse", "l1")
# srgan-phase content losses: the paper's SRGAN-MSE (no VGG needed), SRGAN-VGG22 and SRGAN-VGG54
CONTENT_LAYERS: dict[str, str | None] = {"mse": None, "vgg22": "relu2_2", "vgg54": "relu5_4"}


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path
    phase: str = "srresnet"
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 100_000
    batch_size: int = 16
    crop: int = 96
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    val: Path | None = None
    val_every: int = 1000
    val_limit: int | None = None
    init: str | None = None  # weights path or bundled model name
    vgg_weights: Path | None = None
    content: str = "vgg54"  # srgan phase: mse | vgg22 | vgg54 (Ledig et al. 2017, Table 1)
    vgg_layer: str | None = None  # overrides the content's VGG layer (e.g. relu3_4); None = the content's own
    adv_weight: float = 1e-3
    d_lr: float | None = None  # discriminator learning rate; None = --lr (the paper's recipe)
    pixel_weight: float = 0.0
    loss: str = "mse"  # pixel loss of the srresnet phase: mse (the paper) or l1 (often more PSNR)
    d_dropout: float = 0.3
    amp: bool = True
    threads: int | None = None
    ema: float = 0.0  # decay of the weight average that is validated and saved; 0 = the raw weights
    snapshot_every: int = 0  # keep snapshots/generator-step-N.safetensors every N steps; 0 = only the latest
    random_vgg_for_tests: bool = False
    name: str = "srgan-x4"

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ConfigError(f"unknown phase '{self.phase}'; choose srresnet or srgan")
        if self.content not in CONTENT_LAYERS:
            raise ConfigError(f"unknown --content '{self.content}'; choose mse, vgg22 or vgg54")
        if self.content == "mse" and self.vgg_layer is not None:
            raise ConfigError("--vgg-layer needs --content vgg22 or vgg54; --content mse uses no VGG")
        if self.loss not in PIXEL_LOSSES:
            raise ConfigError(f"unknown --loss '{self.loss}'; choose mse or l1")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("--steps and --batch-size must be positive")
        if self.crop < self.model.scale * 4 or self.crop % self.model.scale:
            raise ConfigError(f"--crop {self.crop} must be a multiple of the scale and at least {self.model.scale * 4}")
        if self.checkpoint_every < 1 or self.val_every < 1 or self.log_every < 1:
            raise ConfigError("checkpoint/validation/log intervals must be positive")
        for name, value, low in (
            ("--lr", self.lr, 0.0),
            ("--lr-gamma", self.lr_gamma, 0.0),
            ("--adv-weight", self.adv_weight, -1.0),
            ("--pixel-weight", self.pixel_weight, -1.0),
            ("--d-lr", self.lr if self.d_lr is None else self.d_lr, 0.0),
        ):
            if not (math.isfinite(value) and value > low):
                kind = "positive" if low == 0.0 else "a number >= 0"
                raise ConfigError(f"{name} {value} must be {kind}")
        if not 0.0 <= self.d_dropout < 1.0:
            raise ConfigError(f"discriminator dropout {self.d_dropout} must be in [0, 1)")
        if not (math.isfinite(self.ema) and 0.0 <= self.ema < 1.0):
            raise ConfigError(f"--ema {self.ema} must be in [0, 1) (0 turns it off; 0.999 is usual)")
        if self.snapshot_every < 0:
            raise ConfigError(f"--snapshot-every {self.snapshot_every} must be 0 (off) or positive")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be at least 1")

    @property
    def uses_vgg(self) -> bool:
        return self.phase == "srgan" and self.content != "mse"

    @property
    def content_layer(self) -> str | None:
        """The VGG layer of the content loss; None when the content loss is pixel MSE."""
        if not self.uses_vgg:
            return None
        return self.vgg_layer or CONTENT_LAYERS[self.content]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["lr_milestones"] = list(self.lr_milestones)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def resume_mismatch(self, saved: dict[str, Any]) -> list[str]:
        """Options whose change would make a resumed run a different experiment."""
        keys = ("phase", "model", "batch_size", "crop", "degradation", "seed", "loss", "content")
        now = self.to_dict()
        return [k for k in keys if k in saved and saved[k] != now[k]]


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def config_from_options(
    data: Path,
    out: Path,
    model: dict[str, int | None],
    degradation: dict[str, Any],
    lr_milestones: str | None,
    **options: Any,
) -> TrainConfig:
    """A TrainConfig from command-line options where None means "the dataclass default".

    Why here and not in the CLI: the defaults then live in one place, the dataclasses."""
    if not data.is_dir():
        raise InputFileError(f"--data {data} is not a folder")
    kwargs = {k: v for k, v in options.items() if v is not None}
    model_args = {k: v for k, v in model.items() if v is not None}
    if model_args:
        kwargs["model"] = ModelConfig(**model_args)
    degradation_args = {k: v for k, v in degradation.items() if v is not None}
    if degradation_args:
        kwargs["degradation"] = DegradationConfig(**degradation_args)
    if lr_milestones is not None:
        try:
            kwargs["lr_milestones"] = tuple(int(x) for x in lr_milestones.split(",") if x.strip())
        except ValueError as exc:
            raise ConfigError(f"--lr-milestones must be comma-separated integers, got '{lr_milestones}'") from exc
    return TrainConfig(data=data, out=out, **kwargs)
