"""Plain bicubic upscaling: the floor every model must beat, and the left half of --side-by-side."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import BicubicOptions
from srgan_deploy.spec import ModelSpec


class BicubicBackend(Backend[BicubicOptions]):
    name = "bicubic"

    def __init__(self, options: BicubicOptions, load_scale: Callable[[], int]) -> None:
        super().__init__(options)
        self._load_scale = load_scale

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, "OpenCV bicubic (no model; for comparison)"

    def _open(self) -> None:
        self._model = ModelSpec.bicubic(self._load_scale())
        self.device_label = "cpu"

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        return None

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        import cv2

        s = self.scale
        out = np.empty((frames.shape[0], frames.shape[1] * s, frames.shape[2] * s, 3), np.uint8)
        for i, frame in enumerate(frames):
            out[i] = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
        return out
