"""GPU tests: run only where CUDA (and, for the engine tests, TensorRT + cuda-python) are present.

They exercise the real K-slot stream pipeline with a torch op on each slot's
stream, and a real FP16 TensorRT engine against PyTorch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from srgan_deploy.export.fp16 import FP16_BUDGET_DB
from srgan_deploy.metrics import psnr
from tests.conftest import make_backend, smooth_image

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _has_cuda_python() -> bool:
    from srgan_deploy.gpu.cuda_rt import has_cuda_python

    return has_cuda_python()


def _has_tensorrt() -> bool:
    from srgan_deploy.gpu.trt_runtime import flavour_status

    return flavour_status("tensorrt")[0]


needs_pipeline = pytest.mark.skipif(
    not (torch.cuda.is_available() and _has_cuda_python()), reason="needs CUDA + cuda-python"
)
needs_trt = pytest.mark.skipif(
    not (torch.cuda.is_available() and _has_tensorrt() and _has_cuda_python()), reason="needs TensorRT"
)


def frames_of(n: int, h: int, w: int) -> np.ndarray:
    return np.stack([smooth_image(h, w, i) for i in range(n)])


@needs_pipeline
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_torch_cuda_slot_pipeline_matches_cpu_in_order(
    tiny_weights: Path, slots: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fp32 means fp32: cuDNN's TF32 (torch's default for convolutions) would round inputs to 10 bits
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    batches = [frames_of(2, 37, 53) + i for i in range(7)]
    with make_backend("torch", str(tiny_weights), device="cpu") as cpu:
        expected = [cpu.upscale(b) for b in batches]
    with make_backend("torch", str(tiny_weights), device="cuda", precision="fp32", slots=slots) as gpu:
        outputs = list(gpu.upscale_many(batches))
        assert gpu._pipeline is not None  # really went through the CUDA slots
    for out, ref in zip(outputs, expected, strict=True):
        assert out.shape == ref.shape
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


@needs_pipeline
def test_fp16_torch_cuda_within_budget(tiny_weights: Path) -> None:
    frames = frames_of(1, 64, 64)
    with make_backend("torch", str(tiny_weights), device="cpu") as cpu:
        ref = cpu.upscale(frames)
    with make_backend("torch", str(tiny_weights), device="cuda", precision="fp16") as gpu:
        out = gpu.upscale(frames)
    assert psnr(ref, out) >= FP16_BUDGET_DB


@needs_pipeline
def test_two_slots_overlap_transfers(tmp_path: Path) -> None:
    """With transfers included, K=2 must not be slower than K=1 (the README reports the measured ratio)."""
    from srgan_deploy.config import ModelConfig
    from srgan_deploy.models import Generator
    from srgan_deploy.weights import save_generator

    path = save_generator(Generator(ModelConfig(channels=32, blocks=4)).eval(), tmp_path / "m.safetensors")
    batches = [frames_of(1, 270, 480)] * 24

    def fps(k: int) -> float:
        with make_backend("torch", str(path), device="cuda", slots=k) as gpu:
            list(gpu.upscale_many(batches[:4]))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = sum(1 for _ in gpu.upscale_many(batches))
            return n / (time.perf_counter() - t0)

    assert fps(2) >= 0.9 * fps(1)


@needs_trt
def test_tensorrt_engine_matches_torch(tiny_weights: Path, tmp_path: Path) -> None:
    from srgan_deploy.artifacts import ShapeProfile
    from srgan_deploy.export.command import ExportRequest, run_export

    profile = ShapeProfile((1, 16, 16), (1, 64, 64), (2, 128, 128))
    report = run_export(
        ExportRequest(
            out_dir=tmp_path, weights=str(tiny_weights), fmt="tensorrt", profile=profile, engine_dir=tmp_path / "cache"
        )
    )
    assert report.engine is not None and report.engine_built
    frames = frames_of(2, 37, 53)
    with make_backend("torch", str(tiny_weights), device="cpu") as cpu:
        ref = cpu.upscale(frames)
    with make_backend("tensorrt", str(report.engine)) as trt_backend:
        out = trt_backend.upscale(frames)
        streamed = list(trt_backend.upscale_many([frames[:1], frames[1:]] * 3))
    assert psnr(ref, out) >= FP16_BUDGET_DB
    # batch 1 and batch 2 may pick different fp16 kernels: compare within the budget, not bitwise
    assert psnr(out, np.concatenate(streamed[:2])) >= FP16_BUDGET_DB
    again = run_export(
        ExportRequest(
            out_dir=tmp_path, weights=str(tiny_weights), fmt="tensorrt", profile=profile, engine_dir=tmp_path / "cache"
        )
    )
    assert not again.engine_built  # served from the engine cache
