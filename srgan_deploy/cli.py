"""The ``srgan-deploy`` command line: parse options, call one library function, report.

Every ``SrganDeployError`` becomes one line on stderr and exit code 2 (130 on
Ctrl-C); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from srgan_deploy.errors import SrganDeployError

app = typer.Typer(
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


def handles_errors(func: F) -> F:
    """Turn library errors into one clear line and an exit code; keep tracebacks behind --debug.

    The command must take ``ctx: typer.Context`` (it carries the --debug flag).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.get("ctx")
        debug = bool(isinstance(ctx, typer.Context) and ctx.obj and ctx.obj.get("debug"))
        try:
            return func(*args, **kwargs)
        except SrganDeployError as exc:
            if debug:
                raise
            _stderr().print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug:
                raise
            _stderr().print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


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
    typer.Option("--backend", "-b", help="auto | tensorrt | onnxruntime | torch | bicubic (auto picks the fastest)."),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", "-w", help="A .safetensors file or bundled model name; default: the bundled model."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
TileOpt = Annotated[int | None, typer.Option("--tile", help="Process frames in LR tiles of this size (saves memory).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all cores).")]


def _backend_options(weights: str | None, device: str, tile: int | None, threads: int | None, **extra: Any) -> Any:
    from srgan_deploy.backends import BackendOptions

    return BackendOptions(weights=weights, device=device, tile=tile, threads=threads, **extra)


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
    fmt: Annotated[
        str | None, typer.Option("--format", help="Output format: png, jpg or webp (default: as input).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Upscale images 4x. Folders are searched recursively; alpha is kept (upscaled bicubically)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from srgan_deploy.backends import create
    from srgan_deploy.upscale import plan_jobs, upscale_files

    suffix = f".{fmt.lower().lstrip('.')}" if fmt else None
    jobs = plan_jobs(inputs, out_dir, overwrite=overwrite, suffix=suffix)
    engine, choice = create(backend, _backend_options(weights, device, tile, threads))
    err = _stderr()
    with (
        engine,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress,
    ):
        err.print(f"backend: {choice.name} on {engine.device_label} ({choice.reason})", soft_wrap=True)
        task = progress.add_task("upscaling", total=len(jobs))

        def done(job: Any, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
            progress.advance(task)
            _stdout().print(f"{job.source} ({size_in[1]}x{size_in[0]}) -> {job.target} ({size_out[1]}x{size_out[0]})")

        upscale_files(jobs, engine, done)


@app.command()
@handles_errors
def info(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Versions, available backends (and why others are not), GPU, and the bundled models' provenance."""
    from rich.table import Table

    from srgan_deploy.info import collect

    data = collect()
    out = _stdout()
    if as_json:
        out.print_json(json.dumps(data))
        return
    versions = Table(title="versions", show_header=False)
    for key, value in data["versions"].items():
        versions.add_row(key, value or "[dim]not installed[/]")
    out.print(versions)
    backends = Table("backend", "available", "detail", title="backends")
    for name, b in data["backends"].items():
        backends.add_row(name, "[green]yes[/]" if b["available"] else "[red]no[/]", b["detail"])
    out.print(backends)
    gpu = data["gpu"]
    out.print(
        f"GPU: {gpu['name']} (sm {gpu['compute_capability']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda_runtime']})"
        if gpu["cuda"]
        else f"GPU: none ({gpu['reason']})"
    )
    for name, model in data["models"].items():
        tag = " [bold](default)[/]" if model.get("default") else ""
        out.print(f"\nmodel [bold]{name}[/]{tag}: {model['path']}")
        if "error" in model:
            out.print(f"  [red]{model['error']}[/]")
            continue
        if model["placeholder"]:
            out.print("  [bold yellow]PLACEHOLDER: randomly initialised, not trained — output is not meaningful[/]")
        out.print(f"  config: {model['config']}  sha256: {model['sha256'][:16]}")
        for key, value in model["provenance"].items():
            out.print(f"  {key}: {value}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
