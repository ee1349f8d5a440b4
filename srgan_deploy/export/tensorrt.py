"""ONNX -> serialized FP16 TensorRT engine, with a cache keyed by everything that changes the engine.

TensorRT 10: a weakly typed network with ``BuilderFlag.FP16`` (TensorRT picks
per-layer precision). TensorRT >= 11 only builds strongly typed networks, so the
ONNX is converted to float16 first (``export.fp16``; I/O and pre/post-processing
stay uint8/float32) and the network is created STRONGLY_TYPED; that path can be
forced on TensorRT 10 too.

Cache: key = sha256 of (onnx sha256, TensorRT version, GPU name, compute
capability, precision, typing, profile shapes, workspace). A JSON sidecar
records the key's inputs; a mismatching, modified or undeserializable engine is
rebuilt with a message saying why.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srgan_deploy.errors import BackendUnavailableError, ConfigError, EngineError
from srgan_deploy.export.shapes import ShapeProfile
from srgan_deploy.weights import file_sha256

if TYPE_CHECKING:
    import tensorrt as trt

PRECISIONS = ("fp16", "fp32")
Notify = Callable[[str], None]


def load_tensorrt() -> Any:
    """Import the real TensorRT, telling it apart from the stub-only package tensorrt-stubs installs."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT is not installed: on a machine with an NVIDIA GPU run pip install 'srgan-deploy[gpu]' (tensorrt, cuda-python)"
        ) from exc
    if getattr(tensorrt, "__version__", None) is None or not hasattr(tensorrt, "Builder"):
        raise BackendUnavailableError(
            "only TensorRT type stubs are installed (tensorrt-stubs); install the real library: pip install tensorrt"
        )
    return tensorrt


def trt_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError as exc:
        raise EngineError(f"cannot parse TensorRT version '{version}'") from exc


@dataclass(frozen=True)
class EngineSpec:
    """Every input that changes the built engine; its hash names the cached file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    strongly_typed: bool
    profile: ShapeProfile
    io: str
    workspace_mib: int

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose fp16 or fp32")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = self.profile.to_list()
        return data

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class EnginePaths:
    plan: Path
    sidecar: Path
    log: Path

    @classmethod
    def for_spec(cls, engine_dir: Path, spec: EngineSpec, name: str = "srgan") -> EnginePaths:
        stem = f"{name}-{spec.precision}-{spec.key}"
        return cls(engine_dir / f"{stem}.plan", engine_dir / f"{stem}.json", engine_dir / f"{stem}.build.log")


def cache_status(paths: EnginePaths, spec: EngineSpec) -> tuple[bool, str]:
    """(usable, reason): whether the cached engine can be used for ``spec`` without rebuilding."""
    if not paths.plan.exists():
        return False, "no cached engine for these settings"
    if not paths.sidecar.exists():
        return False, f"{paths.plan.name} has no sidecar describing how it was built"
    try:
        recorded = json.loads(paths.sidecar.read_text())
        built_for = recorded["spec"]
        plan_sha = recorded["plan_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False, f"sidecar {paths.sidecar.name} is unreadable"
    wanted = spec.to_dict()
    changed = [k for k in wanted if built_for.get(k) != wanted[k]]
    if changed:
        detail = ", ".join(f"{k}: {built_for.get(k)} -> {wanted[k]}" for k in changed)
        return False, f"cached engine was built for different settings ({detail})"
    if file_sha256(paths.plan) != plan_sha:
        return False, f"{paths.plan.name} was modified or is corrupt (checksum mismatch)"
    return True, "cached engine matches"


def write_engine(paths: EnginePaths, spec: EngineSpec, plan: bytes, extra: dict[str, Any] | None = None) -> None:
    paths.plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.plan.with_name(paths.plan.name + ".partial")
    tmp.write_bytes(plan)
    tmp.replace(paths.plan)
    sidecar = {
        "spec": spec.to_dict(),
        "key": spec.key,
        "plan_sha256": hashlib.sha256(plan).hexdigest(),
        **(extra or {}),
    }
    paths.sidecar.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- TensorRT glue


@dataclass
class BuildOptions:
    workspace_mib: int = 4096
    timing_cache: Path | None = None
    strongly_typed: bool | None = None  # None: TensorRT >= 11 yes, TensorRT 10 no
    on_progress: Callable[[str, int, int], None] | None = None  # (phase, step, total)
    notify: Notify = field(default=lambda msg: None)


def _make_logger(trt_mod: Any) -> Any:
    class CapturingLogger(trt_mod.ILogger):  # type: ignore[misc, name-defined]
        """Keeps every message so a failed build's log can be saved for the user."""

        def __init__(self) -> None:
            trt_mod.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            self.lines.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    return CapturingLogger()


def _make_progress_monitor(trt_mod: Any, on_progress: Callable[[str, int, int], None]) -> Any:
    class Monitor(trt_mod.IProgressMonitor):  # type: ignore[misc, name-defined]
        """Forwards TensorRT's build phases to a progress callback (called from builder threads)."""

        def __init__(self) -> None:
            trt_mod.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._totals[phase_name] = num_steps
                on_progress(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                on_progress(phase_name, step + 1, self._totals.get(phase_name, step + 1))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                total = self._totals.pop(phase_name, 1)
                on_progress(phase_name, total, total)

    return Monitor()


def build_serialized(onnx_path: Path, spec: EngineSpec, options: BuildOptions, log_path: Path) -> bytes:
    """Parse the ONNX and build the engine; on failure save TensorRT's log to ``log_path``."""
    trt_mod = load_tensorrt()
    logger = _make_logger(trt_mod)

    def fail(message: str) -> EngineError:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("\n".join(logger.lines) + "\n")
        return EngineError(f"{message}; TensorRT log saved to {log_path}")

    builder: trt.Builder = trt_mod.Builder(logger)
    flags = 1 << int(trt_mod.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if spec.strongly_typed else 0
    network: trt.INetworkDefinition = builder.create_network(flags)
    parser: trt.OnnxParser = trt_mod.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise fail(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config: trt.IBuilderConfig = builder.create_builder_config()
    config.set_memory_pool_limit(trt_mod.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    if spec.precision == "fp16" and not spec.strongly_typed:
        config.set_flag(trt_mod.BuilderFlag.FP16)
    profile: trt.IOptimizationProfile = builder.create_optimization_profile()
    lo, opt, hi = spec.profile.tensor_shapes(spec.io)
    input_name = network.get_input(0).name
    profile.set_shape(input_name, trt_mod.Dims(list(lo)), trt_mod.Dims(list(opt)), trt_mod.Dims(list(hi)))
    config.add_optimization_profile(profile)
    cache: trt.ITimingCache | None = None
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
    monitor = None
    if options.on_progress is not None:
        monitor = _make_progress_monitor(trt_mod, options.on_progress)
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise fail("TensorRT failed to build the engine")
    if cache is not None and options.timing_cache is not None:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        options.timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    del monitor
    return bytes(memoryview(serialized))


def deserialize(plan: bytes) -> Any:
    """ICudaEngine or None (version/GPU mismatch makes TensorRT return None)."""
    trt_mod = load_tensorrt()
    logger = _make_logger(trt_mod)
    runtime: trt.Runtime = trt_mod.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    return engine, runtime, logger


def make_spec(
    onnx_path: Path, precision: str, profile: ShapeProfile, io: str, options: BuildOptions, device: int = 0
) -> EngineSpec:
    from srgan_deploy.gpu.cuda_rt import device_properties

    trt_mod = load_tensorrt()
    version = str(trt_mod.__version__)
    strongly = options.strongly_typed if options.strongly_typed is not None else trt_major(version) >= 11
    gpu = device_properties(device)
    return EngineSpec(
        onnx_sha256=file_sha256(onnx_path),
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=precision,
        strongly_typed=strongly,
        profile=profile,
        io=io,
        workspace_mib=options.workspace_mib,
    )


def engine_source(onnx_path: Path, spec: EngineSpec, work_dir: Path) -> Path:
    """The ONNX TensorRT parses: float16-core for strongly typed FP16, else the original."""
    if spec.precision == "fp16" and spec.strongly_typed:
        from srgan_deploy.export.fp16 import write_fp16_onnx

        work_dir.mkdir(parents=True, exist_ok=True)
        target = work_dir / f"{onnx_path.stem}-{spec.onnx_sha256[:12]}-fp16core.onnx"
        if not target.exists():
            write_fp16_onnx(onnx_path, target)
        return target
    return onnx_path


def get_engine(
    onnx_path: Path,
    engine_dir: Path,
    precision: str = "fp16",
    profile: ShapeProfile | None = None,
    io: str = "uint8",
    options: BuildOptions | None = None,
    name: str = "srgan",
) -> tuple[Path, EngineSpec, bool]:
    """The engine plan for these settings: from the cache when valid, else built now. Returns (plan, spec, built)."""
    options = options or BuildOptions()
    profile = profile or ShapeProfile.parse(None, None, None)
    spec = make_spec(onnx_path, precision, profile, io, options)
    paths = EnginePaths.for_spec(engine_dir, spec, name)
    usable, reason = cache_status(paths, spec)
    if usable:
        engine, _, _ = deserialize(paths.plan.read_bytes())
        if engine is not None:
            return paths.plan, spec, False
        reason = f"{paths.plan.name} could not be deserialized by TensorRT {spec.tensorrt_version}"
    options.notify(f"building TensorRT engine: {reason}")
    if options.timing_cache is None:
        options.timing_cache = engine_dir / f"timing-{spec.gpu_name.replace(' ', '_')}-{spec.tensorrt_version}.cache"
    source = engine_source(onnx_path, spec, engine_dir / "onnx")
    plan = build_serialized(source, spec, options, paths.log)
    from srgan_deploy.config import ModelConfig
    from srgan_deploy.export.onnx import read_metadata

    meta = read_metadata(onnx_path)
    config = ModelConfig.from_json(meta.get("srgan_deploy.config", "{}"))
    extra = {
        "onnx": str(onnx_path),
        "source_onnx": str(source),
        "scale": config.scale,
        "receptive_radius": config.receptive_radius,
    }
    write_engine(paths, spec, plan, extra)
    return paths.plan, spec, True
