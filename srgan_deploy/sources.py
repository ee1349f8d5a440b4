"""Model sources and the loaders that turn them into what a backend runs.

A user names a model as a bundled name, a ``.safetensors``, an ``.onnx`` or a ``.plan``. That text
is resolved once, here, into a typed ``ModelSource``; backends never look at suffixes. A backend
takes a *loader*: a no-argument callable that yields its artifact (Polygraphy's
``EngineFromBytes(...)`` idea). This is the one runtime module that composes the export stage's
loaders, and it imports them lazily, so the runtime has no import-time edge to ``export``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from srgan_deploy.artifacts import EngineArtifact, OnnxModel
from srgan_deploy.errors import ConfigError, InputFileError

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


def model_source(value: str | Path | ModelSource | None) -> ModelSource:
    """Resolve ``--weights`` once, at the edge. ONNX and plan files must exist; weights are checked on load."""
    if isinstance(value, Weights | OnnxFile | EnginePlan):
        return value
    if value is None:
        return Weights(None)
    text = str(value)
    suffix = Path(text).suffix.lower()
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
        return OnnxModel.from_path(source.path).metadata.get("srgan_deploy.model_name", source.path.stem)
    return source.path.stem


def digest(source: ModelSource) -> str:
    """SHA-256 of the model file: what a resumed job checks to know the model did not change."""
    from srgan_deploy.weights import file_sha256, resolve_weights

    path = resolve_weights(source.name_or_path) if isinstance(source, Weights) else source.path
    return file_sha256(path)


def describe(source: ModelSource) -> str:
    if isinstance(source, Weights):
        return source.name_or_path or "the bundled default model"
    return str(source.path)


# --------------------------------------------------------------------------- loaders

OnnxLoader = Callable[[], OnnxModel]
EngineLoader = Callable[[], EngineArtifact]
GeneratorLoader = Callable[[], "tuple[Generator, WeightsInfo]"]


def onnx_loader(source: ModelSource, cache_dir: Path, who: str, fp16_core: bool = False) -> OnnxLoader:
    """The uint8-I/O ONNX graph: the file given, or exported from the weights into the cache on first use;
    with ``fp16_core``, its fp16-core version (for onnxruntime's TensorRT provider at fp16)."""
    if fp16_core:
        from srgan_deploy.export.loaders import Fp16CoreFromOnnx

        return Fp16CoreFromOnnx(onnx_loader(source, cache_dir, who), cache_dir / "fp16core")
    if isinstance(source, EnginePlan):
        raise ConfigError(f"{who} runs ONNX graphs or weights, not a TensorRT plan ({source.path}); use -b tensorrt")
    if isinstance(source, OnnxFile):
        path = source.path
        return lambda: OnnxModel.from_path(path).require_uint8(who)

    def load() -> OnnxModel:
        from srgan_deploy.export.onnx import cached_onnx

        return OnnxModel.from_path(cached_onnx(source.name_or_path, cache_dir, io="uint8"))

    return load


def engine_loader(
    source: ModelSource, options: TensorRTOptions, flavour: str, cache_dir: Path, notify: Callable[[str], None]
) -> EngineLoader:
    """A plan given by the user, or the cached/built engine for the ONNX of these weights."""
    if isinstance(source, EnginePlan):
        path = source.path
        return lambda: EngineArtifact.from_plan(path)
    onnx = onnx_loader(source, cache_dir, flavour)

    def load() -> EngineArtifact:
        from srgan_deploy.export.loaders import EngineFromOnnx

        return EngineFromOnnx(onnx, flavour, options, cache_dir / "engines", notify)()

    return load


def generator_loader(source: ModelSource, who: str) -> GeneratorLoader:
    """The PyTorch generator (torch backend): only weights carry it."""
    if not isinstance(source, Weights):
        raise ConfigError(f"{who} runs .safetensors weights or a bundled model, not {source.path}")

    def load() -> tuple[Generator, WeightsInfo]:
        from srgan_deploy.weights import load_generator

        return load_generator(source.name_or_path)

    return load


def scale_loader(source: ModelSource) -> Callable[[], int]:
    """Just the model's scale (the bicubic baseline needs nothing else)."""

    def load() -> int:
        if isinstance(source, Weights):
            from srgan_deploy.weights import read_info

            return read_info(source.name_or_path).config.scale
        if isinstance(source, OnnxFile):
            return OnnxModel.from_path(source.path).config.scale
        return EngineArtifact.from_plan(source.path).config.scale

    return load
