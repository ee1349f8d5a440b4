"""Backend registry: one entry per backend, the one owner of "is this backend usable here?" and of ``auto``.

Everything the rest of the package knows about a backend is its ``BackendEntry``: name, class, options,
availability, device rule, memory cost and the kind of model file it loads. ``choose`` turns a backend
name and a ``Request`` into the entry's typed options, resolving every ``auto`` (backend, device,
precision) explicitly and saying what it chose; ``create`` pairs those options with a loader for the
model source. ``info``, ``bench`` and the job executors only read entries. Adding a backend is its module
plus one entry in ``ENTRIES`` (and a rung in ``choose``'s ladder only if ``auto`` should ever pick it).

Order of preference for ``auto``, fastest first (measured, see docs/backends.md and docs/performance.md): on a GPU,
tensorrt-rtx on GeForce/RTX cards, else tensorrt, then onnxruntime on CUDA, then torch on
CUDA; on a CPU, openvino (1.1-1.2x onnxruntime in fp32, about 2x in bf16), then onnxruntime
(1.1-1.6x torch at video sizes), then torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from srgan_deploy.backends.base import Backend, MemoryCost, measured_cost
from srgan_deploy.backends.options import (
    BackendOptions,
    BicubicOptions,
    OpenVinoOptions,
    OrtOptions,
    Request,
    TensorRTOptions,
    TensorRTRtxOptions,
    TorchOptions,
    TritonOptions,
)
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import BackendUnavailableError, ConfigError, UnknownBackendError
from srgan_deploy.notices import Notify, say_on_stderr
from srgan_deploy.sources import ModelSource, model_source

DeviceRule = Literal["cpu", "cuda", "either"]
# What the backend runs: weights (the PyTorch generator), an ONNX graph (exported from weights on first use),
# a TensorRT plan (built from the ONNX on first use), or no model file at all (only the model's scale).
ModelFile = Literal["weights", "onnx", "plan", "none"]


@dataclass(frozen=True)
class BackendEntry:
    """One backend, as everything outside its module sees it (vs-mlrt's one dataclass per backend)."""

    name: str
    backend: str  # "module:Class", imported only when used, so `--help` and `info` stay light
    options: type[Any]  # the options dataclass its constructor takes
    device: DeviceRule
    model: ModelFile
    make_options: Callable[[Request, str], BackendOptions]  # (request, "cpu" or "cuda[:N]") -> options
    has_cuda: Callable[[], bool] = lambda: False  # "either" backends: can it use a GPU here (auto's device)
    targets: Callable[[int, str], tuple[bool, str]] | None = None  # can it run on GPU N, once installed
    memory: MemoryCost | None = None  # bytes per LR input pixel; None: memory.py's measured table
    baseline: bool = False  # not a model (bicubic): left out of `bench -b all`
    remote: bool = False  # a client of a server (triton): runs only when named, never in `bench -b all`

    def backend_class(self) -> type[Backend[Any]]:
        module, cls = self.backend.split(":")
        result: type[Backend[Any]] = getattr(importlib.import_module(module), cls)
        return result

    def available(self, device: int = 0) -> tuple[bool, str]:
        ok, why = self.backend_class().availability()
        if ok and self.targets is not None:
            return self.targets(device, why)
        return ok, why

    def memory_cost(self) -> MemoryCost:
        return self.memory or measured_cost(self.name)

    def device_of(self, options: Any) -> str:
        """Where ``options`` run: "cpu", "cuda" or "cuda:N"."""
        if self.device == "cpu":
            return "cpu"
        value = options.device
        return f"cuda:{value}" if isinstance(value, int) else str(value)

    def on_device(self, options: Any, device: str) -> Any:
        """``options`` moved to GPU ``device`` ("cuda:N"); a CPU-only backend's are left as they are.
        TensorRT's options number the GPU, the others name it."""
        if self.device == "cpu":
            return options
        if isinstance(options.device, int):
            return dataclasses.replace(options, device=_device_index(device))
        return dataclasses.replace(options, device=device)


def availability(device: int = 0) -> dict[str, tuple[bool, str]]:
    """(usable, why) per backend on CUDA device ``device`` (the GPU a run would use)."""
    return {name: backend_availability(name, device) for name in REGISTRY}


def backend_availability(name: str, device: int = 0) -> tuple[bool, str]:
    return entry_for(name).available(device)


def entry_for(name: str) -> BackendEntry:
    if name not in REGISTRY:
        raise UnknownBackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")
    return REGISTRY[name]


def backend_class(name: str) -> type[Backend[Any]]:
    return entry_for(name).backend_class()


def rtx_targets_gpu(device: int, detail: str) -> tuple[bool, str]:
    """TensorRT-RTX's plans run only on the compute capabilities it builds for (no Volta, no Hopper, no
    datacenter Blackwell), so an installed RTX on an H100 is not usable, and ``auto`` must move on to full
    TensorRT."""
    from srgan_deploy.errors import SrganDeployError
    from srgan_deploy.gpu.cuda_rt import device_properties
    from srgan_deploy.gpu.trt_runtime import RTX_TARGETS, sm_name

    try:
        gpu = device_properties(device)
    except SrganDeployError:
        return True, detail  # cannot ask: opening the backend will say what is wrong
    if sm_name(gpu.compute_capability) in RTX_TARGETS:
        return True, detail
    supported = ", ".join(t[2:] for t in RTX_TARGETS)
    return False, (
        f"TensorRT-RTX cannot run on {gpu.name} (SM {gpu.compute_capability}; it targets SM {supported}); "
        "use -b tensorrt"
    )


@dataclass(frozen=True)
class Choice:
    name: str
    options: BackendOptions
    reason: str


# --------------------------------------------------------------------------- facts about this machine


def ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_name(device: int = 0) -> str | None:
    """CUDA GPU ``device``'s name through cuda-python (no torch needed), or None."""
    from srgan_deploy.errors import SrganDeployError
    from srgan_deploy.gpu.cuda_rt import device_count, device_properties, has_cuda_python

    if not has_cuda_python():
        return None
    try:
        return device_properties(device).name if device_count() > device else None
    except SrganDeployError:
        return None


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX-BF16: where OpenVINO's bf16 runs natively (elsewhere it would be emulated)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            text = handle.read(200_000)
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def is_rtx_card(name: str | None) -> bool:
    return name is not None and any(tag in name for tag in ("RTX", "GeForce", "TITAN"))


# --------------------------------------------------------------------------- options per backend


def _gpu_precision(precision: str, who: str) -> str:
    if precision == "auto":
        return "fp16"
    if precision not in ("fp16", "fp32"):
        raise ConfigError(f"{who} runs fp16 or fp32, not {precision}")
    return precision


def _device_index(device: str) -> int:
    return int(device.split(":")[1]) if device.startswith("cuda:") else 0


def _tensorrt_options(name: str, cls: type[TensorRTOptions]) -> Callable[[Request, str], BackendOptions]:
    def make(request: Request, device: str) -> BackendOptions:
        return cls(
            device=_device_index(device),
            precision=_gpu_precision(request.precision, name),
            tile=request.tile,
            slots=request.slots,
            cache_dir=request.cache_dir,
            max_shape=request.max_shape,
            memory_budget=request.memory_budget,
        )

    return make


def _ort_options(request: Request, device: str) -> BackendOptions:
    on_cpu = device == "cpu"
    precision = request.precision
    if precision == "auto":
        precision = "fp32" if on_cpu else "fp16"
    if on_cpu and precision != "fp32":
        where = f"try -b openvino for {precision}" if precision in ("bf16", "int8") else "use --precision fp32"
        raise ConfigError(f"onnxruntime on CPU runs fp32, not {precision}; {where}")
    return OrtOptions(
        device=device,
        precision=precision,
        tile=request.tile,
        threads=request.threads,
        cache_dir=request.cache_dir,
        memory_budget=request.memory_budget,
    )


def _openvino_options(request: Request, device: str) -> BackendOptions:
    precision = request.precision
    if precision == "auto":
        precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision not in ("fp32", "bf16", "int8"):
        raise ConfigError(f"openvino runs fp32, bf16 or int8 on CPU, not {precision}")
    return OpenVinoOptions(
        precision=precision,
        tile=request.tile,
        threads=request.threads,
        cache_dir=request.cache_dir,
        memory_budget=request.memory_budget,
    )


def _torch_options(request: Request, device: str) -> BackendOptions:
    precision = request.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else "fp16"
    return TorchOptions(
        device=device,
        precision=precision,
        tile=request.tile,
        threads=request.threads,
        slots=request.slots,
        memory_budget=request.memory_budget,
    )


def _bicubic_options(request: Request, device: str) -> BackendOptions:
    return BicubicOptions(tile=request.tile, memory_budget=request.memory_budget)


def _triton_options(request: Request, device: str) -> BackendOptions:
    return TritonOptions(
        url=request.triton.url,
        model=request.triton.model,
        timeout=request.triton.timeout,
        slots=request.slots,
        tile=request.tile,
        memory_budget=request.memory_budget,
    )


# The machine facts are looked up by name when called, so a test can replace them on this module.
ENTRIES: tuple[BackendEntry, ...] = (
    BackendEntry(
        "tensorrt",
        "srgan_deploy.backends.trt:TensorRTBackend",
        TensorRTOptions,
        "cuda",
        "plan",
        _tensorrt_options("tensorrt", TensorRTOptions),
    ),
    BackendEntry(
        "tensorrt-rtx",
        "srgan_deploy.backends.trt:TensorRTRtxBackend",
        TensorRTRtxOptions,
        "cuda",
        "plan",
        _tensorrt_options("tensorrt-rtx", TensorRTRtxOptions),
        targets=rtx_targets_gpu,
    ),
    BackendEntry(
        "onnxruntime",
        "srgan_deploy.backends.ort:OnnxRuntimeBackend",
        OrtOptions,
        "either",
        "onnx",
        _ort_options,
        has_cuda=lambda: ort_has_cuda(),
    ),
    BackendEntry(
        "openvino",
        "srgan_deploy.backends.openvino:OpenVinoBackend",
        OpenVinoOptions,
        "cpu",
        "onnx",
        _openvino_options,
    ),
    BackendEntry(
        "torch",
        "srgan_deploy.backends.torch:TorchBackend",
        TorchOptions,
        "either",
        "weights",
        _torch_options,
        has_cuda=lambda: torch_has_cuda(),
    ),
    BackendEntry(
        "bicubic",
        "srgan_deploy.backends.bicubic:BicubicBackend",
        BicubicOptions,
        "cpu",
        "none",
        _bicubic_options,
        baseline=True,
    ),
    BackendEntry(
        "triton",
        "srgan_deploy.backends.triton:TritonBackend",
        TritonOptions,
        "cpu",
        "none",
        _triton_options,
        remote=True,
    ),
)
REGISTRY: dict[str, BackendEntry] = {entry.name: entry for entry in ENTRIES}
BACKEND_NAMES = ("auto", *REGISTRY)
MODEL_BACKENDS = tuple(entry.name for entry in ENTRIES if not entry.baseline and not entry.remote)


def options_for(name: str, request: Request, device: str) -> BackendOptions:
    """The typed options of backend ``name`` for this request on ``device`` ("cpu" or "cuda[:N]")."""
    return entry_for(name).make_options(request, device)


def _explicit_device(name: str, request: Request) -> str:
    entry = entry_for(name)
    if entry.device == "cuda":
        if request.device == "cpu":
            raise ConfigError(f"{name} runs on an NVIDIA GPU; drop --device cpu or pick a CPU backend")
        return request.device if request.device != "auto" else "cuda"
    if entry.device == "cpu":
        if request.device.startswith("cuda"):
            raise ConfigError(f"{name} runs on the CPU here; use --device cpu or auto")
        return "cpu"
    if request.device != "auto":
        return request.device
    return "cuda" if entry.has_cuda() else "cpu"


def _describe(options: BackendOptions) -> str:
    precision = getattr(options, "precision", None)
    return f", precision {precision}" if precision else ""


def choose(name: str, request: Request | None = None) -> Choice:
    """Resolve ``auto`` (and check an explicit name) into a concrete, available backend with typed options."""
    request = request or Request()
    index = _device_index(request.device)
    if name != "auto":
        ok, why = backend_availability(name, index)
        if not ok:
            raise BackendUnavailableError(f"backend '{name}' is not available: {why}")
        options = options_for(name, request, _explicit_device(name, request))
        return Choice(name, options, f"as requested{_describe(options)}")
    if request.precision == "int8":  # calibrated int8 graphs run on OpenVINO only: auto goes there, GPU or not
        if request.device.startswith("cuda"):
            raise ConfigError(f"--precision int8 runs on the CPU (-b openvino), not on --device {request.device}")
        ok, why = backend_availability("openvino", index)
        if not ok:
            raise BackendUnavailableError(f"--precision int8 runs on openvino, which is not available: {why}")
        options = options_for("openvino", request, "cpu")
        return Choice("openvino", options, f"auto: int8 runs on openvino{_describe(options)}")
    avail = availability(index)
    wants_cpu = request.device == "cpu"
    gpu = None if wants_cpu else gpu_name(index)
    rtx_first = is_rtx_card(gpu)
    on_gpu = not wants_cpu
    ladder: list[tuple[str, str, bool]] = [
        ("tensorrt-rtx", "cuda", on_gpu and rtx_first and avail["tensorrt-rtx"][0]),
        ("tensorrt", "cuda", on_gpu and avail["tensorrt"][0]),
        ("tensorrt-rtx", "cuda", on_gpu and avail["tensorrt-rtx"][0]),
        ("onnxruntime", "cuda", on_gpu and avail["onnxruntime"][0] and ort_has_cuda()),
        ("torch", "cuda", on_gpu and avail["torch"][0] and torch_has_cuda()),
        ("openvino", "cpu", avail["openvino"][0] and not request.device.startswith("cuda")),
        ("onnxruntime", "cpu", avail["onnxruntime"][0]),
        ("torch", "cpu", avail["torch"][0]),
    ]
    for backend, device, ok in ladder:
        if ok:
            if request.device.startswith("cuda") and device == "cpu":
                raise BackendUnavailableError(
                    f"--device {request.device} asked for, but no GPU backend can run here; use --device cpu or auto"
                )
            chosen = request.device if request.device not in ("auto",) and device != "cpu" else device
            options = options_for(backend, request, chosen)
            return Choice(backend, options, f"auto: the fastest backend available here{_describe(options)}")
    raise BackendUnavailableError(
        "no backend can run here; install onnxruntime or torch (pip install 'srgan-deploy[cpu]')"
    )


def create(
    choice: Choice,
    source: ModelSource | str | None = None,
    notify: Notify | None = None,
) -> Backend[Any]:
    """A not-yet-opened backend for ``choice``, with the loader for ``source`` composed (lazily).

    ``notify`` gets what the loader and the backend say (an engine being built, an out-of-memory retry);
    by default it is printed on stderr. A job hands its event channel here."""
    entry = entry_for(choice.name)
    if not isinstance(choice.options, entry.options):
        raise ConfigError(f"backend '{entry.name}' takes {entry.options.__name__}, not {type(choice.options).__name__}")
    say = notify or say_on_stderr
    backend = entry.backend_class()(choice.options, _loader(entry, choice.options, model_source(source), say))  # type: ignore[call-arg]
    backend.notify = say
    backend.memory_cost = entry.memory_cost()
    return backend


def _loader(entry: BackendEntry, options: Any, source: ModelSource, say: Notify) -> Callable[[], Any]:
    """The loader of the kind of model file ``entry`` runs, for ``source``."""
    from srgan_deploy import sources

    if entry.model == "plan":
        return sources.engine_loader(source, options, entry.name, cache_dir(options.cache_dir), say)
    if entry.model == "onnx":
        # on a GPU at fp16 (onnxruntime's TensorRT provider) the graph is the fp16-core one, see Fp16CoreFromOnnx
        fp16_core = options.precision == "fp16" and entry.device_of(options) != "cpu"
        int8 = options.precision == "int8"
        return sources.onnx_loader(source, cache_dir(options.cache_dir), entry.name, fp16_core, say, int8=int8)
    if entry.model == "weights":
        return sources.generator_loader(source, entry.name)
    return sources.scale_loader(source)


def backend_for(
    name: str,
    request: Request | None = None,
    source: ModelSource | str | None = None,
    notify: Notify | None = None,
) -> tuple[Backend[Any], Choice]:
    """``choose`` then ``create``: the one call a command makes to get its (not yet opened) backend. The
    model source is resolved first, so a missing model file is the error a user sees first."""
    source = model_source(source)
    choice = choose(name, request)
    return create(choice, source, notify), choice


__all__ = [
    "BACKEND_NAMES",
    "ENTRIES",
    "MODEL_BACKENDS",
    "REGISTRY",
    "BackendEntry",
    "Choice",
    "availability",
    "backend_availability",
    "backend_class",
    "backend_for",
    "choose",
    "create",
    "entry_for",
]
