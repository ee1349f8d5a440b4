"""K in-flight slots: overlap frame i+1's upload and frame i-1's download with frame i's compute.

Each slot owns a stream, pinned host input/output, device input/output and a
completion event. ``SlotPipeline.run`` keeps up to K batches in flight and yields
results strictly in submission order. What a slot computes is a ``Compute``: a
TensorRT execution context (``TensorRTCompute``) or a torch op on the slot's
stream (``TorchCompute``), so the pipeline is the same code either way and can be
tested for real on any CUDA machine, and with a fake slot on a CPU.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from srgan_deploy.errors import BackendStateError, EngineError, ShapeError

if TYPE_CHECKING:
    from srgan_deploy.gpu.cuda_rt import Stream

Shape = tuple[int, int, int]  # batch, height, width of the LR input (NHWC uint8, 3 channels)
MAX_GRAPHS = 4  # captured CUDA graphs kept per execution context (one per input shape)


class Slot(Protocol):
    def start(self, frames: np.ndarray) -> None:
        """Enqueue upload, compute and download of ``frames``; return without waiting."""

    def finish(self) -> np.ndarray:
        """Wait for the last ``start`` to complete; return its output (a copy the caller owns)."""

    def close(self) -> None: ...


class Compute(Protocol):
    def prepare(self, shape: Shape) -> None:
        """Check and set the input shape; raises before anything is enqueued for a shape it cannot run."""

    def enqueue(self, in_ptr: int, out_ptr: int, shape: Shape, stream: Stream) -> None:
        """Enqueue the model on ``stream``: uint8 NHWC at ``in_ptr`` -> uint8 NHWC at ``out_ptr``."""

    def close(self) -> None: ...


class SlotPipeline:
    def __init__(self, slots: list[Slot]) -> None:
        if not slots:
            raise ValueError("a pipeline needs at least one slot")
        self.slots = slots

    def run(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Upscale every batch, keeping up to K in flight; outputs come back in input order.

        The oldest batch is collected and the next one started *before* the result is handed to the
        consumer, so all K slots stay busy while the consumer works (encodes, writes)."""
        pending: deque[Slot] = deque()
        k = len(self.slots)
        try:
            for i, batch in enumerate(batches):
                slot = self.slots[i % k]
                result = pending.popleft().finish() if len(pending) == k else None
                slot.start(batch)
                pending.append(slot)
                if result is not None:
                    yield result
            while pending:
                yield pending.popleft().finish()
        finally:
            for slot in pending:  # abandoned by the consumer or an error: let queued work drain
                # an error here is secondary: the one that stopped the loop is already propagating;
                # a slot closed meanwhile (the backend closed before this generator was collected) is skipped
                with contextlib.suppress(EngineError, BackendStateError):
                    slot.finish()

    def close(self) -> None:
        close_all(self.slots)


def close_all(items: Iterable[Any]) -> None:
    """Close every item even when some fail; then raise the first failure (later ones are chained
    as its context by Python), so no slot, buffer or stream leaks behind one bad CUDA call."""
    first: BaseException | None = None
    for item in items:
        try:
            item.close()
        except Exception as exc:  # noqa: BLE001 - kept and re-raised below
            if first is None:
                first = exc
    if first is not None:
        raise first


def run_split(pipeline: SlotPipeline, batches: Iterable[np.ndarray], max_batch: int) -> Iterator[np.ndarray]:
    """Like ``pipeline.run``, for batches of any size: each is cut into pieces of at most ``max_batch``
    frames (what a slot holds), the pieces stay in flight together, and each batch's output comes back
    whole, in order. Why: a video job's batches vary in size (the last is short, the first may be)."""
    sizes: deque[list[int]] = deque()

    def pieces() -> Iterator[np.ndarray]:
        for batch in batches:
            parts = split_batches(batch, max_batch)
            sizes.append([len(p) for p in parts])
            yield from parts

    pending: list[np.ndarray] = []
    for out in pipeline.run(pieces()):
        pending.append(out)
        while sizes and len(pending) >= len(sizes[0]):
            count = len(sizes.popleft())
            done, pending = pending[:count], pending[count:]
            yield done[0] if count == 1 else np.concatenate(done)


class CudaSlot:
    """One in-flight slot on a CUDA device (cuda-python memory, stream and event)."""

    def __init__(self, compute: Compute, max_shape: Shape, scale: int) -> None:
        from srgan_deploy.gpu.cuda_rt import DeviceBuffer, Event, PinnedBuffer, Stream

        b, h, w = max_shape
        self.max_shape = max_shape
        self.scale = scale
        self.compute = compute
        in_bytes = b * h * w * 3
        out_bytes = in_bytes * scale * scale
        made: list[Callable[[], None]] = []  # what to undo if a later allocation fails
        try:
            self.stream = Stream()
            made.append(self.stream.destroy)
            self.event = Event()
            made.append(self.event.destroy)
            self.host_in = PinnedBuffer(in_bytes)
            made.append(self.host_in.free)
            self.host_out = PinnedBuffer(out_bytes)
            made.append(self.host_out.free)
            self.dev_in = DeviceBuffer(in_bytes)
            made.append(self.dev_in.free)
            self.dev_out = DeviceBuffer(out_bytes)
        except BaseException:
            close_all(_Step(undo) for undo in reversed(made))
            raise
        self._out_shape: tuple[int, int, int, int] | None = None
        self._closed = False

    def start(self, frames: np.ndarray) -> None:
        from srgan_deploy.gpu.cuda_rt import copy_d2h_async, copy_h2d_async

        if self._closed:
            raise BackendStateError("this GPU slot is closed; open the backend again")
        n, h, w, _ = frames.shape
        mb, mh, mw = self.max_shape
        if n > mb or h > mh or w > mw:
            raise ShapeError(f"batch {frames.shape} exceeds the slot's buffers {self.max_shape}; use --tile")
        # the shape is checked before any copy is enqueued: a refused shape leaves nothing queued behind
        self.compute.prepare((n, h, w))
        in_bytes = frames.nbytes
        self.host_in.array[:in_bytes] = frames.reshape(-1)
        copy_h2d_async(self.dev_in, self.host_in, in_bytes, self.stream)
        self.compute.enqueue(self.dev_in.ptr, self.dev_out.ptr, (n, h, w), self.stream)
        s = self.scale
        self._out_shape = (n, h * s, w * s, 3)
        copy_d2h_async(self.host_out, self.dev_out, in_bytes * s * s, self.stream)
        self.event.record(self.stream)

    def finish(self) -> np.ndarray:
        if self._closed:
            raise BackendStateError("this GPU slot is closed; its buffers are freed")
        self.event.synchronize()
        shape = self._out_shape
        if shape is None:
            raise EngineError("finish() without start()")
        self._out_shape = None
        count = int(np.prod(shape))
        return self.host_out.array[:count].reshape(shape).copy()

    def close(self) -> None:
        """Wait for the stream, then free everything; a failing call does not stop the rest."""
        if self._closed:
            return
        self._closed = True
        steps: list[Callable[[], None]] = [
            self.stream.synchronize,
            self.compute.close,
            self.host_in.free,
            self.host_out.free,
            self.dev_in.free,
            self.dev_out.free,
            self.event.destroy,
            self.stream.destroy,
        ]
        close_all(_Step(step) for step in steps)


class _Step:
    """Adapts a cleanup call to ``close_all``'s ``close()`` protocol."""

    def __init__(self, call: Callable[[], None]) -> None:
        self.call = call

    def close(self) -> None:
        self.call()


class TensorRTCompute:
    """A TensorRT execution context bound to one slot; CUDA-graph replay for repeated shapes."""

    def __init__(
        self,
        context: Any,
        input_name: str,
        output_name: str,
        use_graphs: bool,
        notify: Callable[[str], None],
        scale: int = 0,
        said: Callable[[], str] | None = None,
        keep: Any = None,
    ) -> None:
        self.context = context  # made by the backend: how differs between TensorRT and TensorRT-RTX
        self.said = said or (lambda: "")  # TensorRT's own last error line, for our messages
        self.keep = keep  # what must outlive the context (TensorRT-RTX: the IRuntimeConfig it was made with)
        self.scale = scale  # checked against the engine's output shape: a wrong one would overrun dev_out
        self.input_name = input_name
        self.output_name = output_name
        self.use_graphs = use_graphs
        self.notify = notify
        self._shape: Shape | None = None
        self._addresses: tuple[int, int] | None = None
        # a plain enqueueV3 ran since the input shape (or an address) last changed: NVIDIA's rule before a
        # graph is captured or replayed, as that first run sets up the shape's internal state, which no graph holds
        self._settled = False
        self._graphs: dict[Shape, Any] = {}

    def _execute(self, stream: Stream) -> None:
        if not self.context.execute_async_v3(stream.handle):
            raise EngineError(f"TensorRT could not run the engine{self.said()}")

    def prepare(self, shape: Shape) -> None:
        if shape != self._shape:
            b, h, w = shape
            if not self.context.set_input_shape(self.input_name, (b, h, w, 3)):
                self._shape = None
                raise ShapeError(
                    f"input {b}x{h}x{w} is outside the engine's profile{self.said()}; "
                    "rebuild with a larger --max-shape or use --tile"
                )
            self._shape, self._settled = None, False  # the context's shape changed
            s = self.scale
            got = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
            if s and got != (b, h * s, w * s, 3):
                raise EngineError(
                    f"the engine's output for a {b}x{h}x{w} input is {got}, not the x{s} the buffers hold; "
                    "its sidecar does not match the plan: rebuild it with srgan-deploy export"
                )
            self._shape = shape

    def enqueue(self, in_ptr: int, out_ptr: int, shape: Shape, stream: Stream) -> None:
        from srgan_deploy.gpu.cuda_rt import Graph

        self.prepare(shape)
        if self._addresses != (in_ptr, out_ptr):
            self.context.set_tensor_address(self.input_name, in_ptr)
            self.context.set_tensor_address(self.output_name, out_ptr)
            self._addresses = (in_ptr, out_ptr)
            self._drop_graphs()
        if not self.use_graphs or not self._settled:
            self._execute(stream)  # after a shape change, the plain run NVIDIA asks for before any graph
            self._settled = True
            return
        graph = self._graphs.get(shape)
        capturable = getattr(self.context, "is_stream_capturable", None)
        if graph is None and (capturable is None or capturable(stream.handle)):
            try:
                graph = Graph.capture(stream, lambda: self._execute(stream))
                if len(self._graphs) >= MAX_GRAPHS:  # images of many sizes: keep the latest few shapes' graphs
                    stream.synchronize()  # an earlier launch of the evicted graph may still be queued
                    self._graphs.pop(next(iter(self._graphs))).destroy()
                self._graphs[shape] = graph
            except EngineError as exc:
                self.use_graphs = False
                self.notify(f"CUDA graph capture failed ({exc}); continuing without graphs")
                self._execute(stream)
                return
        if graph is None:
            self._execute(stream)
        else:
            graph.launch(stream)

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.destroy()
        self._graphs.clear()
        self._settled = False

    def close(self) -> None:
        self._drop_graphs()
        self.context = None  # the context goes first, then what it needed
        self.keep = None


def cuda_array(ptr: int, shape: tuple[int, ...], device: int = 0) -> Any:
    """A torch uint8 tensor on ``cuda:device`` viewing raw device memory (__cuda_array_interface__), no copy.

    The device is explicit: torch would otherwise take its *current* device, which is per thread and
    need not be the one that holds ``ptr``."""
    import torch

    class _View:
        def __init__(self) -> None:
            self.__cuda_array_interface__ = {
                "shape": shape,
                "typestr": "|u1",
                "data": (ptr, False),
                "version": 3,
                "strides": None,
            }

    return torch.as_tensor(_View(), device=torch.device("cuda", device))


def torch_stream(handle: int, device: int) -> Any:
    """torch's view of our cuda-python stream, on the device the stream belongs to."""
    import torch

    return torch.cuda.ExternalStream(handle, device=torch.device("cuda", device))  # type: ignore[no-untyped-call]


class TorchCompute:
    """A torch op enqueued on the slot's (external) stream: the GPU-testable stand-in for the engine."""

    def __init__(self, forward: Callable[[Any], Any], scale: int, device: int = 0) -> None:
        self.forward = forward
        self.scale = scale
        self.device = device

    def prepare(self, shape: Shape) -> None:
        pass

    def enqueue(self, in_ptr: int, out_ptr: int, shape: Shape, stream: Stream) -> None:
        import torch

        b, h, w = shape
        s = self.scale
        with torch.cuda.device(self.device), torch.cuda.stream(torch_stream(stream.handle, self.device)):
            inp = cuda_array(in_ptr, (b, h, w, 3), self.device)
            out = cuda_array(out_ptr, (b, h * s, w * s, 3), self.device)
            out.copy_(self.forward(inp))

    def close(self) -> None:
        pass


def split_batches(frames: np.ndarray, max_batch: int) -> list[np.ndarray]:
    return [frames[i : i + max_batch] for i in range(0, frames.shape[0], max_batch)]
