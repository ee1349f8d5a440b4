"""OpenVINO backend: the fastest CPU path (oneDNN convolutions with PReLU, bias and the residual Add
fused; bf16 on CPUs with AVX-512 BF16 or AMX).

It compiles the same uint8-I/O ONNX graph as onnxruntime, so conversion to and from float stays
in the graph. The precision is always set explicitly: OpenVINO's own default on a bf16-capable
CPU is bf16, which would silently change results for a user who asked for fp32.

How it is fast (measured in benchmarks/peer/compare_vsmlrt.py and docs/performance notes):

- A stream of frames (``upscale_many``: video) runs on a model compiled with the THROUGHPUT hint: one
  stream per few cores, each frame on its own infer request, OpenVINO's optimal number of requests
  kept busy. On 2 cores this is 1.25-1.4x the frames/s of one LATENCY stream using both cores,
  because oneDNN's convolutions scale poorly across threads on frames this small.
- One frame on its own (an image) runs on a LATENCY-compiled model (all cores on that frame); several
  frames or tiles in one call are spread over the throughput requests.
- Every compiled model is for one static input shape (a small LRU of them, compiling takes ~0.1 s):
  static shapes let the CPU plugin plan memory once and skip shape inference per call.
- Outputs are written by OpenVINO straight into a fresh numpy array per frame (no copy out). Inputs
  are copied into the request (about 0.1 ms per 320x180 frame, <0.1 % of its inference): sharing
  the caller's buffer would let a caller that refills it while the frame is in flight corrupt it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from srgan_deploy.artifacts import OnnxModel
from srgan_deploy.backends.base import Backend, check_frames, out_of_memory
from srgan_deploy.backends.fit import needs_fitting, run_fitted, static_tile
from srgan_deploy.backends.options import OpenVinoOptions
from srgan_deploy.cpus import cpu_quota, usable_cpus
from srgan_deploy.errors import ExportError, ShapeError
from srgan_deploy.memory import default_budget
from srgan_deploy.sources import OnnxLoader

INSTALL = "pip install openvino (or pip install 'srgan-deploy[openvino]')"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
SHAPES_KEPT = 4  # compiled shapes kept per mode: a frame size, its edge tiles, a last odd frame


def reason(exc: BaseException) -> str:
    """OpenVINO's own words from one of its exceptions: the first lines only say which source file raised
    ("Exception from src/inference/src/cpp/core.cpp:117:"); the reason is the last line that is not that."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("Exception from ")]
    return (said or lines or [type(exc).__name__])[-1]


@dataclass
class _Compiled:
    """One static-shape compiled model and its infer requests; ``idle`` are those free to start."""

    model: Any
    requests: list[Any]
    cost: float = 0.0  # bytes its streams hold for their frames, counted against the memory budget
    idle: deque[Any] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.idle.extend(self.requests)


@dataclass
class _Job:
    """One unit (a frame, or a fixed batch) started on a request; ``out`` is filled in place."""

    compiled: _Compiled
    request: Any
    out: np.ndarray
    done: bool = False
    error: ShapeError | None = None  # kept: a job waited twice (by another stream) fails twice


class OpenVinoBackend(Backend[OpenVinoOptions]):
    name = "openvino"

    def __init__(self, options: OpenVinoOptions, load: OnnxLoader) -> None:
        super().__init__(options)
        self._load = load
        self.onnx: OnnxModel | None = None
        self._core: Any = None
        self._network: Any = None  # the read (dynamic-shape) model every static shape is cloned from
        self._compute = ""  # what OpenVINO computes in (compute_precision), asked once at open
        self._compiled: OrderedDict[tuple[str, tuple[int, ...]], _Compiled] = OrderedDict()
        self._in_flight: deque[_Job] = deque()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import openvino as ov
            import openvino.properties.device as device
        except ImportError:
            return False, f"openvino is not installed ({INSTALL})"
        except Exception as exc:  # noqa: BLE001 - a broken install raises RuntimeError/OSError at import
            return False, f"openvino fails to import: {exc}"
        try:
            core = ov.Core()
            name = core.get_property("CPU", device.full_name)
            capabilities = set(core.get_property("CPU", device.capabilities))
        except RuntimeError as exc:
            return False, f"openvino {ov.get_version().split('-')[0]} cannot use the CPU: {exc}"
        precisions = [p for p, cap in (("fp32", "FP32"), ("bf16", "BF16")) if cap in capabilities]
        return True, f"openvino {ov.get_version().split('-')[0]} on {name} ({', '.join(precisions)})"

    def _open(self) -> None:
        import openvino as ov

        self.onnx = self._load().require_uint8("openvino")
        self._core = ov.Core()
        self._compute = self._ask_compute_precision()
        self._compiled = OrderedDict()
        try:
            self._network = self._core.read_model(str(self.onnx.path))
        except RuntimeError as exc:
            raise ExportError(f"OpenVINO cannot read {self.onnx.path}: {reason(exc)}") from exc
        self._model = self.onnx.spec
        # compile one small shape now: a graph OpenVINO cannot compile fails at open, not on the first frame
        probe = self._compiled_for("throughput", self._probe_shape())
        streams, threads = self.streams_and_threads(probe)
        self.device_label = f"cpu x{threads} {self.options.precision}, {streams} streams"

    def _ask_compute_precision(self) -> str:
        """What OpenVINO computes in: the option, except that an int8 graph's other layers run in bf16 where the
        CPU has it (OpenVINO's own capability list), else fp32."""
        if self.options.precision != "int8":
            return self.options.precision
        import openvino.properties.device as device

        return "bf16" if "BF16" in set(self._core.get_property("CPU", device.capabilities)) else "fp32"

    @property
    def compute_precision(self) -> str:
        self._require_open()
        return self._compute

    def _cost_precision(self) -> str:
        """The memory table's row: int8's where the other layers run in bf16, fp32's where they run in fp32."""
        if self.options.precision == "int8" and self._compute == "fp32":
            return "fp32"
        return self.options.precision

    @property
    def bytes_per_pixel(self) -> float:
        return self.memory_cost(self._cost_precision(), self.model)

    def _probe_shape(self) -> tuple[int, ...]:
        spec = self._model
        assert spec is not None
        h, w = spec.static_hw or (spec.size_multiple * max(1, 32 // spec.size_multiple),) * 2
        return (spec.batch or 1, h, w, 3)

    @staticmethod
    def streams_and_threads(compiled: _Compiled) -> tuple[int, int]:
        import openvino.properties as props

        return int(compiled.model.get_property(props.num_streams)), int(
            compiled.model.get_property(props.inference_num_threads)
        )

    def inference_precision(self) -> str:
        """The precision OpenVINO actually computes in ('f32' or 'bf16'), read back from a compiled model."""
        import openvino.properties.hint as hints

        self._require_open()
        compiled = next(iter(self._compiled.values()))
        return str(compiled.model.get_property(hints.inference_precision).get_type_name())

    def _compiled_for(self, mode: str, shape: tuple[int, ...]) -> _Compiled:
        """The model compiled for ``shape`` (N, H, W, 3) in ``mode`` ("latency" | "throughput"), cached.

        A compiled static-shape model keeps its streams' buffers until it is dropped, so the cache is bounded
        twice: at most SHAPES_KEPT shapes per mode, and all of them together within the memory budget (the
        oldest go first; the newest always stays)."""
        key = (mode, shape)
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        import openvino.properties as props
        import openvino.properties.hint as hints

        network = self._network.clone()
        try:
            network.reshape({network.inputs[0]: list(shape)})
        except RuntimeError as exc:
            raise ShapeError(f"the network does not take a {shape} input: {reason(exc)}") from exc
        per_unit = self._unit_cost(shape)
        config: dict[Any, Any] = {hints.inference_precision: OV_PRECISION[self._compute]}
        if mode == "throughput":
            # every stream holds a frame's working set: on a many-core CPU the hint's streams times a large
            # frame would exceed the memory budget, so the hint is told how many requests the budget holds
            # (OpenVINO then makes no more streams than that)
            fit = max(1, int(self._budget_bytes() // per_unit))
            config[hints.performance_mode] = hints.PerformanceMode.THROUGHPUT
            config[hints.num_requests] = min(fit, self.options.requests or fit)
        else:
            config[hints.performance_mode] = hints.PerformanceMode.LATENCY
        threads = self.options.threads or (usable_cpus() if cpu_quota() is not None else None)
        if threads:  # a container's CPU quota counts too: its host's cores are not all ours
            config[props.inference_num_threads] = threads
        self._evict(keep_room=per_unit)
        model = self._compile(network, config, shape)
        count = 1
        if mode == "throughput":
            count = max(
                1, min(config[hints.num_requests], int(model.get_property(props.optimal_number_of_infer_requests)))
            )
        streams = int(model.get_property(props.num_streams)) if mode == "throughput" else 1
        compiled = _Compiled(model, [model.create_infer_request() for _ in range(count)], cost=streams * per_unit)
        self._compiled[key] = compiled
        kept = [k for k in self._compiled if k[0] == mode]
        for old in kept[:-SHAPES_KEPT]:  # a job in flight holds its own request (and so its model)
            del self._compiled[old]
        return compiled

    def _evict(self, keep_room: float) -> None:
        """Drop the least recently used compiled shapes until ``keep_room`` more bytes fit the budget."""
        budget = self._budget_bytes()
        while self._compiled and sum(c.cost for c in self._compiled.values()) + keep_room > budget:
            self._compiled.popitem(last=False)

    def _compile(self, network: Any, config: dict[Any, Any], shape: tuple[int, ...]) -> Any:
        try:
            return self._core.compile_model(network, "CPU", config)
        except RuntimeError as exc:
            why = reason(exc)
            if out_of_memory(exc):  # static shapes allocate at compile: the caller retries with smaller tiles
                raise ShapeError(f"OpenVINO ran out of memory for a {shape} input: {why}") from exc
            name = self.onnx.path if self.onnx else "the model"
            raise ExportError(f"OpenVINO cannot compile {name}: {why}") from exc

    def _budget_bytes(self) -> int:
        """The memory budget, also while opening (the base class fixes it only once open has returned)."""
        if self._budget is not None:
            return self._budget
        return self.options.memory_budget if self.options.memory_budget is not None else default_budget()

    def _unit_cost(self, shape: tuple[int, ...]) -> float:
        """Bytes one unit of ``shape`` needs while it runs (the registry's measured cost per input pixel)."""
        n, h, w = shape[:3]
        spec = self._model
        assert spec is not None
        return max(1.0, n * h * w * self.memory_cost(self._cost_precision(), spec))

    # ------------------------------------------------------------ one call
    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """A network that takes one shape gets tiles of exactly that shape; others follow the memory plan."""
        if self.model.static_hw is not None:
            return static_tile(self.model, height, width)
        return super()._tile_size(height, width)

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        spec = self.model
        if needs_fitting(spec, frames):  # a static-shape or fixed-batch network
            return run_fitted(frames, spec, self._infer)
        if spec.batch is not None or len(frames) == 1:  # one unit: all cores on it
            return self._run_now(frames)
        # several frames or tiles: one per throughput request, every stream busy
        return np.concatenate(list(self._stream(frames[i : i + 1] for i in range(len(frames)))))

    def _run_now(self, unit: np.ndarray) -> np.ndarray:
        compiled = self._compiled_for("latency", unit.shape)
        request = compiled.requests[0]
        out = self._output_for(unit)
        request.set_output_tensor(0, self._tensor(out))
        try:  # share_outputs: infer() would otherwise return a copy of what it just wrote into ``out``
            request.infer({0: unit}, share_inputs=False, share_outputs=True)
        except RuntimeError as exc:
            raise ShapeError(f"OpenVINO failed on a {unit.shape} batch: {reason(exc)}; try --tile 256") from exc
        return out

    def _output_for(self, unit: np.ndarray) -> np.ndarray:
        n, h, w, _ = unit.shape
        s = self.model.scale
        return np.empty((n, h * s, w * s, 3), dtype=np.uint8)

    @staticmethod
    def _tensor(array: np.ndarray) -> Any:
        import openvino as ov

        return ov.Tensor(array, shared_memory=True)

    # ------------------------------------------------------------ in flight
    def _start(self, unit: np.ndarray) -> _Job:
        """Start ``unit`` on an idle throughput request, first finishing the oldest job when none is idle."""
        compiled = self._compiled_for("throughput", unit.shape)
        while not compiled.idle:
            oldest = next(job for job in self._in_flight if job.compiled is compiled)
            self._wait(oldest)
        out = self._output_for(unit)  # before a request is taken: a failure here must not lose one
        request = compiled.idle.popleft()
        try:
            request.set_output_tensor(0, self._tensor(out))
            request.start_async({0: unit}, share_inputs=False)
        except RuntimeError as exc:
            compiled.idle.append(request)
            raise ShapeError(f"OpenVINO cannot start a {unit.shape} batch: {reason(exc)}") from exc
        except BaseException:
            compiled.idle.append(request)
            raise
        job = _Job(compiled, request, out)
        self._in_flight.append(job)
        return job

    def _wait(self, job: _Job) -> np.ndarray:
        """The job's output once its request is done; its error every time it is asked for (another stream
        may have waited for it first)."""
        if not job.done:
            job.done = True
            self._in_flight.remove(job)
            try:
                job.request.wait()
            except RuntimeError as exc:
                job.error = ShapeError(f"OpenVINO inference failed: {reason(exc)}; try --tile 256")
                raise job.error from exc
            finally:
                job.compiled.idle.append(job.request)
        if job.error is not None:
            raise job.error
        return job.out

    def _drain(self) -> None:
        """Let every started request finish, so none runs on into an output array that is gone (on an error,
        an abandoned stream, or close). Their own errors stay with their jobs: the error that got us here is
        the one to report."""
        while self._in_flight:
            try:
                self._wait(self._in_flight[0])
            except ShapeError:
                continue

    def _close(self) -> None:
        self._drain()  # a stream still referenced by its caller may have requests writing into its arrays

    def _stream(self, units: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Units through the throughput requests, each started as soon as a request is idle; in order."""
        started: deque[_Job] = deque()
        try:
            for unit in units:
                started.append(self._start(unit))
                while started and started[0].done:
                    yield self._wait(started.popleft())
            while started:
                yield self._wait(started.popleft())
        except BaseException:
            self._drain()
            raise

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Every frame of every batch on its own throughput request, as many in flight as OpenVINO asks for;
        results in input order, batches as they came.

        Frames that need tiling (or padding to a static network's shape) go through ``upscale`` one at a
        time, after what is in flight."""
        self._require_open()
        groups: deque[list[_Job]] = deque()
        try:
            for raw in batches:
                batch = check_frames(raw)
                if self._tile_size(batch.shape[1], batch.shape[2]) is not None or needs_fitting(self.model, batch):
                    while groups:
                        yield self._collect(groups.popleft())
                    yield self.upscale(batch)
                    continue
                step = self.model.batch or 1
                group = [self._start(batch[i : i + step]) for i in range(0, len(batch), step)]
                groups.append(group)
                # in flight: at most the requests of the current shape; a frame of another shape ahead of them
                # is waited for rather than left to hold back every result behind it
                cap = len(group[-1].compiled.requests)
                while groups and (all(job.done for job in groups[0]) or len(self._in_flight) > cap):
                    yield self._collect(groups.popleft())
            while groups:
                yield self._collect(groups.popleft())
        except BaseException:
            self._drain()
            raise

    def _collect(self, jobs: list[_Job]) -> np.ndarray:
        outs = [self._wait(job) for job in jobs]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _release(self) -> None:
        self._in_flight.clear()
        self._compiled = OrderedDict()
        self._network = None
        self._compute = ""
        self._core = None
        self.onnx = None
