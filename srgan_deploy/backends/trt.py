"""TensorRT and TensorRT-RTX backends: a plan from the loader, K in-flight CUDA slots.

The engine call is the only TensorRT-specific step; streams, pinned buffers, events and
ordering are ``srgan_deploy.gpu.inflight``, shared with the torch CUDA path. The two flavours
differ only in the module they import and in how an execution context is made: RTX compiles
kernels for the actual GPU just in time, and keeps them in a runtime cache file under the
cache dir so that happens once per GPU, not once per run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from srgan_deploy.artifacts import EngineArtifact, ShapeProfile
from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.backends.options import TensorRTOptions, TensorRTRtxOptions
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import BackendUnavailableError, EngineError, ShapeError
from srgan_deploy.gpu.inflight import SlotPipeline
from srgan_deploy.sources import EngineLoader

if TYPE_CHECKING:
    import tensorrt_rtx_bindings as rtx


def cuda_device_count() -> int:
    from srgan_deploy.gpu.cuda_rt import device_count

    return device_count()


class TensorRTBackend(Backend[TensorRTOptions]):
    name = "tensorrt"
    flavour: ClassVar[str] = "tensorrt"

    def __init__(self, options: TensorRTOptions, load: EngineLoader) -> None:
        super().__init__(options)
        self._load = load
        self.artifact: EngineArtifact | None = None
        self.engine: Any = None
        self._runtime: Any = None
        self._logger: Any = None
        self.pipeline: SlotPipeline | None = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        from srgan_deploy.gpu.cuda_rt import INSTALL_HINT, has_cuda_python
        from srgan_deploy.gpu.trt_runtime import flavour_status

        ok, why = flavour_status(cls.flavour)
        if not ok:
            return False, why
        if not has_cuda_python():
            return False, f"{why}, but {INSTALL_HINT}"
        try:
            count = cuda_device_count()
        except BackendUnavailableError as exc:  # e.g. a driver too old for this cuda-python
            return False, f"{why}, but {exc}"
        if count == 0:
            return False, f"{why}, but no CUDA GPU is visible"
        return True, why

    @property
    def profile(self) -> ShapeProfile:
        self._require_open()
        assert self.artifact is not None
        return self.artifact.profile

    def _open(self) -> None:
        from srgan_deploy.gpu.cuda_rt import set_device
        from srgan_deploy.gpu.inflight import CudaSlot, TensorRTCompute, close_all
        from srgan_deploy.gpu.trt_runtime import import_flavour_module, make_logger

        set_device(self.options.device)  # before the runtime, contexts, streams and buffers exist
        artifact = self._load()
        if artifact.flavour != self.flavour:
            raise EngineError(f"{artifact.path} is a {artifact.flavour} plan; run it with -b {artifact.flavour}")
        self._prepare(artifact)
        module = import_flavour_module(self.flavour)
        self._logger = make_logger(module)
        mark = self._logger.mark()
        self._runtime = module.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(artifact.path.read_bytes())
        if engine is None:
            errors = self._logger.errors_since(mark)
            said = f" (TensorRT: {errors[-1].strip()})" if errors else ""
            raise EngineError(
                f"{self.flavour} could not deserialize {artifact.path}{said}: built by another version or for "
                "another GPU; rebuild it with srgan-deploy export"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if names != ["input", "output"]:
            raise EngineError(f"{artifact.path} has I/O tensors {names}: not an srgan-deploy engine")
        dtypes = [getattr(engine.get_tensor_dtype(n), "name", str(engine.get_tensor_dtype(n))) for n in names]
        if any(d.upper() not in ("UINT8", "DATATYPE.UINT8") for d in dtypes):
            raise EngineError(
                f"{artifact.path} has {'/'.join(dtypes)} I/O; the runtime's buffers are uint8 (export with --io uint8)"
            )
        self.engine = engine
        self.artifact = artifact
        self._model = artifact.config
        use_graphs = artifact.profile.is_static
        slots: list[Any] = []
        try:
            for _ in range(self.options.slots):
                compute = TensorRTCompute(
                    self._context(engine), "input", "output", use_graphs, self._notify, artifact.config.scale
                )
                slots.append(CudaSlot(compute, artifact.profile.max, artifact.config.scale))
        except BaseException:
            close_all(slots)  # a partly built slot list frees what it has; the original error stays first
            raise
        self.pipeline = SlotPipeline(slots)
        self.device_label = f"cuda {artifact.precision}"

    @property
    def device_memory_per_context(self) -> int:
        """Bytes of activations each execution context allocates (one per slot): what the profile's max
        shape costs on the GPU, reported by bench so a too-large profile is visible before it fails."""
        self._require_open()
        size: Any = getattr(self.engine, "device_memory_size_v2", None)
        if size is None:
            size = getattr(self.engine, "device_memory_size", 0)
        return int(size or 0)

    def _prepare(self, artifact: EngineArtifact) -> None:
        """Flavour hook: runs once the plan is known, before execution contexts are made."""

    def _context(self, engine: Any) -> Any:
        context = engine.create_execution_context()
        if context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        return context

    @staticmethod
    def _notify(message: str) -> None:
        import sys

        print(f"srgan-deploy: {message}", file=sys.stderr)

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        profile = self.profile
        if profile.is_static:
            if height <= profile.max[1] and width <= profile.max[2]:
                return None  # one tile or less: _infer pads it to the engine's shape
            return (min(height, profile.max[1]), min(width, profile.max[2]))
        tile = super()._tile_size(height, width)
        max_h, max_w = profile.max[1], profile.max[2]
        if isinstance(tile, int):
            tile = (min(tile, max_h), min(tile, max_w))
        if tile is None and (height > max_h or width > max_w):
            # clamp each axis to the profile: a 1080x1920 profile tiles with 1080x1920, not 1080x1080
            tile = (min(height, max_h), min(width, max_w))
        return tile

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        from srgan_deploy.gpu.inflight import split_batches

        _, h, w, _ = frames.shape
        profile = self.profile
        min_h, min_w = profile.min[1], profile.min[2]
        if h < min_h or w < min_w:
            # smaller than the profile allows: pad (edge pixels) to its minimum, upscale, crop back
            padded = np.pad(frames, ((0, 0), (0, max(0, min_h - h)), (0, max(0, min_w - w)), (0, 0)), mode="edge")
            s = self.scale
            return np.ascontiguousarray(self._infer(padded)[:, : h * s, : w * s])
        if not profile.accepts(1, h, w):
            raise ShapeError(f"frame {w}x{h} is outside the engine profile {profile.to_list()}; use --tile")
        assert self.pipeline is not None
        parts = list(self.pipeline.run(split_batches(frames, profile.max[0])))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Keep K batches in flight across calls; frames that need tiling go one by one."""
        self._require_open()
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        first = check_frames(first)
        profile = self.profile
        whole = first.shape[1:3]
        fits = profile.accepts(1, int(whole[0]), int(whole[1])) and self._tile_size(*whole) is None
        if not fits:  # tiling or padding: frames go one call at a time
            yield from self._one_by_one(first, it)
            return
        assert self.pipeline is not None
        from srgan_deploy.gpu.inflight import run_split

        # batches larger than the profile's max batch are split into slot-sized pieces, kept in flight
        yield from run_split(self.pipeline, itertools.chain([first], (check_frames(b) for b in it)), profile.max[0])

    def _close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()

    def _release(self) -> None:
        self.pipeline = None
        self.engine = None
        self.artifact = None
        self._runtime = None
        self._logger = None


class TensorRTRtxBackend(TensorRTBackend):
    """TensorRT-RTX: GeForce / RTX PRO GPUs, plans built ahead of time (even without a GPU)."""

    name = "tensorrt-rtx"
    flavour: ClassVar[str] = "tensorrt-rtx"

    def __init__(self, options: TensorRTRtxOptions, load: EngineLoader) -> None:
        super().__init__(options, load)
        self._runtime_cache: rtx.IRuntimeCache | None = None
        self._runtime_cache_path: Path | None = None

    def runtime_cache_path(self, artifact: EngineArtifact) -> Path:
        from srgan_deploy.gpu.cuda_rt import device_properties

        gpu = device_properties(self.options.device)
        tag = f"{gpu.name}-sm{gpu.compute_capability}".replace(" ", "_").replace("/", "_")
        key = artifact.sidecar.get("key", artifact.path.stem)
        return cache_dir(self.options.cache_dir) / "rtx-runtime" / f"{key}-{tag}.cache"

    def _prepare(self, artifact: EngineArtifact) -> None:
        self._runtime_cache_path = self.runtime_cache_path(artifact)

    def _context(self, engine: rtx.ICudaEngine) -> rtx.IExecutionContext:
        """An execution context whose JIT-compiled kernels go to (and come from) the runtime cache."""
        config = engine.create_runtime_config()
        if self._runtime_cache is None:
            cache = config.create_runtime_cache()
            path = self._runtime_cache_path
            if path is not None and path.is_file() and not cache.deserialize(path.read_bytes()):
                self._notify(f"ignoring unreadable TensorRT-RTX runtime cache {path}")
            self._runtime_cache = cache
        config.set_runtime_cache(self._runtime_cache)
        context = engine.create_execution_context(config)
        if context is None:
            raise EngineError("TensorRT-RTX could not create an execution context (out of GPU memory?)")
        return context

    def _close(self) -> None:
        super()._close()
        cache, path = self._runtime_cache, self._runtime_cache_path
        if cache is not None and path is not None:
            data = bytes(memoryview(cache.serialize()))  # type: ignore[arg-type]  # IHostMemory is a buffer; the stubs miss it
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
            tmp.write_bytes(data)
            tmp.replace(path)

    def _release(self) -> None:
        super()._release()
        self._runtime_cache = None
        self._runtime_cache_path = None
