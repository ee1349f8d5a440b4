"""The backend protocol every runtime implements, with a strict lifecycle.

Frames are uint8 NHWC RGB batches in and out, so callers never care how a backend lays out
memory or which precision it computes in. Lifecycle (Polygraphy's runner idea):
``open`` -> ``upscale``... -> ``close``, or a ``with`` block. Heavy imports, artifact loading
and device allocations happen in ``open``; ``upscale`` on a backend that is not open raises;
everything ``open`` creates is declared in ``__init__`` and cleared again by ``close``, so a
closed backend holds no engine, session or buffer (a test compares ``vars()`` before and after).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from srgan_deploy.errors import BackendStateError, ShapeError
from srgan_deploy.memory import MAX_TILE_BATCH, MemoryPlan, bytes_per_pixel, default_budget, plan
from srgan_deploy.notices import Notify, say_on_stderr
from srgan_deploy.spec import ModelSpec

O = TypeVar("O")  # noqa: E741 - the options dataclass of a backend

MemoryCost = Callable[[str, ModelSpec], float]  # (precision, model) -> bytes per LR input pixel


def measured_cost(backend: str) -> MemoryCost:
    """The memory cost measured for ``backend`` (srgan_deploy/memory.py's table): what a registry entry
    that gives no cost of its own, and a backend made without the registry, plan with."""
    return functools.partial(bytes_per_pixel, backend)


class Backend(ABC, Generic[O]):
    """Base of the runtime backends. Subclasses implement ``_open``, ``_infer`` and ``_close``."""

    name: ClassVar[str]

    def __init__(self, options: O) -> None:
        self.options = options
        self._is_open = False
        self._model: ModelSpec | None = None  # set by _open from the artifact it loads
        self._budget: int | None = None  # resolved once at open: a plan must not drift with free memory
        self.device_label = ""
        # Set by ``registry.create`` from the caller and the backend's entry: a job routes notices into its
        # event channel, so a worker's out-of-memory retry reaches the one display instead of its stderr.
        self.notify: Notify = say_on_stderr
        self.memory_cost: MemoryCost = measured_cost(self.name)

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
        budget: int | None = getattr(self.options, "memory_budget", None)
        self._budget = self._device_budget(budget if budget is not None else default_budget())
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
        self._budget = None
        self.device_label = ""
        if with_errors:
            raise with_errors[0]

    def _device_budget(self, budget: int) -> int:
        """The budget where the model's working set lives; a backend on a GPU caps it by that GPU's free memory."""
        return budget

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
    def model(self) -> ModelSpec:
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

    # ------------------------------------------------------------ memory
    @property
    def memory_budget(self) -> int:
        """Bytes the model's working set may use: the option, or half the free memory when opened (<= 2 GiB).

        Fixed at open, so every frame of a video gets the same tiling (a new tile shape would make
        shape-specialising backends compile again) and no frame pays for reading /proc/meminfo."""
        self._require_open()
        assert self._budget is not None
        return self._budget

    @property
    def bytes_per_pixel(self) -> float:
        """What one more input pixel costs this backend in memory (its registry entry's memory cost)."""
        precision = str(getattr(self.options, "precision", "fp32"))
        return self.memory_cost(precision, self.model)

    def memory_plan(self, height: int, width: int, frames: int = 1) -> MemoryPlan:
        """Tile edge and tiles per call for a frame of this size under the memory budget."""
        budget = self.memory_budget
        tile: int | None = getattr(self.options, "tile", None)
        if tile is not None:  # the user's tile size; the budget still decides how many go in one call
            if height <= tile and width <= tile:
                return MemoryPlan(None, 1, budget, self.bytes_per_pixel)
            th, tw = min(tile, height), min(tile, width)
            batch = self._tiles_per_call(th, tw)
            return MemoryPlan((th, tw), batch, budget, self.bytes_per_pixel)
        return plan(height, width, frames, self.bytes_per_pixel, budget, self.overlap)

    # ------------------------------------------------------------ inference
    def upscale(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, sH, sW, 3) uint8 RGB, tiled when the memory budget says so.

        If the backend still runs out of memory, the frame is retried with tiles half the size (twice at
        most), saying so: a hint the program can follow itself is not the user's job."""
        self._require_open()
        frames = check_frames(frames)
        h, w = frames.shape[1:3]
        tile = self._tile_size(h, w)
        retries = 0
        while True:
            try:
                return self._upscale_planned(frames, tile)
            except (MemoryError, ShapeError) as exc:
                if retries == 2 or not out_of_memory(exc):
                    raise
                edge = tile if isinstance(tile, int) else max(h, w) if tile is None else max(tile)
                smaller = max(2 * self.overlap + 16, (edge // 2) // 16 * 16)
                if smaller >= edge:
                    raise
                retries += 1
                self.notify(f"out of memory on a {w}x{h} frame; retrying with {smaller}px tiles")
                tile = smaller

    def _upscale_planned(self, frames: np.ndarray, tile: int | tuple[int, int] | None) -> np.ndarray:
        n, h, w = frames.shape[:3]
        if tile is None:
            per_frame = h * w * self.bytes_per_pixel
            if n > 1 and n * per_frame > self.memory_budget:  # a batch over budget runs frame by frame
                return np.concatenate([self._infer(frames[i : i + 1]) for i in range(n)])
            return self._infer(frames)
        from srgan_deploy.tiling import TilePlan, upscale_tiled

        th, tw = (tile, tile) if isinstance(tile, int) else tile
        batch = self._tiles_per_call(th, tw)
        tiles = TilePlan.for_frame(h, w, tile, self.overlap, self.model.size_multiple)
        return upscale_tiled(frames, tiles, self._infer, self.scale, batch)

    def _tiles_per_call(self, tile_h: int, tile_w: int) -> int:
        """How many tiles one inference call takes: as many as the memory budget holds (at most 8)."""
        return max(1, min(MAX_TILE_BATCH, int(self.memory_budget // (tile_h * tile_w * self.bytes_per_pixel))))

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Upscale a stream of batches, results in order. GPU backends override this to keep
        several batches in flight; the default simply runs them one after another."""
        self._require_open()
        for batch in batches:
            yield self.upscale(batch)

    def _one_by_one(self, first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """The in-flight backends' fallback for frames that need tiling or padding: one call each."""
        yield self.upscale(first)
        for batch in rest:
            yield self.upscale(batch)

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """LR tile edge (or (height, width)) for a frame of this size, or None for whole frames."""
        return self.memory_plan(height, width).tile

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _infer(self, frames: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:
        """Free device/session resources; ``_release`` then drops the references."""

    def served_model_identity(self) -> str | None:
        """What identifies the model when it is not a file here (a served model): a resumed job compares it
        instead of the local file's sha256. None: the model is the file this backend loaded."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device_label, "options": repr(self.options)}


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the runtime ran out of memory (Python's MemoryError, itself or as the cause, or a
    runtime's own words for it): the one rule the tile-halving retry and the backends' fallbacks share."""
    if isinstance(exc, MemoryError) or isinstance(exc.__cause__, MemoryError):
        return True
    text = str(exc).lower()
    return "alloc" in text or "memory" in text


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
