"""Every cuda-python call in ``srgan_deploy/cuda_rt.py`` goes through the real binding on a CPU machine.

Without a CUDA driver the bindings still check each call's arity and argument
types, then return an error code (no driver / no device). So a wrong signature
fails here as a TypeError, while a correct call surfaces as our one-line
``EngineError`` naming the CUDA call and error. Skipped where cuda-bindings is
absent or a GPU is present (there, tests/test_gpu.py runs the real thing).
"""

from __future__ import annotations

import pytest

from srgan_deploy.errors import EngineError
from srgan_deploy.gpu import cuda_rt

pytestmark = pytest.mark.skipif(
    not cuda_rt.has_cuda_python() or cuda_rt.device_count() > 0,
    reason="needs cuda-bindings installed and no usable CUDA device",
)

NO_DEVICE = r"failed: cudaError(InsufficientDriver|NoDevice|InitializationError)"


def _null(cls: type, **fields: object) -> object:
    """An instance that skips __init__ (which would fail without a driver), holding null handles."""
    obj = object.__new__(cls)
    for key, value in fields.items():
        setattr(obj, key, value)
    return obj


def test_no_device_is_zero_not_an_error() -> None:
    assert cuda_rt.device_count() == 0


@pytest.mark.parametrize(
    "make, call",
    [
        (lambda: cuda_rt.device_properties(0), "cudaGetDeviceProperties"),
        (cuda_rt.Stream, "cudaStreamCreateWithFlags"),
        (cuda_rt.Event, "cudaEventCreateWithFlags"),
        (lambda: cuda_rt.PinnedBuffer(64), "cudaMallocHost"),
        (lambda: cuda_rt.DeviceBuffer(64), "cudaMalloc"),
    ],
)
def test_constructors_reach_the_driver(make: object, call: str) -> None:
    with pytest.raises(EngineError, match=rf"CUDA call {call} {NO_DEVICE}"):
        make()  # type: ignore[operator]


def test_stream_operations_have_the_binding_signatures() -> None:
    cudart = pytest.importorskip("cuda.bindings.runtime")
    stream = _null(cuda_rt.Stream, _stream=cudart.cudaStream_t())
    event = _null(cuda_rt.Event, _event=cudart.cudaEvent_t())
    host = _null(cuda_rt.PinnedBuffer, ptr=0, nbytes=64)
    device = _null(cuda_rt.DeviceBuffer, ptr=0, nbytes=64)
    calls = [
        (lambda: cuda_rt.copy_h2d_async(device, host, 64, stream), "cudaMemcpyAsync"),  # type: ignore[arg-type]
        (lambda: cuda_rt.copy_d2h_async(host, device, 64, stream), "cudaMemcpyAsync"),  # type: ignore[arg-type]
        (lambda: event.record(stream), "cudaEventRecord"),  # type: ignore[attr-defined]
        (lambda: event.synchronize(), "cudaEventSynchronize"),  # type: ignore[attr-defined]
        (lambda: stream.synchronize(), "cudaStreamSynchronize"),  # type: ignore[attr-defined]
        (lambda: cuda_rt.Graph.capture(stream, lambda: None), "cudaStreamBeginCapture"),  # type: ignore[arg-type]
        (lambda: cuda_rt.Graph(cudart.cudaGraphExec_t()).launch(stream), "cudaGraphLaunch"),  # type: ignore[arg-type]
        (lambda: cuda_rt.Graph(cudart.cudaGraphExec_t()).destroy(), "cudaGraphExecDestroy"),
        (lambda: event.destroy(), "cudaEventDestroy"),  # type: ignore[attr-defined]
        (lambda: stream.destroy(), "cudaStreamDestroy"),  # type: ignore[attr-defined]
    ]
    for call, name in calls:
        with pytest.raises(EngineError, match=rf"CUDA call {name}"):
            call()


def test_buffers_free_through_the_binding() -> None:
    host = _null(cuda_rt.PinnedBuffer, ptr=4096, nbytes=64)
    device = _null(cuda_rt.DeviceBuffer, ptr=4096, nbytes=64)
    with pytest.raises(EngineError, match="cudaFreeHost"):
        host.free()  # type: ignore[attr-defined]
    with pytest.raises(EngineError, match="cudaFree"):
        device.free()  # type: ignore[attr-defined]


def test_graph_instantiate_and_end_capture_signatures() -> None:
    """The two calls Graph.capture makes after a successful begin, checked directly."""
    cudart = pytest.importorskip("cuda.bindings.runtime")
    with pytest.raises(EngineError, match="cudaStreamEndCapture"):
        cuda_rt.check(cudart.cudaStreamEndCapture(cudart.cudaStream_t()), "cudaStreamEndCapture")
    with pytest.raises(EngineError, match="cudaGraphInstantiate"):
        cuda_rt.check(cudart.cudaGraphInstantiate(cudart.cudaGraph_t(), 0), "cudaGraphInstantiate")
