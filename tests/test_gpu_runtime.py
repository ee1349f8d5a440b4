"""The GPU runtime's own logic, exercised on a CPU with recorded-call doubles of CUDA and TensorRT.

Each test here stands for one defect of the GPU runtime review (the reliability issue's list):
what a real GPU would need to show it, a double shows here, and the test fails without the fix.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import srgan_deploy.gpu.cuda_rt as cuda_rt
import srgan_deploy.gpu.inflight as inflight
from srgan_deploy.artifacts import EngineArtifact, ShapeProfile
from srgan_deploy.backends.options import TensorRTOptions
from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import BackendUnavailableError, EngineError
from tests.test_lifecycle import FakeEngine, FakeSlot, fake_gpu  # noqa: F401 - fixture

# ----------------------------------------------------------------------------- 1: batches of any size


class CountingSlot(FakeSlot):
    capacity = 2

    def start(self, frames: np.ndarray) -> None:
        assert frames.shape[0] <= self.capacity, "a slot got more frames than it holds"
        super().start(frames)


def test_batches_larger_than_a_slot_are_split_and_regrouped() -> None:
    slots = [CountingSlot(None, (2, 8, 8), 2) for _ in range(2)]
    pipeline = inflight.SlotPipeline(list(slots))
    sizes = [1, 3, 2, 5, 1]
    batches = [np.full((n, 4, 4, 3), i, np.uint8) for i, n in enumerate(sizes)]
    outs = list(inflight.run_split(pipeline, batches, max_batch=2))
    assert [o.shape[0] for o in outs] == sizes
    assert all((o == i).all() and o.shape[1:] == (8, 8, 3) for i, o in enumerate(outs))


def test_tensorrt_streams_batches_beyond_the_profile_batch(fake_gpu: Path) -> None:  # noqa: F811
    from srgan_deploy.backends.trt import TensorRTBackend

    plan = fake_gpu / "m.plan"
    plan.write_bytes(b"PLAN")
    artifact = EngineArtifact(plan, "tensorrt", ModelConfig(), ShapeProfile.parse(None, None, None), "fp16")
    frames = np.random.default_rng(1).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    with TensorRTBackend(TensorRTOptions(), lambda: artifact) as backend:
        outs = list(backend.upscale_many([frames[:1], frames, frames[1:]]))
    assert [o.shape[0] for o in outs] == [1, 3, 2]
    assert np.array_equal(outs[1], frames.repeat(4, 1).repeat(4, 2))


# ----------------------------------------------------------------------------- 3: too-old driver


class FakeCudart:
    """Just enough of cuda.bindings.runtime to answer one call and record what was called."""

    def __init__(self, count_error: str) -> None:
        self.calls: list[str] = []
        self.cudaError_t = SimpleNamespace(
            cudaSuccess="ok",
            cudaErrorNoDevice="nodevice",
            cudaErrorInsufficientDriver="old",
            cudaErrorUnknown="unknown",
        )
        self.cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=2)
        self._count_error = count_error

    def cudaGetDeviceCount(self) -> tuple[Any, Any]:
        return (self._count_error, 0)

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> tuple[Any, ...]:
            self.calls.append(name)
            if name == "cudaStreamEndCapture":
                return ("ok", "GRAPH")
            return ("ok", None)

        return record


def test_a_too_old_driver_is_not_reported_as_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_rt, "cudart", FakeCudart("old"))
    monkeypatch.setattr(cuda_rt, "driver_version", lambda: 12040)
    with pytest.raises(BackendUnavailableError, match=r"CUDA 12\.4.*cuda-python>=12,<13"):
        cuda_rt.device_count()
    from srgan_deploy.backends.trt import TensorRTBackend

    monkeypatch.setattr("srgan_deploy.gpu.trt_runtime.flavour_status", lambda flavour: (True, "tensorrt 10.13"))
    ok, why = TensorRTBackend.availability()
    assert not ok and "cuda-python" in why
    monkeypatch.setattr(cuda_rt, "driver_version", lambda: None)  # no NVIDIA driver at all: plainly no GPU
    assert cuda_rt.device_count() == 0
    monkeypatch.setattr(cuda_rt, "cudart", FakeCudart("nodevice"))
    assert cuda_rt.device_count() == 0


# ----------------------------------------------------------------------------- 9: capture failure


def test_a_failed_graph_capture_destroys_the_graph_and_clears_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCudart("ok")
    monkeypatch.setattr(cuda_rt, "cudart", fake)
    stream = SimpleNamespace(raw="STREAM")

    def failing_enqueue() -> None:
        raise EngineError("execute_async_v3 failed during capture")

    with pytest.raises(EngineError, match="during capture"):
        cuda_rt.Graph.capture(stream, failing_enqueue)  # type: ignore[arg-type]
    assert fake.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGetLastError", "cudaGraphDestroy"]


# ----------------------------------------------------------------------------- 13: cleanup


class Closing:
    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail

    def close(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise EngineError(f"{self.name} failed")


def test_cleanup_frees_everything_and_keeps_the_first_error() -> None:
    log: list[str] = []
    items = [Closing(log, "a"), Closing(log, "b", fail=True), Closing(log, "c", fail=True), Closing(log, "d")]
    with pytest.raises(EngineError, match="b failed"):
        inflight.close_all(items)
    assert log == ["a", "b", "c", "d"]


def test_a_slot_that_fails_half_built_frees_what_it_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    freed: list[str] = []

    class Thing:
        def __init__(self, *args: Any) -> None:
            self.name = type(self).__name__

        def free(self) -> None:
            freed.append(self.name)

        destroy = free

    class Stream(Thing): ...

    class Event(Thing): ...

    class PinnedBuffer(Thing): ...

    class DeviceBuffer(Thing):
        def __init__(self, *args: Any) -> None:
            raise EngineError("CUDA call cudaMalloc failed: cudaErrorMemoryAllocation")

    for cls in (Stream, Event, PinnedBuffer, DeviceBuffer):
        monkeypatch.setattr(cuda_rt, cls.__name__, cls)
    with pytest.raises(EngineError, match="cudaMalloc"):
        inflight.CudaSlot(None, (1, 8, 8), 4)  # type: ignore[arg-type]
    assert freed == ["PinnedBuffer", "PinnedBuffer", "Event", "Stream"]


# ----------------------------------------------------------------------------- 6: IO binding device


def test_onnxruntime_binds_its_output_on_the_sessions_gpu() -> None:
    from srgan_deploy.backends.options import OrtOptions
    from srgan_deploy.backends.ort import OnnxRuntimeBackend

    calls: list[tuple[Any, ...]] = []

    class Binding:
        def bind_cpu_input(self, *a: Any) -> None:
            calls.append(("in", *a[:1]))

        def bind_output(self, *a: Any) -> None:
            calls.append(("out", *a))

        def copy_outputs_to_cpu(self) -> list[np.ndarray]:
            return [np.zeros((1, 4, 4, 3), np.uint8)]

    backend = OnnxRuntimeBackend(OrtOptions(device="cuda:1", precision="fp16"), lambda: None)  # type: ignore[arg-type, return-value]
    backend.on_gpu = True
    backend.session = SimpleNamespace(io_binding=Binding, run_with_iobinding=lambda b: None)
    backend._infer(np.zeros((1, 1, 1, 3), np.uint8))
    assert ("out", "output", "cuda", 1) in calls


def test_onnxruntime_tensorrt_provider_gets_our_profile_and_timing_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from srgan_deploy.backends.options import OrtOptions
    from srgan_deploy.backends.ort import OnnxRuntimeBackend

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    backend = OnnxRuntimeBackend(OrtOptions(device="cuda", precision="fp16", cache_dir=tmp_path), lambda: None)  # type: ignore[arg-type, return-value]
    name, options = backend._providers()[0]
    assert name == "TensorrtExecutionProvider"
    assert options["trt_profile_min_shapes"] == "input:1x8x8x3"
    assert options["trt_profile_opt_shapes"] == "input:1x270x480x3"
    assert options["trt_profile_max_shapes"] == "input:1x540x960x3"
    assert options["trt_timing_cache_enable"] is True


# ----------------------------------------------------------------------------- 7, 8, 11: the TensorRT backend


def _trt(folder: Path, profile: ShapeProfile, device: int = 0) -> Any:
    from srgan_deploy.backends.trt import TensorRTBackend

    plan = folder / "m.plan"
    plan.write_bytes(b"PLAN")
    artifact = EngineArtifact(plan, "tensorrt", ModelConfig(channels=8, blocks=2), profile, "fp16")
    return TensorRTBackend(TensorRTOptions(device=device), lambda: artifact)


def test_tensorrt_uses_the_requested_gpu(fake_gpu: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    chosen: list[int] = []
    monkeypatch.setattr(cuda_rt, "set_device", chosen.append)
    with _trt(fake_gpu, ShapeProfile.parse(None, None, None), device=3):
        pass
    assert chosen and set(chosen) == {3}  # at open and again at every entry point: the device is per thread


def test_tiles_follow_the_profile_on_each_axis_and_small_frames_are_padded(fake_gpu: Path) -> None:  # noqa: F811
    profile = ShapeProfile((1, 64, 64), (1, 100, 200), (1, 100, 200))
    with _trt(fake_gpu, profile) as backend:
        th, tw = backend._tile_size(150, 500)  # type: ignore[misc]
        assert th <= 100 and 100 < tw <= 200  # each axis within the profile's own max, not a square
        assert backend._tile_size(100, 200) is None
        small = np.random.default_rng(0).integers(0, 255, (1, 20, 30, 3), dtype=np.uint8)
        out = backend.upscale(small)  # below the profile's 64x64 minimum: padded, upscaled, cropped
        assert out.shape == (1, 80, 120, 3)
        assert np.array_equal(out, small.repeat(4, 1).repeat(4, 2))
    static = ShapeProfile.static(1, 64, 64)
    with _trt(fake_gpu, static) as backend:
        frame = np.random.default_rng(1).integers(0, 255, (1, 50, 130, 3), dtype=np.uint8)
        assert np.array_equal(backend.upscale(frame), frame.repeat(4, 1).repeat(4, 2))


def test_a_plan_with_float_io_is_refused(fake_gpu: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(FakeEngine, "get_tensor_dtype", lambda self, name: SimpleNamespace(name="FLOAT"), raising=False)
    backend = _trt(fake_gpu, ShapeProfile.parse(None, None, None))
    with pytest.raises(EngineError, match="FLOAT/FLOAT I/O"):
        backend.open()
    assert not backend.is_open


def test_an_engine_whose_output_does_not_match_the_scale_is_caught() -> None:
    class Context:
        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (1, 16, 16, 3)  # a x2 engine

    compute = inflight.TensorRTCompute(Context(), "input", "output", False, print, scale=4)
    with pytest.raises(EngineError, match="not the x4"):
        compute.enqueue(0, 0, (1, 8, 8), SimpleNamespace(handle=0))  # type: ignore[arg-type]


def test_fp16_core_graphs_are_keyed_by_the_converter_version(tmp_path: Path) -> None:
    from srgan_deploy.export.fp16 import CONVERTER_VERSION
    from srgan_deploy.export.tensorrt import EngineSpec, engine_source

    spec = EngineSpec(
        "ab" * 32, "tensorrt-rtx", "1", "aot", ("SM89",), "fp16", ShapeProfile.parse(None, None, None), "uint8", 1
    )
    stale = tmp_path / "m-abababababab-fp16core.onnx"  # the name before the converter had a version
    stale.write_bytes(b"stale")
    onnx = tmp_path / "m.onnx"
    with contextlib.suppress(Exception):  # m.onnx does not exist: only the chosen name matters here
        engine_source(onnx, spec, tmp_path)
    target = tmp_path / f"m-abababababab-fp16core-v{CONVERTER_VERSION}.onnx"
    assert target != stale and not target.exists()


def test_ort_tensorrt_provider_at_fp16_gets_the_fp16_core_graph(
    monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    """TensorRT 11 has no fp16 builder flag: onnxruntime's TensorRT provider must get fp16 from the graph."""
    import onnx
    import onnxruntime

    from srgan_deploy.backends.options import OrtOptions
    from srgan_deploy.backends.registry import Choice, create

    backend = create(
        Choice("onnxruntime", OrtOptions(device="cuda:1", precision="fp16", cache_dir=tmp_path), "t"), str(tiny_weights)
    )
    model = backend._load()  # type: ignore[attr-defined]
    proto = onnx.load(str(model.path))
    dtypes = {init.data_type for init in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes and "fp16core" in model.path.name
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8  # boundary stays uint8
    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    providers = backend._providers()  # type: ignore[attr-defined]
    name, trt = providers[0]
    assert name == "TensorrtExecutionProvider" and trt["trt_fp16_enable"] is False and trt["device_id"] == 1
    assert trt["trt_profile_max_shapes"].startswith("input:") and trt["trt_timing_cache_enable"]
    fp32 = create(
        Choice("onnxruntime", OrtOptions(device="cuda", precision="fp32", cache_dir=tmp_path), "t"), str(tiny_weights)
    )
    assert "fp16core" not in fp32._load().path.name  # type: ignore[attr-defined]
