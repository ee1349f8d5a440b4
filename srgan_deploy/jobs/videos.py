"""``upscale_videos``: what ``srgan-deploy video`` does, as one call any program (and any test) can make.

The command used to decide these itself, so no library call upscaled videos the way it did: the model
source (resolved once, here), the backend, where segments render (this process, N local worker
processes, or Ray actors) and each worker's share of cores, memory and GPUs, and what a resumed run must
match. The CLI now parses, checks its paths, calls this and prints the outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srgan_deploy.backends.options import TritonServer
from srgan_deploy.dedup import DedupRule
from srgan_deploy.errors import ConfigError, InputFileError, OutputError, OutputExistsError
from srgan_deploy.jobs.coordinator import Executor, Outcome, QueueOptions, Reporter, resolve_codec, run_queue
from srgan_deploy.jobs.plan import DEFAULT_SEGMENT_SECONDS, check_segment_seconds
from srgan_deploy.jobs.ray_pool import DEFAULT_TIMEOUT, LOCAL, check_timeout, ray_address
from srgan_deploy.jobs.workers import InProcess, ProcessPool, machine_cap, parse_devices, worker_specs
from srgan_deploy.memory import check_budget, memory_capacity
from srgan_deploy.video import CONTAINERS, EncodeOptions, with_auto_preset
from srgan_deploy.video_job import VideoJob

if TYPE_CHECKING:
    from srgan_deploy.backends.base import Backend
    from srgan_deploy.sources import ModelSource

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".flv", ".wmv", ".mpg")


@dataclass(frozen=True)
class VideoJobOptions:
    """Everything ``srgan-deploy video`` takes besides its paths; checked when made, before any work."""

    # the model and where it runs
    backend: str = "auto"
    weights: str | None = None  # a bundled name, .safetensors, .onnx or .plan; None: the bundled default
    device: str = "auto"  # auto | cpu | cuda | cuda:N, or cuda:0,cuda:1,... (one per worker)
    precision: str = "auto"
    tile: int | None = None
    threads: int | None = None
    slots: int = 2
    memory_budget: int | None = None  # bytes (per worker when there are several); None: half the free RAM, <= 2 GiB
    # each output
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    start: float | None = None
    duration: float | None = None
    max_frames: int | None = None
    batch: int = 1
    side_by_side: bool = False
    dedup: DedupRule | None = None
    overwrite: bool = False
    # the job
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    restart: bool = False  # discard an earlier run's unfinished work instead of resuming it
    workers: int = 1
    ray: str | None = None  # a Ray address: local (an embedded Ray), auto, ray://HOST:PORT; None: no Ray
    ray_transfer: str = "shared"  # shared: workers use the paths; objects: bytes through Ray's object store
    ray_timeout: float = DEFAULT_TIMEOUT  # seconds for a Ray cluster to answer before the job fails
    triton: TritonServer = field(default_factory=lambda: TritonServer())  # -b triton: where the model is served

    def __post_init__(self) -> None:
        check_segment_seconds(self.segment_seconds)
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if self.ray is not None:
            object.__setattr__(self, "ray", ray_address(self.ray))
        if self.ray_transfer != "shared" and self.ray is None:
            raise ConfigError("--ray-transfer applies to --ray runs only; add --ray (or drop --ray-transfer)")
        check_timeout(self.ray_timeout)
        parse_devices(self.device)
        self.job(Path("-"), Path("-"))  # the per-output options fail now, not at the first input

    @property
    def devices(self) -> list[str]:
        return parse_devices(self.device)

    @property
    def worker_count(self) -> int:
        """A list of GPUs without --workers means one worker per GPU."""
        if len(self.devices) > 1 and self.workers == 1 and self.ray is None:
            return len(self.devices)
        return self.workers

    def job(self, source: Path, target: Path) -> VideoJob:
        return VideoJob(
            source=source,
            target=target,
            encode=self.encode,
            start=self.start,
            duration=self.duration,
            max_frames=self.max_frames,
            batch=self.batch,
            side_by_side=self.side_by_side,
            overwrite=self.overwrite,
            dedup=self.dedup,
        )


@dataclass(frozen=True)
class VideoJobResult:
    backend: str  # the backend that ran (``auto`` resolved)
    outcomes: tuple[Outcome, ...]  # one per input, in order; a failed one carries its error

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def upscale_videos(
    inputs: Sequence[Path],
    outputs: Sequence[Path],
    options: VideoJobOptions,
    events: Reporter | None = None,
) -> VideoJobResult:
    """Upscale ``inputs[i]`` into ``outputs[i]``; the same call again resumes an interrupted run.

    Every output is checked before any work (exists without ``overwrite``, is its input) and its folder
    made; inputs are checked one by one at their turn, so a bad one fails alone (``events.failed``) while
    the others finish. ``events`` hears status lines, warnings, notices of the backend and its workers,
    and progress (frames done, frames expected)."""
    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import choose, create, entry_for
    from srgan_deploy.sources import model_name, model_source

    report = events or Reporter()
    if len(inputs) != len(outputs):
        raise ConfigError(f"{len(inputs)} input(s) but {len(outputs)} output(s); give one output per input")
    jobs = check_outputs([options.job(Path(i), Path(o)) for i, o in zip(inputs, outputs, strict=True)], report.warn)
    for folder in dict.fromkeys(job.target.parent for job in jobs):
        folder.mkdir(parents=True, exist_ok=True)
    devices, workers = options.devices, options.worker_count
    on_this_machine = options.ray in (None, LOCAL)  # a cluster's nodes have their own cores and memory
    source = model_source(options.weights)
    request = Request(
        device=devices[0],
        precision=options.precision,
        tile=options.tile,
        threads=options.threads,
        slots=options.slots,
        memory_budget=options.memory_budget,
        triton=options.triton,
    )
    choice = choose(options.backend, request)
    entry = entry_for(choice.name)
    model_on_cpu = not entry.remote and entry.device_of(choice.options) == "cpu"
    jobs = [dataclasses.replace(job, encode=with_auto_preset(job.encode, model_on_cpu)) for job in jobs]
    if on_this_machine and options.memory_budget is not None:
        check_budget(options.memory_budget, *memory_capacity(entry_for(choice.name).device_of(choice.options)))
    if on_this_machine and workers > 1:
        capped, why = machine_cap(workers, options.memory_budget)
        if capped < workers:
            report.warn(f"--workers {workers}: starting {capped}, as {why}")
            workers = capped
    # made even when workers render: it checks that this backend can run this model file before any work
    backend = create(choice, source, notify=report.status)
    if options.side_by_side:
        label = f"{model_name(source)} ({choice.name})"
        jobs = [dataclasses.replace(job, label=label) for job in jobs]
    queue = QueueOptions(
        segment_seconds=options.segment_seconds,
        restart=options.restart,
        identity=(
            ("backend", choice.name),
            ("precision", getattr(choice.options, "precision", None)),
            ("tile", options.tile),
        ),
        weights=_model_identity(backend, source, entry.remote),
    )
    with contextlib.ExitStack() as stack:
        executor: Executor
        if options.ray is not None:
            from srgan_deploy.jobs.ray_pool import RayPool, import_ray

            import_ray()
            specs = worker_specs(choice, source, workers, devices, explicit_threads=True)
            pool = RayPool(
                options.ray,
                specs,
                options.ray_transfer,
                options.ray_timeout,
                respec=lambda n: worker_specs(choice, source, n, devices, explicit_threads=True),
            )
            stack.callback(pool.close)
            pool.connect()  # before any work: an unreachable cluster fails in seconds and leaves nothing behind
            executor = pool
            report.status(f"backend: {choice.name} on {workers} Ray worker(s) ({choice.reason})")
        elif workers > 1:
            executor = ProcessPool(
                worker_specs(choice, source, workers, devices),
                respec=lambda n: worker_specs(choice, source, n, devices),
            )
            report.status(f"backend: {choice.name} in up to {workers} worker processes ({choice.reason})")
        else:
            executor = InProcess(stack.enter_context(backend))
            report.status(f"backend: {choice.name} on {backend.device_label} ({choice.reason})")
        outcomes = run_queue(jobs, queue, executor, report)
    return VideoJobResult(choice.name, tuple(outcomes))


def _model_identity(backend: Backend[Any], source: ModelSource, remote: bool) -> str:
    """What a resumed job checks to know the model did not change: the model file's sha256, or for a served
    model (``-b triton``) what the server says it serves (a local ``-w`` says nothing about the server)."""
    from srgan_deploy.sources import digest

    if remote:
        with backend:
            served = backend.served_model_identity()
        if served is not None:
            return served
    if getattr(backend.options, "precision", None) == "int8":  # the shipped int8 graph can change, not the weights
        from srgan_deploy.sources import int8_digest

        return f"{digest(source)}+int8:{int8_digest(source)}"
    return digest(source)


def outputs_in_folder(inputs: Sequence[Path], folder: Path) -> tuple[list[Path], list[Path]]:
    """Many inputs (files, or folders of videos) to one output folder: (input files, their outputs), each
    output named after its input and keeping its container (.mkv where the input's cannot be written)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise InputFileError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {item}")
            files += found
        else:
            files.append(item)  # a missing or bad file is reported with the others, at its turn
    targets: list[Path] = []
    seen: set[Path] = set()
    for path in files:
        suffix = path.suffix.lower() if path.suffix.lower() in CONTAINERS else ".mkv"
        target = folder / f"{path.stem}{suffix}"
        if target in seen:
            raise OutputExistsError(f"two inputs map to the same output {target}; upscale them separately")
        seen.add(target)
        targets.append(target)
    return files, targets


def check_outputs(jobs: list[VideoJob], warn: Callable[[str], None] = lambda m: None) -> list[VideoJob]:
    """Before any work: every output is writable as asked, its codec resolved for its container (inputs
    are checked one by one, at their turn, so one bad input does not stop the others)."""
    checked = []
    for job in jobs:
        checked.append(resolve_codec(job, warn))
        if job.source.exists() and job.target.resolve() == job.source.resolve():
            raise OutputExistsError(f"output {job.target} is the input itself; choose another -o folder")
        if job.target.is_dir():
            raise OutputError(
                f"the output {job.target} is a folder; give a file name (or -o {job.target} to write into that folder)"
            )
        if job.target.exists() and not job.overwrite:
            raise OutputExistsError(f"{job.target} exists; pass --overwrite to replace it")
        folder = next((p for p in job.target.parents if p.exists()), None)
        if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise OutputError(f"cannot write {job.target}: {folder} is not a folder this user can write to")
    return checked
