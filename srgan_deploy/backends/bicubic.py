"""Plain bicubic upscaling: the floor every model must beat, and the left half of --side-by-side."""

from __future__ import annotations

import numpy as np

from srgan_deploy.backends.base import Backend
from srgan_deploy.weights import read_info


class BicubicBackend(Backend):
    name = "bicubic"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, "OpenCV bicubic (no model; for comparison)"

    def _open(self) -> None:
        self.scale = read_info(self.options.weights).config.scale
        self.device_label = "cpu"

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        return None

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        import cv2

        out = np.empty((frames.shape[0], frames.shape[1] * self.scale, frames.shape[2] * self.scale, 3), np.uint8)
        for i, frame in enumerate(frames):
            out[i] = cv2.resize(frame, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_CUBIC)
        return out
