"""PyTorch backend: the reference every other backend is compared with.

CPU: fp32. CUDA: fp16 (or fp32) with channels_last, which lets cuDNN pick tensor-core
kernels, and the same K-slot stream pipeline as TensorRT (a torch op on each slot's stream).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.backends.options import TorchOptions
from srgan_deploy.errors import BackendUnavailableError, ShapeError
from srgan_deploy.sources import GeneratorLoader
from srgan_deploy.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from srgan_deploy.gpu.inflight import SlotPipeline
    from srgan_deploy.weights import WeightsInfo


def resolve_torch_device(requested: str) -> torch.device:
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{requested}' asked for, but torch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise BackendUnavailableError(f"unknown device '{requested}'; use cpu, cuda or cuda:N") from exc


def out_of_gpu_memory(shape: tuple[int, ...], exc: BaseException) -> ShapeError:
    """torch's CUDA OutOfMemoryError (a RuntimeError) as the typed error that says what to do, with words
    (out of memory) the tile-halving retry recognises."""
    return ShapeError(
        f"torch ran out of GPU memory on a {shape} batch ({str(exc).splitlines()[0]}); "
        "use --tile 256 or a smaller --memory-budget"
    )


class TorchBackend(Backend[TorchOptions]):
    name = "torch"

    def __init__(self, options: TorchOptions, load: GeneratorLoader) -> None:
        super().__init__(options)
        self._load = load
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.info: WeightsInfo | None = None
        self.net: Any = None
        self._pipeline: SlotPipeline | None = None
        self._pipeline_shape: tuple[int, int, int] = (0, 0, 0)
        self._cuda_index = 0  # the GPU every slot, stream and buffer lives on (cuda:N)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, "torch is not installed (pip install torch)"
        where = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
        return True, f"torch {torch.__version__} on {where}"

    def _open(self) -> None:
        import torch

        from srgan_deploy.models import DeployGenerator

        self.device = resolve_torch_device(self.options.device)
        self.dtype = torch.float16 if self.options.precision == "fp16" else torch.float32
        if self.device.type == "cpu" and self.options.threads:
            torch.set_num_threads(self.options.threads)
        generator, self.info = self._load()
        if self.device.type == "cuda":
            self._cuda_index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self.net = self._place(DeployGenerator(generator))
        self._model = ModelSpec.from_config(self.info.config, self.info.name)
        self.device_label = f"{self.device.type} {self.options.precision}"

    def _device_budget(self, budget: int) -> int:
        """On a GPU the activations live in its memory, not the host's: the plan tiles when the GPU's free memory
        (after the weights, with a fifth kept for cuDNN's workspaces and the allocator's rounding) is smaller."""
        if self.device is None or self.device.type != "cuda":
            return budget
        import torch

        free, _total = torch.cuda.mem_get_info(self._cuda_index)
        return max(1, min(budget, int(free * 0.8)))

    def _place(self, model: Any) -> Any:
        """The network on the backend's device and dtype (channels_last on CUDA, for cuDNN's tensor cores)."""
        import torch

        model = model.to(self.device, self.dtype)
        if self.device is not None and self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def _enter_device(self) -> bool:
        """Make cuda:N current for cuda-python in this thread (the current device is per thread, and the
        slots' streams and buffers are made and used on it); False without cuda-python."""
        from srgan_deploy.gpu.cuda_rt import has_cuda_python, set_device

        if not has_cuda_python():
            return False
        set_device(self._cuda_index)
        return True

    @property
    def weights_info(self) -> WeightsInfo:
        self._require_open()
        assert self.info is not None
        return self.info

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC tensor on the device -> uint8 NHWC tensor; the op the stream pipeline enqueues."""
        import torch

        assert self.device is not None and self.dtype is not None
        with torch.inference_mode():
            inp = x.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            if self.device.type == "cuda":
                inp = inp.contiguous(memory_format=torch.channels_last)
            y = self.net(inp).float()
            return y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        import torch

        assert self.device is not None
        try:
            if self.device.type == "cuda":
                pipeline = self._pipeline_for(frames.shape)
                if pipeline is not None:
                    return next(iter(pipeline.run([frames])))
            x = torch.from_numpy(frames).to(self.device)
            return self.forward_tensor(x).cpu().numpy()
        except torch.cuda.OutOfMemoryError as exc:  # a RuntimeError: typed here, so the tile-halving retry sees it
            raise out_of_gpu_memory(frames.shape, exc) from exc

    def _pipeline_for(self, shape: tuple[int, ...]) -> SlotPipeline | None:
        """The K-slot CUDA pipeline (torch op on each slot's stream), sized for ``shape``; None without cuda-python."""
        from srgan_deploy.gpu.inflight import CudaSlot, SlotPipeline, TorchCompute, close_all

        if not self._enter_device():
            return None
        n, h, w = int(shape[0]), int(shape[1]), int(shape[2])
        size = self._pipeline_shape
        if self._pipeline is not None and n <= size[0] and h <= size[1] and w <= size[2]:
            return self._pipeline
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        # grow to the largest batch/frame seen so far, so alternating sizes do not rebuild the slots
        n, h, w = max(n, size[0]), max(h, size[1]), max(w, size[2])
        slots: list[Any] = []
        try:
            for _ in range(self.options.slots):
                compute = TorchCompute(self.forward_tensor, self.scale, self._cuda_index)
                slots.append(CudaSlot(compute, (n, h, w), self.scale))
        except BaseException:
            close_all(slots)  # a half-built slot list frees what it has; the original error stays first
            raise
        self._pipeline = SlotPipeline(list(slots))
        self._pipeline_shape = (n, h, w)
        return self._pipeline

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """On CUDA, keep K batches in flight through the slot pipeline (same frame size throughout)."""
        self._require_open()
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        first = check_frames(first)
        pipeline = None
        assert self.device is not None
        if self.device.type == "cuda" and self._tile_size(first.shape[1], first.shape[2]) is None:
            pipeline = self._pipeline_for(first.shape)
        if pipeline is None:
            yield from self._one_by_one(first, it)
            return
        import torch

        from srgan_deploy.gpu.inflight import run_split

        # later batches larger than the first are cut into slot-sized pieces (a video's first batch may be short)
        rest = (check_frames(b) for b in it)
        try:
            yield from run_split(pipeline, itertools.chain([first], rest), self._pipeline_shape[0])
        except torch.cuda.OutOfMemoryError as exc:
            raise out_of_gpu_memory(first.shape, exc) from exc

    def _close(self) -> None:
        if self._pipeline is not None:
            self._enter_device()
            self._pipeline.close()

    def _release(self) -> None:
        self.device = None
        self.dtype = None
        self.info = None
        self.net = None
        self._pipeline = None
        self._pipeline_shape = (0, 0, 0)
        self._cuda_index = 0
