"""Geometric self-ensemble (``--ensemble``): the model sees the 8 flips/rotations of a frame and the
answers, turned back, are averaged.

Why: a convolutional generator is not exactly equivariant to flips and rotations, so its errors on the
eight views differ; averaging them cancels part of the error (the "+" models of EDSR). It costs eight
runs of the model, which suits still images and evaluation, not real-time video.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

VIEWS = 8  # 4 rotations x (as is, mirrored)


def _view(frames: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` of an (N, H, W, C) batch: rotated ``k % 4`` quarter turns, then mirrored if ``k >= 4``."""
    out = np.rot90(frames, k % 4, axes=(1, 2))
    if k >= 4:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def _unview(frames: np.ndarray, k: int) -> np.ndarray:
    """The inverse of :func:`_view` (mirror first, then turn back)."""
    out = frames[:, :, ::-1] if k >= 4 else frames
    return np.rot90(out, -(k % 4), axes=(1, 2))


Upscale = Callable[[np.ndarray], np.ndarray]


def self_ensemble(upscale: Upscale, frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the mean of ``upscale`` over the eight views, rounded back to uint8."""
    total = upscale(_view(frames, 0)).astype(np.float32)
    for k in range(1, VIEWS):
        total += _unview(upscale(_view(frames, k)), k)
    return np.clip(np.rint(total / VIEWS), 0, 255).astype(np.uint8)


def with_ensemble(upscale: Upscale, ensemble: bool) -> Upscale:
    """``upscale`` itself, or its self-ensemble: the one place callers choose."""
    return functools.partial(self_ensemble, upscale) if ensemble else upscale
