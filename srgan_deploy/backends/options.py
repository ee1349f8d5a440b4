"""Options: what the user asked for (``Request``) and, per backend, what that backend takes.

The type is the choice (vs-mlrt's ``Backend.TRT`` / ``Backend.ORT_CPU`` idea): a backend gets only
the options that mean something to it, and ``registry.choose`` turns a ``Request`` into one of
these, resolving every ``auto`` explicitly and saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from srgan_deploy.cpus import usable_cpus
from srgan_deploy.errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


def _check_tile(tile: int | None) -> None:
    if tile is not None and tile < 8:
        raise ConfigError(f"--tile {tile} is too small; use at least 8 (64+ is sensible)")


def _check_threads(threads: int | None) -> None:
    if threads is None:
        return
    cores = usable_cpus()
    if not 1 <= threads <= 4 * cores:
        # far more threads than cores only thrashes; a huge count hangs onnxruntime or crashes oneDNN
        raise ConfigError(f"--threads {threads} must be between 1 and {4 * cores} (this machine has {cores} cores)")


def _check_slots(slots: int) -> None:
    if slots < 1:
        raise ConfigError("--slots must be at least 1")


@dataclass(frozen=True)
class TritonServer:
    """-b triton: the server's HTTP address, the served model (None: the server's only ready one), and how
    many seconds to wait for it to connect and to answer each request."""

    url: str = "http://127.0.0.1:8000"
    model: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class Request:
    """Backend-neutral options as the command line gives them; ``registry.choose`` consumes it."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 | int8
    tile: int | None = None
    threads: int | None = None
    slots: int = 2
    cache_dir: Path | None = None
    max_shape: tuple[int, int] | None = None  # largest LR (height, width) for a static TensorRT profile
    memory_budget: int | None = None  # bytes; None = srgan_deploy.memory.default_budget()
    triton: TritonServer = field(default_factory=lambda: TritonServer())  # -b triton: where the model is served

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'; choose one of {', '.join(PRECISIONS)}")
        _check_tile(self.tile)
        _check_threads(self.threads)
        _check_slots(self.slots)
        if not (
            self.device in ("auto", "cpu", "cuda") or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise ConfigError(f"unknown device '{self.device}'; use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class TorchOptions:
    device: str = "cpu"  # cpu | cuda | cuda:N (resolved; never auto)
    precision: str = "fp32"  # fp32 | fp16 (CUDA only)
    tile: int | None = None
    memory_budget: int | None = None
    threads: int | None = None
    slots: int = 2  # in-flight batches on CUDA

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"the torch backend runs fp32 or fp16, not {self.precision}")
        if self.device == "cpu" and self.precision == "fp16":
            raise ConfigError("fp16 on CPU is not supported by the torch backend; use --precision fp32")
        _check_tile(self.tile)
        _check_threads(self.threads)
        _check_slots(self.slots)


@dataclass(frozen=True)
class OrtOptions:
    device: str = "cpu"  # cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | fp16 (the TensorRT execution provider's fp16)
    tile: int | None = None
    memory_budget: int | None = None
    threads: int | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"onnxruntime runs fp32 (or fp16 through its TensorRT provider), not {self.precision}")
        _check_tile(self.tile)
        _check_threads(self.threads)


@dataclass(frozen=True)
class OpenVinoOptions:
    precision: str = (
        "fp32"  # fp32 | bf16 | int8 (always set explicitly: OpenVINO's own default is bf16 where the CPU has it)
    )
    tile: int | None = None
    memory_budget: int | None = None
    threads: int | None = None
    requests: int | None = None  # infer requests in flight; None: OpenVINO's optimal number for the streams
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "int8"):
            raise ConfigError(f"the openvino backend runs fp32, bf16 or int8, not {self.precision}")
        _check_tile(self.tile)
        _check_threads(self.threads)
        if self.requests is not None and self.requests < 1:
            raise ConfigError("openvino needs at least 1 infer request")


@dataclass(frozen=True)
class TensorRTOptions:
    device: int = 0  # CUDA device index
    precision: str = "fp16"  # fp16 | fp32
    tile: int | None = None
    memory_budget: int | None = None
    slots: int = 2
    cache_dir: Path | None = None
    max_shape: tuple[int, int] | None = None
    workspace_mib: int = 4096

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ConfigError(f"TensorRT engines are fp16 or fp32, not {self.precision}")
        _check_tile(self.tile)
        _check_slots(self.slots)


@dataclass(frozen=True)
class TensorRTRtxOptions(TensorRTOptions):
    """TensorRT-RTX: the same engine pipeline, for GeForce / RTX PRO GPUs (a distinct type, a distinct backend)."""


@dataclass(frozen=True)
class TritonOptions:
    """A client of a Triton server: where it is, which model, how long to wait, how many requests in flight."""

    url: str = "http://127.0.0.1:8000"
    model: str | None = None
    timeout: float = 60.0
    slots: int = 2
    tile: int | None = None
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ConfigError(f"--triton-timeout {self.timeout} must be a positive number of seconds")
        _check_tile(self.tile)
        _check_slots(self.slots)


@dataclass(frozen=True)
class BicubicOptions:
    tile: int | None = None
    memory_budget: int | None = None


class BackendOptions(Protocol):
    """What every backend's options dataclass has; each adds what means something to its backend. A
    protocol, not a union of today's classes, so a new backend brings its options and no list here grows."""

    @property
    def tile(self) -> int | None: ...

    @property
    def memory_budget(self) -> int | None: ...
