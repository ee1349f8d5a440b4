"""PyTorch backend: the reference every other backend is compared with.

CPU: fp32. CUDA: fp16 (or fp32) with channels_last, which lets cuDNN pick
tensor-core kernels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.errors import BackendUnavailableError
from srgan_deploy.weights import WeightsInfo, load_generator

if TYPE_CHECKING:
    import torch

    from srgan_deploy.gpu.inflight import SlotPipeline


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


class TorchBackend(Backend):
    name = "torch"

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
        precision = self.options.precision
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if self.device.type == "cpu":
            if self.dtype == torch.float16:
                raise BackendUnavailableError("fp16 on CPU is not supported by the torch backend; use --precision fp32")
            if self.options.threads:
                torch.set_num_threads(self.options.threads)
        generator, self.info = load_generator(self.options.weights)
        self.scale = self.info.config.scale
        model = DeployGenerator(generator).to(self.device, self.dtype)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.device_label = f"{self.device.type} {precision}"
        self._overlap = self.info.config.receptive_radius

    @property
    def overlap(self) -> int:
        return getattr(self, "_overlap", 8)

    @property
    def weights_info(self) -> WeightsInfo:
        return self.info

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC tensor on the device -> uint8 NHWC tensor; the op the stream pipeline enqueues."""
        import torch

        with torch.inference_mode():
            inp = x.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            if self.device.type == "cuda":
                inp = inp.contiguous(memory_format=torch.channels_last)
            y = self.model(inp).float()
            return y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        import torch

        if self.device.type == "cuda":
            pipeline = self._pipeline_for(frames.shape)
            if pipeline is not None:
                return next(iter(pipeline.run([frames])))
        x = torch.from_numpy(frames).to(self.device)
        return self.forward_tensor(x).cpu().numpy()

    def _pipeline_for(self, shape: tuple[int, ...]) -> SlotPipeline | None:
        """The K-slot CUDA pipeline (torch op on each slot's stream), sized for ``shape``; None without cuda-python."""
        from srgan_deploy.errors import BackendUnavailableError
        from srgan_deploy.gpu.inflight import CudaSlot, SlotPipeline, TorchCompute

        n, h, w = int(shape[0]), int(shape[1]), int(shape[2])
        current = getattr(self, "_pipeline", None)
        size = getattr(self, "_pipeline_shape", (0, 0, 0))
        if current is not None and n <= size[0] and h <= size[1] and w <= size[2]:
            return current
        if current is not None:
            current.close()
        try:
            slots = [
                CudaSlot(TorchCompute(self.forward_tensor, self.scale), (n, h, w), self.scale)
                for _ in range(self.options.slots)
            ]
        except BackendUnavailableError:
            self._pipeline = None
            return None
        self._pipeline = SlotPipeline(list(slots))
        self._pipeline_shape = (n, h, w)
        return self._pipeline

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """On CUDA, keep K batches in flight through the slot pipeline (same frame size throughout)."""
        if not self._is_open:
            self.open()
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        first = check_frames(first)
        pipeline = None
        if self.device.type == "cuda" and self._tile_size(first.shape[1], first.shape[2]) is None:
            pipeline = self._pipeline_for(first.shape)
        if pipeline is None:
            yield self.upscale(first)
            for batch in it:
                yield self.upscale(batch)
            return
        yield from pipeline.run(itertools.chain([first], (check_frames(b) for b in it)))

    def _close(self) -> None:
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None:
            pipeline.close()
            self._pipeline = None
