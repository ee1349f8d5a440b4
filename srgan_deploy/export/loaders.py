"""Export-side loaders (Polygraphy's shape): lazy, no-argument callables that make one artifact from what
another loader yields, named for what goes in and what comes out, so a composition reads as the data flow:
``EngineFromOnnx(onnx, ...)`` is an ``OnnxModel`` loader in, an ``EngineArtifact`` out.

They are the bottom of the chain. Two callers compose them: the runtime (``srgan_deploy.sources``, an engine
built on first use) and the export command (``export.command``, an engine written to -o). Both get an engine from
the same one call, so a cached engine, a rebuild and its reason, the lock that lets one of N processes build
are the same wherever the engine is asked for. What differs is only what the caller hands in: the profile
rule, the build options, the file name. The loaders import neither caller nor any backend, so no import
runs back up from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from srgan_deploy.artifacts import EngineArtifact, OnnxModel, ShapeProfile
from srgan_deploy.export.tensorrt import BuildOptions, EngineSpec, get_engine
from srgan_deploy.spec import ModelSpec

# (the network's spec) -> the engine's optimization profile: the runtime sizes it by the GPU's memory, the
# export command takes the user's --min/--opt/--max-shape narrowed to what the network accepts
ProfileRule = Callable[[ModelSpec], ShapeProfile]


@dataclass(frozen=True)
class Fp16CoreFromOnnx:
    """The fp16-core graph (uint8 boundary, fp16 inside) of an ONNX model, cached beside our engines.

    What onnxruntime's TensorRT provider gets for --precision fp16: TensorRT 11 dropped the fp16 builder
    flag (``trt_fp16_enable`` does nothing there), so the precision must come from the graph itself, as
    it does for our own engines (the same conversion and file naming: ``export.fp16.cached_fp16_core``);
    TensorRT 10 builds the same graph the same way."""

    onnx: Callable[[], OnnxModel]
    work_dir: Path

    def __call__(self) -> OnnxModel:
        from srgan_deploy.export.fp16 import cached_fp16_core
        from srgan_deploy.weights import file_sha256

        model = self.onnx()
        return OnnxModel.from_path(cached_fp16_core(model.path, file_sha256(model.path), self.work_dir))


@dataclass(frozen=True)
class BuiltEngine:
    """What one build-or-load gives: the plan as a backend loads it, every input of its cache key (the
    export command reports them), and whether it was built now or taken from the cache."""

    artifact: EngineArtifact
    spec: EngineSpec
    built: bool


@dataclass(frozen=True)
class EngineFromOnnx:
    """The engine of an ONNX graph: from the cache when it matches these settings, else built now.

    ``name`` is the cached plan's stem (default: the graph's). ``check_deserialize=False`` trusts a cached
    plan whose sidecar matches: a backend deserializes it next anyway and names the fix when that fails, so
    the runtime does not pay for it twice; the export command keeps the check, since it hands the plan on."""

    onnx: Callable[[], OnnxModel]
    flavour: str
    precision: str
    profile: ProfileRule
    engine_dir: Path
    options: BuildOptions = field(default_factory=BuildOptions)
    name: str | None = None
    check_deserialize: bool = True

    def build_or_load(self) -> BuiltEngine:
        """The one call that gets an engine; ``__call__`` is the same call seen as a backend's loader."""
        model = self.onnx()
        plan, spec, built = get_engine(
            model.path,
            self.engine_dir,
            self.precision,
            self.profile(model.spec),
            "uint8",
            self.options,
            name=self.name or model.path.stem,
            flavour=self.flavour,
            check_deserialize=self.check_deserialize,
        )
        return BuiltEngine(EngineArtifact.from_plan(plan), spec, built)

    def __call__(self) -> EngineArtifact:
        return self.build_or_load().artifact
