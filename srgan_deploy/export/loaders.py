"""Export-side loaders: callables that produce an artifact from another artifact's loader.

Named for what goes in and what comes out, so a composition reads as the data flow:
``EngineFromOnnx(Fp16CoreFromOnnx(...), ...)``. The runtime composes
them only in ``srgan_deploy.sources``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from srgan_deploy.artifacts import EngineArtifact, OnnxModel, ShapeProfile
from srgan_deploy.backends.options import TensorRTOptions
from srgan_deploy.spec import ModelSpec

GPU_SHARE = 0.6  # of the GPU's total memory, what a runtime-built engine's slots may take by default
LARGE_MAX = (1088, 1920)  # the profile max where the slots fit: 1080p input whole (1088: a multiple of 16)


def profile_for(
    options: TensorRTOptions, model: ModelSpec | None = None, gpu_memory: int | None = None
) -> ShapeProfile:
    """The profile below, narrowed to what the network takes: exactly its static shape, its fixed batch."""
    profile = _profile_for(options, model, gpu_memory)
    return profile.fitted(model) if model is not None else profile


def _profile_for(options: TensorRTOptions, model: ModelSpec | None, gpu_memory: int | None) -> ShapeProfile:
    """The optimization profile a runtime-built engine gets: up to --tile, capped for max_shape.

    Otherwise 1088x1920 where the slots' contexts fit, else the default profile's max shape shrinks, aspect
    kept, until every slot's execution context fits the --memory-budget or, without one, 60 % of the GPU's
    total memory: TensorRT allocates a context's activations for the profile's max shape up front, so
    memory must shape the profile (larger frames are tiled). Total, not free, memory: the profile is part of the engine cache's key, and free
    memory changes from run to run."""
    if options.tile is not None:
        # up to the tile, not exactly it: a frame smaller than the tile then runs as it is instead of padded
        # (padding changes the output near the padded edge); tiles of a larger frame are all tile x tile
        t = options.tile
        return ShapeProfile((1, min(8, t), min(8, t)), (1, t, t), (1, t, t))
    if options.max_shape is not None:
        h, w = options.max_shape
        return ShapeProfile((1, min(16, h), min(16, w)), (1, min(270, h), min(480, w)), (1, h, w))
    default = ShapeProfile.parse(None, None, None)
    budgets = [b for b in (options.memory_budget, int(gpu_memory * GPU_SHARE) if gpu_memory else None) if b]
    if not budgets or model is None:
        return default
    from srgan_deploy.memory import TILE_STEP, bytes_per_pixel

    per_pixel = bytes_per_pixel("tensorrt", options.precision, model) * options.slots
    big_h, big_w = LARGE_MAX
    if per_pixel * big_h * big_w <= min(budgets):  # a GPU with room runs 1080p input frames whole
        return ShapeProfile(default.min, default.opt, (1, big_h, big_w))
    _, max_h, max_w = default.max
    ratio = (min(budgets) / (per_pixel * max_h * max_w)) ** 0.5
    if ratio >= 1.0:
        return default
    h = max(default.min[1], int(max_h * ratio) // TILE_STEP * TILE_STEP)
    w = max(default.min[2], int(max_w * ratio) // TILE_STEP * TILE_STEP)
    if (h, w) == (max_h, max_w):
        return default
    return ShapeProfile(default.min, (1, min(default.opt[1], h), min(default.opt[2], w)), (1, h, w))


def gpu_total_memory(device: int) -> int | None:
    """Total memory of GPU ``device``; None where no GPU can say (building ahead of time)."""
    from srgan_deploy.errors import BackendUnavailableError, EngineError
    from srgan_deploy.gpu.cuda_rt import device_count, device_properties

    try:
        if device_count() <= device:
            return None
        return device_properties(device).total_memory
    except (BackendUnavailableError, EngineError):
        return None


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
            profile_for(self.options, model.spec, gpu_total_memory(self.options.device)),
            "uint8",
            # built for (and, for TensorRT, on) the GPU the backend runs on: --device cuda:N, not GPU 0
            BuildOptions(workspace_mib=self.options.workspace_mib, device=self.options.device, notify=self.notify),
            name=model.path.stem,
            flavour=self.flavour,
            check_deserialize=False,  # the backend deserializes it next
        )
        return EngineArtifact.from_plan(plan)
