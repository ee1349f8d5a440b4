"""A GPU stand-in for the tests: CUDA's runtime and TensorRT's runtime as doubles that enforce their
rules and compute real pixels (``cuda.py``, ``tensorrt.py``). ``install`` puts it in place of
cuda-python and the TensorRT modules for one test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from tests.standin.cuda import DeviceSpec, StandinCudart
from tests.standin.tensorrt import StandinFlavour

__all__ = ["DeviceSpec", "StandinCudart", "StandinFlavour", "StandinGPU", "install", "install_torch_cuda"]


ACTIVATION_BYTES = 512  # device bytes a torch op of the network holds per input pixel (two fp32 maps of 64 channels)


@dataclass
class StandinGPU:
    cudart: StandinCudart
    flavours: dict[str, StandinFlavour] = field(default_factory=dict)

    def assert_released(self) -> None:
        """Nothing left behind: every buffer, stream, event and context freed."""
        import gc

        gc.collect()
        live = self.cudart.live()
        assert not live, f"leaked allocations: {live}"
        assert not self.cudart.live_streams(), "leaked streams"
        assert not self.cudart.live_events(), "leaked events"
        assert self.cudart.used == [0] * len(self.cudart.devices), f"device memory still charged: {self.cudart.used}"

    def devices_used(self) -> set[int]:
        """Every device that holds a stream, event or allocation made so far."""
        used = {a.device for a in self.cudart.allocations.values() if a.kind == "device"}
        used |= {s.device for s in self.cudart.streams} | {e.device for e in self.cudart.events}
        return used

    @property
    def errors(self) -> list[str]:
        return [e for f in self.flavours.values() for e in f.errors] + self.cudart.faults


def install(monkeypatch: pytest.MonkeyPatch, devices: list[DeviceSpec] | None = None) -> StandinGPU:
    """Replace cuda-python's runtime and the TensorRT modules with the stand-in, for this test."""
    import srgan_deploy.export.tensorrt as export_trt
    import srgan_deploy.gpu.cuda_rt as cuda_rt
    import srgan_deploy.gpu.trt_runtime as trt_runtime
    from srgan_deploy.errors import BackendUnavailableError

    try:
        import tensorrt_rtx_bindings as real
    except ImportError as exc:  # the stand-in's build front is NVIDIA's own parser: required
        raise BackendUnavailableError(f"the GPU stand-in needs TensorRT-RTX: {trt_runtime.RTX_INSTALL}") from exc
    cudart = StandinCudart(devices)
    gpu = StandinGPU(cudart)
    for flavour in ("tensorrt", "tensorrt-rtx"):
        gpu.flavours[flavour] = StandinFlavour(flavour, real, cudart)

    def import_flavour(flavour: str) -> Any:
        if flavour not in gpu.flavours:
            return trt_runtime.import_flavour_module.__wrapped__(flavour)  # type: ignore[attr-defined]
        return gpu.flavours[flavour]

    import_flavour.__wrapped__ = trt_runtime.import_flavour_module  # type: ignore[attr-defined]
    monkeypatch.setattr(cuda_rt, "cudart", cudart)
    monkeypatch.setattr(cuda_rt, "driver_version", lambda: 13000)
    monkeypatch.setattr(trt_runtime, "import_flavour_module", import_flavour)
    monkeypatch.setattr(export_trt, "import_flavour_module", import_flavour)
    return gpu


def install_torch_cuda(monkeypatch: pytest.MonkeyPatch, gpu: StandinGPU) -> None:
    """torch's CUDA surface over the stand-in, for the torch backend's CUDA slot path.

    The slot machinery (streams, buffers, devices, events) is the product's own code on the stand-in CUDA;
    only torch itself is shimmed: ``torch.cuda.device`` sets the stand-in's current device (it calls
    cudaSetDevice in the real runtime too), a torch op on an external stream is a kernel launch (the stream
    must belong to the current device; it runs after the stream's earlier work), a ``cuda_array`` view
    must point at device memory of the device it names, and the network's weights stay on the CPU. The
    network's activations are allocated on the current device as torch's caching allocator would: beyond its
    free memory the op raises torch's ``OutOfMemoryError`` (``ACTIVATION_BYTES`` per input pixel, an estimate)."""
    import contextlib
    import threading
    from collections.abc import Iterator

    import torch

    import srgan_deploy.gpu.inflight as inflight
    from srgan_deploy.backends.torch import TorchBackend
    from tests.standin.cuda import CudaFault

    cudart = gpu.cudart

    @contextlib.contextmanager
    def device(index: int) -> Iterator[None]:
        before = cudart.current_device()
        cudart.cudaSetDevice(int(index))
        try:
            yield
        finally:
            cudart.cudaSetDevice(before)

    class Stream:
        def __init__(self, handle: int, device: torch.device) -> None:
            self.handle, self.device = handle, device

    local = threading.local()

    @contextlib.contextmanager
    def stream(s: Stream) -> Iterator[None]:
        with cudart._lock:
            real = cudart.stream_of(s.handle)
            if s.device.index != real.device:
                raise RuntimeError(f"ExternalStream told device {s.device.index}, the stream is on {real.device}")
            if real.device != cudart.current_device():
                raise RuntimeError("CUDA error: invalid resource handle (a kernel on another device's stream)")
            cudart.run_until(real, real.submitted)  # the op runs after what the stream already holds
        local.stream = real
        try:
            yield
        finally:
            local.stream = None

    def cuda_array(ptr: int, shape: tuple[int, ...], device_index: int = 0) -> torch.Tensor:
        if getattr(local, "stream", None) is None:
            # outside `torch.cuda.stream(slot stream)` torch would use the legacy default stream, which a
            # non-blocking slot stream does not wait for: the op would race the slot's copies
            raise RuntimeError("a torch op on device memory outside the slot's stream (unordered with its copies)")
        nbytes = int(np.prod(shape))
        with cudart._lock:
            try:
                alloc = cudart.find(ptr, nbytes, "device")
            except CudaFault as fault:
                raise RuntimeError(f"CUDA error: an illegal memory access was encountered ({fault.why})") from None
            if alloc.device != device_index:
                raise RuntimeError(f"a cuda:{device_index} tensor over memory of device {alloc.device}")
            view = cudart.view(ptr, nbytes)
        return torch.frombuffer(view, dtype=torch.uint8).reshape(shape)

    class OnDevice(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d = cudart.current_device()
            need = int(x.shape[0] * x.shape[2] * x.shape[3]) * ACTIVATION_BYTES
            free = cudart.devices[d].memory - cudart.used[d]
            if need > free:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {need / 2**20:.2f} MiB. GPU {d} has a total capacity of "
                    f"{cudart.devices[d].memory / 2**30:.2f} GiB of which {free / 2**20:.2f} MiB is free."
                )
            return self.net(x)  # type: ignore[no-any-return]

    def place(self: TorchBackend, model: Any) -> Any:
        return OnDevice(model.to(torch.float32))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cudart.devices))
    monkeypatch.setattr(torch.cuda, "current_device", cudart.current_device)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: cudart.devices[int(i or 0)].name)
    monkeypatch.setattr(torch.cuda, "device", device)

    def mem_get_info(index: int | None = None) -> tuple[int, int]:
        d = cudart.current_device() if index is None else int(index)
        return cudart.devices[d].memory - cudart.used[d], cudart.devices[d].memory

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(inflight, "torch_stream", lambda handle, index: Stream(handle, torch.device("cuda", index)))
    monkeypatch.setattr(inflight, "cuda_array", cuda_array)
    monkeypatch.setattr(TorchBackend, "_place", place)
