"""onnxruntime backend: the CPU fast path, and a CUDA/TensorRT path through its execution providers.

It runs the uint8-I/O ONNX graph, so conversion to and from float happens inside
the graph (fused by ORT) and never on the Python side. On the TensorRT provider every call
must fit the explicit shape profile it is given (an input outside it is an error, not a
rebuild): batches are split to its max batch, frames below its minimum are padded, and
tiles are clamped into it, as the TensorRT backend does for its own engines.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from srgan_deploy.artifacts import OnnxModel, ShapeProfile
from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.fit import needs_fitting, run_fitted, static_tile
from srgan_deploy.backends.options import OrtOptions
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import BackendUnavailableError, ExportError, OutputError, ShapeError
from srgan_deploy.sources import OnnxLoader


def physical_cores() -> int:
    """Cores ORT should use: its intra-op pool gains nothing from SMT siblings."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# The profile onnxruntime's TensorRT provider gets: the one our own engines default to, so a new frame or
# tile size inside it does not make the provider build another engine in the middle of a video.
TRT_PROFILE = ShapeProfile.parse(None, None, None)


class OnnxRuntimeBackend(Backend[OrtOptions]):
    name = "onnxruntime"

    def __init__(self, options: OrtOptions, load: OnnxLoader) -> None:
        super().__init__(options)
        self._load = load
        self.session: Any = None
        self.providers: list[Any] = []
        self.graph_rewrites = 0
        self.on_gpu = False
        self.onnx: OnnxModel | None = None
        self.provider = ""  # the execution provider that actually took the graph
        self.trt_profile: ShapeProfile | None = None  # the TensorRT provider's profile, when that provider runs

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install 'srgan-deploy[cpu]' or onnxruntime-gpu)"
        providers = [p.replace("ExecutionProvider", "") for p in ort.get_available_providers()]
        return True, f"onnxruntime {ort.__version__} ({', '.join(providers)})"

    def _providers(self) -> list[Any]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        device = self.options.device
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "onnxruntime has no CUDA provider here; install onnxruntime-gpu or use --device cpu"
            )
        index = self.device_index
        providers: list[Any] = []
        if "TensorrtExecutionProvider" in available:
            # onnxruntime builds and caches its own TensorRT engines for the graph (or the parts of it
            # TensorRT takes); CUDA then CPU run whatever is left. The explicit profile is the one our own
            # engines use, so a new frame or tile size inside it does not rebuild an engine mid-video.
            lo, opt, hi = self._trt_profile().tensor_shapes("uint8")
            root = cache_dir(self.options.cache_dir) / "ort-tensorrt"
            # the provider creates only the last folder of the path (its create_directory is not recursive)
            # and, when that fails, onnxruntime quietly runs the graph on CUDA instead: make every level
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"cannot create onnxruntime's TensorRT cache {root}: {exc.strerror}; set SRGAN_DEPLOY_CACHE to a writable folder"
                ) from exc
            providers.append(
                (
                    "TensorrtExecutionProvider",
                    {
                        "device_id": index,
                        # fp16 comes from the graph (the fp16-core ONNX the registry loads at fp16): TensorRT
                        # 11 has no fp16 builder flag, so trt_fp16_enable would silently build fp32 there
                        "trt_fp16_enable": False,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(root),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(root),
                        "trt_profile_min_shapes": f"input:{'x'.join(map(str, lo))}",
                        "trt_profile_opt_shapes": f"input:{'x'.join(map(str, opt))}",
                        "trt_profile_max_shapes": f"input:{'x'.join(map(str, hi))}",
                    },
                )
            )
        return [*providers, ("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]

    def _engine_cache_lock(self) -> contextlib.AbstractContextManager[None]:
        """With the TensorRT provider, one process at a time builds into its engine cache: onnxruntime's own lock
        covers threads of one process only (onnxruntime PR 13356), and --workers N starts N processes that
        would otherwise build the same engine at once and read each other's half-written files. With explicit
        profile shapes the provider builds while the session is made, so the lock spans that."""
        uses_trt = any(p[0] == "TensorrtExecutionProvider" for p in self.providers if isinstance(p, tuple))
        if not uses_trt:
            return contextlib.nullcontext()
        from srgan_deploy.files import file_lock

        return file_lock(cache_dir(self.options.cache_dir) / "ort-tensorrt" / "build.lock")

    def _trt_profile(self) -> ShapeProfile:
        """The provider's profile: ours, narrowed to the model's static shape or fixed batch."""
        return TRT_PROFILE.fitted(self.onnx.spec) if self.onnx is not None else TRT_PROFILE

    @property
    def device_index(self) -> int:
        device = self.options.device
        return int(device.split(":")[1]) if ":" in device else 0

    def _open(self) -> None:
        import onnxruntime as ort

        self.onnx = self._load().require_uint8("onnxruntime")
        path = self.onnx.path
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = self.options.threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        # Memory patterns pre-plan one allocation per input shape and keep it: with the shapes tiling and
        # mixed inputs produce, that held 1.54 GB where 0.86 GB suffice, at no speed gain (3.7 s vs 3.5 s for
        # six sizes; python -m benchmarks.ort_allocator). The arena stays on: without it runs are slower.
        opts.enable_mem_pattern = False
        self.providers = self._providers()
        model: str | bytes = str(path)
        if self.providers == ["CPUExecutionProvider"]:
            model, self.graph_rewrites = self._cpu_graph(path)
        try:
            with self._engine_cache_lock():
                self.session = ort.InferenceSession(model, sess_options=opts, providers=self.providers)
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load {path}: {exc}") from exc
        loaded = str(self.session.get_providers()[0])
        asked = self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]
        self.provider = loaded
        self.on_gpu = loaded != "CPUExecutionProvider"
        self.trt_profile = self._trt_profile() if loaded == "TensorrtExecutionProvider" else None
        short = loaded.replace("ExecutionProvider", "")
        self.device_label = f"cuda:{self.device_index} {short}" if self.on_gpu else f"cpu x{opts.intra_op_num_threads}"
        if loaded != asked:
            self.notify(
                f"onnxruntime asked for {asked.replace('ExecutionProvider', '')} but runs on {short} "
                "(that provider failed to load; onnxruntime's log says why)"
            )
        self._model = self.onnx.spec

    @staticmethod
    def _cpu_graph(path: Any) -> tuple[bytes, int]:
        """The graph with PReLUs rewritten for onnxruntime's blocked CPU layout (see ort_graph.py)."""
        import onnx

        from srgan_deploy.backends.ort_graph import prelu_as_batchnorm

        proto = onnx.load(str(path))
        count = prelu_as_batchnorm(proto)
        return proto.SerializeToString(), count

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """The memory plan's tile (or the user's --tile), clamped into the TensorRT provider's profile on
        each axis: at most its max (a larger tile is an error there), at least its min (a smaller one
        would only be padded up again). Frames larger than the profile are tiled even when memory allows.
        A network that takes one shape gets tiles of exactly that shape."""
        if self.model.static_hw is not None:
            return static_tile(self.model, height, width)
        tile = super()._tile_size(height, width)
        profile = self.trt_profile
        if profile is None:
            return tile
        (_, min_h, min_w), (_, max_h, max_w) = profile.min, profile.max
        if tile is None:
            if height <= max_h and width <= max_w:
                return None
            tile = (height, width)
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        return (max(min_h, min(th, max_h)), max(min_w, min(tw, max_w)))

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        spec = self._model
        if spec is not None and needs_fitting(spec, frames):  # a static-shape or fixed-batch network
            return run_fitted(frames, spec, self._infer)
        profile = self.trt_profile
        if profile is None:
            return self._run(frames)
        n, h, w, _ = frames.shape
        (min_n, min_h, min_w), (max_n, max_h, max_w) = profile.min, profile.max
        if h > max_h or w > max_w:
            raise ShapeError(
                f"a {w}x{h} input is larger than onnxruntime's TensorRT profile {profile.to_list()}; use --tile"
            )
        if h < min_h or w < min_w:
            # below the profile: pad with edge pixels to its minimum, upscale, crop the answer back
            padded = np.pad(frames, ((0, 0), (0, max(0, min_h - h)), (0, max(0, min_w - w)), (0, 0)), mode="edge")
            s = self.scale
            return np.ascontiguousarray(self._infer(padded)[:, : h * s, : w * s])
        if n < min_n:  # a profile whose batch starts above 1: pad with copies of the last frame
            padded = np.concatenate([frames, np.repeat(frames[-1:], min_n - n, axis=0)])
            return self._infer(padded)[:n]
        if n > max_n:
            return np.concatenate([self._infer(frames[i : i + max_n]) for i in range(0, n, max_n)])
        return self._run(frames)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        try:
            if self.on_gpu:
                binding = self.session.io_binding()
                binding.bind_cpu_input("input", frames)
                binding.bind_output("output", "cuda", self.device_index)  # the session's GPU, not GPU 0
                self.session.run_with_iobinding(binding)
                return np.asarray(binding.copy_outputs_to_cpu()[0])
            return np.asarray(self.session.run(["output"], {"input": frames})[0])
        except Exception as exc:
            raise ShapeError(f"onnxruntime failed on a {frames.shape} batch: {exc}; try --tile 256") from exc

    def _release(self) -> None:
        self.session = None
        self.providers = []
        self.graph_rewrites = 0
        self.on_gpu = False
        self.onnx = None
        self.provider = ""
        self.trt_profile = None
