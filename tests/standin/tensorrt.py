"""A stand-in for TensorRT's runtime (and a build front over TensorRT-RTX's real parser) that enforces
TensorRT's contracts on the CPU and computes real pixels.

Build: NVIDIA's own ONNX parser (TensorRT-RTX, installed in CI) parses the graph into a real network
and a real builder config and optimization profile take the settings; only the last step,
``build_serialized_network``, is the stand-in's: the "plan" it returns carries the profile(s), the
I/O tensors as the parser saw them, the build target and the ONNX itself.

Run time, as TensorRT:
- an engine lives on the device current when it was deserialized; a context made or run under another
  device fails (TensorRT binds both to the CUDA context they were created in);
- ``create_execution_context`` allocates the activation memory statically for the profile's max
  shape (``device_memory_size_v2``) from the device's memory, and returns None when it does not fit;
- ``set_input_shape`` outside the profile returns False and logs TensorRT's error; an input batch
  below the profile's minimum too;
- ``execute_async_v3`` enqueues the network on the stream as a kernel (lazy, stream-ordered, reading
  and writing device memory when it runs): onnxruntime runs the engine's ONNX on the CPU (the
  fp16-core graph in fp16) over the bytes at the bound addresses;
- TensorRT-RTX: the ``IRuntimeConfig`` a context was made with must outlive it (a context whose
  config was collected fails to run), and the first execution of a shape compiles kernels just in
  time, which a stream capture refuses (``is_stream_capturable`` is False until then);
- CUDA graphs (NVIDIA's developer guide: "call enqueueV3() once after an input shape change to update
  internal state", then capture): the first enqueueV3 after a shape change sets up the context's
  shape-dependent state, which no graph records. A capture before that plain run is refused, and a
  captured graph reads the state as it is when it runs: replayed after another shape's run without a
  plain run of its own shape since, it faults (``cudaErrorLaunchFailure``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import types
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.standin.cuda import CudaFault, StandinCudart, cudaError_t

MAGIC = b"SRGAN-DEPLOY-STANDIN-PLAN\n"
_ORT_SESSIONS: dict[str, Any] = {}  # sha256 of the ONNX -> session: many engines share a graph
_ORT_LOCK = threading.Lock()


def _session(onnx: bytes) -> Any:
    import onnxruntime as ort

    key = hashlib.sha256(onnx).hexdigest()
    with _ORT_LOCK:
        if key not in _ORT_SESSIONS:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 2
            _ORT_SESSIONS[key] = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        return _ORT_SESSIONS[key]


def _activation_bytes(onnx: bytes, max_shape: tuple[int, ...]) -> int:
    """Peak activation memory of the graph at ``max_shape``: the two largest intermediate tensors
    (TensorRT reuses memory between layers, so about the largest producer/consumer pair is live)."""
    import onnx as onnx_lib

    model = onnx_lib.load_from_string(onnx)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, max_shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    inferred = onnx_lib.shape_inference.infer_shapes(model)
    sizes = []
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor = info.type.tensor_type
        shape = [d.dim_value for d in tensor.shape.dim]
        if not shape or any(v <= 0 for v in shape):
            continue
        itemsize = np.dtype(onnx_lib.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
        sizes.append(int(np.prod(shape)) * itemsize)
    sizes.sort()
    return int(sum(sizes[-2:])) if sizes else 1 << 20


# ----------------------------------------------------------------------------- build front


class _Proxy:
    """Forwards everything to the real TensorRT-RTX object it wraps."""

    def __init__(self, real: Any) -> None:
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real, name, value)


class StandinProfile(_Proxy):
    def __init__(self, real: Any) -> None:
        super().__init__(real)
        object.__setattr__(self, "shapes", {})

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._real.set_shape(input, min, opt, max)
        self.shapes[input] = tuple(tuple(int(d) for d in dims) for dims in (min, opt, max))


class StandinConfig(_Proxy):
    def __init__(self, real: Any, flavour: str, module: Any) -> None:
        super().__init__(real)
        object.__setattr__(self, "profiles", [])
        # TensorRT 10/11 enable TF32 for fp32 layers by default; the real RTX config has no such default
        object.__setattr__(self, "tf32", flavour == "tensorrt")
        object.__setattr__(self, "_module", module)

    def add_optimization_profile(self, profile: StandinProfile) -> int:
        self.profiles.append(profile.shapes)
        return int(self._real.add_optimization_profile(profile._real))

    def clear_flag(self, flag: Any) -> None:
        if flag == self._module.BuilderFlag.TF32:
            object.__setattr__(self, "tf32", False)
        self._real.clear_flag(flag)

    def set_flag(self, flag: Any) -> None:
        if flag == self._module.BuilderFlag.TF32:
            object.__setattr__(self, "tf32", True)
        self._real.set_flag(flag)


class StandinParser(_Proxy):
    def __init__(self, real: Any) -> None:
        super().__init__(real)
        object.__setattr__(self, "onnx", None)

    def parse_from_file(self, model: str) -> bool:
        object.__setattr__(self, "onnx", Path(model).read_bytes())
        return bool(self._real.parse_from_file(model))

    def parse(self, model: bytes, path: str | None = None) -> bool:
        object.__setattr__(self, "onnx", bytes(model))
        return bool(self._real.parse(model) if path is None else self._real.parse(model, path))


@dataclass
class _Network:
    real: Any
    parser: StandinParser | None = None


class StandinBuilder(_Proxy):
    def __init__(self, real: Any, flavour: StandinFlavour) -> None:
        super().__init__(real)
        object.__setattr__(self, "_flavour", flavour)
        object.__setattr__(self, "_networks", {})

    def create_network(self, flags: int = 0) -> Any:
        network = self._real.create_network(flags)
        self._networks[id(network)] = _Network(network)
        return network

    def create_builder_config(self) -> StandinConfig:
        return StandinConfig(self._real.create_builder_config(), self._flavour.flavour, self._flavour)

    def create_optimization_profile(self) -> StandinProfile:
        return StandinProfile(self._real.create_optimization_profile())

    def build_serialized_network(self, network: Any, config: StandinConfig) -> bytes | None:
        flavour = self._flavour
        parser = flavour.parsers.get(id(network))
        if parser is None or parser.onnx is None:
            raise AssertionError("stand-in: build_serialized_network on a network no OnnxParser filled")
        if not config.profiles:
            flavour.log_error("Network has dynamic or shape inputs, but no optimization profile has been defined.")
            return None
        io = []
        for i in range(network.num_inputs):
            t = network.get_input(i)
            io.append({"name": t.name, "mode": "input", "dtype": t.dtype.name, "dims": list(t.shape)})
        for i in range(network.num_outputs):
            t = network.get_output(i)
            io.append({"name": t.name, "mode": "output", "dtype": t.dtype.name, "dims": list(t.shape)})
        if flavour.flavour == "tensorrt-rtx":
            n = config.num_compute_capabilities
            if n < 1:
                flavour.log_error("no compute capability set for an ahead-of-time build")
                return None
            targets = [config.get_compute_capability(i).name for i in range(n)]
        else:  # TensorRT builds for the GPU current in this thread
            cudart = flavour.cudart
            spec = cudart.devices[cudart.current_device()]
            targets = [f"SM{spec.major}{spec.minor}"]
        header = {
            "flavour": flavour.flavour,
            "version": flavour.__version__,
            "targets": targets,
            "profiles": [{name: [list(s) for s in shapes] for name, shapes in p.items()} for p in config.profiles],
            "io": io,
            "tf32": bool(config.tf32),
        }
        flavour.builds.append(header)
        return MAGIC + json.dumps(header).encode() + b"\n" + parser.onnx


# ----------------------------------------------------------------------------- runtime


class StandinRuntimeCache:
    def __init__(self) -> None:
        self.blob = b""

    def serialize(self) -> bytes:
        return b"STANDIN-RTX-CACHE" + self.blob

    def deserialize(self, blob: bytes) -> bool:
        data = bytes(blob)
        if not data.startswith(b"STANDIN-RTX-CACHE"):
            return False
        self.blob = data[len(b"STANDIN-RTX-CACHE") :]
        return True

    def reset(self) -> None:
        self.blob = b""


class StandinRuntimeConfig:
    def __init__(self) -> None:
        self.cache: StandinRuntimeCache | None = None
        self.cuda_graph_strategy: Any = None

    def create_runtime_cache(self) -> StandinRuntimeCache:
        return StandinRuntimeCache()

    def set_runtime_cache(self, cache: StandinRuntimeCache) -> bool:
        self.cache = cache
        return True

    def get_runtime_cache(self) -> StandinRuntimeCache | None:
        return self.cache


class StandinEngine:
    def __init__(self, runtime: StandinRuntime, header: dict[str, Any], onnx: bytes) -> None:
        self.runtime = runtime
        self.flavour = runtime.flavour
        self.device = runtime.device
        self.header = header
        self.onnx = onnx
        self.io = header["io"]
        self.profiles = header["profiles"]
        self.contexts: list[weakref.ref[StandinContext]] = []
        first_input = self.io[0]["name"]
        self.device_memory_size_v2 = max(
            _activation_bytes(onnx, tuple(p[first_input][2])) for p in self.profiles
        )  # static allocation per context: the largest profile's max shape
        self._scale: int | None = None

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tensor_name(self, index: int) -> str:
        return str(self.io[index]["name"])

    def _tensor(self, name: str) -> dict[str, Any]:
        for t in self.io:
            if t["name"] == name:
                return t
        raise KeyError(name)

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self.flavour.DataType, self._tensor(name)["dtype"])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensor(name)["dims"])

    def get_tensor_mode(self, name: str) -> str:
        return str(self._tensor(name)["mode"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.profiles[profile_index][name]]

    def create_runtime_config(self) -> StandinRuntimeConfig:
        if self.flavour.flavour != "tensorrt-rtx":
            raise AttributeError("'ICudaEngine' object has no attribute 'create_runtime_config' (TensorRT-RTX only)")
        return StandinRuntimeConfig()

    def create_execution_context(self, config: Any = None) -> StandinContext | None:
        cudart = self.flavour.cudart
        here = cudart.current_device()
        if here != self.device:
            self.flavour.log_error(
                f"createExecutionContext: the engine was deserialized on device {self.device}, device {here} is current"
            )
            return None
        if self.flavour.flavour == "tensorrt-rtx" and not isinstance(config, StandinRuntimeConfig):
            config = StandinRuntimeConfig()  # RTX makes a default one, owned by the context
            owned = True
        else:
            owned = False
        size = self.device_memory_size_v2
        spec = cudart.devices[self.device]
        if cudart.used[self.device] + size > spec.memory:
            self.flavour.log_error(
                f"Requested amount of GPU memory ({size} bytes) could not be allocated. There may not be enough "
                "free memory for allocation to succeed."
            )
            return None
        cudart.charge(self.device, size)
        context = StandinContext(self, config, owned)
        self.contexts.append(weakref.ref(context))
        return context


class StandinContext:
    def __init__(self, engine: StandinEngine, config: StandinRuntimeConfig | None, owned: bool) -> None:
        self.engine = engine
        self.device = engine.device
        self._config_ref = weakref.ref(config) if config is not None else None
        self._owned_config = config if owned else None
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.compiled: set[tuple[int, ...]] = set()  # RTX: shapes whose kernels are compiled
        # the input shape a plain (uncaptured) enqueueV3 was made for since the last shape change (host side),
        # and the shape the context's internal state on the device is set up for (written in stream order)
        self.settled: tuple[int, ...] | None = None
        self.state: tuple[int, ...] | None = None
        self.executions = 0
        self.released = False
        self._finalizer = weakref.finalize(
            self, StandinContext._free, engine.flavour.cudart, self.device, engine.device_memory_size_v2
        )

    @staticmethod
    def _free(cudart: StandinCudart, device: int, size: int) -> None:
        cudart.used[device] -= size

    def _error(self, message: str) -> bool:
        self.engine.flavour.log_error(message)
        return False

    def set_input_shape(self, name: str, shape: Any) -> bool:
        dims = tuple(int(d) for d in shape)
        tensor = self.engine._tensor(name)
        if tensor["mode"] != "input":
            return self._error(f"IExecutionContext::setInputShape: {name} is not an input")
        fixed = tensor["dims"]
        if len(dims) != len(fixed) or any(f != -1 and f != d for f, d in zip(fixed, dims, strict=True)):
            return self._error(f"IExecutionContext::setInputShape: {name} {dims} does not match the network {fixed}")
        lo, _, hi = self.engine.profiles[0][name]
        if any(not a <= d <= b for a, d, b in zip(lo, dims, hi, strict=True)):
            return self._error(
                f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, condition: "
                f"engineDims.d[i] <= profileMaxDims.d[i] && profileMinDims.d[i] <= engineDims.d[i]. Set dimension "
                f"{list(dims)} for tensor {name} is outside the optimization profile {list(lo)}..{list(hi)}.)"
            )
        if self.shapes.get(name) != dims:
            self.settled = None  # an input shape change: the next enqueueV3 must be a plain one
        self.shapes[name] = dims
        return True

    def _output_shape(self, name: str) -> tuple[int, ...]:
        inp = next(t["name"] for t in self.engine.io if t["mode"] == "input")
        if inp not in self.shapes:
            return tuple(self.engine._tensor(name)["dims"])
        scale = self.engine.flavour.scale_of(self.engine)
        n, h, w, _ = self.shapes[inp]
        dims = self.engine._tensor(name)["dims"]
        if dims[-1] in (-1, 3) and len(dims) == 4 and dims[1] != 3:  # NHWC
            return (n, h * scale, w * scale, 3)
        n, _c, h, w = self.shapes[inp]
        return (n, 3, h * scale, w * scale)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        tensor = self.engine._tensor(name)
        if tensor["mode"] == "input":
            return self.shapes.get(name, tuple(tensor["dims"]))
        return self._output_shape(name)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.engine._tensor(name)
        self.addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self.addresses.get(name, 0)

    def is_stream_capturable(self, stream: int) -> bool:
        if self.engine.flavour.flavour == "tensorrt-rtx":
            return False  # engines built without REQUIRE_USER_ALLOCATION
        inp = next(t["name"] for t in self.engine.io if t["mode"] == "input")
        return self.shapes.get(inp) in self.compiled

    def execute_async_v3(self, stream_handle: int) -> bool:
        flavour = self.engine.flavour
        cudart = flavour.cudart
        if self._config_ref is not None and self._config_ref() is None:
            return self._error("IExecutionContext::enqueueV3: the IRuntimeConfig of this context was destroyed")
        here = cudart.current_device()
        if here != self.device:
            return self._error(
                f"IExecutionContext::enqueueV3: the context belongs to device {self.device}, device {here} is current"
            )
        inputs = [t for t in self.engine.io if t["mode"] == "input"]
        outputs = [t for t in self.engine.io if t["mode"] == "output"]
        for t in inputs:
            if t["name"] not in self.shapes:
                return self._error(f"IExecutionContext::enqueueV3: input shape of {t['name']} not specified")
        for t in inputs + outputs:
            if t["name"] not in self.addresses:
                return self._error(f"IExecutionContext::enqueueV3: address of {t['name']} not set")
        jobs = []
        try:
            with cudart._lock:
                stream = cudart.stream_of(stream_handle)
                capturing = stream.capture is not None
                for t in inputs + outputs:
                    shape = self.get_tensor_shape(t["name"])
                    nbytes = int(np.prod(shape)) * np.dtype(_NP[t["dtype"]]).itemsize
                    alloc = cudart.find(self.addresses[t["name"]], nbytes, "device")
                    if alloc.device != self.device:
                        return self._error(
                            f"IExecutionContext::enqueueV3: {t['name']} is on device {alloc.device}, "
                            f"the context on {self.device}"
                        )
                    jobs.append((t, shape, nbytes))
        except CudaFault as fault:
            return self._error(f"IExecutionContext::enqueueV3: {fault.why}")
        inp_shape = self.shapes[inputs[0]["name"]]
        if capturing and (flavour.flavour == "tensorrt-rtx" or inp_shape != self.settled):
            # TensorRT: the first enqueueV3 after a shape change sets up internal state, which a capture cannot
            # record (NVIDIA: call enqueueV3 once after an input shape change, then capture); TensorRT-RTX captures itself
            # (the runtime config's CUDA-graph strategy) and an engine without REQUIRE_USER_ALLOCATION is
            # not capturable from outside (TensorRT-RTX 1.2 release notes)
            return self._error(
                "IExecutionContext::enqueueV3: this enqueue cannot be captured in a CUDA graph "
                + ("(TensorRT-RTX captures itself)" if flavour.flavour == "tensorrt-rtx" else "before one plain run")
            )
        self.compiled.add(inp_shape)
        if not capturing:
            self.settled = inp_shape
        session = _session(self.engine.onnx)
        addresses = dict(self.addresses)

        def kernel() -> None:
            if not capturing:
                self.state = inp_shape  # the plain run's set-up, in stream order
            elif self.state != inp_shape:
                raise CudaFault(
                    cudaError_t.cudaErrorLaunchFailure,
                    f"a CUDA graph of enqueueV3 for {inp_shape} ran on internal state set up for {self.state} "
                    "(no plain enqueueV3 after the shape change)",
                )
            feeds = {}
            for t, shape, nbytes in jobs:
                if t["mode"] == "input":
                    raw = np.frombuffer(cudart.view(addresses[t["name"]], nbytes), dtype=_NP[t["dtype"]])
                    feeds[t["name"]] = raw.reshape(shape).copy()
            results = session.run([t["name"] for t in outputs], feeds)
            for (t, shape, nbytes), value in zip([j for j in jobs if j[0]["mode"] == "output"], results, strict=True):
                value = np.ascontiguousarray(value, dtype=_NP[t["dtype"]])
                if value.shape != shape:
                    raise CudaFault(
                        cudaError_t.cudaErrorLaunchFailure, f"{t['name']} came out {value.shape}, not {shape}"
                    )
                cudart.view(addresses[t["name"]], nbytes)[:] = value.reshape(-1).view(np.uint8)
            cudart.kernels += 1

        try:
            with cudart._lock:
                cudart.launch(stream_handle, "enqueueV3", kernel)
        except CudaFault as fault:
            return self._error(f"IExecutionContext::enqueueV3: CUDA error {fault.code.name} ({fault.why})")
        self.executions += 1
        return True


_NP = {"UINT8": np.uint8, "FLOAT": np.float32, "HALF": np.float16}


class StandinRuntime:
    def __init__(self, flavour: StandinFlavour, logger: Any) -> None:
        self.flavour = flavour
        self.logger = logger
        self.device = flavour.cudart.current_device()
        flavour.runtimes.append(weakref.ref(self))

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> StandinEngine | None:
        data = bytes(serialized_engine)
        flavour = self.flavour
        flavour.deserialized += 1
        if not data.startswith(MAGIC):
            flavour.log_error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (magic tag does not match)")
            return None
        header_line, _, onnx = data[len(MAGIC) :].partition(b"\n")
        header = json.loads(header_line)
        if header["flavour"] != flavour.flavour or header["version"] != flavour.__version__:
            flavour.log_error(
                f"IRuntime::deserializeCudaEngine: Error Code 1: Serialization (the plan was built by "
                f"{header['flavour']} {header['version']}, this is {flavour.flavour} {flavour.__version__})"
            )
            return None
        here = flavour.cudart.current_device()
        if here != self.device:
            flavour.log_error(f"deserializeCudaEngine: the runtime was made on device {self.device}, {here} is current")
            return None
        spec = flavour.cudart.devices[here]
        sm = f"SM{spec.major}{spec.minor}"
        if sm not in header["targets"]:
            flavour.log_error(
                f"IRuntime::deserializeCudaEngine: Error Code 1: the engine was built for {header['targets']}, "
                f"this GPU is {sm}"
            )
            return None
        return StandinEngine(self, header, onnx)


# ----------------------------------------------------------------------------- the module


class StandinFlavour(types.ModuleType):
    """A module object standing for ``tensorrt`` or ``tensorrt_rtx``: the real RTX module's build API
    (through the fronts above), the stand-in runtime, and the flavour's own name and version."""

    def __init__(self, flavour: str, real: Any, cudart: StandinCudart) -> None:
        super().__init__("standin_tensorrt_rtx" if flavour == "tensorrt-rtx" else "standin_tensorrt")
        self.flavour = flavour
        self.real = real
        self.cudart = cudart
        self.__version__ = "1.7.1-standin" if flavour == "tensorrt-rtx" else "10.13.0-standin"
        self.builds: list[dict[str, Any]] = []
        self.parsers: dict[int, StandinParser] = {}
        self.runtimes: list[weakref.ref[StandinRuntime]] = []
        self.errors: list[str] = []
        self.deserialized = 0  # plans deserialized (each costs seconds on a real GPU)
        self._loggers: list[Any] = []
        self._scales: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "ComputeCapability" and self.flavour != "tensorrt-rtx":
            raise AttributeError(name)
        return getattr(self.real, name)

    # the classes the project instantiates
    def Builder(self, logger: Any) -> StandinBuilder:
        self._loggers.append(logger)
        return StandinBuilder(self.real.Builder(logger), self)

    def OnnxParser(self, network: Any, logger: Any) -> StandinParser:
        parser = StandinParser(self.real.OnnxParser(network, logger))
        self.parsers[id(network)] = parser
        return parser

    def Runtime(self, logger: Any) -> StandinRuntime:
        self._loggers.append(logger)
        return StandinRuntime(self, logger)

    def log_error(self, message: str) -> None:
        self.errors.append(message)
        severity = self.real.ILogger.Severity.ERROR
        for logger in self._loggers[-1:]:
            logger.log(severity, message)

    def scale_of(self, engine: StandinEngine) -> int:
        """The network's scale, from a probe run at the profile's minimum shape (cached per engine)."""
        key = id(engine)
        if key not in self._scales:
            inp = engine.io[0]
            lo = engine.profiles[0][inp["name"]][0]
            probe = np.zeros(lo, dtype=_NP[inp["dtype"]])
            out = _session(engine.onnx).run(None, {inp["name"]: probe})[0]
            nhwc = len(lo) == 4 and lo[-1] == 3
            self._scales[key] = out.shape[1] // lo[1] if nhwc else out.shape[2] // lo[2]
        return self._scales[key]
