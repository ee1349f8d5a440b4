"""Backend registry and ``auto`` selection.

Order of preference, fastest first: tensorrt -> onnxruntime on CUDA -> torch on
CUDA -> onnxruntime on CPU -> torch on CPU. ``auto`` reports what it picked and why.
On CPU, onnxruntime runs the deployed graph (sub-pixel tail) 1.1-1.6x faster than
the torch backend at video sizes (benchmarks/results/*-compare.json).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from srgan_deploy.backends.base import Backend, BackendOptions
from srgan_deploy.errors import BackendUnavailableError, UnknownBackendError


def backend_classes() -> dict[str, type[Backend]]:
    from srgan_deploy.backends.bicubic import BicubicBackend
    from srgan_deploy.backends.ort_backend import OnnxRuntimeBackend
    from srgan_deploy.backends.tensorrt_backend import TensorRTBackend
    from srgan_deploy.backends.torch_backend import TorchBackend

    return {
        "tensorrt": TensorRTBackend,
        "onnxruntime": OnnxRuntimeBackend,
        "torch": TorchBackend,
        "bicubic": BicubicBackend,
    }


BACKEND_NAMES = ("auto", "tensorrt", "onnxruntime", "torch", "bicubic")


@dataclass(frozen=True)
class Choice:
    name: str
    options: BackendOptions
    reason: str


def availability() -> dict[str, tuple[bool, str]]:
    return {name: cls.availability() for name, cls in backend_classes().items()}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose(name: str, options: BackendOptions) -> Choice:
    """Resolve ``auto`` (and check an explicit name) into a concrete, available backend."""
    classes = backend_classes()
    if name != "auto":
        if name not in classes:
            raise UnknownBackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")
        ok, why = classes[name].availability()
        if not ok:
            raise BackendUnavailableError(f"backend '{name}' is not available: {why}")
        return Choice(name, options, "as requested")
    avail = availability()
    wants_cpu = options.device == "cpu"
    from srgan_deploy.backends.ort_backend import ort_has_cuda

    ladder: list[tuple[str, str, bool]] = [
        ("tensorrt", "cuda", not wants_cpu and avail["tensorrt"][0]),
        ("onnxruntime", "cuda", not wants_cpu and avail["onnxruntime"][0] and ort_has_cuda()),
        ("torch", "cuda", not wants_cpu and avail["torch"][0] and _cuda_available()),
        ("onnxruntime", "cpu", avail["onnxruntime"][0]),
        ("torch", "cpu", avail["torch"][0]),
    ]
    for backend, device, ok in ladder:
        if ok:
            opts = options if options.device != "auto" else replace(options, device=device)
            return Choice(backend, opts, "auto: the fastest backend available here")
    raise BackendUnavailableError(
        "no backend can run here; install onnxruntime or torch (pip install 'srgan-deploy[cpu]')"
    )


def create(name: str, options: BackendOptions | None = None) -> tuple[Backend, Choice]:
    """A not-yet-opened backend for ``name`` (or ``auto``) plus the reason it was chosen."""
    choice = choose(name, options or BackendOptions())
    return backend_classes()[choice.name](choice.options), choice


__all__ = ["BACKEND_NAMES", "Backend", "BackendOptions", "Choice", "availability", "choose", "create"]
