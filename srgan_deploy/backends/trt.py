"""TensorRT and TensorRT-RTX backends: a plan from the loader, K in-flight CUDA slots.

The engine call is the only TensorRT-specific step; streams, pinned buffers, events and
ordering are ``srgan_deploy.gpu.inflight``, shared with the torch CUDA path. The two flavours
differ only in the module they import and in how an execution context is made: RTX compiles
kernels for the actual GPU just in time, and keeps them in a runtime cache file under the
cache dir so that happens once per GPU, not once per run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from srgan_deploy.artifacts import EngineArtifact, ShapeProfile
from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.backends.options import TensorRTOptions, TensorRTRtxOptions
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import BackendUnavailableError, EngineError, ShapeError
from srgan_deploy.files import atomic_write_bytes, file_lock
from srgan_deploy.gpu.inflight import SlotPipeline
from srgan_deploy.sources import EngineLoader

if TYPE_CHECKING:
    import tensorrt_rtx_bindings as rtx


def import_rtx_module() -> Any:
    from srgan_deploy.gpu.trt_runtime import import_flavour_module

    return import_flavour_module("tensorrt-rtx")


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
        self._log_mark = 0
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
        mark = self._log_mark = self._logger.mark()
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
        use_graphs = self._own_graphs  # per shape, after one plain run of it (tiles and video frames repeat one)
        slots: list[Any] = []
        # workers sharing a GPU take turns between reading its free memory and taking it
        with file_lock(cache_dir(self.options.cache_dir) / "locks" / f"cuda{self.options.device}.lock"):
            count = self._slot_count(engine, artifact)
            try:
                for _ in range(count):
                    context, keep = self._context(engine)
                    compute = TensorRTCompute(
                        context, "input", "output", use_graphs, self.notify, artifact.config.scale, self._said, keep
                    )
                    slots.append(CudaSlot(compute, artifact.profile.max, artifact.config.scale))
            except BaseException:
                close_all(slots)  # a partly built slot list frees what it has; the original error stays first
                raise
        self.pipeline = SlotPipeline(slots)
        self.device_label = f"cuda:{self.options.device} {artifact.precision}"

    # TensorRT-RTX captures CUDA graphs itself (its runtime config's strategy); TensorRT leaves it to us
    _own_graphs: ClassVar[bool] = True

    def _said(self) -> str:
        """TensorRT's last error line since open, as " (TensorRT: ...)", or ""."""
        if self._logger is None:
            return ""
        errors = self._logger.errors_since(self._log_mark)
        return f" (TensorRT: {errors[-1].strip()})" if errors else ""

    def _slot_count(self, engine: Any, artifact: EngineArtifact) -> int:
        """Slots that fit the GPU: each holds an execution context (activations for the profile's max shape,
        allocated when it is made) and its input/output buffers. Fewer than asked is said; none is an error
        that names the fix, before TensorRT fails with an allocation error."""
        from srgan_deploy.gpu.cuda_rt import memory_info

        b, h, w = artifact.profile.max
        s = artifact.config.scale
        per_slot = self._context_bytes(engine) + b * h * w * 3 * (1 + s * s)
        free, _ = memory_info()
        budget = min(free, self.options.memory_budget) if self.options.memory_budget else free
        usable = int(budget * 0.9)  # headroom for TensorRT's own allocations and the CUDA context
        fit = usable // max(per_slot, 1)
        wanted = self.options.slots
        if fit < 1:
            raise EngineError(
                f"one slot of this engine needs {per_slot / 2**20:.0f} MiB of GPU memory (profile max {b}x{h}x{w}), "
                f"{budget / 2**20:.0f} MiB are available on cuda:{self.options.device}; rebuild with a smaller "
                "--max-shape (frames larger than the profile are tiled)"
            )
        if fit < wanted:
            self.notify(f"GPU memory holds {fit} of {wanted} slots at {per_slot / 2**20:.0f} MiB each; running {fit}")
        return int(min(wanted, fit))

    @staticmethod
    def _context_bytes(engine: Any) -> int:
        size: Any = getattr(engine, "device_memory_size_v2", None)
        if size is None:
            size = getattr(engine, "device_memory_size", 0)
        return int(size or 0)

    @property
    def device_memory_per_context(self) -> int:
        """Bytes of activations each execution context allocates (one per slot): what the profile's max
        shape costs on the GPU, reported by bench so a too-large profile is visible before it fails."""
        self._require_open()
        return self._context_bytes(self.engine)

    def _prepare(self, artifact: EngineArtifact) -> None:
        """Flavour hook: runs once the plan is known, before execution contexts are made."""

    def _context(self, engine: Any) -> tuple[Any, Any]:
        """An execution context, and what must live as long as it (nothing, for TensorRT)."""
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context{self._said()}")
        return context, None

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """Tiles follow the engine's profile, not the host's memory budget: a context's GPU memory is
        allocated for the profile's max shape when it is made, so a frame that fits the profile costs
        nothing more whole, and cutting it would only add overlap work. A larger frame is cut, per axis, into
        the fewest tiles that fit the profile's max and compute the fewest pixels (overlaps are computed
        twice; a 1080p frame on a 540x960 profile: 3x3 tiles of 416x704, not of 540x960). A static profile
        takes exactly its shape; a --tile is clamped into [min, max] per axis."""
        profile = self.profile
        (_, min_h, min_w), (_, max_h, max_w) = profile.min, profile.max
        tile = self.options.tile
        if tile is None or profile.is_static:
            if height <= max_h and width <= max_w:
                return None  # one call; _infer pads a frame below the profile's minimum
            if profile.is_static:
                th, tw = min(height, max_h), min(width, max_w)
            else:
                th, tw = self._axis_tile(height, max_h), self._axis_tile(width, max_w)
        else:
            if height <= tile and width <= tile and height <= max_h and width <= max_w:
                return None
            th = max(min(tile, height, max_h), min(min_h, height))
            tw = max(min(tile, width, max_w), min(min_w, width))
        if (th, tw) == (height, width):
            return None
        need = 2 * self.overlap + 1
        for edge, size, limit, axis in ((th, height, max_h, "height"), (tw, width, max_w, "width")):
            if edge < size and edge <= need:
                raise ShapeError(
                    f"the engine's profile allows a {axis} of at most {limit}, too small to tile a {width}x{height} "
                    f"frame with this model's {self.overlap}px overlap; rebuild with a larger --max-shape"
                )
        return (th, tw)

    def _axis_tile(self, length: int, limit: int) -> int:
        """The tile edge along one axis: the fewest tiles within ``limit``, equal in size (rounded up to 16)."""
        from srgan_deploy.memory import TILE_STEP

        if length <= limit:
            return length
        r = self.overlap
        for count in range(2, length + 1):
            edge = -(-(length + 2 * r * (count - 1)) // count)
            if edge <= 2 * r:
                break
            rounded = -(-edge // TILE_STEP) * TILE_STEP
            if rounded <= limit:
                return min(rounded, length)
            if edge <= limit:
                return edge
        return limit  # the overlap leaves no room for more tiles: the profile's max, as before

    def _tiles_per_call(self, tile_h: int, tile_w: int) -> int:
        """Several tiles per call, whatever the host budget says: the slots' GPU and pinned memory is already
        allocated, so the only cost is the tiles' host arrays, and with one tile per call the K slots would
        never overlap one tile's transfers with another's compute."""
        from srgan_deploy.memory import MAX_TILE_BATCH

        return max(MAX_TILE_BATCH, self.profile.max[0])

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        """Frames within the profile's max: padded up to its minimum (edges repeated, cropped off after),
        batches cut to its max batch and short ones padded up to its min batch."""
        from srgan_deploy.gpu.cuda_rt import set_device
        from srgan_deploy.gpu.inflight import split_batches

        set_device(self.options.device)  # the current device is per thread: this may not be open()'s thread
        n, h, w, _ = frames.shape
        profile = self.profile
        (min_b, min_h, min_w), (max_b, max_h, max_w) = profile.min, profile.max
        if h > max_h or w > max_w:
            raise ShapeError(f"frame {w}x{h} is outside the engine profile {profile.to_list()}; use --tile")
        pad_h, pad_w = max(0, min_h - h), max(0, min_w - w)
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        pieces, counts = [], []
        for piece in split_batches(frames, max_b):
            counts.append(len(piece))
            if len(piece) < min_b:
                piece = np.concatenate([piece, np.repeat(piece[-1:], min_b - len(piece), axis=0)])
            pieces.append(np.ascontiguousarray(piece))
        assert self.pipeline is not None
        parts = [out[:k] for out, k in zip(self.pipeline.run(pieces), counts, strict=True)]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if pad_h or pad_w or len(out) != n:
            s = self.scale
            out = np.ascontiguousarray(out[:n, : h * s, : w * s])
        return out

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Keep K batches in flight across calls; frames that need tiling go one by one."""
        self._require_open()
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        first = check_frames(first)
        from srgan_deploy.gpu.cuda_rt import set_device

        set_device(self.options.device)  # per thread: the caller's thread may not be open()'s
        profile = self.profile
        h, w = int(first.shape[1]), int(first.shape[2])
        fits = profile.min[0] == 1 and profile.accepts(1, h, w) and self._tile_size(h, w) is None
        if not fits:  # tiling or padding: frames go one call at a time
            yield from self._one_by_one(first, it)
            return
        assert self.pipeline is not None
        from srgan_deploy.gpu.inflight import run_split

        # batches larger than the profile's max batch are split into slot-sized pieces, kept in flight
        yield from run_split(self.pipeline, itertools.chain([first], (check_frames(b) for b in it)), profile.max[0])

    def _close(self) -> None:
        from srgan_deploy.gpu.cuda_rt import set_device

        set_device(self.options.device)
        if self.pipeline is not None:
            self.pipeline.close()

    def _release(self) -> None:
        self.pipeline = None
        self._log_mark = 0
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

    _own_graphs: ClassVar[bool] = False

    def _context(self, engine: rtx.ICudaEngine) -> tuple[rtx.IExecutionContext, rtx.IRuntimeConfig]:
        """An execution context whose JIT-compiled kernels go to (and come from) the runtime cache, and
        its runtime config, which must outlive it (TensorRT-RTX keeps only a pointer to it).

        CUDA graphs are the runtime's own job here (whole-graph capture per shape, after the shape's
        kernels are compiled); capturing around a first, compiling run would fail."""
        config = engine.create_runtime_config()
        module = import_rtx_module()
        strategy = getattr(getattr(module, "CudaGraphStrategy", None), "WHOLE_GRAPH_CAPTURE", None)
        if strategy is not None:
            config.cuda_graph_strategy = strategy
        if self._runtime_cache is None:
            cache = config.create_runtime_cache()
            path = self._runtime_cache_path
            if path is not None and path.is_file() and not cache.deserialize(self._read_cache(path)):
                self.notify(f"ignoring unreadable TensorRT-RTX runtime cache {path}")
            self._runtime_cache = cache
        if config.set_runtime_cache(self._runtime_cache) is False:
            self.notify("TensorRT-RTX refused the runtime cache; kernels are compiled again this run")
        context = engine.create_execution_context(config)
        if context is None:
            raise EngineError(f"TensorRT-RTX could not create an execution context{self._said()}")
        return context, config

    @staticmethod
    def _read_cache(path: Path) -> bytes:
        with file_lock(path.with_name(path.name + ".lock")):  # not half of another process's write
            return path.read_bytes()

    def _close(self) -> None:
        super()._close()
        cache, path = self._runtime_cache, self._runtime_cache_path
        if cache is not None and path is not None:
            data = bytes(memoryview(cache.serialize()))  # type: ignore[arg-type]  # IHostMemory is a buffer; the stubs miss it
            try:  # the run succeeded: a cache that cannot be written costs the next run a JIT, not this one's result
                with file_lock(path.with_name(path.name + ".lock")):
                    atomic_write_bytes(path, data)
            except OSError as exc:
                self.notify(f"could not save the TensorRT-RTX runtime cache {path}: {exc.strerror or exc}")

    def _release(self) -> None:
        super()._release()
        self._runtime_cache = None
        self._runtime_cache_path = None
