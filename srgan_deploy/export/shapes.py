"""Engine input shapes: parsing ``1x3x270x480`` strings and the optimization profile they make."""

from __future__ import annotations

import re
from dataclasses import dataclass

from srgan_deploy.errors import ConfigError

# Video defaults: 64x64 up to 1080p input (4K->8K output is out of scope), tuned for 480x270 -> 1920x1080.
DEFAULT_MIN = (1, 3, 64, 64)
DEFAULT_OPT = (1, 3, 270, 480)
DEFAULT_MAX = (1, 3, 1080, 1920)


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
