"""Model sources and the loaders that turn them into what a backend runs.

A user names a model as a bundled name, a ``.safetensors``, an ``.onnx`` (ours, or any super-resolution
network: it is inspected and wrapped on first use) or a ``.plan``. That text is resolved once, here, into
a typed ``ModelSource``; backends never look at suffixes, and every stage reads the model through its
``ModelSpec`` (``model_spec``). A backend
takes a *loader*: a no-argument callable that yields its artifact (Polygraphy's
``EngineFromBytes(...)`` idea). This is the one runtime module that composes the export stage's
loaders, and it imports them lazily, so the runtime has no import-time edge to ``export``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from srgan_deploy.artifacts import EngineArtifact, OnnxModel, is_ours, read_onnx_metadata
from srgan_deploy.errors import ConfigError, InputFileError, ModelError
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
Notify = Callable[[str], None]
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
    """SHA-256 of the model file: what a resumed job checks to know the model did not change."""
    from srgan_deploy.weights import file_sha256, resolve_weights

    path = resolve_weights(source.name_or_path) if isinstance(source, Weights) else source.path
    return file_sha256(path)


def describe(source: ModelSource) -> str:
    if isinstance(source, Weights):
        return source.name_or_path or "the bundled default model"
    return str(source.path)


def _stderr(message: str) -> None:
    import sys

    print(f"srgan-deploy: {message}", file=sys.stderr)


def resolve_onnx(path: Path, cache_dir: Path | None = None, notify: Notify = _stderr) -> OnnxModel:
    """The graph the runtime runs for an ONNX file: ours as it is; any other super-resolution network
    inspected, wrapped into the uint8 boundary and verified once, then taken from the cache."""
    from srgan_deploy.cache import cache_dir as default_cache
    from srgan_deploy.export.foreign import resolve_onnx as resolve

    return resolve(path, default_cache(cache_dir), notify)


def model_spec(source: ModelSource, cache_dir: Path | None = None, notify: Notify = _stderr) -> ModelSpec:
    """What every stage reads about the model, from whatever the user named."""
    if isinstance(source, Weights):
        from srgan_deploy.weights import read_info

        info = read_info(source.name_or_path)
        return ModelSpec.from_config(info.config, info.name)
    if isinstance(source, OnnxFile):
        return resolve_onnx(source.path, cache_dir, notify).spec
    return EngineArtifact.from_plan(source.path).spec


def reference_runner(
    source: ModelSource, cache_dir: Path | None = None, notify: Notify = _stderr
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

OnnxLoader = Callable[[], OnnxModel]
EngineLoader = Callable[[], EngineArtifact]
GeneratorLoader = Callable[[], "tuple[Generator, WeightsInfo]"]


def onnx_loader(
    source: ModelSource, cache_dir: Path, who: str, fp16_core: bool = False, notify: Notify = _stderr
) -> OnnxLoader:
    """The uint8-I/O ONNX graph: the file given (a foreign one wrapped on first use), or exported from the
    weights into the cache on first use; with ``fp16_core``, its fp16-core version (for onnxruntime's
    TensorRT provider at fp16)."""
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
    """A plan given by the user, or the cached/built engine for the ONNX of these weights."""
    if isinstance(source, EnginePlan):
        path = source.path
        return lambda: EngineArtifact.from_plan(path)
    onnx = onnx_loader(source, cache_dir, flavour, notify=notify)

    def load() -> EngineArtifact:
        from srgan_deploy.export.loaders import EngineFromOnnx

        return EngineFromOnnx(onnx, flavour, options, cache_dir / "engines", notify)()

    return load


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
