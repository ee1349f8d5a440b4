"""``srgan-deploy export``: weights -> verified ONNX -> verified TensorRT engine -> Triton repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srgan_deploy.artifacts import ShapeProfile
from srgan_deploy.errors import BackendUnavailableError, ConfigError, EngineError, OutputError, ParityError
from srgan_deploy.export.fp16 import FP16_BUDGET_DB, Fp16Report, measure_fp16, stress_images
from srgan_deploy.export.onnx import IO_MODES, OnnxArtifact, export_onnx
from srgan_deploy.export.verify import Parity, check_parity, compare, torch_reference, verify_onnx
from srgan_deploy.files import atomic_write_bytes
from srgan_deploy.images import make_input
from srgan_deploy.notices import Notify
from srgan_deploy.weights import read_info

FORMATS = ("onnx", "tensorrt", "tensorrt-rtx", "all")
Reference = Callable[[np.ndarray], np.ndarray]  # uint8 NHWC frames -> the upscaled frames they should give


@dataclass(frozen=True)
class ExportRequest:
    out_dir: Path
    weights: str | None = None
    fmt: str = "onnx"
    precision: str = "fp16"
    io: str = "uint8"
    profile: ShapeProfile = field(default_factory=lambda: ShapeProfile.parse(None, None, None))
    verify: bool = True
    triton_repo: Path | None = None
    triton_env: str | None = None  # the _py model's EXECUTION_ENV_PATH: None = this venv, "none" = left out
    engine_dir: Path | None = None
    workspace_mib: int = 4096
    targets: tuple[str, ...] = ()  # TensorRT-RTX compute capabilities (--sm); () = this GPU or all RTX targets
    device: int = 0  # the CUDA device the engine is built for (and verified on)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"unknown --format '{self.fmt}'; choose {', '.join(FORMATS)}")
        if self.targets and self.fmt != "tensorrt-rtx":
            raise ConfigError("--sm names TensorRT-RTX targets; use it with --format tensorrt-rtx")
        if self.io not in IO_MODES:
            raise ConfigError(f"unknown --io '{self.io}'; choose uint8 or float32")
        if self.precision not in ("fp16", "fp32"):
            raise ConfigError(f"unknown --precision '{self.precision}'; choose fp16 or fp32")

    @property
    def wants_tensorrt(self) -> bool:
        return self.fmt in ("tensorrt", "tensorrt-rtx", "all")

    @property
    def flavour(self) -> str:
        """all = onnx + the TensorRT engine for this GPU."""
        return "tensorrt-rtx" if self.fmt == "tensorrt-rtx" else "tensorrt"


@dataclass
class ExportReport:
    onnx: OnnxArtifact | None = None
    onnx_parity: list[Parity] = field(default_factory=list)
    fp16: Fp16Report | None = None
    engine: Path | None = None
    engine_parity: list[Parity] = field(default_factory=list)
    engine_built: bool = False
    triton: list[Path] = field(default_factory=list)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror}") from exc
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable; choose another -o")


def verify_engine(
    plan: Path,
    profile: ShapeProfile,
    precision: str,
    flavour: str,
    device: int,
    reference: Callable[[], Reference],
    against: str = "PyTorch",
) -> list[Parity]:
    """The written plan against ``reference`` (PyTorch fp32 for weights, a foreign network's original graph
    on onnxruntime) on shapes inside the engine's profile; FP16 must reach the PSNR budget.

    The plan runs as ``upscale`` and ``video`` would run it: the registry's backend, on the loader any
    backend gets for a plan file. So what is verified is the runtime's path, not a second one made here.
    ``reference`` is a loader too: PyTorch loads only once the engine has opened."""
    from srgan_deploy.backends.registry import Choice, create, entry_for
    from srgan_deploy.sources import EnginePlan

    lo, hi = profile.min, profile.max
    shapes = [lo, (hi[0], min(hi[1], max(lo[1], 37)), min(hi[2], max(lo[2], 53)))]
    options = entry_for(flavour).options(device=device, precision=precision)
    results: list[Parity] = []
    with create(Choice(flavour, options, "export: verifying the written engine"), EnginePlan(plan)) as engine:
        run = engine.upscale
        expected = reference()
        if precision == "fp32":
            return check_parity(run, expected, "uint8", shapes, what="TensorRT engine")
        for k, shape in enumerate(shapes):
            frames = make_input(shape, seed=k)
            result = compare(expected(frames), run(frames), shape, 255.0)
            results.append(result)
            if result.psnr < FP16_BUDGET_DB:
                raise ParityError(
                    f"FP16 engine PSNR {result.psnr:.1f} dB vs {against} is below the {FP16_BUDGET_DB:.0f} dB budget at {result.line()}"
                )
    return results


def _check_flavour(request: ExportRequest) -> None:
    """Fail early, before any work, when the TensorRT module is missing or full TensorRT has no GPU."""
    if request.wants_tensorrt:
        from srgan_deploy.export.tensorrt import check_buildable

        check_buildable(request.flavour, request.targets, request.device)
        if request.io != "uint8":
            raise ConfigError("TensorRT engines are built from the uint8-I/O graph; use --io uint8")


def run_export(
    request: ExportRequest,
    notify: Notify = lambda msg: None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ExportReport:
    from srgan_deploy.sources import OnnxFile, model_source

    source = model_source(request.weights)
    if isinstance(source, OnnxFile):
        return _export_onnx_file(request, source.path, notify, on_progress)
    info = read_info(request.weights)  # fails early on a bad weights file
    _check_flavour(request)
    _check_writable(request.out_dir)
    report = ExportReport()
    name = info.name
    onnx_path = request.out_dir / f"{name}-{request.io}.onnx"
    report.onnx = export_onnx(info.path, onnx_path, io=request.io)
    notify(f"ONNX written: {onnx_path} (opset 17, io {request.io}, sha256 {report.onnx.sha256[:12]})")
    if request.verify:
        report.onnx_parity = verify_onnx(onnx_path, str(info.path), request.io)
        for parity in report.onnx_parity:
            notify(f"  onnxruntime vs PyTorch {parity.line()}")
    if request.wants_tensorrt:
        if request.precision == "fp16":
            report.fp16 = measure_fp16(info.path, {**stress_images(), "natural": make_input((1, 64, 64), 7)[0]})
            worst = min(report.fp16.psnr, key=lambda k: report.fp16.psnr[k] if report.fp16 else 0.0)
            notify(
                f"FP16 budget: engine must reach >= {FP16_BUDGET_DB:.0f} dB PSNR vs PyTorch fp32; torch fp16 measured "
                f"{report.fp16.min_psnr:.1f} dB at worst ('{worst}'), activations peak at {report.fp16.peak_activation:.1f} "
                f"({report.fp16.headroom:.0f}x below the float16 limit)"
            )
        weights = str(info.path)
        _export_engine(
            request, onnx_path, name, lambda: torch_reference(weights, "uint8"), "PyTorch", report, notify, on_progress
        )
    _export_triton(request, onnx_path, name, request.profile, report, notify)
    return report


def _export_engine(
    request: ExportRequest,
    onnx_path: Path,
    name: str,
    reference: Callable[[], Reference],
    against: str,
    report: ExportReport,
    notify: Notify,
    on_progress: Callable[[str, int, int], None] | None,
) -> None:
    """Get the engine of ``onnx_path`` in one call (built, or taken from the cache: the loader the runtime
    uses too), copy it out, and run it where a GPU is."""
    from srgan_deploy.artifacts import OnnxModel
    from srgan_deploy.cache import cache_dir
    from srgan_deploy.export.loaders import EngineFromOnnx
    from srgan_deploy.export.tensorrt import BuildOptions

    flavour = request.flavour
    engine = EngineFromOnnx(
        lambda: OnnxModel.from_path(onnx_path),
        flavour,
        request.precision,
        request.profile.fitted,  # the user's profile, narrowed to a static shape or fixed batch
        request.engine_dir or cache_dir() / "engines",
        BuildOptions(
            workspace_mib=request.workspace_mib,
            targets=request.targets,
            device=request.device,
            on_progress=on_progress,
            notify=notify,
        ),
        name=name,
    ).build_or_load()
    plan, spec = engine.artifact.path, engine.spec
    report.engine_built = engine.built
    if not engine.built:
        notify(f"{flavour} engine taken from the cache: {plan}")
    kind = "rtx-" if flavour == "tensorrt-rtx" else ""
    target = request.out_dir / f"{name}-{kind}{request.precision}.plan"
    for src, dst in ((plan, target), (plan.with_suffix(".json"), target.with_suffix(".json"))):
        atomic_write_bytes(dst, src.read_bytes())
    report.engine = target
    where = ", ".join(s[2:] for s in spec.targets)
    notify(
        f"{flavour} engine written: {target} ({flavour} {spec.tensorrt_version}, {spec.gpu_name}, "
        f"sm {where}, profile {spec.profile.to_list()}, {target.stat().st_size / 1e6:.1f} MB)"
    )
    if request.verify:
        from srgan_deploy.gpu.cuda_rt import device_count

        # no extra deserialize to ask "is there a GPU": verify_engine deserializes the plan itself
        try:
            gpus = device_count()
        except (BackendUnavailableError, EngineError):
            gpus = 0
        if gpus <= request.device:
            notify(
                "  engine not executed: no CUDA GPU here. Checked: NVIDIA's parser and builder accepted the graph; "
                "parity is checked on first use on a GPU with srgan-deploy bench"
            )
        else:
            report.engine_parity = verify_engine(
                target, spec.profile, request.precision, flavour, request.device, reference, against
            )
            for parity in report.engine_parity:
                notify(f"  {flavour} vs {against} {parity.line()}")


def _export_triton(
    request: ExportRequest, onnx_path: Path, name: str, profile: ShapeProfile, report: ExportReport, notify: Notify
) -> None:
    if request.triton_repo is None:
        return
    from srgan_deploy.export.triton import write_model, write_served_model

    report.triton.append(
        write_served_model(
            request.triton_repo, name.replace("-", "_"), onnx_path, request.io, request.weights, request.triton_env
        )
    )
    report.triton.append(write_model(request.triton_repo, name.replace("-", "_"), "onnx", onnx_path, request.io, None))
    if report.engine is not None and request.flavour == "tensorrt":  # Triton's tensorrt_plan is full TensorRT
        report.triton.append(
            write_model(request.triton_repo, name.replace("-", "_"), "tensorrt", report.engine, "uint8", profile)
        )
    notify(f"Triton model repository: {request.triton_repo} ({', '.join(p.name for p in report.triton)})")


def _export_onnx_file(
    request: ExportRequest,
    path: Path,
    notify: Notify,
    on_progress: Callable[[str, int, int], None] | None,
) -> ExportReport:
    """An ONNX given with -w: ours as it is, any other network wrapped into the uint8 boundary (and checked
    against its original graph); the engine is built from that graph and checked against the original."""
    from srgan_deploy.cache import cache_dir
    from srgan_deploy.export.foreign import OriginalReference, load_model, verify_wrapped
    from srgan_deploy.export.verify import ort_runner
    from srgan_deploy.sources import resolve_onnx
    from srgan_deploy.weights import file_sha256

    if request.io != "uint8":
        raise ConfigError(
            f"--io {request.io} exports .safetensors weights; an ONNX file is exported with the uint8 boundary "
            "(--io uint8), its own float graph is the file given"
        )
    _check_flavour(request)
    model = resolve_onnx(path, cache_dir(), notify)  # a foreign graph: inspected, wrapped, verified once
    foreign = model.path.resolve() != path.resolve()
    _check_writable(request.out_dir)
    spec = model.spec
    name = model.metadata.get("srgan_deploy.model_name", path.stem)
    onnx_path = request.out_dir / f"{name}-uint8.onnx"
    if onnx_path.resolve() != model.path.resolve():
        atomic_write_bytes(onnx_path, model.path.read_bytes())
    sha = file_sha256(onnx_path)
    report = ExportReport(onnx=OnnxArtifact(onnx_path, "uint8", spec.scale, None, sha))
    what = f"the uint8 boundary around {path.name}" if foreign else path.name
    notify(f"ONNX written: {onnx_path} ({what}: {spec.describe()}, sha256 {sha[:12]})")
    against = "the original graph on onnxruntime" if foreign else "onnxruntime"
    reference: Reference = OriginalReference(load_model(path), spec) if foreign else ort_runner(onnx_path)
    if request.verify and foreign:
        report.onnx_parity = verify_wrapped(load_model(path), onnx_path, spec)
        for parity in report.onnx_parity:
            notify(f"  wrapped vs original on onnxruntime {parity.line()}")
    profile = request.profile.fitted(spec)
    if request.wants_tensorrt:
        if profile != request.profile:
            notify(f"{name} takes one input shape or batch size: the engine's profile is {profile.to_list()}")
        if request.precision == "fp16":
            body = "already float16" if spec.dtype == "float16" else "converted to float16"
            notify(
                f"FP16 budget: engine must reach >= {FP16_BUDGET_DB:.0f} dB PSNR vs {against} "
                f"(the network's body {body}, the boundary float32)"
            )
        _export_engine(request, onnx_path, name, lambda: reference, against, report, notify, on_progress)
    _export_triton(request, onnx_path, name, profile, report, notify)
    return report
