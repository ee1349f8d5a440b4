"""onnxruntime backend: the CPU fast path, and a CUDA/TensorRT path through its execution providers.

It runs the uint8-I/O ONNX graph, so conversion to and from float happens inside
the graph (fused by ORT) and never on the Python side.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from srgan_deploy.artifacts import OnnxModel
from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import OrtOptions
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import BackendUnavailableError, ExportError, ShapeError
from srgan_deploy.sources import OnnxLoader


def physical_cores() -> int:
    """Cores ORT should use: its intra-op pool gains nothing from SMT siblings."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


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
            from srgan_deploy.artifacts import ShapeProfile

            lo, opt, hi = ShapeProfile.parse(None, None, None).tensor_shapes("uint8")
            root = cache_dir(self.options.cache_dir) / "ort-tensorrt"
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
            self.session = ort.InferenceSession(model, sess_options=opts, providers=self.providers)
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"
        self.device_label = "cuda" if self.on_gpu else f"cpu x{opts.intra_op_num_threads}"
        self._model = self.onnx.config

    @staticmethod
    def _cpu_graph(path: Any) -> tuple[bytes, int]:
        """The graph with PReLUs rewritten for onnxruntime's blocked CPU layout (see ort_graph.py)."""
        import onnx

        from srgan_deploy.backends.ort_graph import prelu_as_batchnorm

        proto = onnx.load(str(path))
        count = prelu_as_batchnorm(proto)
        return proto.SerializeToString(), count

    def _infer(self, frames: np.ndarray) -> np.ndarray:
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
