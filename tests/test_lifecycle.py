"""Every backend keeps the same strict lifecycle: declared state, explicit open, nothing left after close.

The GPU backends run here on fakes of the TensorRT module and the CUDA slots (the real ones need a
driver); what is checked is the backend's own bookkeeping, which is the same code either way.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from srgan_deploy.artifacts import EngineArtifact, ShapeProfile
from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import TensorRTOptions, TensorRTRtxOptions
from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import BackendStateError
from tests.conftest import make_backend


def snapshot(backend: Backend[Any]) -> dict[str, Any]:
    """vars() with values compared by identity for objects (Polygraphy's check), by value for plain data."""
    out: dict[str, Any] = {}
    for key, value in vars(backend).items():
        plain = value is None or isinstance(value, (bool, int, float, str, tuple, list, dict, Path))
        out[key] = value if plain else id(value)
    return out


def check_lifecycle(backend: Backend[Any], frames: np.ndarray) -> np.ndarray:
    before = snapshot(backend)
    assert not backend.is_open
    with pytest.raises(BackendStateError, match="not open"):
        backend.upscale(frames)
    with pytest.raises(BackendStateError):
        _ = backend.scale
    with backend:
        assert backend.is_open and backend.device_label
        opened = snapshot(backend)
        assert set(opened) == set(before), "open() created attributes __init__ does not declare"
        out = backend.upscale(frames)
        assert backend.open() is backend  # idempotent
        assert out.shape == (frames.shape[0], frames.shape[1] * backend.scale, frames.shape[2] * backend.scale, 3)
    assert not backend.is_open
    assert snapshot(backend) == before, "close() left state behind"
    backend.close()  # closing twice is harmless
    with pytest.raises(BackendStateError):
        backend.upscale(frames)
    with backend:  # and it opens again
        assert np.array_equal(backend.upscale(frames), out)
    return out


FRAMES = np.random.default_rng(0).integers(0, 256, (2, 12, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino", "bicubic"])
def test_cpu_backends_lifecycle(name: str, tiny_weights: Path, cache_dir: Path) -> None:
    request: dict[str, Any] = {"device": "cpu"}
    if name == "openvino":
        request["precision"] = "fp32"
    if name != "torch":
        request["cache_dir"] = cache_dir
    check_lifecycle(make_backend(name, str(tiny_weights), **request), FRAMES)


def test_a_failed_open_leaves_a_closed_backend(tiny_weights: Path, tmp_path: Path) -> None:
    from srgan_deploy.errors import WeightsError

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not safetensors")
    backend = make_backend("torch", str(broken), device="cpu")
    before = snapshot(backend)
    with pytest.raises(WeightsError):
        backend.open()
    assert not backend.is_open and snapshot(backend) == before


# --------------------------------------------------------------------------- GPU backends on fakes


class FakeContext:
    pass


class FakeCache:
    def __init__(self) -> None:
        self.loaded: bytes | None = None

    def deserialize(self, blob: bytes) -> bool:
        self.loaded = bytes(blob)
        return True

    def serialize(self) -> bytes:
        return b"RTX-RUNTIME-CACHE"


class FakeEngine:
    num_io_tensors = 2
    device_memory_size_v2 = 123 * 2**20

    def __init__(self) -> None:
        self.cache = FakeCache()

    def get_tensor_name(self, i: int) -> str:
        return ["input", "output"][i]

    def get_tensor_dtype(self, name: str) -> Any:
        return SimpleNamespace(name="UINT8")

    def create_execution_context(self, config: Any = None) -> FakeContext:
        return FakeContext()

    def create_runtime_config(self) -> Any:
        return SimpleNamespace(create_runtime_cache=lambda: self.cache, set_runtime_cache=lambda c: True)


class FakeSlot:
    """Stands in for CudaSlot: 'computes' nearest-neighbour upscaling, synchronously."""

    def __init__(self, compute: Any, max_shape: tuple[int, int, int], scale: int) -> None:
        self.scale = scale
        self.closed = False
        self.out: np.ndarray | None = None

    def start(self, frames: np.ndarray) -> None:
        self.out = frames.repeat(self.scale, axis=1).repeat(self.scale, axis=2)

    def finish(self) -> np.ndarray:
        assert self.out is not None
        return self.out

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import srgan_deploy.gpu.cuda_rt as cuda_rt
    import srgan_deploy.gpu.inflight as inflight
    import srgan_deploy.gpu.trt_runtime as trt_runtime

    module = SimpleNamespace(Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: FakeEngine()))
    monkeypatch.setattr(trt_runtime, "import_flavour_module", lambda flavour: module)
    monkeypatch.setattr(
        trt_runtime, "make_logger", lambda m: SimpleNamespace(mark=lambda: 0, errors_since=lambda n: [])
    )
    monkeypatch.setattr(inflight, "CudaSlot", FakeSlot)
    monkeypatch.setattr(cuda_rt, "set_device", lambda device: None)
    monkeypatch.setattr(cuda_rt, "memory_info", lambda: (8 << 30, 8 << 30))
    monkeypatch.setattr(inflight, "TensorRTCompute", lambda context, *a: context)
    monkeypatch.setattr(
        cuda_rt,
        "device_properties",
        lambda i: SimpleNamespace(name="NVIDIA GeForce RTX 4090", compute_capability="8.9"),
    )
    return tmp_path


@pytest.mark.parametrize("flavour", ["tensorrt", "tensorrt-rtx"])
def test_tensorrt_backends_lifecycle(fake_gpu: Path, flavour: str) -> None:
    from srgan_deploy.backends.trt import TensorRTBackend, TensorRTRtxBackend

    plan = fake_gpu / "m.plan"
    plan.write_bytes(b"PLAN")
    artifact = EngineArtifact(
        plan, flavour, ModelConfig(channels=8, blocks=2), ShapeProfile.parse(None, None, None), "fp16", {"key": "k"}
    )
    backend: Backend[Any]
    if flavour == "tensorrt":
        backend = TensorRTBackend(TensorRTOptions(cache_dir=fake_gpu), lambda: artifact)
    else:
        backend = TensorRTRtxBackend(TensorRTRtxOptions(cache_dir=fake_gpu), lambda: artifact)
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    with backend:
        assert backend.device_memory_per_context == 123 * 2**20  # type: ignore[attr-defined]
    check_lifecycle(backend, frames)
    if flavour == "tensorrt-rtx":  # the JIT runtime cache is written on close, per GPU
        (cache,) = (fake_gpu / "rtx-runtime").glob("k-NVIDIA_GeForce_RTX_4090-sm8.9.cache")
        assert cache.read_bytes() == b"RTX-RUNTIME-CACHE"


def test_a_plan_of_the_other_flavour_is_refused(fake_gpu: Path) -> None:
    from srgan_deploy.backends.trt import TensorRTBackend
    from srgan_deploy.errors import EngineError

    artifact = EngineArtifact(
        fake_gpu / "m.plan", "tensorrt-rtx", ModelConfig(), ShapeProfile.parse(None, None, None), "fp16"
    )
    backend = TensorRTBackend(TensorRTOptions(), lambda: artifact)
    with pytest.raises(EngineError, match="-b tensorrt-rtx"):
        backend.open()
    assert not backend.is_open
