"""Generator -> ONNX with BN folded, output clamped, dynamic batch/height/width.

Two I/O layouts:
- ``float32``: NCHW RGB in [0, 1] in and out (the model's own interface).
- ``uint8``: NHWC RGB bytes in and out, with cast/transpose/scale/round/clip inside
  the graph. The output has 16x the input's pixels, so uint8 moves 4x fewer bytes
  over PCIe than float32 and removes host-side conversion (the video default).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from srgan_deploy.artifacts import read_onnx_metadata
from srgan_deploy.errors import ConfigError, ExportError, OutputError
from srgan_deploy.notices import say_on_stderr
from srgan_deploy.weights import WeightsInfo, file_sha256, load_generator

if TYPE_CHECKING:
    import torch
    from torch import nn

IO_MODES = ("uint8", "float32")
OPSET = 17
# bump when the traced graph changes for the same weights, so cached ONNX files are re-exported
GRAPH_VERSION = 3  # 3: uint8 only at the boundary Casts (TensorRT rejects uint8 Transpose)
INPUT = "input"
OUTPUT = "output"


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    io: str
    scale: int
    weights: WeightsInfo | None  # None: the wrapped graph of an ONNX file, not exported from weights
    sha256: str


def _uint8_wrapper(model: nn.Module) -> nn.Module:
    import torch
    from torch import nn

    class Uint8IO(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # TensorRT takes uint8 only straight into or out of a Cast at the network boundary:
            # cast first, then transpose; transpose first, then cast (NVIDIA/TensorRT#3985)
            y = self.inner(x.to(torch.float32).permute(0, 3, 1, 2) / 255.0)
            y = torch.round(y * 255.0).clamp(0.0, 255.0).permute(0, 2, 3, 1)
            return y.to(torch.uint8)

    return Uint8IO(model)


def inference_module(weights: str | Path | None, io: str, reference: bool = False) -> tuple[nn.Module, WeightsInfo]:
    """The module the ONNX graph is traced from (BN folded, sub-pixel tail, clamped, I/O wrapped).

    ``reference=True`` gives the model exactly as trained (BN unfolded, original
    tail) behind the same I/O wrapper: what verification compares against, so the
    check covers the folding and the tail rewrite too.
    """
    from srgan_deploy.models import DeployGenerator, InferenceGenerator

    if io not in IO_MODES:
        raise ConfigError(f"unknown --io '{io}'; choose uint8 or float32")
    generator, info = load_generator(weights)
    model: nn.Module = (InferenceGenerator(generator) if reference else DeployGenerator(generator)).eval()
    if io == "uint8":
        model = _uint8_wrapper(model).eval()
    return model, info


def export_onnx(weights: str | Path | None, out: Path, io: str = "uint8", opset: int = OPSET) -> OnnxArtifact:
    """Trace, check (checker + strict shape inference) and annotate the ONNX graph; atomic write."""
    import onnx
    import torch

    if opset < 17:
        raise ConfigError(f"opset {opset} is too old; use 17 or newer")
    model, info = inference_module(weights, io)
    if io == "uint8":
        sample = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
        axes = {INPUT: {0: "batch", 1: "height", 2: "width"}, OUTPUT: {0: "batch", 1: "out_height", 2: "out_width"}}
    else:
        sample = torch.zeros(1, 3, 32, 32)
        axes = {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "out_height", 3: "out_width"}}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out.parent}: {exc.strerror}") from exc
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (sample,),
                str(tmp),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        meta = {
            "srgan_deploy.scale": str(info.config.scale),
            "srgan_deploy.config": info.config.to_json(),
            "srgan_deploy.weights_sha256": info.sha256,
            "srgan_deploy.model_name": info.name,
            "srgan_deploy.io": io,
            "srgan_deploy.graph_version": str(GRAPH_VERSION),
            "srgan_deploy.provenance": json.dumps(info.provenance, sort_keys=True),
        }
        for key, value in meta.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        proto.producer_name = "srgan-deploy"
        proto.doc_string = f"SRGAN generator x{info.config.scale} ({info.name}), io={io}"
        onnx.save(proto, str(tmp))
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {out}: {exc.strerror}") from exc
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"exported ONNX failed validation: {exc}") from exc
    except BaseException:  # Ctrl-C, SIGTERM, anything: never leave a partial file behind
        tmp.unlink(missing_ok=True)
        raise
    return OnnxArtifact(out, io, info.config.scale, info, file_sha256(out))


def cached_onnx(
    weights: str | Path | None, cache_dir: Path, io: str = "uint8", notify: Callable[[str], None] | None = None
) -> Path:
    """The ONNX for these weights in the cache, exported on first use (keyed by the weights' sha256).

    A cached file that is empty, truncated or not ours (an interrupted copy, a full disk) is
    re-exported with a message, instead of breaking every run until someone deletes it by hand."""
    from srgan_deploy.weights import read_info

    info = read_info(weights)
    path = cache_dir / "onnx" / f"{info.name}-{info.sha256[:16]}-{io}-opset{OPSET}-g{GRAPH_VERSION}.onnx"
    if path.exists():
        problem = _cached_problem(path, info.sha256)
        if problem is None:
            return path
        (notify or say_on_stderr)(f"re-exporting the cached ONNX {path.name}: {problem}")
        path.unlink(missing_ok=True)
    export_onnx(info.path, path, io=io)
    return path


def _cached_problem(path: Path, weights_sha256: str) -> str | None:
    if path.stat().st_size == 0:
        return "it is empty"
    try:
        meta = read_onnx_metadata(path)
    except ExportError:
        return "it is truncated or unreadable"
    if meta.get("srgan_deploy.weights_sha256") != weights_sha256:
        return "it is damaged or was exported from other weights"
    if meta.get("srgan_deploy.graph_version") != str(GRAPH_VERSION):
        return "it was exported by another version"
    return None
