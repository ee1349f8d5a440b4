"""The backend protocol every runtime implements.

Frames are uint8 NHWC RGB batches in and out, so callers never care how a
backend lays out memory or which precision it computes in. A backend has an
explicit lifecycle (``open`` -> ``upscale``... -> ``close``, or a ``with`` block):
heavy imports and device allocations happen in ``open``, never at import time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import numpy as np

from srgan_deploy.errors import ConfigError, ShapeError

PRECISIONS = ("auto", "fp32", "fp16")
# Frames above this many input pixels are tiled even without --tile: a 12 MP photo would otherwise need
# tens of GB for the activations at 2x and 4x resolution. The limit keeps 1080p input frames whole.
AUTO_TILE_PIXELS = 1920 * 1088
AUTO_TILE = 512


@dataclass(frozen=True)
class BackendOptions:
    """Everything that selects and configures a backend; frozen so it can key caches."""

    weights: str | Path | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16
    tile: int | None = None  # LR tile edge; None = whole frames unless they exceed the backend's limit
    threads: int | None = None  # CPU threads; None = all cores
    slots: int = 2  # in-flight frames for the GPU stream pipelines
    cache_dir: Path | None = None  # ONNX / engine cache; None = the user cache dir
    max_shape: tuple[int, int] | None = None  # largest LR (height, width) a static-profile backend accepts

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        if self.tile is not None and self.tile < 8:
            raise ConfigError(f"--tile {self.tile} is too small; use at least 8 (64+ is sensible)")
        if self.slots < 1:
            raise ConfigError("--slots must be at least 1")


class Backend(ABC):
    """Base of the runtime backends. Subclasses implement ``_open``, ``_infer`` and ``_close``."""

    name: ClassVar[str]

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.scale = 4
        self.device_label = "cpu"
        self._is_open = False

    # ------------------------------------------------------------ lifecycle
    @classmethod
    @abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here, reason) without opening anything heavy."""

    def open(self) -> Backend:
        if not self._is_open:
            self._open()
            self._is_open = True
        return self

    def close(self) -> None:
        if self._is_open:
            self._is_open = False
            self._close()

    def __enter__(self) -> Backend:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ inference
    def upscale(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, sH, sW, 3) uint8 RGB, tiling when needed."""
        if not self._is_open:
            self.open()
        frames = check_frames(frames)
        tile = self._tile_size(frames.shape[1], frames.shape[2])
        if tile is None:
            return self._infer(frames)
        from srgan_deploy.tiling import TilePlan, upscale_tiled

        plan = TilePlan.for_frame(frames.shape[1], frames.shape[2], tile, self.overlap)
        return upscale_tiled(frames, plan, self._infer, self.scale)

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Upscale a stream of batches, results in order. GPU backends override this to keep
        several batches in flight; the default simply runs them one after another."""
        for batch in batches:
            yield self.upscale(batch)

    @property
    def overlap(self) -> int:
        return 8

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """LR tile edge (or (height, width)) to use for a frame of this size, or None for whole frames."""
        if self.options.tile is not None and (height > self.options.tile or width > self.options.tile):
            return self.options.tile
        limit = self.options.max_shape
        if limit is not None and (height > limit[0] or width > limit[1]):
            return min(limit)
        if self.options.tile is None and height * width > AUTO_TILE_PIXELS:
            return AUTO_TILE
        return None

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _infer(self, frames: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass


def check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ShapeError("frames must be a uint8 numpy array (N, H, W, 3) in RGB order")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ShapeError(f"frames must have shape (N, H, W, 3); got {frames.shape}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ShapeError(f"empty frame batch {frames.shape}")
    _, h, w, c = frames.shape
    if frames.strides != (h * w * c, w * c, c, 1):
        # also catches `image[None]`, whose batch stride numpy sets to 0: torch passes such strides on
        # to oneDNN, which then falls back to a ~3x slower convolution path (measured)
        frames = np.array(frames, order="C", copy=True)
    return frames
