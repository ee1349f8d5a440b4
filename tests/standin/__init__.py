"""A GPU stand-in for the tests: CUDA's runtime and TensorRT's runtime as doubles that enforce their
rules and compute real pixels (``cuda.py``, ``tensorrt.py``). ``install`` puts it in place of
cuda-python and the TensorRT modules for one test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.standin.cuda import DeviceSpec, StandinCudart
from tests.standin.tensorrt import StandinFlavour

__all__ = ["DeviceSpec", "StandinCudart", "StandinFlavour", "StandinGPU", "install"]


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
