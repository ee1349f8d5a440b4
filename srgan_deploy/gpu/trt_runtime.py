"""TensorRT at run time, for all three flavours: importing the module, a logger that keeps what
TensorRT said, and deserializing a plan. Shared by the runtime backends and the export stage's builder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from srgan_deploy.artifacts import FLAVOURS
from srgan_deploy.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    import tensorrt as trt

RTX_INSTALL = (
    "pip install --no-deps tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings (or pip install 'srgan-deploy[rtx]')"
)
TRT_INSTALL = "on a machine with an NVIDIA GPU run pip install 'srgan-deploy[gpu]' (tensorrt, cuda-python)"


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
    """A TensorRT logger that keeps the last warnings and errors, so a failed build or run can say what
    TensorRT said. INFO and VERBOSE are dropped on arrival (a subclassed ILogger has no C++-side filter)."""

    severity = module.ILogger.Severity
    keep = {severity.WARNING, severity.ERROR, severity.INTERNAL_ERROR}
    errors = {severity.ERROR, severity.INTERNAL_ERROR}

    class KeepingLogger(module.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            module.ILogger.__init__(self)
            self.lines: list[str] = []
            self.errors: list[str] = []

        def log(self, level: trt.ILogger.Severity, msg: str) -> None:
            if level not in keep:
                return
            self.lines.append(f"[{getattr(level, 'name', level)}] {msg}")
            del self.lines[:-keep_lines]
            if level in errors:
                self.errors.append(msg)
                del self.errors[:-5]

    return KeepingLogger()


def flavour_status(flavour: str) -> tuple[bool, str]:
    """(installed, detail) for ``info`` and availability: the module and its version, or why not."""
    try:
        module = import_flavour_module(flavour)
    except BackendUnavailableError as exc:
        return False, str(exc)
    return True, f"{module.__name__} {module.__version__}"
