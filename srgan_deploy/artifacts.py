"""What the export stage produces and the runtime consumes: shape profiles, ONNX models, engine plans.

Both sides import these types from here, so the runtime never imports the export stage to
read an artifact and the export stage never imports a backend to describe one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError, EngineError, ExportError, ModelError
from srgan_deploy.spec import ModelSpec

# Video defaults: 8x8 up to 540x960 input, tuned for 480x270 -> 1920x1080. The minimum is small because a
# frame below it must be padded, and padding changes the output near the padded edges (the network's own
# zero padding sits elsewhere then); TensorRT picks kernels for the opt shape, so a low min costs nothing.
DEFAULT_MIN = (1, 3, 8, 8)
DEFAULT_OPT = (1, 3, 270, 480)
# Max 540x960 input = 4K output. Why not 1080p input: each execution context statically allocates
# activations for the profile's max (~4 GiB in fp16 for the paper-size model at 1080x1920 input), and
# the pipeline holds one context per slot; larger frames are tiled at the max shape instead.
DEFAULT_MAX = (1, 3, 540, 960)


def parse_shape(text: str, what: str = "shape") -> tuple[int, int, int, int]:
    """``NxCxHxW`` (x, X, × or , as separators) -> (N, C, H, W); C must be 3, all positive."""
    parts = [p for p in re.split(r"[x×X,* ]+", text.strip()) if p]
    if len(parts) != 4:
        raise ConfigError(f"{what} '{text}' must have 4 dimensions NxCxHxW, e.g. 1x3x270x480")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(f"{what} '{text}' has a non-integer dimension; use e.g. 1x3x270x480") from exc
    n, c, h, w = dims
    if min(dims) <= 0:
        raise ConfigError(f"{what} '{text}' has a zero or negative dimension; every dimension must be >= 1")
    if c != 3:
        raise ConfigError(f"{what} '{text}' has {c} channels; the model takes RGB (3)")
    return n, c, h, w


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max input shapes as (batch, height, width) of the low-resolution input."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def __post_init__(self) -> None:
        for axis in range(3):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ConfigError(
                    f"shape profile must satisfy min <= opt <= max on every axis (got {self.min} / {self.opt} / {self.max})"
                )

    @classmethod
    def parse(cls, min_shape: str | None, opt_shape: str | None, max_shape: str | None) -> ShapeProfile:
        def bhw(s: str | None, default: tuple[int, int, int, int], what: str) -> tuple[int, int, int]:
            n, _, h, w = parse_shape(s, what) if s else default
            return n, h, w

        return cls(
            bhw(min_shape, DEFAULT_MIN, "--min-shape"),
            bhw(opt_shape, DEFAULT_OPT, "--opt-shape"),
            bhw(max_shape, DEFAULT_MAX, "--max-shape"),
        )

    @classmethod
    def static(cls, batch: int, height: int, width: int) -> ShapeProfile:
        shape = (batch, height, width)
        return cls(shape, shape, shape)

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def tensor_shapes(self, io: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The engine input tensor's min/opt/max in its layout: NHWC (uint8 I/O) or NCHW (float32 I/O)."""

        def layout(s: tuple[int, int, int]) -> tuple[int, ...]:
            return (s[0], s[1], s[2], 3) if io == "uint8" else (s[0], 3, s[1], s[2])

        return layout(self.min), layout(self.opt), layout(self.max)

    def accepts(self, batch: int, height: int, width: int) -> bool:
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (batch, height, width), self.max, strict=True))

    def to_list(self) -> list[list[int]]:
        return [list(self.min), list(self.opt), list(self.max)]

    def fitted(self, spec: ModelSpec) -> ShapeProfile:
        """This profile as far as the model allows: exactly its static shape, and its batch where that is fixed.

        Why here: an engine's profile outside what the network accepts fails at build time with TensorRT's
        words about a dimension, not ours about the model."""
        if spec.static_hw is not None:
            h, w = spec.static_hw
            return ShapeProfile.static(spec.batch or min(self.opt[0], self.max[0]), h, w)
        if spec.batch is not None:
            b = spec.batch
            return ShapeProfile((b, *self.min[1:]), (b, *self.opt[1:]), (b, *self.max[1:]))  # type: ignore[arg-type]
        return self


# --------------------------------------------------------------------------- ONNX


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``srgan_deploy.*`` metadata_props of an ONNX file (weights are not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"{path} is not a readable ONNX model: {exc}") from exc
    return {p.key: p.value for p in proto.metadata_props}


def is_ours(path: Path) -> bool:
    """An ONNX srgan-deploy exported or wrapped: its metadata carries the model spec (or SRResNet's config)."""
    meta = read_onnx_metadata(path)
    return "srgan_deploy.config" in meta or "srgan_deploy.spec" in meta


def spec_from_metadata(meta: dict[str, str], path: Path) -> ModelSpec:
    """The spec an ONNX written by srgan-deploy carries: a wrapped foreign graph's own, or SRResNet's config."""
    if "srgan_deploy.spec" in meta:
        return ModelSpec.from_json(meta["srgan_deploy.spec"])
    config_json = meta.get("srgan_deploy.config")
    if config_json is None:
        raise ModelError(
            f"{path} has no srgan-deploy metadata; give it with -w and srgan-deploy inspects and wraps it on first use"
        )
    return ModelSpec.from_config(ModelConfig.from_json(config_json), meta.get("srgan_deploy.model_name", ""))


def _as_spec(value: ModelSpec | ModelConfig) -> ModelSpec:
    return ModelSpec.from_config(value) if isinstance(value, ModelConfig) else value


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX graph srgan-deploy exported or wrapped, plus the model spec its metadata carries."""

    path: Path
    spec: ModelSpec
    io: str
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", _as_spec(self.spec))  # SRResNet's config is one way to give a spec

    @property
    def config(self) -> ModelSpec:
        """The spec, under the name readers used when it could only be SRResNet's config."""
        return self.spec

    @classmethod
    def from_path(cls, path: Path) -> OnnxModel:
        if not path.is_file():
            raise ExportError(f"ONNX file not found: {path}")
        meta = read_onnx_metadata(path)
        return cls(path, spec_from_metadata(meta, path), meta.get("srgan_deploy.io", "float32"), meta)

    def require_uint8(self, who: str) -> OnnxModel:
        if self.io != "uint8":
            raise ExportError(f"{self.path} has {self.io} I/O; {who} runs graphs exported with --io uint8")
        return self


# --------------------------------------------------------------------------- engines

FLAVOURS = ("tensorrt", "tensorrt-rtx")


@dataclass(frozen=True)
class EngineArtifact:
    """A serialized TensorRT / TensorRT-RTX plan and the JSON sidecar written beside it at build time."""

    path: Path
    flavour: str
    spec: ModelSpec
    profile: ShapeProfile
    precision: str
    sidecar: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", _as_spec(self.spec))

    @property
    def config(self) -> ModelSpec:
        """The spec, under the name readers used when it could only be SRResNet's config."""
        return self.spec

    @classmethod
    def from_plan(cls, path: Path) -> EngineArtifact:
        sidecar_path = path.with_suffix(".json")
        if not path.is_file() or not sidecar_path.is_file():
            raise EngineError(
                f"{path} (with its .json sidecar) not found; build one with srgan-deploy export --format tensorrt"
            )
        try:
            meta = json.loads(sidecar_path.read_text())
            spec = meta["spec"]
            prof = spec["profile"]
            profile = ShapeProfile(tuple(prof[0]), tuple(prof[1]), tuple(prof[2]))  # type: ignore[arg-type]
            if "model_spec" in meta:  # written since specs exist; older sidecars carry SRResNet's config
                model = ModelSpec.from_dict(meta["model_spec"])
            elif "model" in meta:
                model = ModelSpec.from_config(ModelConfig.from_dict(meta["model"]))
            else:
                model = ModelSpec.from_config(ModelConfig(scale=int(meta["scale"])))
            flavour = str(spec.get("flavour", "tensorrt"))
            precision = str(spec["precision"])
        except (OSError, ValueError, KeyError, TypeError, IndexError, ConfigError, ModelError) as exc:
            raise EngineError(f"{sidecar_path} is not a valid engine sidecar ({exc}); rebuild the engine") from exc
        return cls(path, flavour, model, profile, precision, meta)
