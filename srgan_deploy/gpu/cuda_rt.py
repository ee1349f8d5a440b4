"""A small typed layer over NVIDIA cuda-python's runtime API (``cuda.bindings.runtime``).

cuda-python returns ``(error, value...)`` tuples; this module checks every error
code (raising ``EngineError`` with the CUDA error name) and gives the rest of the
code typed functions. cuda-bindings ships no type stubs, so ``typings/cuda`` holds
stubs generated from its signatures (``tools/cuda_stubs.py``): mypy checks every
``cudart.*`` call here for name, arity and argument types. Imported lazily: only
the CUDA backends and the engine builder need it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from srgan_deploy.errors import BackendUnavailableError, EngineError

try:
    from cuda.bindings import runtime as cudart
except ImportError:  # pragma: no cover - depends on the installed cuda-python
    try:
        from cuda import cudart  # type: ignore[attr-defined, no-redef]  # cuda-python < 12.6
    except ImportError:
        cudart = None  # type: ignore[assignment]

INSTALL_HINT = "cuda-python is not installed; pip install 'srgan-deploy[gpu]' (or cuda-python)"


def has_cuda_python() -> bool:
    return cudart is not None


def require() -> None:
    """Raise a one-line error when cuda-python is missing."""
    if cudart is None:
        raise BackendUnavailableError(INSTALL_HINT)


def check(result: tuple[Any, ...], what: str) -> Any:
    """Unpack a cuda-python result tuple, raising on any error code."""
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise EngineError(f"CUDA call {what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def device_count() -> int:
    """Visible CUDA devices; 0 without cuda-python, a driver or a GPU."""
    if cudart is None:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if err == cudart.cudaError_t.cudaSuccess else 0


@dataclass(frozen=True)
class GpuProperties:
    name: str
    compute_capability: str
    total_memory: int


def device_properties(device: int = 0) -> GpuProperties:
    require()
    check(cudart.cudaSetDevice(device), "cudaSetDevice")
    prop = check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    raw = prop.name
    name = raw.decode(errors="replace").rstrip("\x00") if isinstance(raw, (bytes, bytearray)) else str(raw)
    return GpuProperties(name, f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem))


class Stream:
    """A non-blocking CUDA stream (does not synchronise with the legacy default stream)."""

    def __init__(self) -> None:
        require()
        self._stream = check(
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self) -> Any:
        return self._stream

    def synchronize(self) -> None:
        check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self._stream is not None:
            check(cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None


class Event:
    """Completion marker recorded on a stream; timing disabled (cheaper)."""

    def __init__(self) -> None:
        require()
        self._event = check(cudart.cudaEventCreateWithFlags(cudart.cudaEventDisableTiming), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(cudart.cudaEventRecord(self._event, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart.cudaEventSynchronize(self._event), "cudaEventSynchronize")

    def destroy(self) -> None:
        if self._event is not None:
            check(cudart.cudaEventDestroy(self._event), "cudaEventDestroy")
            self._event = None


class PinnedBuffer:
    """Page-locked host memory viewed as a flat uint8 numpy array (DMA-able, so copies run async)."""

    def __init__(self, nbytes: int) -> None:
        require()
        self.nbytes = nbytes
        self.ptr = int(check(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        c_array = (ctypes.c_uint8 * nbytes).from_address(self.ptr)
        self.array: np.ndarray = np.ctypeslib.as_array(c_array)

    def free(self) -> None:
        if self.ptr:
            check(cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        require()
        self.nbytes = nbytes
        self.ptr = int(check(cudart.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            check(cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


def copy_h2d_async(dst: DeviceBuffer, src: PinnedBuffer, nbytes: int, stream: Stream) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.raw), "cudaMemcpyAsync(H2D)")


def copy_d2h_async(dst: PinnedBuffer, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.raw), "cudaMemcpyAsync(D2H)")


class Graph:
    """A captured CUDA graph of one stream's work, replayed with one launch (less CPU launch overhead)."""

    def __init__(self, exec_handle: Any) -> None:
        self._exec = exec_handle

    @classmethod
    def capture(cls, stream: Stream, enqueue: Callable[[], None]) -> Graph:
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(cudart.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = check(cudart.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        exec_handle = check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        check(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
        return cls(exec_handle)

    def launch(self, stream: Stream) -> None:
        check(cudart.cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self._exec is not None:
            check(cudart.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
