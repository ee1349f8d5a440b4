"""The backend protocol every runtime implements, with a strict lifecycle.

Frames are uint8 NHWC RGB batches in and out, so callers never care how a backend lays out
memory or which precision it computes in. Lifecycle (Polygraphy's runner idea):
``open`` -> ``upscale``... -> ``close``, or a ``with`` block. Heavy imports, artifact loading
and device allocations happen in ``open``; ``upscale`` on a backend that is not open raises;
everything ``open`` creates is declared in ``__init__`` and cleared again by ``close``, so a
closed backend holds no engine, session or buffer (a test compares ``vars()`` before and after).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from srgan_deploy.backends.options import AUTO_TILE, AUTO_TILE_PIXELS
from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import BackendStateError, ShapeError

O = TypeVar("O")  # noqa: E741 - the options dataclass of a backend


class Backend(ABC, Generic[O]):
    """Base of the runtime backends. Subclasses implement ``_open``, ``_infer`` and ``_close``."""

    name: ClassVar[str]

    def __init__(self, options: O) -> None:
        self.options = options
        self._is_open = False
        self._model: ModelConfig | None = None  # set by _open from the artifact it loads
        self.device_label = ""

    # ------------------------------------------------------------ lifecycle
    @classmethod
    @abstractmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here, reason) without opening anything heavy."""

    @property
    def is_open(self) -> bool:
        return self._is_open

    def open(self) -> Backend[O]:
        if self._is_open:
            return self
        try:
            self._open()
        except BaseException:
            self._reset()
            raise
        if self._model is None:
            raise BackendStateError(f"backend '{self.name}' opened without learning its model config (a bug)")
        self._is_open = True
        return self

    def close(self) -> None:
        if not self._is_open:
            return
        try:
            self._close()
        finally:
            self._reset()

    def _reset(self) -> None:
        """Back to the state ``__init__`` left: every attribute ``_open`` created is dropped."""
        with_errors: list[BaseException] = []
        try:
            self._release()
        except Exception as exc:  # noqa: BLE001 - re-raised after the state is reset
            with_errors.append(exc)
        self._is_open = False
        self._model = None
        self.device_label = ""
        if with_errors:
            raise with_errors[0]

    def _release(self) -> None:
        """Set the subclass's own open-state attributes back to their ``__init__`` values."""

    def __enter__(self) -> Backend[O]:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require_open(self) -> None:
        if not self._is_open:
            raise BackendStateError(f"backend '{self.name}' is not open; use it in a `with` block or call open() first")

    # ------------------------------------------------------------ facts of the open model
    @property
    def model(self) -> ModelConfig:
        self._require_open()
        assert self._model is not None
        return self._model

    @property
    def scale(self) -> int:
        return self.model.scale

    @property
    def overlap(self) -> int:
        """Tile overlap in LR pixels: the receptive-field radius, so tiled output equals untiled output."""
        return self.model.receptive_radius

    # ------------------------------------------------------------ inference
    def upscale(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, sH, sW, 3) uint8 RGB, tiling when needed."""
        self._require_open()
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
        self._require_open()
        for batch in batches:
            yield self.upscale(batch)

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """LR tile edge (or (height, width)) to use for a frame of this size, or None for whole frames."""
        tile: int | None = getattr(self.options, "tile", None)
        if tile is not None and (height > tile or width > tile):
            return tile
        if tile is None and height * width > AUTO_TILE_PIXELS:
            return AUTO_TILE
        return None

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _infer(self, frames: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:
        """Free device/session resources; ``_release`` then drops the references."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device_label, "options": repr(self.options)}


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
