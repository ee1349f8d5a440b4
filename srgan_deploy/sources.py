"""Model sources and the loaders that turn them into what a backend runs.

A user names a model as a bundled name, a ``.safetensors``, an ``.onnx`` (ours, or any super-resolution
network: it is inspected and wrapped on first use) or a ``.plan``. That text is resolved once, here, into
a typed ``ModelSource``; backends never look at suffixes, and every stage reads the model through its
``ModelSpec`` (``model_spec``). A backend
takes a *loader*: a no-argument callable that yields its artifact (Polygraphy's
``EngineFromBytes(...)`` idea). This is the one runtime module that composes the export stage's
loaders (``export.loaders``, which import nothing of the runtime's composition or its backends), and it
imports them lazily, so the runtime has no import-time edge to ``export``. What the runtime decides for a
loader it composes lives here: which graph a backend runs, and the profile of an engine built on first
use (``RuntimeProfile``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from srgan_deploy.artifacts import EngineArtifact, OnnxModel, ShapeProfile, is_ours, read_onnx_metadata
from srgan_deploy.errors import BackendUnavailableError, ConfigError, EngineError, InputFileError, ModelError
from srgan_deploy.notices import Notify, say_on_stderr
from srgan_deploy.spec import ModelSpec

if TYPE_CHECKING:
    from srgan_deploy.backends.options import TensorRTOptions
    from srgan_deploy.models.generator import Generator
    from srgan_deploy.weights import WeightsInfo


@dataclass(frozen=True)
class Weights:
    """A ``.safetensors`` file, a bundled model name, or None for the default model."""

    name_or_path: str | None = None


@dataclass(frozen=True)
class OnnxFile:
    path: Path


@dataclass(frozen=True)
class EnginePlan:
    path: Path


ModelSource = Weights | OnnxFile | EnginePlan
# PyTorch checkpoints of other architectures: never unpickled here (see model_source)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
ONNX_BACKENDS = "onnxruntime, openvino, tensorrt or tensorrt-rtx"


def model_source(value: str | Path | ModelSource | None) -> ModelSource:
    """Resolve ``--weights`` once, at the edge. ONNX and plan files must exist; weights are checked on load.

    A ``.pth`` is refused before anything opens it: loading one means unpickling (code execution) and an
    architecture library (spandrel), which imports torchvision, whose PyPI wheels are CUDA builds that do not
    load beside the CPU torch here. Converting it to ONNX once, where spandrel loads, is the safe path."""
    if isinstance(value, Weights | OnnxFile | EnginePlan):
        return value
    if value is None:
        return Weights(None)
    text = str(value)
    suffix = Path(text).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        raise ModelError(
            f"{Path(text).name} is a PyTorch checkpoint, which srgan-deploy never unpickles; convert it to ONNX where "
            "spandrel loads (m = spandrel.ModelLoader().load_from_file(PATH).model.eval(); torch.onnx.export(m, "
            "torch.rand(1, 3, 64, 64), 'model.onnx', dynamic_axes={'input': {2: 'h', 3: 'w'}}, input_names=['input'])) "
            "and give -w model.onnx"
        )
    if suffix in (".onnx", ".plan", ".engine"):
        path = Path(text)
        if not path.is_file():
            raise InputFileError(f"{path} not found; give an existing {suffix} file or a .safetensors / bundled name")
        return OnnxFile(path) if suffix == ".onnx" else EnginePlan(path)
    return Weights(text)


def model_name(source: ModelSource) -> str:
    """The model's name as its provenance records it (for labels and reports)."""
    if isinstance(source, Weights):
        from srgan_deploy.weights import read_info

        return read_info(source.name_or_path).name
    if isinstance(source, OnnxFile):
        return read_onnx_metadata(source.path).get("srgan_deploy.model_name", source.path.stem)
    return source.path.stem


def digest(source: ModelSource) -> str:
    """SHA-256 of the model file: what a resumed job checks to know the model did not change (for a foreign
    ONNX, with its settings file's)."""
    from srgan_deploy.weights import file_sha256, resolve_weights

    if isinstance(source, OnnxFile) and not is_ours(source.path):
        from srgan_deploy.export.foreign import identity

        return identity(source.path)
    path = resolve_weights(source.name_or_path) if isinstance(source, Weights) else source.path
    return file_sha256(path)


def describe(source: ModelSource) -> str:
    if isinstance(source, Weights):
        return source.name_or_path or "the bundled default model"
    return str(source.path)


def resolve_onnx(path: Path, cache_dir: Path | None = None, notify: Notify = say_on_stderr) -> OnnxModel:
    """The graph the runtime runs for an ONNX file: ours as it is; any other super-resolution network
    inspected, wrapped into the uint8 boundary and verified once, then taken from the cache."""
    from srgan_deploy.cache import cache_dir as default_cache
    from srgan_deploy.export.foreign import resolve_onnx as resolve

    return resolve(path, default_cache(cache_dir), notify)


def model_spec(source: ModelSource, cache_dir: Path | None = None, notify: Notify = say_on_stderr) -> ModelSpec:
    """What every stage reads about the model, from whatever the user named."""
    if isinstance(source, Weights):
        from srgan_deploy.weights import read_info

        info = read_info(source.name_or_path)
        return ModelSpec.from_config(info.config, info.name)
    if isinstance(source, OnnxFile):
        return resolve_onnx(source.path, cache_dir, notify).spec
    return EngineArtifact.from_plan(source.path).spec


def reference_runner(
    source: ModelSource, cache_dir: Path | None = None, notify: Notify = say_on_stderr
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """(uint8 frames -> uint8 frames, its name): what parity is measured against. For weights, PyTorch fp32
    (the model as trained); for a foreign ONNX, the original graph on onnxruntime fp32 (the network as its
    authors run it, before our wrapper)."""
    if isinstance(source, OnnxFile) and not is_ours(source.path):
        from srgan_deploy.export.foreign import OriginalReference

        spec = resolve_onnx(source.path, cache_dir, notify).spec
        return OriginalReference(source.path, spec), "onnxruntime fp32 on the original graph"
    if isinstance(source, Weights):
        from srgan_deploy.export.verify import torch_reference

        return torch_reference(source.name_or_path, "uint8"), "torch fp32"
    raise ConfigError(
        f"{describe(source)} has no reference to measure parity against; give its .safetensors weights or the "
        "original .onnx"
    )


# --------------------------------------------------------------------------- loaders

INT8_SUFFIX = "-int8.onnx"


def shipped_int8() -> dict[str, Path]:
    """Bundled model name -> its calibrated int8 graph shipped beside its weights (tools/quantize_int8.py)."""
    from srgan_deploy.weights import bundled_weights_dir

    return {p.name[: -len(INT8_SUFFIX)]: p for p in sorted(bundled_weights_dir().glob(f"*{INT8_SUFFIX}"))}


def is_quantized(path: Path) -> bool:
    """Whether an ONNX graph carries int8 quantization (DequantizeLinear or QLinearConv nodes)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model; give an .onnx file (or a .safetensors)") from exc
    return any(node.op_type in ("DequantizeLinear", "QLinearConv") for node in graph.node)


def int8_digest(source: ModelSource) -> str:
    """sha256 of the int8 graph shipped for bundled weights ("" for an ONNX file: its own digest covers it)."""
    if not isinstance(source, Weights):
        return ""
    from srgan_deploy.weights import file_sha256, read_info

    path = shipped_int8().get(read_info(source.name_or_path).name)
    return file_sha256(path) if path is not None else ""


def int8_graph(source: ModelSource, cache_dir: Path, who: str, notify: Notify = say_on_stderr) -> OnnxModel:
    """The int8 graph ``--precision int8`` runs. Why not quantize on the fly: calibration needs natural images
    and NNCF (a large dependency), and its accuracy is measured once, where the graph is made. So: the graphs
    shipped for the bundled models (matched to the weights by sha256), or an ONNX file given that is
    quantized already."""
    how = "make one with python tools/quantize_int8.py (docs/performance.md) and pass it with -w"
    if isinstance(source, Weights):
        from srgan_deploy.weights import read_info

        info = read_info(source.name_or_path)
        shipped = shipped_int8()
        path = shipped.get(info.name)
        if path is not None:
            model = OnnxModel.from_path(path)
            if model.metadata.get("srgan_deploy.weights_sha256") == info.sha256:
                return model.require_uint8(who)
        names = ", ".join(shipped) or "none"
        raise ConfigError(
            f"--precision int8 runs calibrated int8 graphs, shipped for {names}; {describe(source)} has none: {how}"
        )
    if isinstance(source, OnnxFile):
        if not is_quantized(source.path):
            raise ConfigError(f"{source.path} is not quantized (no DequantizeLinear or QLinearConv nodes): {how}")
        return resolve_onnx(source.path, cache_dir, notify).require_uint8(who)
    raise ConfigError(f"{who} runs ONNX graphs or weights, not a TensorRT plan ({source.path}); use -b tensorrt")


OnnxLoader = Callable[[], OnnxModel]
EngineLoader = Callable[[], EngineArtifact]
GeneratorLoader = Callable[[], "tuple[Generator, WeightsInfo]"]


def onnx_loader(
    source: ModelSource,
    cache_dir: Path,
    who: str,
    fp16_core: bool = False,
    notify: Notify = say_on_stderr,
    int8: bool = False,
) -> OnnxLoader:
    """The uint8-I/O ONNX graph: the file given (a foreign one wrapped on first use), or exported from the
    weights into the cache on first use; with ``fp16_core``, its fp16-core version (for onnxruntime's
    TensorRT provider at fp16); with ``int8``, the calibrated int8 graph (``int8_graph``)."""
    if int8:
        return lambda: int8_graph(source, cache_dir, who, notify)
    if fp16_core:
        from srgan_deploy.export.loaders import Fp16CoreFromOnnx

        return Fp16CoreFromOnnx(onnx_loader(source, cache_dir, who, notify=notify), cache_dir / "fp16core")
    if isinstance(source, EnginePlan):
        raise ConfigError(f"{who} runs ONNX graphs or weights, not a TensorRT plan ({source.path}); use -b tensorrt")
    if isinstance(source, OnnxFile):
        path = source.path
        return lambda: resolve_onnx(path, cache_dir, notify).require_uint8(who)

    def load() -> OnnxModel:
        from srgan_deploy.export.onnx import cached_onnx

        return OnnxModel.from_path(cached_onnx(source.name_or_path, cache_dir, io="uint8"))

    return load


def engine_loader(
    source: ModelSource, options: TensorRTOptions, flavour: str, cache_dir: Path, notify: Callable[[str], None]
) -> EngineLoader:
    """A plan given by the user, or the engine of the model's uint8 ONNX, built on first use into the cache
    (``export.loaders.EngineFromOnnx``: the same build-or-load the export command makes) for the GPU the
    backend runs on (``--device cuda:N``, not GPU 0), with the profile its slots fit (``RuntimeProfile``)."""
    if isinstance(source, EnginePlan):
        path = source.path
        return lambda: EngineArtifact.from_plan(path)
    from srgan_deploy.export.loaders import EngineFromOnnx
    from srgan_deploy.export.tensorrt import BuildOptions

    return EngineFromOnnx(
        onnx_loader(source, cache_dir, flavour, notify=notify),
        flavour,
        options.precision,
        RuntimeProfile(options),
        cache_dir / "engines",
        BuildOptions(workspace_mib=options.workspace_mib, device=options.device, notify=notify),
        check_deserialize=False,  # the backend deserializes it next, and says to rebuild when that fails
    )


GPU_SHARE = 0.6  # of the GPU's total memory, what a runtime-built engine's slots may take by default
LARGE_MAX = (1088, 1920)  # the profile max where the slots fit: 1080p input whole (1088: a multiple of 16)


@dataclass(frozen=True)
class RuntimeProfile:
    """The optimization profile of an engine built on first use, from the backend's options and the GPU.

    A rule of the runtime, not of the builder: it sizes the profile so that ``options.slots`` execution
    contexts fit the GPU the backend runs on. Asked when the engine is loaded (the GPU is queried then, not
    when the backend is made), with the network's spec; the result is narrowed to what the network takes."""

    options: TensorRTOptions

    def __call__(self, model: ModelSpec) -> ShapeProfile:
        return profile_for(self.options, model, gpu_total_memory(self.options.device))


def profile_for(options: TensorRTOptions, model: ModelSpec, gpu_memory: int | None = None) -> ShapeProfile:
    """The profile below, narrowed to what the network takes: exactly its static shape, its fixed batch."""
    return _profile_for(options, model, gpu_memory).fitted(model)


def _profile_for(options: TensorRTOptions, model: ModelSpec, gpu_memory: int | None) -> ShapeProfile:
    """The optimization profile a runtime-built engine gets: up to --tile, capped for max_shape.

    Otherwise 1088x1920 where the slots' contexts fit, else the default profile's max shape shrinks, aspect
    kept, until every slot's execution context fits the --memory-budget or, without one, 60 % of the GPU's
    total memory: TensorRT allocates a context's activations for the profile's max shape up front, so
    memory must shape the profile (larger frames are tiled). Total, not free, memory: the profile is part
    of the engine cache's key, and free memory changes from run to run."""
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
    if not budgets:
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
    """Total memory of GPU ``device``; None where no GPU can say."""
    from srgan_deploy.gpu.cuda_rt import device_count, device_properties

    try:
        if device_count() <= device:
            return None
        return device_properties(device).total_memory
    except (BackendUnavailableError, EngineError):
        return None


def generator_loader(source: ModelSource, who: str) -> GeneratorLoader:
    """The PyTorch generator (torch backend): only weights carry it."""
    if isinstance(source, OnnxFile):
        raise ConfigError(
            f"the {who} backend runs .safetensors weights, not an ONNX graph ({source.path.name}); "
            f"use -b {ONNX_BACKENDS}"
        )
    if not isinstance(source, Weights):
        raise ConfigError(f"{who} runs .safetensors weights or a bundled model, not {source.path}")

    def load() -> tuple[Generator, WeightsInfo]:
        from srgan_deploy.weights import load_generator

        return load_generator(source.name_or_path)

    return load


def scale_loader(source: ModelSource) -> Callable[[], int]:
    """Just the model's scale (the bicubic baseline needs nothing else)."""

    def load() -> int:
        return model_spec(source).scale

    return load
