"""``srgan-deploy bench``: latency, throughput, GFLOP/s against the same-run GEMM peak, parity vs torch.

Each backend is warmed up, then timed over ``iters`` calls; the GEMM peak is
measured in the same process on the same device, so the fraction is a ratio of
two numbers taken under the same conditions (thermal state, other load).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.backends.options import TritonServer
from srgan_deploy.config import ModelConfig
from srgan_deploy.cpus import cpu_features, cpu_name, usable_cpus
from srgan_deploy.errors import ConfigError
from srgan_deploy.spec import ModelSpec, srresnet_flops_per_pixel

NAMED_OUTPUTS = {
    "480p": (480, 854),
    "720p": (720, 1280),
    "1080p": (1080, 1920),
    "1440p": (1440, 2560),
    "2160p": (2160, 3840),
    "4k": (2160, 3840),
}


def parse_size(text: str) -> tuple[int, int]:
    """``480x270`` (width x height, as video tools write it) -> (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ConfigError(f"size '{text}' must be WIDTHxHEIGHT with positive numbers, e.g. 480x270")
    return int(m.group(2)), int(m.group(1))


def input_for_output(name: str, scale: int) -> tuple[int, int]:
    """Input (height, width) that upscales to a named output size such as 1080p."""
    key = name.lower()
    if key in NAMED_OUTPUTS:
        h, w = NAMED_OUTPUTS[key]
    else:
        h, w = parse_size(name)
    if h % scale or w % scale:
        raise ConfigError(f"output {w}x{h} is not divisible by the scale {scale}")
    return h // scale, w // scale


def model_gflops(config: ModelConfig, height: int, width: int) -> float:
    """Convolution GFLOP (2 x MACs) of one SRResNet frame; element-wise ops are <1 % and left out."""
    return srresnet_flops_per_pixel(config) * height * width / 1e9


def gemm_peak_gflops(device: str, threads: int | None = None, seconds: float = 1.0, precision: str = "") -> float:
    """Best observed matrix-multiply rate on ``device`` in ``precision``: the ceiling a backend computing in
    that precision is measured against. CPU: fp32, or bf16 (oneDNN's AMX or AVX-512 BF16 kernels, whichever
    the CPU has); CUDA: fp16 on tensor cores unless fp32 is asked for."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    on_gpu = device.startswith("cuda")
    precision = precision or ("fp16" if on_gpu else "fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    n = 8192 if on_gpu else 1536
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    for i in range(200):
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if on_gpu:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if i > 0:  # the first call pays for allocation / kernel selection
            best = min(best, elapsed)
        if i >= 3 and time.perf_counter() > deadline:
            break
    return 2.0 * n**3 / best / 1e9


def peak_precision(device: str, precision: str) -> str:
    """The GEMM a backend's run is measured against: the precision it computes in on that device."""
    if device == "cuda":
        return "fp32" if precision == "fp32" else "fp16"
    return "bf16" if precision == "bf16" else "fp32"


def machine_info() -> dict[str, Any]:
    from srgan_deploy.info import gpu_info

    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores": usable_cpus(),
        "gpu": gpu_info(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


@dataclass
class BenchResult:
    backend: str
    device: str
    input: list[int]
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    fps: float
    output_mps: float
    gflops: float
    peak_gflops: float
    peak_fraction: float
    peak_precision: str
    psnr_vs_torch: float
    max_abs_vs_torch: float
    gflop_per_frame: float
    iters: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    backends: tuple[str, ...] = ("all",)
    height: int = 270
    width: int = 480
    batch: int = 1
    warmup: int = 3
    iters: int = 20
    weights: str | None = None
    device: str = "auto"
    threads: int | None = None
    slots: int = 2
    precision: str = "auto"
    triton: TritonServer = field(default_factory=lambda: TritonServer())  # -b triton: where the model is served

    def __post_init__(self) -> None:
        if self.batch < 1 or self.iters < 1 or self.warmup < 0:
            raise ConfigError("--batch and --iters must be >= 1, --warmup >= 0")


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0: ``clear_refs`` value 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int | None:
    """Peak RSS in bytes since the last reset (VmHWM), or None where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def resolve_backends(names: tuple[str, ...], onnx_only: bool = False) -> list[str]:
    """The backends to time; ``all`` = every available one that can run the model (an ONNX graph of another
    network runs everywhere but on the torch backend, which runs our weights)."""
    from srgan_deploy.backends.registry import BACKEND_NAMES, MODEL_BACKENDS, availability, entry_for
    from srgan_deploy.errors import UnknownBackendError

    if names == ("all",):
        avail = availability()
        return [n for n in MODEL_BACKENDS if avail[n][0] and not (onnx_only and entry_for(n).model == "weights")]
    for name in names:
        if name not in BACKEND_NAMES or name == "auto":
            choices = ", ".join(n for n in BACKEND_NAMES if n != "auto")
            raise UnknownBackendError(f"unknown backend '{name}' for bench; choose from {choices} or all")
    return list(names)


def run_bench(config: BenchConfig, notify: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import choose, create
    from srgan_deploy.images import make_input
    from srgan_deploy.metrics import psnr
    from srgan_deploy.sources import OnnxFile, model_source, model_spec, reference_runner

    source = model_source(config.weights)
    model = model_spec(source, notify=notify)
    frames = make_input((config.batch, config.height, config.width), seed=0)
    gflop = model.gflop(config.height, config.width) or 0.0
    notify(f"model {_model_line(model)}: {gflop:.1f} GFLOP per {config.width}x{config.height} frame")
    peaks: dict[tuple[str, str], float] = {}
    results: list[BenchResult] = []
    names = resolve_backends(config.backends, onnx_only=isinstance(source, OnnxFile))
    if isinstance(source, OnnxFile):  # the network itself: its original graph on onnxruntime fp32
        run_reference, reference_name = reference_runner(source, notify=notify)
        reference = run_reference(frames)
    else:  # the reference first: torch fp32 on CPU
        reference_name = "torch fp32"
        reference_choice = choose("torch", Request(device="cpu", precision="fp32", threads=config.threads))
        with create(reference_choice, source, notify) as ref:
            reference = ref.upscale(frames)
    for name in names:
        request = Request(
            device=config.device,
            precision=config.precision,
            threads=config.threads,
            slots=config.slots,
            triton=config.triton,
        )
        backend = create(choose(name, request), config.weights, notify)
        reset_peak_rss()  # each backend's peak is its own, not the largest of those before it
        with backend:
            label = backend.device_label
            notify(f"{name}: warming up on {label}")
            extra: dict[str, Any] = {}
            per_context = getattr(backend, "device_memory_per_context", None)
            if per_context is not None:
                slots = getattr(backend.options, "slots", 1)
                extra["device_memory_mb"] = round(per_context * slots / 2**20, 1)
                notify(f"{name}: {per_context / 2**20:.0f} MiB of device memory per context x {slots} slots")
            for _ in range(config.warmup):
                out = backend.upscale(frames)
            latencies = []
            for _ in range(config.iters):
                t0 = time.perf_counter()
                out = backend.upscale(frames)
                latencies.append(time.perf_counter() - t0)
            # throughput with the backend's own in-flight pipelining (same as latency on CPU backends)
            t0 = time.perf_counter()
            count = sum(1 for _ in backend.upscale_many(frames for _ in range(config.iters)))
            throughput_s = (time.perf_counter() - t0) / count
            device = "cuda" if label.startswith("cuda") else "cpu"
            # what the backend computes in (int8: what its other layers run in; there is no int8 GEMM reference)
            computes_in = getattr(backend, "compute_precision", None) or getattr(backend.options, "precision", "fp32")
            peak = peak_rss()
            if peak is not None:
                extra["peak_rss_mb"] = round(peak / 2**20, 1)
        computes = peak_precision(device, str(computes_in))
        if (device, computes) not in peaks:
            notify(f"measuring the {device} {computes} GEMM peak")
            peaks[device, computes] = gemm_peak_gflops(device, config.threads, precision=computes)
        peak_gflops = peaks[device, computes]
        per_iter = min(float(np.mean(latencies)), throughput_s)
        fps = config.batch / per_iter
        achieved = gflop * fps
        diff = np.abs(reference.astype(np.int16) - out.astype(np.int16))
        results.append(
            BenchResult(
                backend=name,
                device=label,
                input=[config.height, config.width],
                batch=config.batch,
                p50_ms=percentile(latencies, 50) * 1e3,
                p90_ms=percentile(latencies, 90) * 1e3,
                p99_ms=percentile(latencies, 99) * 1e3,
                fps=fps,
                output_mps=fps * config.height * config.width * model.scale**2 / 1e6,
                gflops=achieved,
                peak_gflops=peak_gflops,
                peak_fraction=achieved / peak_gflops if name != "bicubic" else 0.0,
                peak_precision=computes,
                psnr_vs_torch=min(psnr(reference, out), 99.0),
                max_abs_vs_torch=float(diff.max()),
                gflop_per_frame=gflop,
                iters=config.iters,
                extra={"fps_sync": config.batch / float(np.mean(latencies)), **extra},
            )
        )
    return {
        "machine": machine_info(),
        "config": {**asdict(config), "backends": names, "reference": reference_name},
        "results": [asdict(r) for r in results],
    }


def _model_line(model: ModelSpec) -> str:
    if model.config is not None:
        c = model.config
        return f"{c.channels}x{c.blocks} x{c.scale}"
    return f"{model.name} (ONNX) {model.describe()}"


def check_output_file(path: Path, what: str) -> None:
    """Fail before a long benchmark, not after it, when its report cannot be written."""
    from srgan_deploy.errors import OutputError

    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name such as {path / 'bench.json'}")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(f"{what} {path}: folder {parent} is not writable")


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
