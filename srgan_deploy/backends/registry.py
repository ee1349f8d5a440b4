"""Backend registry: the one owner of "is this backend usable here?" and of the ``auto`` ladder.

``choose`` turns a backend name and a ``Request`` into typed per-backend options, resolving
every ``auto`` (backend, device, precision) explicitly and saying what it chose. ``create``
pairs those options with a loader for the model source. ``info`` only reports what this says.

Order of preference for ``auto``, fastest first (measured, see README): on a GPU,
tensorrt-rtx on GeForce/RTX cards, else tensorrt, then onnxruntime on CUDA, then torch on
CUDA; on a CPU, openvino (1.1-1.2x onnxruntime in fp32, about 2x in bf16), then onnxruntime
(1.1-1.6x torch at video sizes), then torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import (
    BackendOptions,
    BicubicOptions,
    OpenVinoOptions,
    OrtOptions,
    Request,
    TensorRTOptions,
    TensorRTRtxOptions,
    TorchOptions,
)
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import BackendUnavailableError, ConfigError, UnknownBackendError
from srgan_deploy.sources import ModelSource, model_source

# name -> (module, class); imported only when needed, so `--help` and `info` stay light
_CLASSES: dict[str, tuple[str, str]] = {
    "tensorrt": ("srgan_deploy.backends.trt", "TensorRTBackend"),
    "tensorrt-rtx": ("srgan_deploy.backends.trt", "TensorRTRtxBackend"),
    "onnxruntime": ("srgan_deploy.backends.ort", "OnnxRuntimeBackend"),
    "openvino": ("srgan_deploy.backends.openvino", "OpenVinoBackend"),
    "torch": ("srgan_deploy.backends.torch", "TorchBackend"),
    "bicubic": ("srgan_deploy.backends.bicubic", "BicubicBackend"),
}
BACKEND_NAMES = ("auto", *_CLASSES)
MODEL_BACKENDS = ("tensorrt", "tensorrt-rtx", "onnxruntime", "openvino", "torch")


def backend_class(name: str) -> type[Backend[Any]]:
    if name not in _CLASSES:
        raise UnknownBackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")
    module, cls = _CLASSES[name]
    result: type[Backend[Any]] = getattr(importlib.import_module(module), cls)
    return result


def availability(device: int = 0) -> dict[str, tuple[bool, str]]:
    """(usable, why) per backend on CUDA device ``device`` (the GPU a run would use)."""
    return {name: backend_availability(name, device) for name in _CLASSES}


def backend_availability(name: str, device: int = 0) -> tuple[bool, str]:
    """The backend's own answer, and for TensorRT-RTX whether it can target this GPU at all: its plans
    run only on the compute capabilities it builds for (no Volta, no Hopper, no datacenter Blackwell), so
    an installed RTX on an H100 is not usable, and ``auto`` must move on to full TensorRT."""
    ok, why = backend_class(name).availability()
    if ok and name == "tensorrt-rtx":
        return rtx_targets_gpu(device, why)
    return ok, why


def rtx_targets_gpu(device: int, detail: str) -> tuple[bool, str]:
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


def options_for(name: str, request: Request, device: str) -> BackendOptions:
    """The typed options of backend ``name`` for this request on ``device`` ("cpu" or "cuda[:N]")."""
    if name in ("tensorrt", "tensorrt-rtx"):
        cls = TensorRTRtxOptions if name == "tensorrt-rtx" else TensorRTOptions
        return cls(
            device=_device_index(device),
            precision=_gpu_precision(request.precision, name),
            tile=request.tile,
            slots=request.slots,
            cache_dir=request.cache_dir,
            max_shape=request.max_shape,
            memory_budget=request.memory_budget,
        )
    if name == "onnxruntime":
        on_cpu = device == "cpu"
        precision = request.precision
        if precision == "auto":
            precision = "fp32" if on_cpu else "fp16"
        if on_cpu and precision != "fp32":
            raise ConfigError(f"onnxruntime on CPU runs fp32, not {precision}; try -b openvino for bf16")
        return OrtOptions(
            device=device,
            precision=precision,
            tile=request.tile,
            threads=request.threads,
            cache_dir=request.cache_dir,
            memory_budget=request.memory_budget,
        )
    if name == "openvino":
        precision = request.precision
        if precision == "auto":
            precision = "bf16" if cpu_has_bf16() else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"openvino runs fp32 or bf16 on CPU, not {precision}")
        return OpenVinoOptions(
            precision=precision,
            tile=request.tile,
            threads=request.threads,
            cache_dir=request.cache_dir,
            memory_budget=request.memory_budget,
        )
    if name == "torch":
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
    if name == "bicubic":
        return BicubicOptions(tile=request.tile, memory_budget=request.memory_budget)
    raise UnknownBackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")


def _explicit_device(name: str, request: Request) -> str:
    if name in ("tensorrt", "tensorrt-rtx"):
        if request.device == "cpu":
            raise ConfigError(f"{name} runs on an NVIDIA GPU; drop --device cpu or pick a CPU backend")
        return request.device if request.device != "auto" else "cuda"
    if name in ("openvino", "bicubic"):
        if request.device.startswith("cuda"):
            raise ConfigError(f"{name} runs on the CPU here; use --device cpu or auto")
        return "cpu"
    if request.device != "auto":
        return request.device
    if name == "onnxruntime":
        return "cuda" if ort_has_cuda() else "cpu"
    return "cuda" if torch_has_cuda() else "cpu"


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
    notify: Callable[[str], None] | None = None,
) -> Backend[Any]:
    """A not-yet-opened backend for ``choice``, with the loader for ``source`` composed (lazily)."""
    from srgan_deploy import sources

    src = model_source(source)
    say = notify or _stderr_notify
    options = choice.options
    cls = backend_class(choice.name)
    if isinstance(options, TensorRTOptions):
        root = cache_dir(options.cache_dir)
        return cls(options, sources.engine_loader(src, options, choice.name, root, say))  # type: ignore[call-arg]
    if isinstance(options, OrtOptions | OpenVinoOptions):
        root = cache_dir(options.cache_dir)
        # onnxruntime on a GPU at fp16: its TensorRT provider gets the fp16-core graph (see Fp16CoreFromOnnx)
        fp16_core = isinstance(options, OrtOptions) and options.precision == "fp16" and options.device != "cpu"
        return cls(options, sources.onnx_loader(src, root, choice.name, fp16_core))  # type: ignore[call-arg]
    if isinstance(options, TorchOptions):
        return cls(options, sources.generator_loader(src, choice.name))  # type: ignore[call-arg]
    return cls(options, sources.scale_loader(src))  # type: ignore[call-arg]


def backend_for(
    name: str, request: Request | None = None, source: ModelSource | str | None = None
) -> tuple[Backend[Any], Choice]:
    """``choose`` then ``create``: the one call a command makes to get its (not yet opened) backend."""
    choice = choose(name, request)
    return create(choice, source), choice


def _stderr_notify(message: str) -> None:
    import sys

    print(f"srgan-deploy: {message}", file=sys.stderr)


__all__ = [
    "BACKEND_NAMES",
    "Choice",
    "availability",
    "backend_availability",
    "backend_class",
    "backend_for",
    "choose",
    "create",
]
