"""A stand-in for ``cuda.bindings.runtime`` that enforces what a real GPU enforces, on the CPU.

Not a recorder: it keeps the state a CUDA runtime keeps and fails where CUDA fails.

- The current device is per host thread (default 0). Streams, events, device allocations and
  graphs are tagged with the device current when they were made.
- A kernel (a TensorRT execute, a graph launch) on a stream of another device than the current one
  fails with ``cudaErrorInvalidResourceHandle``; recording an event on a stream of another device
  fails the same way (CUDA Programming Guide, "Stream and Event Behavior"). Copies may use any
  stream, as in CUDA.
- Streams run their work lazily: a copy or a kernel runs only when the stream or an event recorded
  after it is synchronized (or a synchronizing call such as ``cudaFree`` drains the device), so a
  host buffer read before its event is synchronized holds stale bytes, and a host buffer
  overwritten before its copy ran is copied with the new bytes, as on a real GPU.
- Device memory is real host memory (so a kernel can compute real pixels) counted against each
  device's size; an allocation over it fails with ``cudaErrorMemoryAllocation``. Touching freed
  or foreign memory is an illegal address: a sticky error every later call reports.
- Stream capture (graphs) refuses synchronizing calls from the capturing thread, which also
  invalidates the capture (``cudaErrorStreamCaptureUnsupported`` / ``...Invalidated``).

Every public function has the name and positional arity of the generated stubs in
``typings/cuda/bindings/runtime.pyi`` (checked by ``tests/test_standin.py``).
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalState = 401
    cudaErrorNotReady = 600
    cudaErrorIllegalAddress = 700
    cudaErrorLaunchFailure = 719
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901
    cudaErrorStreamCaptureWrongThread = 908
    cudaErrorUnknown = 999


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class cudaStreamCaptureStatus(enum.IntEnum):
    cudaStreamCaptureStatusNone = 0
    cudaStreamCaptureStatusActive = 1
    cudaStreamCaptureStatusInvalidated = 2


cudaStreamDefault = 0
cudaStreamNonBlocking = 1
cudaEventDefault = 0
cudaEventBlockingSync = 1
cudaEventDisableTiming = 2

OK = cudaError_t.cudaSuccess
E = cudaError_t


class CudaFault(Exception):
    """Raised inside the stand-in to turn into an error code at the API boundary."""

    def __init__(self, code: cudaError_t, why: str) -> None:
        super().__init__(f"{code.name}: {why}")
        self.code = code
        self.why = why


@dataclass
class DeviceSpec:
    name: str = "NVIDIA GeForce RTX 4090"
    major: int = 8
    minor: int = 9
    memory: int = 24 * 2**30


@dataclass
class Allocation:
    ptr: int
    size: int
    kind: str  # "device" | "host"
    device: int
    buffer: Any = field(repr=False)
    freed: bool = False


class _Handle:
    """An opaque CUDA handle (cudaStream_t, cudaEvent_t, ...): int() gives its address, as in cuda-python."""

    _ids = itertools.count(0x7F00_0000_1000, 0x100)

    def __init__(self) -> None:
        self.addr = next(self._ids)

    def __int__(self) -> int:
        return self.addr

    def __index__(self) -> int:
        return self.addr


class StreamHandle(_Handle):
    def __init__(self, device: int, flags: int) -> None:
        super().__init__()
        self.device = device
        self.flags = flags
        self.queue: list[Callable[[], None]] = []
        self.submitted = 0  # operations ever enqueued
        self.done = 0  # operations executed
        self.capture: GraphHandle | None = None
        self.capture_thread: int | None = None
        self.destroyed = False


class EventHandle(_Handle):
    def __init__(self, device: int, flags: int) -> None:
        super().__init__()
        self.device = device
        self.flags = flags
        self.stream: StreamHandle | None = None
        self.target = 0  # the stream's op count the event waits for
        self.destroyed = False
        self.spin_waits = 0  # synchronizations on an event without cudaEventBlockingSync (CPU spinning)


class GraphHandle(_Handle):
    def __init__(self, device: int) -> None:
        super().__init__()
        self.device = device
        self.ops: list[Callable[[], None]] = []
        self.invalidated: str | None = None
        self.destroyed = False


class GraphExecHandle(_Handle):
    def __init__(self, graph: GraphHandle) -> None:
        super().__init__()
        self.device = graph.device
        self.ops = list(graph.ops)
        self.destroyed = False


class DeviceProp:
    def __init__(self, spec: DeviceSpec) -> None:
        self.name = spec.name.encode() + b"\x00" * (256 - len(spec.name))
        self.major = spec.major
        self.minor = spec.minor
        self.totalGlobalMem = spec.memory


class StandinCudart:
    """The module object that replaces ``cudart`` in ``srgan_deploy.gpu.cuda_rt``."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStreamCaptureMode = cudaStreamCaptureMode
    cudaStreamCaptureStatus = cudaStreamCaptureStatus
    cudaStreamDefault = cudaStreamDefault
    cudaStreamNonBlocking = cudaStreamNonBlocking
    cudaEventDefault = cudaEventDefault
    cudaEventBlockingSync = cudaEventBlockingSync
    cudaEventDisableTiming = cudaEventDisableTiming

    def __init__(self, devices: list[DeviceSpec] | None = None) -> None:
        self.devices = devices if devices is not None else [DeviceSpec()]
        self._local = threading.local()
        self._lock = threading.RLock()
        self.allocations: dict[int, Allocation] = {}
        self.used = [0] * len(self.devices)
        self.peak = [0] * len(self.devices)
        self.streams: list[StreamHandle] = []
        self.events: list[EventHandle] = []
        self.graphs: list[GraphExecHandle] = []
        self.sticky: CudaFault | None = None  # an illegal address poisons the context, as on a GPU
        self.last_error: cudaError_t = OK
        self.faults: list[str] = []  # every error returned, for test messages
        self.kernels = 0  # kernels executed (engine runs), for tests
        self.set_device_calls: list[tuple[int, int]] = []  # (thread id, device)

    # ------------------------------------------------------------------ plumbing
    def current_device(self) -> int:
        return int(getattr(self._local, "device", 0))

    def _call(self, fn: Callable[[], Any]) -> tuple[Any, ...]:
        with self._lock:
            if self.sticky is not None:
                return self._fail(self.sticky)
            try:
                value = fn()
            except CudaFault as fault:
                return self._fail(fault)
        if value is None:
            return (OK,)
        if isinstance(value, tuple):
            return (OK, *value)
        return (OK, value)

    def _fail(self, fault: CudaFault) -> tuple[Any, ...]:
        self.last_error = fault.code
        self.faults.append(str(fault))
        return (fault.code, None)

    def _capturing_here(self) -> list[StreamHandle]:
        me = threading.get_ident()
        return [s for s in self.streams if s.capture is not None and s.capture_thread == me]

    def _refuse_in_capture(self, what: str) -> None:
        """Synchronizing or allocating calls are illegal while this thread captures a stream."""
        for stream in self._capturing_here():
            assert stream.capture is not None
            stream.capture.invalidated = f"{what} during stream capture"
            raise CudaFault(E.cudaErrorStreamCaptureUnsupported, f"{what} is not permitted during stream capture")

    def stream_of(self, handle: Any) -> StreamHandle:
        if isinstance(handle, StreamHandle):
            stream = handle
        else:
            addr = int(handle)
            found = [s for s in self.streams if s.addr == addr]
            if not found:
                raise CudaFault(E.cudaErrorInvalidResourceHandle, f"unknown stream {addr:#x}")
            stream = found[0]
        if stream.destroyed:
            raise CudaFault(E.cudaErrorInvalidResourceHandle, "stream used after cudaStreamDestroy")
        return stream

    def _event(self, handle: Any) -> EventHandle:
        if not isinstance(handle, EventHandle) or handle.destroyed:
            raise CudaFault(E.cudaErrorInvalidResourceHandle, "invalid or destroyed event")
        return handle

    def find(self, ptr: int, nbytes: int, kind: str | None = None) -> Allocation:
        """The live allocation holding [ptr, ptr+nbytes); an illegal address otherwise."""
        for alloc in self.allocations.values():
            if alloc.ptr <= ptr < alloc.ptr + alloc.size:
                if alloc.freed:
                    break
                if ptr + nbytes > alloc.ptr + alloc.size:
                    raise CudaFault(
                        E.cudaErrorIllegalAddress,
                        f"{nbytes} bytes at {ptr:#x} overrun a {alloc.size}-byte {alloc.kind} allocation",
                    )
                if kind is not None and alloc.kind != kind:
                    raise CudaFault(E.cudaErrorInvalidValue, f"{ptr:#x} is {alloc.kind} memory, not {kind}")
                return alloc
        raise CudaFault(E.cudaErrorIllegalAddress, f"{ptr:#x} is not a live allocation (freed or foreign)")

    def view(self, ptr: int, nbytes: int) -> memoryview:
        alloc = self.find(ptr, nbytes)
        offset = ptr - alloc.ptr
        return memoryview(alloc.buffer).cast("B")[offset : offset + nbytes]

    def enqueue(self, stream: StreamHandle, op: Callable[[], None]) -> None:
        if stream.capture is not None:
            stream.capture.ops.append(op)
            return
        stream.queue.append(op)
        stream.submitted += 1

    def run_until(self, stream: StreamHandle, target: int) -> None:
        """Execute the stream's queued work up to op number ``target`` (in order)."""
        while stream.done < target:
            op = stream.queue.pop(0)
            stream.done += 1
            try:
                op()
            except CudaFault as fault:
                self.sticky = fault  # asynchronous errors are sticky, reported by every later call
                raise

    def drain(self, device: int | None = None) -> None:
        for stream in self.streams:
            if not stream.destroyed and (device is None or stream.device == device):
                self.run_until(stream, stream.submitted)

    def launch(self, stream_handle: Any, what: str, op: Callable[[], None]) -> None:
        """Enqueue a kernel: the stream must belong to the current device."""
        stream = self.stream_of(stream_handle)
        device = self.current_device()
        if stream.device != device:
            raise CudaFault(
                E.cudaErrorInvalidResourceHandle,
                f"{what} on a stream of device {stream.device} while device {device} is current",
            )
        self.enqueue(stream, op)

    # ------------------------------------------------------------------ devices
    def cudaGetDeviceCount(self) -> tuple[Any, ...]:
        if not self.devices:
            return (E.cudaErrorNoDevice, 0)
        return (OK, len(self.devices))

    def cudaSetDevice(self, device: int, /) -> tuple[Any, ...]:
        def go() -> None:
            if not 0 <= device < len(self.devices):
                raise CudaFault(E.cudaErrorInvalidDevice, f"device {device} of {len(self.devices)}")
            self._local.device = device
            self.set_device_calls.append((threading.get_ident(), device))

        return self._call(go)

    def cudaGetDevice(self) -> tuple[Any, ...]:
        return self._call(self.current_device)

    def cudaGetDeviceProperties(self, device: int, /) -> tuple[Any, ...]:
        def go() -> DeviceProp:
            if not 0 <= device < len(self.devices):
                raise CudaFault(E.cudaErrorInvalidDevice, f"device {device} of {len(self.devices)}")
            return DeviceProp(self.devices[device])

        return self._call(go)

    def cudaMemGetInfo(self) -> tuple[Any, ...]:
        def go() -> tuple[int, int]:
            d = self.current_device()
            return self.devices[d].memory - self.used[d], self.devices[d].memory

        return self._call(go)

    def cudaGetLastError(self) -> tuple[Any, ...]:
        err, self.last_error = self.last_error, OK
        return (err,)

    def cudaDeviceSynchronize(self) -> tuple[Any, ...]:
        def go() -> None:
            self._refuse_in_capture("cudaDeviceSynchronize")
            self.drain(self.current_device())

        return self._call(go)

    # ------------------------------------------------------------------ memory
    def _allocate(self, size: int, kind: str) -> int:
        if size <= 0:
            raise CudaFault(E.cudaErrorInvalidValue, f"allocation of {size} bytes")
        device = self.current_device()
        self._refuse_in_capture("cudaMalloc" if kind == "device" else "cudaMallocHost")
        if kind == "device":
            if self.used[device] + size > self.devices[device].memory:
                raise CudaFault(
                    E.cudaErrorMemoryAllocation,
                    f"{size} bytes on device {device}: {self.devices[device].memory - self.used[device]} free",
                )
            self.charge(device, size)
        buffer = (ctypes.c_uint8 * size)()
        ptr = ctypes.addressof(buffer)
        self.allocations[ptr] = Allocation(ptr, size, kind, device, buffer)
        return ptr

    def charge(self, device: int, size: int) -> None:
        self.used[device] += size
        self.peak[device] = max(self.peak[device], self.used[device])

    def _release(self, ptr: Any, kind: str) -> None:
        self._refuse_in_capture("cudaFree" if kind == "device" else "cudaFreeHost")
        alloc = self.allocations.get(int(ptr))
        if alloc is None or alloc.freed or alloc.kind != kind:
            raise CudaFault(E.cudaErrorInvalidValue, f"free of {int(ptr):#x}: not a live {kind} allocation")
        self.drain()  # cudaFree/cudaFreeHost synchronize: queued work that reads the memory runs first
        alloc.freed = True
        if kind == "device":
            self.used[alloc.device] -= alloc.size
        # poison the memory: a numpy view kept past the free reads garbage, as after a real free
        ctypes.memset(alloc.buffer, 0xCD, alloc.size)

    def cudaMalloc(self, size: int, /) -> tuple[Any, ...]:
        return self._call(lambda: self._allocate(size, "device"))

    def cudaMallocHost(self, size: int, /) -> tuple[Any, ...]:
        return self._call(lambda: self._allocate(size, "host"))

    def cudaFree(self, devPtr: Any, /) -> tuple[Any, ...]:
        return self._call(lambda: self._release(devPtr, "device"))

    def cudaFreeHost(self, ptr: Any, /) -> tuple[Any, ...]:
        return self._call(lambda: self._release(ptr, "host"))

    def cudaMemcpyAsync(self, dst: Any, src: Any, count: int, kind: Any, stream: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            s = self.stream_of(stream)
            expect = {
                cudaMemcpyKind.cudaMemcpyHostToDevice: ("device", "host"),
                cudaMemcpyKind.cudaMemcpyDeviceToHost: ("host", "device"),
                cudaMemcpyKind.cudaMemcpyDeviceToDevice: ("device", "device"),
            }.get(cudaMemcpyKind(int(kind)))
            d_kind, s_kind = expect if expect else (None, None)
            # validated at enqueue (cudaErrorInvalidValue for a wrong kind or a range past an allocation)
            self.find(int(dst), count, d_kind)
            self.find(int(src), count, s_kind)

            def copy() -> None:  # runs when the stream gets there, reading the source as it is then
                self.view(int(dst), count)[:] = self.view(int(src), count)

            self.enqueue(s, copy)

        return self._call(go)

    # ------------------------------------------------------------------ streams and events
    def cudaStreamCreateWithFlags(self, flags: int, /) -> tuple[Any, ...]:
        def go() -> StreamHandle:
            self._refuse_in_capture("cudaStreamCreate")
            stream = StreamHandle(self.current_device(), int(flags))
            self.streams.append(stream)
            return stream

        return self._call(go)

    def cudaStreamSynchronize(self, stream: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            s = self.stream_of(stream)
            if s.capture is not None:
                s.capture.invalidated = "cudaStreamSynchronize on the capturing stream"
                raise CudaFault(E.cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize during capture")
            self._refuse_in_capture("cudaStreamSynchronize")
            self.run_until(s, s.submitted)

        return self._call(go)

    def cudaStreamQuery(self, stream: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            s = self.stream_of(stream)
            if s.done < s.submitted:
                raise CudaFault(E.cudaErrorNotReady, "work pending")

        return self._call(go)

    def cudaStreamDestroy(self, stream: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            s = self.stream_of(stream)
            self.run_until(s, s.submitted)  # pending work completes before the stream goes
            s.destroyed = True

        return self._call(go)

    def cudaStreamIsCapturing(self, stream: Any, /) -> tuple[Any, ...]:
        def go() -> cudaStreamCaptureStatus:
            s = self.stream_of(stream)
            if s.capture is None:
                return cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
            if s.capture.invalidated:
                return cudaStreamCaptureStatus.cudaStreamCaptureStatusInvalidated
            return cudaStreamCaptureStatus.cudaStreamCaptureStatusActive

        return self._call(go)

    def cudaEventCreateWithFlags(self, flags: int, /) -> tuple[Any, ...]:
        def go() -> EventHandle:
            event = EventHandle(self.current_device(), int(flags))
            self.events.append(event)
            return event

        return self._call(go)

    def cudaEventRecord(self, event: Any, stream: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            e, s = self._event(event), self.stream_of(stream)
            if e.device != s.device:
                raise CudaFault(
                    E.cudaErrorInvalidResourceHandle,
                    f"event of device {e.device} recorded on a stream of device {s.device}",
                )
            if s.capture is not None:
                raise CudaFault(E.cudaErrorStreamCaptureUnsupported, "event record inside a capture (use a node)")
            e.stream, e.target = s, s.submitted

        return self._call(go)

    def cudaEventSynchronize(self, event: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            e = self._event(event)
            self._refuse_in_capture("cudaEventSynchronize")
            if not e.flags & cudaEventBlockingSync:
                e.spin_waits += 1
            if e.stream is not None:
                self.run_until(e.stream, e.target)

        return self._call(go)

    def cudaEventQuery(self, event: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            e = self._event(event)
            if e.stream is not None and e.stream.done < e.target:
                raise CudaFault(E.cudaErrorNotReady, "event not reached")

        return self._call(go)

    def cudaEventDestroy(self, event: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            self._event(event).destroyed = True

        return self._call(go)

    # ------------------------------------------------------------------ graphs
    def cudaStreamBeginCapture(self, stream: Any, mode: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            s = self.stream_of(stream)
            if s.capture is not None:
                raise CudaFault(E.cudaErrorIllegalState, "the stream is already capturing")
            if s.device != self.current_device():
                raise CudaFault(E.cudaErrorInvalidResourceHandle, "capture on a stream of another device")
            s.capture = GraphHandle(s.device)
            s.capture_thread = threading.get_ident()

        return self._call(go)

    def cudaStreamEndCapture(self, stream: Any, /) -> tuple[Any, ...]:
        def go() -> GraphHandle:
            s = self.stream_of(stream)
            graph = s.capture
            if graph is None:
                raise CudaFault(E.cudaErrorInvalidValue, "stream is not capturing")
            if s.capture_thread != threading.get_ident():
                raise CudaFault(E.cudaErrorStreamCaptureWrongThread, "capture ended from another thread")
            s.capture, s.capture_thread = None, None
            if graph.invalidated:
                raise CudaFault(E.cudaErrorStreamCaptureInvalidated, graph.invalidated)
            return graph

        return self._call(go)

    def cudaGraphInstantiate(self, graph: Any, flags: int, /) -> tuple[Any, ...]:
        def go() -> GraphExecHandle:
            if not isinstance(graph, GraphHandle) or graph.destroyed:
                raise CudaFault(E.cudaErrorInvalidValue, "not a graph")
            exe = GraphExecHandle(graph)
            self.graphs.append(exe)
            return exe

        return self._call(go)

    def cudaGraphLaunch(self, graphExec: Any, stream: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            if not isinstance(graphExec, GraphExecHandle) or graphExec.destroyed:
                raise CudaFault(E.cudaErrorInvalidValue, "not an instantiated graph")
            s = self.stream_of(stream)
            if s.device != graphExec.device or s.device != self.current_device():
                raise CudaFault(E.cudaErrorInvalidResourceHandle, "graph launched on another device's stream")
            for op in graphExec.ops:
                self.enqueue(s, op)

        return self._call(go)

    def cudaGraphDestroy(self, graph: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            if isinstance(graph, GraphHandle):
                graph.destroyed, graph.ops = True, []

        return self._call(go)

    def cudaGraphExecDestroy(self, graphExec: Any, /) -> tuple[Any, ...]:
        def go() -> None:
            if not isinstance(graphExec, GraphExecHandle) or graphExec.destroyed:
                raise CudaFault(E.cudaErrorInvalidValue, "not an instantiated graph")
            graphExec.destroyed, graphExec.ops = True, []  # its nodes (and what they hold) are freed

        return self._call(go)

    # ------------------------------------------------------------------ what tests look at
    def live(self, kind: str | None = None) -> list[Allocation]:
        return [a for a in self.allocations.values() if not a.freed and (kind is None or a.kind == kind)]

    def live_streams(self) -> list[StreamHandle]:
        return [s for s in self.streams if not s.destroyed]

    def live_events(self) -> list[EventHandle]:
        return [e for e in self.events if not e.destroyed]
