"""Feeding networks that take one input shape or one batch size (``ModelSpec.static_hw`` / ``batch``).

Many downloaded ONNX models were exported for one shape (a 64x64 tile, batch 1). onnxruntime and OpenVINO
run such a graph only at that shape, so frames are cut into tiles of exactly that size (``static_tile``,
the last tile shifted back inside the frame, as for every tile), a frame or tile smaller than it is padded
with its edge pixels and the answer cropped, and batches are cut to the fixed batch (the last one padded
with repeats). TensorRT engines get the same from their static profile (backends/trt.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from srgan_deploy.spec import ModelSpec


def static_tile(spec: ModelSpec, height: int, width: int) -> tuple[int, int] | None:
    """The network's own shape as the tile for frames larger than it; None when the frame fits (padded)."""
    if spec.static_hw is None:
        return None
    th, tw = spec.static_hw
    if height <= th and width <= tw:
        return None
    return th, tw


def needs_fitting(spec: ModelSpec, frames: np.ndarray) -> bool:
    if spec.static_hw is not None and tuple(frames.shape[1:3]) != spec.static_hw:
        return True
    return spec.batch is not None and len(frames) != spec.batch


def run_fitted(frames: np.ndarray, spec: ModelSpec, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``run`` on frames padded to the static shape and cut into fixed batches; the answer cropped back."""
    n, h, w, _ = frames.shape
    s = spec.scale
    if spec.static_hw is not None:
        th, tw = spec.static_hw
        frames = np.pad(frames, ((0, 0), (0, max(0, th - h)), (0, max(0, tw - w)), (0, 0)), mode="edge")
    b = spec.batch or n
    parts = []
    for i in range(0, n, b):
        piece = frames[i : i + b]
        if len(piece) < b:
            piece = np.concatenate([piece, np.repeat(piece[-1:], b - len(piece), axis=0)])
        parts.append(run(np.ascontiguousarray(piece))[: min(b, n - i)])
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(out[:, : h * s, : w * s])
