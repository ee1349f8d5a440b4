"""TensorRT at run time, for all three flavours: importing the module, a logger that keeps what
TensorRT said, and deserializing a plan. Shared by the runtime backends and the export stage's builder.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from srgan_deploy.artifacts import FLAVOURS
from srgan_deploy.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    import tensorrt as trt

RTX_INSTALL = (
    "pip install --no-deps tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings (or pip install 'srgan-deploy[rtx]')"
)
# TensorRT-RTX 1.x's ahead-of-time targets: Turing to Blackwell consumer/workstation parts; no Volta (SM70),
# no Hopper (SM90), no datacenter Blackwell (SM100). Here, beside the runtime, not in the export stage: the
# backend choice needs it too (``auto`` must not pick RTX on a GPU it cannot run on).
RTX_TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
TRT_INSTALL = (
    "on a machine with an NVIDIA GPU run pip install 'srgan-deploy[gpu-cu13]' (drivers >= 580, CUDA 13) "
    "or 'srgan-deploy[gpu-cu12]' (older drivers, CUDA 12)"
)


def import_flavour_module(flavour: str) -> Any:
    """The real TensorRT / TensorRT-RTX module, told apart from the stub-only ``tensorrt-stubs`` package."""
    if flavour == "tensorrt":
        try:
            import tensorrt as module
        except ImportError as exc:
            raise BackendUnavailableError(f"TensorRT is not installed: {TRT_INSTALL}") from exc
        if getattr(module, "__version__", None) is None or not hasattr(module, "Builder"):
            raise BackendUnavailableError(
                "only TensorRT type stubs are installed (tensorrt-stubs); install the real library: pip install tensorrt"
            )
        return module
    if flavour == "tensorrt-rtx":
        # NVIDIA's sdist installs a thin ``tensorrt_rtx`` package over the bindings wheel; the wheels alone
        # (what PyPI can install) provide ``tensorrt_rtx_bindings``. Either is the same library.
        for name in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
            try:
                module = __import__(name)
            except ImportError:
                continue
            except OSError as exc:  # the bindings load libtensorrt_rtx.so at import
                raise BackendUnavailableError(f"TensorRT-RTX fails to load ({exc}); reinstall: {RTX_INSTALL}") from exc
            if hasattr(module, "Builder"):
                return module
        raise BackendUnavailableError(f"TensorRT-RTX is not installed: {RTX_INSTALL}")
    raise ConfigError(f"unknown TensorRT flavour '{flavour}'; choose one of {', '.join(FLAVOURS)}")


def make_logger(module: Any, keep_lines: int = 200) -> Any:
    """The process's TensorRT logger for ``module``, keeping the last warnings and errors so a failed
    build or run can say what TensorRT said. INFO and VERBOSE are dropped on arrival (a subclassed
    ILogger has no C++-side filter).

    Why one per process: TensorRT registers the first logger it is given process-wide and warns
    about (and partly ignores) any later one, so a fresh logger per build would lose messages.
    ``errors_since(mark)`` gives a caller only what its own build produced."""
    return _logger_for(module.__name__, module, keep_lines)


@functools.cache
def _logger_for(name: str, module: Any, keep_lines: int) -> Any:
    severity = module.ILogger.Severity
    keep = {severity.WARNING, severity.ERROR, severity.INTERNAL_ERROR}
    errors = {severity.ERROR, severity.INTERNAL_ERROR}
    lock = threading.Lock()

    class KeepingLogger(module.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            module.ILogger.__init__(self)
            self.count = 0  # messages kept so far; mark() / *_since() slice by it
            self._lines: list[tuple[int, bool, str]] = []  # (number, is_error, text)

        def log(self, level: trt.ILogger.Severity, msg: str) -> None:
            if level not in keep:
                return
            with lock:
                self.count += 1
                self._lines.append((self.count, level in errors, f"[{getattr(level, 'name', level)}] {msg}"))
                del self._lines[:-keep_lines]

        def mark(self) -> int:
            return self.count

        def lines_since(self, mark: int) -> list[str]:
            with lock:
                return [text for n, _, text in self._lines if n > mark]

        def errors_since(self, mark: int) -> list[str]:
            with lock:
                return [text.split("] ", 1)[1] for n, is_error, text in self._lines if n > mark and is_error]

    return KeepingLogger()


def flavour_status(flavour: str) -> tuple[bool, str]:
    """(installed, detail) for ``info`` and availability: the module and its version, or why not."""
    try:
        module = import_flavour_module(flavour)
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, f"{module.__name__} {module.__version__}"


def sm_name(compute_capability: str) -> str:
    """Compute capability "8.9" as RTX's ``ComputeCapability`` member spells it: "SM89"."""
    return f"SM{compute_capability.replace('.', '')}"
