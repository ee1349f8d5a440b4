"""ONNX -> serialized TensorRT plan, one builder for TensorRT 10, TensorRT 11 and TensorRT-RTX.

Every build is strongly typed: the precision comes from the graph, not from a builder
flag. For fp16 the ONNX is converted first (``export.fp16``: the network body in float16,
the uint8<->float pre/post-processing in float32). That is the only way TensorRT 11 and
RTX build fp16 at all, and on TensorRT 10 it keeps the pre/post-processing in float32,
which weak typing with ``BuilderFlag.FP16`` does not promise.

What differs between the three flavours lives in ``Flavour`` and nowhere else:
- which Python module to import (``tensorrt``; ``tensorrt_rtx`` or its bindings module);
- what the engine is built for: TensorRT builds for the GPU it runs on, RTX builds ahead of
  time for the compute capabilities it is told (so it needs no GPU at all);
- the strongly-typed creation flag, which RTX and TensorRT 11 imply and TensorRT 10 needs.

Cache: key = sha256 of (onnx sha256, flavour + version, targets, precision, profile,
workspace). A JSON sidecar records the key's inputs; a mismatching, modified or
undeserializable engine is rebuilt with a message saying why.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srgan_deploy.artifacts import FLAVOURS, ShapeProfile, read_onnx_metadata, spec_from_metadata
from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import BackendUnavailableError, ConfigError, EngineError
from srgan_deploy.files import atomic_write_bytes, atomic_write_text, file_lock
from srgan_deploy.gpu.trt_runtime import RTX_TARGETS, import_flavour_module, make_logger, sm_name
from srgan_deploy.notices import Notify
from srgan_deploy.spec import ModelSpec
from srgan_deploy.weights import file_sha256

if TYPE_CHECKING:
    import tensorrt as trt
    import tensorrt_rtx_bindings as rtx

PRECISIONS = ("fp16", "fp32")


def parse_targets(text: str | None) -> tuple[str, ...]:
    """``--sm 86,89,120`` -> ("SM86", "SM89", "SM120"); checked against what RTX can target."""
    if text is None or not text.strip():
        return ()
    targets: list[str] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        name = part.upper().replace(".", "")
        name = name if name.startswith("SM") else f"SM{name}"
        if name not in RTX_TARGETS:
            raise ConfigError(
                f"--sm {part}: TensorRT-RTX cannot target it; choose from {', '.join(t[2:] for t in RTX_TARGETS)} "
                "(Hopper/datacenter GPUs use --format tensorrt)"
            )
        if name not in targets:
            targets.append(name)
    return tuple(targets)


def rtx_set_targets(module: Any, config: rtx.IBuilderConfig, targets: tuple[str, ...]) -> None:
    """Ahead-of-time targets of an RTX build (typed against stubs generated from the real module)."""
    if not targets:
        raise ConfigError("a TensorRT-RTX build needs at least one compute capability (--sm)")
    capability: type[rtx.ComputeCapability] = module.ComputeCapability
    config.num_compute_capabilities = len(targets)
    for i, target in enumerate(targets):
        config.set_compute_capability(getattr(capability, target), i)


@dataclass(frozen=True)
class Flavour:
    """The one place where TensorRT 10, TensorRT 11 and TensorRT-RTX differ for building."""

    name: str  # "tensorrt" | "tensorrt-rtx"
    module: Any = field(repr=False, compare=False)

    @classmethod
    def load(cls, name: str) -> Flavour:
        return cls(name, import_flavour_module(name))

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    def network_flags(self) -> int:
        # RTX and TensorRT >= 11 build strongly typed networks only (the flag is implied, and accepted);
        # TensorRT 10 needs it asked for, or it would pick per-layer precisions itself
        flag = getattr(self.module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        return 1 << int(flag) if flag is not None else 0

    def configure(self, config: Any, targets: tuple[str, ...], workspace_mib: int, precision: str = "fp16") -> None:
        """TensorRT: a workspace limit; it builds for the GPU it runs on. RTX: the compute capabilities
        to build for (ahead of time, no GPU needed), and no workspace limit: its builder then tries to
        allocate the whole limit in host memory (measured: 4 GiB asked for, OutOfMemory), and the
        workspace is a run-time matter for RTX anyway.

        fp32 means fp32: TensorRT enables TF32 by default on Ampere and later, which rounds the inputs of
        every fp32 convolution to 10 mantissa bits, so an "fp32" engine would be neither what was asked
        for nor comparable with the fp32 reference. Cleared where the module has the flag."""
        tf32 = getattr(getattr(self.module, "BuilderFlag", None), "TF32", None)
        if precision == "fp32" and tf32 is not None:
            config.clear_flag(tf32)
        if not self.is_rtx:
            config.set_memory_pool_limit(self.module.MemoryPoolType.WORKSPACE, workspace_mib << 20)
            return
        rtx_set_targets(self.module, config, targets)

    def default_targets(self, device: int = 0) -> tuple[str, ...]:
        """What to build for when the user names nothing: GPU ``device`` (the one the engine will run on,
        ``--device cuda:N``), or (RTX without a GPU) every RTX target."""
        from srgan_deploy.gpu.cuda_rt import device_count, device_properties

        gpu_cc: str | None = None
        try:
            count = device_count()
            if count > device:
                gpu_cc = device_properties(device).compute_capability
        except (BackendUnavailableError, EngineError):
            count, gpu_cc = 0, None
        if 0 < count <= device:
            raise BackendUnavailableError(
                f"GPU {device} is not visible ({count} visible); use --device cuda:0 to cuda:{count - 1}"
            )
        if not self.is_rtx:
            if gpu_cc is None:
                raise BackendUnavailableError(
                    "TensorRT builds for the GPU it runs on and no CUDA GPU is visible; "
                    "use --format tensorrt-rtx --sm ... to build ahead of time without a GPU"
                )
            return (sm_name(gpu_cc),)
        if gpu_cc is not None:
            sm = sm_name(gpu_cc)
            if sm not in RTX_TARGETS:
                raise BackendUnavailableError(
                    f"this GPU ({sm}) is not a TensorRT-RTX target; use --format tensorrt (Hopper/datacenter GPUs)"
                )
            return (sm,)
        return RTX_TARGETS


def check_buildable(flavour: str, targets: tuple[str, ...] = (), device: int = 0) -> None:
    """Raise now, before minutes of ONNX export and checks, what the build would raise at its start: the
    flavour's module is missing, or (no ``--sm`` given) there is no GPU ``device`` to build for."""
    loaded = Flavour.load(flavour)
    if not targets:
        loaded.default_targets(device)


@dataclass(frozen=True)
class EngineSpec:
    """Every input that changes the built engine; its hash names the cached file."""

    onnx_sha256: str
    flavour: str
    tensorrt_version: str
    gpu_name: str  # the build GPU for TensorRT; "ahead-of-time" for RTX
    targets: tuple[str, ...]  # compute capabilities the plan runs on
    precision: str
    profile: ShapeProfile
    io: str
    workspace_mib: int

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose fp16 or fp32")
        if self.flavour not in FLAVOURS:
            raise ConfigError(f"unknown TensorRT flavour '{self.flavour}'; choose one of {', '.join(FLAVOURS)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = self.profile.to_list()
        data["targets"] = list(self.targets)
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
        kind = "rtx-" if spec.flavour == "tensorrt-rtx" else ""
        stem = f"{name}-{kind}{spec.precision}-{spec.key}"
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
    """Plan then sidecar, each written to a temporary name and renamed: a crash never leaves a half plan.
    The temporary names are this process's and thread's own, so concurrent writers never rename each
    other's half-written file."""
    paths.plan.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(paths.plan, plan)
    sidecar = {
        "spec": spec.to_dict(),
        "key": spec.key,
        "plan_sha256": hashlib.sha256(plan).hexdigest(),
        **(extra or {}),
    }
    atomic_write_text(paths.sidecar, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- logging and progress


def _make_progress_monitor(module: Any, on_progress: Callable[[str, int, int], None]) -> Any:
    class Monitor(module.IProgressMonitor):  # type: ignore[misc, name-defined]
        """Forwards TensorRT's build phases to a progress callback (called from builder threads)."""

        def __init__(self) -> None:
            module.IProgressMonitor.__init__(self)
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


# --------------------------------------------------------------------------- build


@dataclass
class BuildOptions:
    workspace_mib: int = 4096
    timing_cache: Path | None = None
    targets: tuple[str, ...] = ()  # RTX compute capabilities; () = default_targets()
    device: int = 0  # CUDA device the engine is built for (and, for TensorRT, on)
    on_progress: Callable[[str, int, int], None] | None = None  # (phase, step, total)
    notify: Notify = field(default=lambda msg: None)


@dataclass(frozen=True)
class NetworkIO:
    """Name, dtype and dims of one network input/output, as TensorRT's parser produced them."""

    name: str
    dtype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class BuildResult:
    plan: bytes
    inputs: tuple[NetworkIO, ...]
    outputs: tuple[NetworkIO, ...]
    seconds: float


def _io(tensor: Any) -> NetworkIO:
    dtype = getattr(tensor.dtype, "name", str(tensor.dtype))
    return NetworkIO(str(tensor.name), str(dtype), tuple(int(d) for d in tensor.shape))


def build_serialized(
    flavour: Flavour, onnx_path: Path, spec: EngineSpec, options: BuildOptions, log_path: Path
) -> BuildResult:
    """Parse the ONNX and build the plan; on failure the parser's/builder's own words are in the error
    and the log is saved to ``log_path``."""
    module = flavour.module
    logger = make_logger(module)
    mark = logger.mark()
    started = time.perf_counter()

    def fail(message: str) -> EngineError:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("\n".join(logger.lines_since(mark)) + "\n")
        errors = logger.errors_since(mark)
        said = f" (TensorRT: {errors[-1].strip()})" if errors else ""
        return EngineError(f"{message}{said}; full log saved to {log_path}")

    builder: trt.Builder = module.Builder(logger)
    network: trt.INetworkDefinition = builder.create_network(flavour.network_flags())
    parser: trt.OnnxParser = module.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise fail(f"TensorRT {flavour.name} {flavour.version} could not parse {onnx_path.name}: {errors}")
    inputs = tuple(_io(network.get_input(i)) for i in range(network.num_inputs))
    outputs = tuple(_io(network.get_output(i)) for i in range(network.num_outputs))
    config: trt.IBuilderConfig = builder.create_builder_config()
    flavour.configure(config, spec.targets, spec.workspace_mib, spec.precision)
    profile: trt.IOptimizationProfile = builder.create_optimization_profile()
    lo, opt, hi = spec.profile.tensor_shapes(spec.io)
    profile.set_shape(inputs[0].name, module.Dims(list(lo)), module.Dims(list(opt)), module.Dims(list(hi)))
    config.add_optimization_profile(profile)
    cache: trt.ITimingCache | None = None
    if options.timing_cache is not None and not flavour.is_rtx:  # RTX has no tactic timing to cache
        data = options.timing_cache.read_bytes() if options.timing_cache.exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)
    monitor = None
    if options.on_progress is not None:
        monitor = _make_progress_monitor(module, options.on_progress)
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise fail(f"TensorRT {flavour.name} {flavour.version} failed to build the engine")
    final = config.get_timing_cache() if cache is not None else None
    if final is not None and options.timing_cache is not None:  # None: TensorRT did not take the cache
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        # other processes may be building other engines beside it
        atomic_write_bytes(options.timing_cache, bytes(memoryview(final.serialize())))
    del monitor
    return BuildResult(bytes(memoryview(serialized)), inputs, outputs, time.perf_counter() - started)


def make_spec(
    flavour: Flavour, onnx_path: Path, precision: str, profile: ShapeProfile, io: str, options: BuildOptions
) -> EngineSpec:
    targets = options.targets or flavour.default_targets(options.device)
    if flavour.is_rtx:
        gpu_name = "ahead-of-time"
    else:
        from srgan_deploy.gpu.cuda_rt import device_properties

        gpu_name = device_properties(options.device).name
    return EngineSpec(
        onnx_sha256=file_sha256(onnx_path),
        flavour=flavour.name,
        tensorrt_version=flavour.version,
        gpu_name=gpu_name,
        targets=targets,
        precision=precision,
        profile=profile,
        io=io,
        workspace_mib=options.workspace_mib,
    )


def engine_source(onnx_path: Path, spec: EngineSpec, work_dir: Path) -> Path:
    """The ONNX TensorRT parses: the fp16-core graph for fp16 (strongly typed), else the original."""
    if spec.precision == "fp16":
        from srgan_deploy.export.fp16 import cached_fp16_core

        return cached_fp16_core(onnx_path, spec.onnx_sha256, work_dir)
    return onnx_path


def can_deserialize(flavour: Flavour, plan: Path, device: int = 0) -> bool | None:
    """True/False where GPU ``device`` can tell; None where it cannot (an RTX build machine without a driver).
    The device is made current here: deserializing happens on the current device, which is per thread."""
    from srgan_deploy.gpu.cuda_rt import device_count, set_device

    try:
        if device_count() <= device:
            return None
    except (BackendUnavailableError, EngineError):
        return None
    set_device(device)
    logger = make_logger(flavour.module)
    runtime = flavour.module.Runtime(logger)
    return runtime.deserialize_cuda_engine(plan.read_bytes()) is not None


def get_engine(
    onnx_path: Path,
    engine_dir: Path,
    precision: str = "fp16",
    profile: ShapeProfile | None = None,
    io: str = "uint8",
    options: BuildOptions | None = None,
    name: str = "srgan",
    flavour: str = "tensorrt",
    check_deserialize: bool = True,
) -> tuple[Path, EngineSpec, bool]:
    """The engine plan for these settings: from the cache when valid, else built now. Returns (plan, spec, built).

    The immediate form of ``export.loaders.EngineFromOnnx`` (as Polygraphy pairs ``engine_from_network``
    with ``EngineFromNetwork``): commands and the runtime go through the loader; this is what it calls.

    ``check_deserialize=False`` trusts a cached plan whose sidecar matches; the runtime passes it because
    it deserializes the plan right after anyway (and says to rebuild if that fails), so it is not done twice.

    Check, build and write run under a lock file per engine: N processes (``--workers N``) that all miss
    the cache build it once; the others wait and then take the plan from the cache."""
    options = options or BuildOptions()
    profile = profile or ShapeProfile.parse(None, None, None)
    flav = Flavour.load(flavour)
    spec = make_spec(flav, onnx_path, precision, profile, io, options)
    paths = EnginePaths.for_spec(engine_dir, spec, name)
    cached = _cached(flav, paths, spec, check_deserialize, options.device)
    if cached is None:
        return paths.plan, spec, False
    lock = paths.plan.with_suffix(".lock")
    with file_lock(lock, lambda: options.notify(f"waiting for another process building {paths.plan.name}")):
        reason = _cached(flav, paths, spec, check_deserialize, options.device)  # it may have built it meanwhile
        if reason is None:
            return paths.plan, spec, False
        _build(flav, onnx_path, engine_dir, spec, paths, options, reason)
    return paths.plan, spec, True


def _cached(flav: Flavour, paths: EnginePaths, spec: EngineSpec, check_deserialize: bool, device: int) -> str | None:
    """None when the cached plan can be used, else why it must be built."""
    usable, reason = cache_status(paths, spec)
    if not usable:
        return reason
    if not check_deserialize or can_deserialize(flav, paths.plan, device) is not False:
        return None
    return f"{paths.plan.name} could not be deserialized by TensorRT {spec.tensorrt_version}"


def _build(
    flav: Flavour,
    onnx_path: Path,
    engine_dir: Path,
    spec: EngineSpec,
    paths: EnginePaths,
    options: BuildOptions,
    reason: str,
) -> None:
    options.notify(f"building {flav.name} engine for {', '.join(spec.targets)}: {reason}")
    if not flav.is_rtx:
        # TensorRT builds on the current device, which is per thread: make it the one the engine is for
        from srgan_deploy.gpu.cuda_rt import set_device

        set_device(options.device)
        if options.timing_cache is None:  # a copy: the caller's options (a loader's, reused) stay as given
            gpu = spec.gpu_name.replace(" ", "_")
            options = replace(options, timing_cache=engine_dir / f"timing-{gpu}-{spec.tensorrt_version}.cache")
    source = engine_source(onnx_path, spec, engine_dir / "onnx")
    result = build_serialized(flav, source, spec, options, paths.log)
    model = _model_spec(onnx_path)
    extra = {
        "onnx": str(onnx_path),
        "source_onnx": str(source),
        "scale": model.scale,
        **({"model": json.loads(model.config.to_json())} if model.config is not None else {}),
        "model_spec": model.to_dict(),
        "receptive_radius": model.overlap,
        "build_seconds": round(result.seconds, 2),
        "inputs": [asdict(t) for t in result.inputs],
        "outputs": [asdict(t) for t in result.outputs],
    }
    write_engine(paths, spec, result.plan, extra)


def _model_spec(onnx_path: Path) -> ModelSpec:
    """The spec the graph's metadata carries; a graph without any is taken for the default SRResNet (as
    before specs existed), so a hand-made ONNX still builds."""
    meta = read_onnx_metadata(onnx_path)
    if "srgan_deploy.spec" in meta or "srgan_deploy.config" in meta:
        return spec_from_metadata(meta, onnx_path)
    return ModelSpec.from_config(ModelConfig())
