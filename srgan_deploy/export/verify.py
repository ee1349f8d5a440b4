"""Prove an exported artifact computes what the PyTorch model computes.

float32 I/O: max-abs error <= 1e-4. uint8 I/O: at most 1 level off on >= 99.9 %
of values (rounding of values that land within float error of .5 may differ).
Every check reports max-abs and PSNR(reference, output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srgan_deploy.errors import ParityError
from srgan_deploy.images import make_input
from srgan_deploy.metrics import psnr

FLOAT_TOLERANCE = 1e-4
UINT8_FRACTION = 0.999
DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 32, 32), (2, 37, 53), (1, 61, 40))  # (batch, height, width)


@dataclass(frozen=True)
class Parity:
    shape: tuple[int, int, int]
    max_abs: float
    psnr: float
    within_one: float  # fraction of values within 1 uint8 level (1/255 for float I/O)

    def line(self) -> str:
        b, h, w = self.shape
        return f"{b}x{h}x{w}: max-abs {self.max_abs:.3g}, PSNR {self.psnr:.1f} dB, {100 * self.within_one:.3f}% within 1 level"


def compare(reference: np.ndarray, output: np.ndarray, shape: tuple[int, int, int], peak: float) -> Parity:
    diff = np.abs(reference.astype(np.float64) - output.astype(np.float64))
    one = 1.0 if peak == 255.0 else 1.0 / 255.0
    return Parity(
        shape, float(diff.max()), min(psnr(reference, output, peak), 99.0), float(np.mean(diff <= one + 1e-9))
    )


def check_parity(
    run: Callable[[np.ndarray], np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    io: str,
    shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
    what: str = "ONNX",
) -> list[Parity]:
    """Run both on every shape; raise ParityError when outside the budget of ``io``."""
    results = []
    for k, shape in enumerate(shapes):
        frames = make_input(shape, seed=k)
        if io == "uint8":
            inp = frames
            peak = 255.0
        else:
            inp = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            peak = 1.0
        ref = reference(inp)
        out = run(inp)
        if out.shape != ref.shape:
            raise ParityError(f"{what} output shape {out.shape} differs from PyTorch's {ref.shape} for input {shape}")
        result = compare(ref, out, shape, peak)
        results.append(result)
        ok = result.max_abs <= FLOAT_TOLERANCE if io == "float32" else result.within_one >= UINT8_FRACTION
        if not ok:
            raise ParityError(f"{what} does not match PyTorch at {result.line()}; re-export, or report a bug")
    return results


def torch_reference(weights: str | Path | None, io: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from srgan_deploy.export.onnx import inference_module

    model, _ = inference_module(weights, io, reference=True)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


def ort_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"input": x})[0])

    return run


def verify_onnx(
    path: Path, weights: str | Path | None, io: str, shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES
) -> list[Parity]:
    return check_parity(ort_runner(path), torch_reference(weights, io), io, shapes)
