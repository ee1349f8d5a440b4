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

INSTALL_HINT = (
    "cuda-python is not installed; pip install 'srgan-deploy[gpu-cu13]' (drivers >= 580) or 'srgan-deploy[gpu-cu12]'"
)


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
        if name == "cudaErrorMemoryAllocation":
            raise EngineError(
                f"CUDA ran out of GPU memory in {what} ({name}); use --tile 256 or a smaller --memory-budget, or free "
                "the GPU (nvidia-smi lists what holds it)"
            )
        raise EngineError(f"CUDA call {what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def driver_version() -> int | None:
    """The installed NVIDIA driver's CUDA version (e.g. 12040 for 12.4), or None without a driver.

    Asked of libcuda directly: the runtime answers "insufficient driver" both when there is no
    driver at all and when it is too old, and only the driver can tell the two apart."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            return int(version.value)
    return None


def bindings_version() -> str:
    try:
        from importlib.metadata import version

        return version("cuda-bindings")
    except Exception:  # noqa: BLE001 - any metadata problem: just say we do not know
        return "unknown"


def device_count() -> int:
    """Visible CUDA devices; 0 without cuda-python, an NVIDIA driver or a GPU.

    A driver too old for the installed cuda-python is not "no GPU": that raises, naming both
    versions and the fix (cuda-python 13 needs driver >= 580.65; 12.x works with older ones)."""
    if cudart is None:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaSuccess:
        return int(count)
    if err == cudart.cudaError_t.cudaErrorNoDevice:
        return 0
    if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
        driver = driver_version()
        if driver is None:
            return 0  # no NVIDIA driver on this machine at all
        raise BackendUnavailableError(
            f"the NVIDIA driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, older than cuda-python "
            f"{bindings_version()} needs; install a matching one (pip install 'cuda-python>=12,<13' for drivers "
            "before 580.65) or update the driver"
        )
    name = getattr(err, "name", str(err))
    raise BackendUnavailableError(f"CUDA cannot list GPUs ({name}); check the NVIDIA driver with nvidia-smi")


def set_device(device: int) -> None:
    """Make ``device`` current for this thread: streams, buffers and TensorRT contexts go there."""
    require()
    check(cudart.cudaSetDevice(device), "cudaSetDevice")


@dataclass(frozen=True)
class GpuProperties:
    name: str
    compute_capability: str
    total_memory: int


def current_device() -> int:
    require()
    return int(check(cudart.cudaGetDevice(), "cudaGetDevice"))


def device_properties(device: int = 0) -> GpuProperties:
    """Name, compute capability and memory of ``device``, without making it current: the current device
    is per thread and belongs to whoever set it (a query must not move a backend's work to GPU 0)."""
    require()
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


def memory_info() -> tuple[int, int]:
    """(free, total) bytes of the current device."""
    require()
    free, total = check(cudart.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


class Event:
    """Completion marker recorded on a stream. Blocking sync: a waiting host thread sleeps instead of
    spinning a CPU core (which the decoder and encoder threads need); timing disabled (cheaper)."""

    def __init__(self) -> None:
        require()
        flags = cudart.cudaEventBlockingSync | cudart.cudaEventDisableTiming
        self._event = check(cudart.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(cudart.cudaEventRecord(self._event, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart.cudaEventSynchronize(self._event), "cudaEventSynchronize")

    def destroy(self) -> None:
        if self._event is not None:
            check(cudart.cudaEventDestroy(self._event), "cudaEventDestroy")
            self._event = None


class PinnedBuffer:
    """Page-locked host memory viewed as a flat uint8 numpy array (DMA-able, so copies run async).

    ``array`` is replaced by an empty array on ``free``: a view kept past the free would read memory
    the allocator may have handed to someone else. Callers copy out of it, never keep it."""

    def __init__(self, nbytes: int) -> None:
        require()
        self.nbytes = nbytes
        self.ptr = int(check(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        c_array = (ctypes.c_uint8 * nbytes).from_address(self.ptr)
        self.array: np.ndarray = np.ctypeslib.as_array(c_array)

    def free(self) -> None:
        if self.ptr:
            self.array = np.empty(0, np.uint8)
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
        """Capture ``enqueue``'s work on ``stream``. On any failure the captured graph is destroyed and
        the sticky error is cleared (``cudaGetLastError``, as trtexec does), so the stream stays usable
        for plain launches."""
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(cudart.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        graph: Any = None
        try:
            try:
                enqueue()
            finally:
                err, graph = cudart.cudaStreamEndCapture(stream.raw)
                if err != cudart.cudaError_t.cudaSuccess:
                    graph = None
                    raise EngineError(f"CUDA call cudaStreamEndCapture failed: {getattr(err, 'name', err)}")
            return cls(check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate"))
        except BaseException:
            cudart.cudaGetLastError()  # clear the sticky capture error
            raise
        finally:
            if graph is not None:
                cudart.cudaGraphDestroy(graph)

    def launch(self, stream: Stream) -> None:
        check(cudart.cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self._exec is not None:
            check(cudart.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
