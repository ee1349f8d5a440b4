"""The ``srgan-deploy`` command line: parse options, call one library function, report.

Every ``SrganDeployError`` becomes one line on stderr and exit code 2 (130 on
Ctrl-C); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from srgan_deploy.errors import SrganDeployError

if TYPE_CHECKING:
    from srgan_deploy.dedup import DedupRule
    from srgan_deploy.evaluate import EvalReport
    from srgan_deploy.jobs import Reporter, VideoJobOptions, VideoJobResult

# Options whose value may be left out: bare ``--ray`` means a local Ray, bare ``--dedup`` the default rule.
# Typer has no optional option values, so the group fills in the value before parsing when the next word
# is missing, another option, or not a value of that option (``--ray in.mp4 out.mp4`` stays correct).
OPTIONAL_VALUES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "--ray": ("local", lambda v: v in ("local", "auto") or "://" in v or _looks_like_host_port(v)),
    "--dedup": ("default", lambda v: v in ("exact", "default") or _looks_like_rule(v)),
}


def _looks_like_host_port(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and "/" not in host


def _looks_like_rule(value: str) -> bool:
    parts = value.split(",")
    return len(parts) == 2 and all(p.replace(".", "", 1).isdigit() for p in parts)


def fill_optional_values(args: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            out += args[i + 1 :]
            break
        if arg in OPTIONAL_VALUES:
            default, is_value = OPTIONAL_VALUES[arg]
            nxt = args[i + 1] if i + 1 < len(args) else None
            # a word that is not an existing path and has no file suffix is meant as the value (and is then
            # checked as one, with a message that says so), not taken for an input
            meant = nxt is not None and not Path(nxt).exists() and not Path(nxt).suffix
            # "-1,0.5" is a (bad) value, not an option: it is passed on to be checked, and refused in the
            # option's words, instead of click's "No such option: -1"
            negative = nxt is not None and len(nxt) > 1 and nxt[0] == "-" and (nxt[1].isdigit() or nxt[1] == ".")
            if nxt is None or (nxt.startswith("-") and not negative) or not (is_value(nxt) or meant or negative):
                out.append(default)
    return out


class _Group(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fill_optional_values(list(args)))

    def invoke(self, ctx: Any) -> Any:
        """A command line that does not parse (an unknown option, ``--crf abc``, a missing ``-o``) is one
        ``error:`` line and exit code 2, like every other bad input, instead of click's usage box."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # by name: typer raises its vendored click's UsageError, not click's own
            kinds = [kind.__name__ for kind in type(exc).__mro__]
            if "UsageError" not in kinds or "NoArgsIsHelpError" in kinds:
                raise
            usage_ctx = getattr(exc, "ctx", None)
            where = getattr(usage_ctx, "command_path", None) or "srgan-deploy"
            message = " ".join(str(exc.format_message() if hasattr(exc, "format_message") else exc).split())
            _stderr().print(f"[bold red]error:[/] {escape(message)} (see: {escape(where)} --help)", soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    name="srgan-deploy",
    help="SRGAN 4x super-resolution: train, export (ONNX / TensorRT), benchmark, upscale images and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _stdout() -> Console:
    return Console(highlight=False)


def _debug_requested(ctx: Any) -> bool:
    """--debug lives on the root context's obj. Duck-typed: typer may hand a command a context that is
    not a ``typer.Context`` instance (its vendored click class), and an isinstance check silently fails."""
    find_root = getattr(ctx, "find_root", None)
    root = find_root() if callable(find_root) else None
    obj = getattr(root, "obj", None)
    return bool(isinstance(obj, dict) and obj.get("debug"))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def handles_errors(func: F) -> F:
    """Turn errors into one clear line and an exit code; keep tracebacks behind --debug.

    Our typed errors and the standard ones a user can cause (a path that cannot be written, a value
    that does not parse, an FFmpeg failure) exit with 2 and say what happened; anything else is a bug:
    exit 1 with a line asking for a report. Ctrl-C exits 130, and so does SIGTERM (a scheduler's stop,
    ``timeout``, ``docker stop``): it is raised as Ctrl-C, so every temporary file (an ONNX export, a
    cached model, an engine) is removed on the way out as it is for Ctrl-C.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from srgan_deploy.interrupts import sigterm_as_interrupt

        debug = _debug_requested(kwargs.get("ctx"))
        err = _stderr()
        try:
            with sigterm_as_interrupt():
                return func(*args, **kwargs)
        except typer.Exit:
            raise
        except SrganDeployError as exc:
            if debug:
                raise
            err.print(f"[bold red]error:[/] {escape(_one_line(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug:
                raise
            err.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except (OSError, ValueError, OverflowError, MemoryError) as exc:
            if debug:
                raise
            if isinstance(exc, MemoryError):
                detail = "out of memory; try --tile 256, a smaller input or the lite model"
            else:
                detail = _os_error_line(exc)
            err.print(f"[bold red]error:[/] {escape(detail)}", soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if debug:
                raise
            err.print(
                f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(_one_line(exc))} "
                "(a bug: please report it with the output of the same command run with --debug)",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _os_error_line(exc: BaseException) -> str:
    """OSError with its file name and reason; FFmpeg errors (av.error.*) are OSErrors too."""
    if isinstance(exc, OSError):
        reason = exc.strerror or _one_line(exc)
        name = exc.filename
        return f"{name}: {reason}" if name else reason
    return _one_line(exc)


def _version_callback(value: bool) -> None:
    if value:
        from srgan_deploy import __version__

        typer.echo(f"srgan-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = {"debug": debug}


BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="auto | tensorrt | tensorrt-rtx | onnxruntime | openvino | torch | bicubic (auto picks the fastest).",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="A .safetensors file or bundled model name (default: the bundled model), any ONNX super-resolution "
        "network (inspected and wrapped on first use), or a TensorRT .plan.",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
TileOpt = Annotated[int | None, typer.Option("--tile", help="Process frames in LR tiles of this size (saves memory).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all cores).")]
MemoryBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-budget",
        help="Memory the upscaling may use, e.g. 2G or 512M (default: half the available RAM, at most 2G; per worker with --workers); decides tiling.",
    ),
]
EnsembleOpt = Annotated[
    bool,
    typer.Option(
        "--ensemble",
        help="Average the model over the 8 flips/rotations of each image: a little more PSNR for 8x the time.",
    ),
]
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option("--max-pixels", help="Largest input image accepted, in pixels (default 40000000 = 40 MP)."),
]


def _max_pixels(value: int | None) -> int:
    from srgan_deploy.errors import ConfigError
    from srgan_deploy.images import DEFAULT_MAX_PIXELS

    if value is None:
        return DEFAULT_MAX_PIXELS
    if value < 1:
        raise ConfigError(f"--max-pixels {value} must be positive")
    return value


PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto | fp32 | fp16 | bf16 | int8 (auto: fp16 on GPUs, bf16 with OpenVINO on bf16 CPUs, else fp32; "
        "int8: -b openvino, the bundled models' calibrated int8 graphs, 0.1-0.2 dB below fp32).",
    ),
]


TritonUrlOpt = Annotated[
    str, typer.Option("--triton-url", help="-b triton: the Triton server's HTTP address (host:port or http://...).")
]
TritonModelOpt = Annotated[
    str | None, typer.Option("--triton-model", help="-b triton: the served model (default: the server's only one).")
]
TritonTimeoutOpt = Annotated[
    float, typer.Option("--triton-timeout", help="-b triton: seconds to wait for the server to connect and answer.")
]


def _server(url: str, model: str | None, timeout: float) -> Any:
    from srgan_deploy.backends.options import TritonServer

    return TritonServer(url, model, timeout)


def _memory_budget(text: str | None) -> int | None:
    from srgan_deploy.memory import parse_budget

    return parse_budget(text) if text is not None else None


def _backend(
    name: str,
    weights: str | None,
    device: str,
    tile: int | None,
    threads: int | None,
    precision: str = "auto",
    slots: int = 2,
    memory_budget: str | None = None,
    server: Any = None,
) -> tuple[Any, Any]:
    """The command line's backend options as a ``Request``, and ``registry.backend_for`` (nothing is loaded
    until the backend is opened); its notices are printed on stderr."""
    from srgan_deploy.backends.options import Request, TritonServer
    from srgan_deploy.backends.registry import backend_for

    budget = _memory_budget(memory_budget)
    request = Request(
        device=device,
        precision=precision,
        tile=tile,
        threads=threads,
        slots=slots,
        memory_budget=budget,
        triton=server or TritonServer(),
    )
    engine, choice = backend_for(
        name, request, weights, notify=lambda m: _stderr().print(m, soft_wrap=True, markup=False)
    )
    if budget is not None:
        from srgan_deploy.backends.registry import entry_for
        from srgan_deploy.memory import check_budget, memory_capacity

        check_budget(budget, *memory_capacity(entry_for(choice.name).device_of(choice.options)))
    return engine, choice


@contextlib.contextmanager
def _opened(engine: Any, choice: Any) -> Iterator[Any]:
    """Open the backend (loading or building its model) and say which one runs, and how."""
    with engine:
        _stderr().print(
            f"backend: {choice.name} on {engine.device_label} ({choice.reason})", soft_wrap=True, markup=False
        )
        yield engine


@app.command()
@handles_errors
def upscale(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (png, jpg, webp, bmp, tiff).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")],
    backend: BackendOpt = "auto",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    tile: TileOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "auto",
    memory_budget: MemoryBudgetOpt = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Output format: png, jpg or webp (default: as input).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    max_pixels: MaxPixelsOpt = None,
    ensemble: EnsembleOpt = False,
    triton_url: TritonUrlOpt = "http://127.0.0.1:8000",
    triton_model: TritonModelOpt = None,
    triton_timeout: TritonTimeoutOpt = 60.0,
) -> None:
    """Upscale images (4x with the bundled model; -w any ONNX super-resolution network at its own scale).
    Folders are searched recursively; alpha is kept (upscaled bicubically).

    A file that cannot be read or written is reported and skipped; the run ends with a summary and
    exit code 2 if any failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from srgan_deploy.image_jobs import plan_jobs, upscale_files

    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
    jobs = plan_jobs(inputs, out_dir, overwrite=overwrite, suffix=suffix)
    engine, choice = _backend(
        backend,
        weights,
        device,
        tile,
        threads,
        precision,
        memory_budget=memory_budget,
        server=_server(triton_url, triton_model, triton_timeout),
    )
    err = _stderr()
    with (
        _opened(engine, choice),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("upscaling", total=len(jobs))

        def done(job: Any, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
            progress.advance(task)
            _stdout().print(
                f"{job.source} ({size_in[1]}x{size_in[0]}) -> {job.target} ({size_out[1]}x{size_out[0]})",
                soft_wrap=True,
                markup=False,
            )

        def failed(failure: Any) -> None:
            progress.advance(task)
            if len(jobs) > 1:
                err.print(f"[yellow]skipped:[/] {escape(failure.message)}", soft_wrap=True)

        def warned(message: str) -> None:
            err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

        failures = upscale_files(jobs, engine, done, _max_pixels(max_pixels), failed, ensemble=ensemble, warn=warned)
    if failures:
        from srgan_deploy.errors import InputFileError

        if len(jobs) == 1:
            raise InputFileError(failures[0].message)
        names = ", ".join(str(f.job.source) for f in failures[:5]) + (", ..." if len(failures) > 5 else "")
        raise InputFileError(
            f"{len(failures)} of {len(jobs)} images failed: {names} (reasons above); "
            f"the other {len(jobs) - len(failures)} were written"
        )


@app.command()
@handles_errors
def info(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            "-w",
            help="Show what the runtime knows about this model (.safetensors, bundled name, any .onnx, .plan).",
        ),
    ] = None,
) -> None:
    """Versions, available backends (and why others are not), GPU, and the bundled models' provenance;
    with -w FILE, the model's spec (scale, channels, shapes, overlap, cost)."""
    from rich.table import Table

    from srgan_deploy.info import collect, model_report

    out = _stdout()
    if weights is not None:
        report = model_report(weights, notify=lambda m: _stderr().print(m, soft_wrap=True, markup=False))
        if as_json:
            out.print_json(json.dumps(report))
            return
        out.print(f"model {report['name']}: {report['summary']}", markup=False, soft_wrap=True)
        for key, value in report["spec"].items():
            if key != "config" and value is not None:
                out.print(f"  {key}: {value}", markup=False)
        return
    from srgan_deploy.cpus import CPU_FEATURES

    data = collect()
    if as_json:
        out.print_json(json.dumps(data))
        return
    versions = Table(title="versions", show_header=False)
    for key, value in data["versions"].items():
        versions.add_row(key, escape(value) if value else "[dim]not installed[/]")
    out.print(versions)
    backends = Table("backend", "available", "detail", title="backends")
    for name, b in data["backends"].items():
        backends.add_row(name, "[green]yes[/]" if b["available"] else "[red]no[/]", escape(b["detail"]))
    out.print(backends)
    cpu = data["cpu"]
    quota = f", container quota {cpu['quota']}" if cpu["quota"] else ""
    out.print(
        f"CPU: {cpu['name']}, {cpu['usable_cpus']} usable CPU(s) / {cpu['physical_cores']} core(s){quota}; "
        f"features: {', '.join(cpu['features']) or 'none of ' + ', '.join(CPU_FEATURES)}",
        markup=False,
    )
    gpu = data["gpu"]
    out.print(
        f"GPU: {gpu['name']} (sm {gpu['compute_capability']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda_runtime']})"
        if gpu["cuda"]
        else f"GPU: none ({gpu['reason']})"
    )
    for name, model in data["models"].items():
        tag = " [bold](default)[/]" if model.get("default") else ""
        out.print(f"\nmodel [bold]{escape(name)}[/]{tag}: {escape(model['path'])}")
        if "error" in model:
            out.print(f"  [red]{escape(model['error'])}[/]")
            continue
        if model["placeholder"]:
            out.print("  [bold yellow]PLACEHOLDER: randomly initialised, not trained — output is not meaningful[/]")
        out.print(f"  config: {model['config']}  sha256: {model['sha256'][:16]}", markup=False)
        if model.get("int8"):
            out.print(f"  int8 graph (--precision int8 -b openvino): {model['int8']}", markup=False)
        for key, value in model["provenance"].items():
            out.print(f"  {key}: {value}", markup=False)


@app.command()
@handles_errors
def export(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the .onnx / .plan files.")],
    weights: WeightsOpt = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="onnx | tensorrt (this GPU) | tensorrt-rtx (ahead of time, no GPU needed) | all"
        ),
    ] = "onnx",
    precision: Annotated[str, typer.Option("--precision", help="TensorRT precision: fp16 | fp32")] = "fp16",
    io: Annotated[
        str, typer.Option("--io", help="uint8 (NHWC bytes in/out, for video) | float32 (NCHW [0,1])")
    ] = "uint8",
    min_shape: Annotated[
        str | None, typer.Option("--min-shape", help="Engine profile minimum, NxCxHxW (default 1x3x8x8).")
    ] = None,
    opt_shape: Annotated[
        str | None, typer.Option("--opt-shape", help="Shape TensorRT tunes for (default 1x3x270x480).")
    ] = None,
    max_shape: Annotated[
        str | None,
        typer.Option(
            "--max-shape", help="Engine profile maximum (default 1x3x540x960 = 4K output; larger frames are tiled)."
        ),
    ] = None,
    static_shape: Annotated[
        str | None,
        typer.Option(
            "--static-shape", help="Build for one fixed shape, e.g. a tile 1x3x256x256 (enables CUDA graphs)."
        ),
    ] = None,
    triton_repo: Annotated[
        Path | None, typer.Option("--triton-repo", help="Also write a Triton model repository here.")
    ] = None,
    triton_env: Annotated[
        str | None,
        typer.Option(
            "--triton-env",
            help="The venv with srgan-deploy on the Triton host that runs the <name>_py model (default: this one; none: the server's own Python).",
        ),
    ] = None,
    engine_dir: Annotated[
        Path | None, typer.Option("--engine-dir", help="Engine cache folder (default: user cache dir).")
    ] = None,
    workspace: Annotated[int, typer.Option("--workspace", help="TensorRT workspace limit in MiB.")] = 4096,
    sm: Annotated[
        str | None,
        typer.Option(
            "--sm",
            help="TensorRT-RTX targets, e.g. 86,89,120 (default: this GPU, or every RTX target on a machine without one).",
        ),
    ] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the parity checks against PyTorch.")] = False,
) -> None:
    """Export the generator to ONNX (verified with onnxruntime) and/or an FP16 TensorRT / TensorRT-RTX engine;
    -w any.onnx exports that network inside the uint8 boundary (checked against its original graph)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from srgan_deploy.artifacts import ShapeProfile, parse_shape
    from srgan_deploy.export.command import ExportRequest, run_export
    from srgan_deploy.export.tensorrt import parse_targets

    if static_shape:
        n, _, h, w = parse_shape(static_shape, "--static-shape")
        profile = ShapeProfile.static(n, h, w)
    else:
        profile = ShapeProfile.parse(min_shape, opt_shape, max_shape)
    request = ExportRequest(
        out_dir=out_dir,
        weights=weights,
        fmt=fmt,
        precision=precision,
        io=io,
        profile=profile,
        verify=not no_verify,
        triton_repo=triton_repo,
        triton_env=triton_env,
        engine_dir=engine_dir,
        workspace_mib=workspace,
        targets=parse_targets(sm),
    )
    err = _stderr()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True
    ) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, step: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=step, total=total)

        report = run_export(
            request, notify=lambda m: err.print(m, soft_wrap=True, markup=False), on_progress=on_progress
        )
    out = _stdout()
    if report.onnx:
        out.print(f"onnx: {report.onnx.path}", markup=False)
    if report.engine:
        out.print(f"{request.flavour}: {report.engine}", markup=False)
    for folder in report.triton:
        out.print(f"triton: {folder}", markup=False)


@app.command()
@handles_errors
def bench(
    ctx: typer.Context,
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="Comma-separated backends, or 'all' available.")
    ] = "all",
    size: Annotated[str, typer.Option("--input", help="Input WIDTHxHEIGHT, e.g. 480x270.")] = "480x270",
    output: Annotated[
        str | None, typer.Option("--output", help="Or give the output size instead: 1080p, 720p, 2160p or WxH.")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", help="Frames per call.")] = 1,
    iters: Annotated[int, typer.Option("--iters", help="Timed iterations.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed warm-up iterations.")] = 3,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    slots: Annotated[int, typer.Option("--slots", help="In-flight batches on GPU backends.")] = 2,
    precision: PrecisionOpt = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results as JSON to this file.")] = None,
    triton_url: TritonUrlOpt = "http://127.0.0.1:8000",
    triton_model: TritonModelOpt = None,
    triton_timeout: TritonTimeoutOpt = 60.0,
) -> None:
    """Latency (p50/p90/p99), frames/s, GFLOP/s vs the same-run GEMM peak, and parity vs PyTorch, per backend."""
    from rich.table import Table

    from srgan_deploy.bench import BenchConfig, check_output_file, input_for_output, parse_size, run_bench, write_json
    from srgan_deploy.sources import model_source, model_spec

    if json_out is not None:
        check_output_file(json_out, "--json")
    err = _stderr()
    scale = model_spec(model_source(weights), notify=lambda m: err.print(m, soft_wrap=True, markup=False)).scale
    height, width = input_for_output(output, scale) if output else parse_size(size)
    names = tuple(b.strip() for b in backend.split(",") if b.strip())
    if not names:
        from srgan_deploy.errors import ConfigError

        raise ConfigError(f"--backend '{backend}' names no backend; give all, or names such as onnxruntime,openvino")
    config = BenchConfig(
        names,
        height,
        width,
        batch,
        warmup,
        iters,
        weights,
        device,
        threads,
        slots,
        precision,
        triton=_server(triton_url, triton_model, triton_timeout),
    )
    report = run_bench(config, notify=lambda m: err.print(m, soft_wrap=True, markup=False))
    table = Table(
        "backend",
        "device",
        "p50 ms",
        "p99 ms",
        "fps",
        "GFLOP/s",
        "of peak",
        "PSNR",
        "max",
        "peak RSS",
        title=f"{width}x{height} -> {width * scale}x{height * scale}, batch {batch}, {iters} iters",
        caption="fps with in-flight pipelining; peak = same-run GEMM in the precision the backend computes in "
        "(int8: the bf16 or fp32 GEMM its other layers run in; no int8 GEMM reference) "
        f"(CPU features: {', '.join(report['machine'].get('cpu_features') or ['?'])}); "
        f"PSNR/max-abs vs {report['config']['reference']}",
    )
    for r in report["results"]:
        table.add_row(
            r["backend"],
            r["device"],
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['fps']:.2f}",
            f"{r['gflops']:.0f}",
            f"{100 * r['peak_fraction']:.0f}% of {r['peak_gflops']:.0f} {r['peak_precision']}",
            f"{r['psnr_vs_torch']:.1f}",
            f"{r['max_abs_vs_torch']:.0f}",
            f"{r['extra']['peak_rss_mb'] / 1024:.1f} GB" if "peak_rss_mb" in r["extra"] else "-",
        )
    _stdout().print(table)
    if json_out:
        write_json(report, json_out)
        err.print(f"wrote {json_out}", markup=False)


@app.command()
@handles_errors
def video(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="IN OUT (one video; the container follows OUT's extension .mp4 .mkv .mov .webm), "
            "or with -o: any number of input videos or folders of videos.",
            show_default=False,
        ),
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder for many inputs (each keeps its name).")
    ] = None,
    backend: BackendOpt = "auto",
    weights: WeightsOpt = None,
    device: Annotated[
        str, typer.Option("--device", help="auto | cpu | cuda | cuda:N, or cuda:0,cuda:1,... one per worker")
    ] = "auto",
    tile: TileOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "auto",
    memory_budget: MemoryBudgetOpt = None,
    codec: Annotated[
        str, typer.Option("--codec", help="libx264 (default), libx265/hevc, h264_nvenc, hevc_nvenc, libvpx-vp9.")
    ] = "libx264",
    crf: Annotated[int, typer.Option("--crf", help="Constant quality (lower = better, bigger).")] = 18,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="Encoder speed preset; auto: veryfast when the model runs on this CPU (the encoder shares its "
            "cores), medium otherwise.",
        ),
    ] = "auto",
    pix_fmt: Annotated[str, typer.Option("--pix-fmt", help="Output pixel format.")] = "yuv420p",
    start: Annotated[float | None, typer.Option("--start", help="Start at this many seconds.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Process this many seconds.")] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after N frames (previews).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Frames per inference call.")] = 1,
    slots: Annotated[int, typer.Option("--slots", help="Batches in flight on GPU backends.")] = 2,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Left half bicubic, right half the model (for demos).")
    ] = False,
    segment_seconds: Annotated[
        float, typer.Option("--segment-seconds", help="Length of the resumable segments the work is cut into.")
    ] = 4.0,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard unfinished work of an earlier run instead of resuming it.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="Segments rendered at once, each worker with its own backend.")
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Render on Ray: bare --ray starts a local Ray; --ray auto / ray://HOST:10001 joins a cluster.",
        ),
    ] = None,
    ray_transfer: Annotated[
        str,
        typer.Option(
            "--ray-transfer",
            help="shared: workers use the paths (storage every node mounts); objects: send input and segments "
            "through Ray's object store (no shared storage; for inputs that fit in it).",
        ),
    ] = "shared",
    ray_timeout: Annotated[
        float,
        typer.Option("--ray-timeout", help="Seconds for the Ray cluster to answer before giving up (60)."),
    ] = 60.0,
    dedup: Annotated[
        str | None,
        typer.Option(
            "--dedup",
            help="Reuse the output of repeated frames: bare --dedup (max diff 32, mean 0.5 on 0-255), exact, or MAX,MEAN.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    triton_url: TritonUrlOpt = "http://127.0.0.1:8000",
    triton_model: TritonModelOpt = None,
    triton_timeout: TritonTimeoutOpt = 60.0,
) -> None:
    """Upscale videos 4x in resumable segments: audio and subtitles copied, timestamps kept, re-run to resume."""
    from srgan_deploy.dedup import parse_rule
    from srgan_deploy.jobs import VideoJobOptions, upscale_videos
    from srgan_deploy.video import EncodeOptions

    rule = parse_rule(dedup) if dedup is not None else None
    options = VideoJobOptions(
        backend=backend,
        weights=weights,
        device=device,
        precision=precision,
        tile=tile,
        threads=threads,
        slots=slots,
        memory_budget=_memory_budget(memory_budget),
        encode=EncodeOptions(codec, crf, preset, pix_fmt),
        start=start,
        duration=duration,
        max_frames=max_frames,
        batch=batch,
        side_by_side=side_by_side,
        dedup=rule,
        overwrite=overwrite,
        segment_seconds=segment_seconds,
        restart=restart,
        workers=workers,
        ray=ray,
        ray_transfer=ray_transfer,
        ray_timeout=ray_timeout,
        triton=_server(triton_url, triton_model, triton_timeout),
    )
    inputs, outputs = _video_paths(paths, out_dir, options)
    with _VideoDisplay(many=len(inputs) > 1) as events:
        result = upscale_videos(inputs, outputs, options, events)
    _report_videos(result, rule)


def _video_paths(paths: list[Path], out_dir: Path | None, options: VideoJobOptions) -> tuple[list[Path], list[Path]]:
    """IN OUT (checked whole before any work), or any number of inputs and folders with -o FOLDER."""
    from srgan_deploy.errors import ConfigError, OutputError
    from srgan_deploy.jobs import outputs_in_folder
    from srgan_deploy.video_job import check_paths

    if out_dir is None:
        if len(paths) != 2:
            raise ConfigError(
                f"give IN OUT for one video, or -o FOLDER for many inputs (got {len(paths)} path(s) and no -o)"
            )
        check_paths(options.job(paths[0], paths[1]))
        return [paths[0]], [paths[1]]
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"-o {out_dir} exists and is not a folder")
    return outputs_in_folder(paths, out_dir)


class _VideoDisplay:
    """The job's events on stderr: status lines and warnings, and one progress bar over every input, drawn
    from the first frame count on (opening the backend and indexing come before it, as plain lines)."""

    def __init__(self, many: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.err = _stderr()
        self.many = many  # with one input its error is the command's error, said once at the end
        self.bar = Progress(
            TextColumn("[bold]upscaling"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
        )
        self.task: Any = None
        self.first = 0  # frames done by an earlier run do not count towards this run's speed
        self.started = 0.0

    def __enter__(self) -> Reporter:
        from srgan_deploy.jobs import Reporter

        return Reporter(progress=self.progress, status=self.status, warn=_warn, failed=self.failed)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def progress(self, done: int, total: int) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("video", total=None, fps="")
            self.first, self.started = done, time.perf_counter()
        rate = (done - self.first) / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, completed=done, total=total or None, fps=f"{rate:.2f} fps")

    def status(self, message: str) -> None:
        self.err.print(escape(message), soft_wrap=True)

    def failed(self, message: str) -> None:
        if self.many:
            self.err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)


def _report_videos(result: VideoJobResult, rule: DedupRule | None) -> None:
    from srgan_deploy.errors import VideoError

    out = _stdout()
    outcomes, failed = result.outcomes, result.failed
    for o in outcomes:
        if not o.ok:
            continue
        extra = f", {o.reused} of {o.segments} segments reused" if o.reused else ""
        if o.duplicates:
            extra += f", {o.duplicates} duplicate frames reused ({rule.describe() if rule else ''})"
        if o.bad_packets:
            extra += f", {o.bad_packets} damaged packets skipped"
        out.print(
            f"{o.job.target}: {o.frames} frames {o.width}x{o.height} ({o.codec}) in {o.seconds:.1f} s = {o.fps:.2f} fps, "
            f"{o.bytes / 1e6:.1f} MB, {o.segments} segment(s), backend {result.backend}{extra}",
            soft_wrap=True,
            markup=False,
        )
    if len(outcomes) > 1:
        out.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} videos done", markup=False)
    if len(outcomes) == 1 and failed:
        # the error as it was raised: a bug stays exit 1 with its traceback under --debug
        raise failed[0].cause if failed[0].cause is not None else VideoError(str(failed[0].error))
    if failed:
        names = ", ".join(o.job.source.name for o in failed)
        raise VideoError(f"{len(failed)} of {len(outcomes)} video(s) failed: {names} (errors above)")


def _warn(message: str) -> None:
    _stderr().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


@app.command("eval")
@handles_errors
def eval_cmd(
    ctx: typer.Context,
    folders: Annotated[
        list[Path],
        typer.Argument(help="Folders of HR images (e.g. Set5 Set14); several give a summary and their mean."),
    ],
    backend: BackendOpt = "auto",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    tile: TileOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = "auto",
    memory_budget: MemoryBudgetOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N images of each folder.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON to this file.")] = None,
    ensemble: EnsembleOpt = False,
) -> None:
    """PSNR/SSIM (Y channel, scale-px shave: 4 at x4, the paper's protocol) and texture (fine detail vs HR's, 1 = HR's) of bicubic and the model on folders of HR images."""
    from srgan_deploy.ensemble import with_ensemble
    from srgan_deploy.evaluate import evaluate, mean_of_sets, texture_of_sets, write_reports_json

    for folder in folders:
        if not folder.is_dir():
            from srgan_deploy.errors import InputFileError

            raise InputFileError(f"{folder} is not a folder of images")
    if limit is not None and limit < 1:
        from srgan_deploy.errors import ConfigError

        raise ConfigError(f"--limit {limit} must be at least 1 (leave it out for every image)")
    if json_out is not None:
        from srgan_deploy.bench import check_output_file

        check_output_file(json_out, "--json")
    engine, choice = _backend(backend, weights, device, tile, threads, precision, memory_budget=memory_budget)
    with _opened(engine, choice):  # one backend for every folder: compiled once
        run = with_ensemble(engine.upscale, ensemble)
        reports = [
            evaluate(
                folder,
                lambda img: run(img[None])[0],
                engine.scale,
                limit=limit,
                shave=engine.scale,  # the benchmark protocol shaves scale pixels: the paper's 4 at x4
                warn=lambda m: _stderr().print(f"[yellow]warning:[/] {escape(m)}", soft_wrap=True),
            )
            for folder in folders
        ]
    if json_out:
        write_reports_json(
            reports,
            json_out,
            {"backend": choice.name, "precision": getattr(choice.options, "precision", None), "ensemble": ensemble},
        )
    out = _stdout()
    for report in reports:
        _print_eval_report(out, report)
    if len(reports) > 1:
        from rich.table import Table

        table = Table("set", "images", "bicubic PSNR", "model PSNR", "model - bicubic", title="summary")
        for report in reports:
            b, m = report.mean("bicubic"), report.mean("model")
            table.add_row(
                escape(report.dataset),
                str(len(report.images)),
                f"{b.psnr:.3f}",
                f"{m.psnr:.3f}",
                f"{m.psnr - b.psnr:+.3f}",
            )
        b, m = mean_of_sets(reports, "bicubic"), mean_of_sets(reports, "model")
        table.add_row("[bold]mean of sets[/]", "", f"{b.psnr:.3f}", f"[bold]{m.psnr:.3f}[/]", f"{m.psnr - b.psnr:+.3f}")
        out.print(table)
        t = texture_of_sets(reports)
        out.print(f"texture, mean of sets (1 = HR's): model {t.model:.3f}, bicubic {t.bicubic:.3f}")


def _print_eval_report(out: Console, report: EvalReport) -> None:
    from rich.table import Table

    from srgan_deploy.evaluate import PAPER_TABLE

    table = Table(
        "image",
        "bicubic PSNR",
        "bicubic SSIM",
        "model PSNR",
        "model SSIM",
        "bicubic texture",
        "model texture",
        title=escape(f"{report.dataset} x{report.scale} ({report.protocol})"),
    )
    for item in report.images:
        table.add_row(
            escape(item.name),
            f"{item.bicubic.psnr:.2f}",
            f"{item.bicubic.ssim:.4f}",
            f"{item.model.psnr:.2f}",
            f"{item.model.ssim:.4f}",
            f"{item.texture.bicubic:.3f}",
            f"{item.texture.model:.3f}",
        )
    b, m, t = report.mean("bicubic"), report.mean("model"), report.mean_texture()
    table.add_row(
        "[bold]mean[/]",
        f"{b.psnr:.2f}",
        f"{b.ssim:.4f}",
        f"[bold]{m.psnr:.2f}[/]",
        f"{m.ssim:.4f}",
        f"{t.bicubic:.3f}",
        f"[bold]{t.model:.3f}[/]",
    )
    out.print(table)
    out.print(f"model - bicubic: {m.psnr - b.psnr:+.2f} dB")
    out.print(f"texture (fine detail vs HR's, 1 = HR's): model {t.model:.3f}, bicubic {t.bicubic:.3f}")
    paper = PAPER_TABLE.get(report.dataset.lower())
    if paper:
        ref = ", ".join(f"{k} {p:.2f}/{s:.4f}" for k, (p, s) in paper.items())
        out.print(f"paper (Ledig et al. 2017, Table 2): {ref}")


@app.command()
@handles_errors
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Folder of HR training images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, generator.safetensors, log.jsonl.")],
    phase: Annotated[
        str | None, typer.Option("--phase", help="srresnet (pixel loss) or srgan (content + adversarial).")
    ] = None,
    content: Annotated[
        str | None,
        typer.Option(
            "--content",
            help="srgan-phase content loss: mse (the paper's SRGAN-MSE, no VGG weights), vgg22 or vgg54 (need --vgg-weights).",
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Total optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Per-process batch size.")] = None,
    crop: Annotated[int | None, typer.Option("--crop", help="HR crop size (LR = crop / scale).")] = None,
    degradation: Annotated[
        str | None, typer.Option("--degradation", help="bicubic (MATLAB-style) or blur (Gaussian, then bicubic).")
    ] = None,
    blur_sigma: Annotated[float | None, typer.Option("--blur-sigma")] = None,
    blur_kernel: Annotated[int | None, typer.Option("--blur-kernel")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate.")] = None,
    lr_milestones: Annotated[
        str | None, typer.Option("--lr-milestones", help="Comma-separated steps where lr *= --lr-gamma.")
    ] = None,
    lr_gamma: Annotated[float | None, typer.Option("--lr-gamma")] = None,
    channels: Annotated[int | None, typer.Option("--channels", help="Generator width (paper: 64).")] = None,
    blocks: Annotated[int | None, typer.Option("--blocks", help="Residual blocks (paper: 16).")] = None,
    scale: Annotated[int | None, typer.Option("--scale")] = None,
    val: Annotated[Path | None, typer.Option("--val", help="Folder of HR images for validation PSNR/SSIM.")] = None,
    val_every: Annotated[int | None, typer.Option("--val-every")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Weights to start from (srgan phase default: the bundled model); smaller ones are grown to --channels/--blocks, keeping their function.",
        ),
    ] = None,
    vgg_weights: Annotated[
        Path | None, typer.Option("--vgg-weights", help="torchvision vgg19-dcbb9e9d.pth (or .safetensors).")
    ] = None,
    vgg_layer: Annotated[
        str | None, typer.Option("--vgg-layer", help="Override the VGG content layer (e.g. relu3_4).")
    ] = None,
    adv_weight: Annotated[
        float | None, typer.Option("--adv-weight", help="Adversarial loss weight (paper: 1e-3).")
    ] = None,
    d_lr: Annotated[float | None, typer.Option("--d-lr", help="Discriminator learning rate (default: --lr).")] = None,
    d_dropout: Annotated[
        float | None, typer.Option("--d-dropout", help="Dropout before the discriminator's last dense layer.")
    ] = None,
    pixel_weight: Annotated[
        float | None, typer.Option("--pixel-weight", help="Extra pixel-MSE weight in the srgan phase (seed's option).")
    ] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="srresnet-phase pixel loss: mse (paper) or l1.")] = None,
    ema: Annotated[
        float | None,
        typer.Option(
            "--ema",
            help="Validate and save an exponential moving average of the weights with this decay (0.999 is usual; 0 = off).",
        ),
    ] = None,
    snapshot_every: Annotated[
        int | None,
        typer.Option("--snapshot-every", help="Also keep snapshots/generator-step-N.safetensors every N steps."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    threads: ThreadsOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name recorded in the weights' provenance.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    no_amp: Annotated[bool, typer.Option("--no-amp", help="Disable bf16 mixed precision on CUDA.")] = False,
) -> None:
    """Train the generator: phase srresnet (pixel loss), then srgan. Works under torchrun for multi-GPU.

    Every option left out takes TrainConfig's default (srgan_deploy/train/config.py)."""
    from srgan_deploy.train.config import config_from_options
    from srgan_deploy.train.loop import run_training

    config = config_from_options(
        data=data,
        out=out,
        model={"scale": scale, "channels": channels, "blocks": blocks},
        degradation={"kind": degradation, "blur_sigma": blur_sigma, "blur_kernel": blur_kernel},
        lr_milestones=lr_milestones,
        phase=phase,
        steps=steps,
        batch_size=batch_size,
        crop=crop,
        lr=lr,
        lr_gamma=lr_gamma,
        seed=seed,
        checkpoint_every=checkpoint_every,
        val=val,
        val_every=val_every,
        init=init,
        vgg_weights=vgg_weights,
        content=content,
        vgg_layer=vgg_layer,
        adv_weight=adv_weight,
        d_lr=d_lr,
        d_dropout=d_dropout,
        pixel_weight=pixel_weight,
        loss=loss,
        ema=ema,
        snapshot_every=snapshot_every,
        amp=False if no_amp else None,
        threads=threads,
        name=name,
    )
    phase_name, total = config.phase, config.steps
    err = _stderr()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=err,
        disable=os.environ.get("RANK", "0") != "0",  # under torchrun only rank 0 draws a bar
    ) as progress:
        task = progress.add_task(phase_name, total=total, info="")

        def report(step: int, total: int, losses: dict[str, float], rate: float) -> None:
            info = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
            progress.update(task, completed=step, info=f"{info} {rate:.2f} it/s")

        result = run_training(
            config,
            resume=resume,
            warn=lambda msg: err.print(f"[yellow]warning:[/] {escape(msg)}", soft_wrap=True),
            progress=report,
        )
    _stdout().print(
        f"trained to step {result.step}; weights: {result.weights}"
        + (f"; validation {result.val}" if result.val else ""),
        markup=False,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
