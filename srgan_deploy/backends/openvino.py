"""OpenVINO backend: the fastest CPU path (oneDNN convolutions with PReLU, bias and the residual Add
fused; bf16 on CPUs with AVX-512 BF16 or AMX).

It compiles the same uint8-I/O ONNX graph as onnxruntime, so conversion to and from float stays
in the graph. The precision is always set explicitly: OpenVINO's own default on a bf16-capable
CPU is bf16, which would silently change results for a user who asked for fp32.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from srgan_deploy.artifacts import OnnxModel
from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.backends.fit import needs_fitting, run_fitted, static_tile
from srgan_deploy.backends.options import OpenVinoOptions
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import ExportError, ShapeError
from srgan_deploy.sources import OnnxLoader

INSTALL = "pip install openvino (or pip install 'srgan-deploy[openvino]')"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend(Backend[OpenVinoOptions]):
    name = "openvino"

    def __init__(self, options: OpenVinoOptions, load: OnnxLoader) -> None:
        super().__init__(options)
        self._load = load
        self.onnx: OnnxModel | None = None
        self.compiled: Any = None
        self._requests: list[Any] = []

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import openvino as ov
            import openvino.properties.device as device
        except ImportError:
            return False, f"openvino is not installed ({INSTALL})"
        except Exception as exc:  # noqa: BLE001 - a broken install raises RuntimeError/OSError at import
            return False, f"openvino fails to import: {exc}"
        try:
            core = ov.Core()
            name = core.get_property("CPU", device.full_name)
            capabilities = set(core.get_property("CPU", device.capabilities))
        except RuntimeError as exc:
            return False, f"openvino {ov.get_version().split('-')[0]} cannot use the CPU: {exc}"
        precisions = [p for p, cap in (("fp32", "FP32"), ("bf16", "BF16")) if cap in capabilities]
        return True, f"openvino {ov.get_version().split('-')[0]} on {name} ({', '.join(precisions)})"

    def _open(self) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        self.onnx = self._load().require_uint8("openvino")
        core = ov.Core()
        config: dict[str, Any] = {
            hints.inference_precision: OV_PRECISION[self.options.precision],
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            # compiled-model cache keyed (by folder) on OpenVINO's version and the precision, on top of
            # OpenVINO's own key (model hash + device + config)
            props.cache_dir: str(
                cache_dir(self.options.cache_dir)
                / "openvino"
                / f"{ov.get_version().split('-')[0]}-{self.options.precision}"
            ),
        }
        if self.options.threads:
            config[props.inference_num_threads] = self.options.threads
        try:
            self.compiled = core.compile_model(str(self.onnx.path), "CPU", config)
        except RuntimeError as exc:
            raise ExportError(f"OpenVINO cannot compile {self.onnx.path}: {str(exc).splitlines()[0]}") from exc
        self._requests = [self.compiled.create_infer_request() for _ in range(self.options.requests)]
        threads = self.compiled.get_property(props.inference_num_threads)
        self.device_label = f"cpu x{threads} {self.options.precision}"
        self._model = self.onnx.spec

    def _run(self, request: Any, frames: np.ndarray) -> np.ndarray:
        try:
            request.infer({0: frames})
        except RuntimeError as exc:
            raise ShapeError(
                f"OpenVINO failed on a {frames.shape} batch: {str(exc).splitlines()[0]}; try --tile 256"
            ) from exc
        return np.array(request.get_output_tensor(0).data, copy=True)

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """A network that takes one shape gets tiles of exactly that shape; others follow the memory plan."""
        if self.model.static_hw is not None:
            return static_tile(self.model, height, width)
        return super()._tile_size(height, width)

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        spec = self._model
        if spec is not None and needs_fitting(spec, frames):  # a static-shape or fixed-batch network
            return run_fitted(frames, spec, self._infer)
        return self._run(self._requests[0], frames)

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Up to ``requests`` batches in flight (async infer requests); results in input order.

        Frames that need tiling (or padding to a static network's shape) go through ``upscale`` one at a
        time, after what is in flight."""
        self._require_open()
        pending: deque[Any] = deque()
        k = len(self._requests)
        try:
            for i, raw in enumerate(batches):
                batch = check_frames(raw)
                if self._tile_size(batch.shape[1], batch.shape[2]) is not None or needs_fitting(self.model, batch):
                    while pending:
                        yield self._finish(pending.popleft())
                    yield self.upscale(batch)
                    continue
                if len(pending) == k:
                    yield self._finish(pending.popleft())
                request = self._requests[i % k]
                request.start_async({0: batch}, share_inputs=False)
                pending.append(request)
            while pending:
                yield self._finish(pending.popleft())
        finally:
            for request in pending:  # abandoned by the consumer or an error: let queued work finish
                request.wait()

    def _finish(self, request: Any) -> np.ndarray:
        try:
            request.wait()
        except RuntimeError as exc:
            raise ShapeError(f"OpenVINO inference failed: {str(exc).splitlines()[0]}; try --tile 256") from exc
        return np.array(request.get_output_tensor(0).data, copy=True)

    def _release(self) -> None:
        self._requests = []
        self.compiled = None
        self.onnx = None
