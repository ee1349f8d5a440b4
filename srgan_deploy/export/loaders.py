"""Export-side loaders: callables that produce an artifact from another artifact's loader.

Named for what goes in and what comes out, so a composition reads as the data flow:
``EngineFromOnnx(OnnxFromWeights(...), "tensorrt-rtx", options, ...)``. The runtime composes
them only in ``srgan_deploy.sources``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from srgan_deploy.artifacts import EngineArtifact, OnnxModel, ShapeProfile
from srgan_deploy.backends.options import TensorRTOptions


def profile_for(options: TensorRTOptions) -> ShapeProfile:
    """The optimization profile a runtime-built engine gets: static for --tile, capped for max_shape."""
    if options.tile is not None:
        return ShapeProfile.static(1, options.tile, options.tile)
    if options.max_shape is not None:
        h, w = options.max_shape
        return ShapeProfile((1, min(16, h), min(16, w)), (1, min(270, h), min(480, w)), (1, h, w))
    return ShapeProfile.parse(None, None, None)


@dataclass(frozen=True)
class OnnxFromWeights:
    weights: str | None
    cache_dir: Path

    def __call__(self) -> OnnxModel:
        from srgan_deploy.export.onnx import cached_onnx

        return OnnxModel.from_path(cached_onnx(self.weights, self.cache_dir, io="uint8"))


@dataclass(frozen=True)
class Fp16CoreFromOnnx:
    """The fp16-core graph (uint8 boundary, fp16 inside) of an ONNX model, cached beside our engines.

    What onnxruntime's TensorRT provider gets for --precision fp16: TensorRT 11 dropped the fp16 builder
    flag (``trt_fp16_enable`` does nothing there), so the precision must come from the graph itself, as
    it does for our own engines; TensorRT 10 builds the same graph the same way."""

    onnx: Callable[[], OnnxModel]
    work_dir: Path

    def __call__(self) -> OnnxModel:
        from srgan_deploy.export.fp16 import CONVERTER_VERSION, write_fp16_onnx
        from srgan_deploy.weights import file_sha256

        model = self.onnx()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        digest = file_sha256(model.path)[:12]
        target = self.work_dir / f"{model.path.stem}-{digest}-fp16core-v{CONVERTER_VERSION}.onnx"
        if not target.exists():
            write_fp16_onnx(model.path, target)
        return OnnxModel.from_path(target)


@dataclass(frozen=True)
class EngineFromOnnx:
    onnx: Callable[[], OnnxModel]
    flavour: str
    options: TensorRTOptions
    engine_dir: Path
    notify: Callable[[str], None]

    def __call__(self) -> EngineArtifact:
        from srgan_deploy.export.tensorrt import BuildOptions, get_engine

        model = self.onnx().require_uint8(self.flavour)
        plan, _, _ = get_engine(
            model.path,
            self.engine_dir,
            self.options.precision,
            profile_for(self.options),
            "uint8",
            # built for (and, for TensorRT, on) the GPU the backend runs on: --device cuda:N, not GPU 0
            BuildOptions(workspace_mib=self.options.workspace_mib, device=self.options.device, notify=self.notify),
            name=model.path.stem,
            flavour=self.flavour,
            check_deserialize=False,  # the backend deserializes it next
        )
        return EngineArtifact.from_plan(plan)
