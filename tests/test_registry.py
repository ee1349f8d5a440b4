"""One registry entry per backend: what the rest of the package knows about a backend is its entry.

The last test adds a backend the way a new one (a Triton client, say) would be added - a class and one
entry - and drives it through ``choose``, ``create``, availability, memory planning and the job's worker
specs without touching anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import srgan_deploy.backends.registry as registry
from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import Request, TensorRTOptions, TorchOptions
from srgan_deploy.backends.registry import BackendEntry, Choice, choose, create, entry_for
from srgan_deploy.config import ModelConfig
from srgan_deploy.cpus import usable_cpus
from srgan_deploy.errors import ConfigError, UnknownBackendError
from srgan_deploy.memory import bytes_per_pixel
from srgan_deploy.notices import say_on_stderr
from srgan_deploy.sources import Weights


def measured(cost: Any) -> tuple[Any, tuple[Any, ...]]:
    return cost.func, cost.args


def test_every_entry_names_its_class_options_and_costs() -> None:
    assert ("auto", *(e.name for e in registry.ENTRIES)) == registry.BACKEND_NAMES
    assert registry.MODEL_BACKENDS == ("tensorrt", "tensorrt-rtx", "onnxruntime", "openvino", "torch")
    for entry in registry.ENTRIES:
        assert entry.backend.split(":")[1].endswith("Backend")
        assert measured(entry.memory_cost()) == (bytes_per_pixel, (entry.name,))  # memory.py's measured table
        device = "cuda:1" if entry.device == "cuda" else "cpu"
        options = entry.make_options(Request(precision="fp32"), device)
        assert isinstance(options, entry.options)
        assert entry.device_of(options) == device
    with pytest.raises(UnknownBackendError, match="unknown backend 'warp'"):
        entry_for("warp")


def test_the_kind_of_model_file_decides_the_loader(tiny_weights: Path, tmp_path: Path) -> None:
    """A backend made through the registry gets the loader of its kind of file, its notices routed to the
    caller, and its entry's memory cost."""
    said: list[str] = []
    torch = create(choose("torch", Request(device="cpu")), str(tiny_weights), notify=said.append)
    torch.notify("hello")
    assert said == ["hello"] and measured(torch.memory_cost) == (bytes_per_pixel, ("torch",))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an onnx file")
    with pytest.raises(ConfigError, match=r"runs \.safetensors weights"):  # torch loads weights, not ONNX
        create(choose("torch", Request(device="cpu")), str(onnx))
    assert create(choose("bicubic"), None).notify is say_on_stderr  # nobody routed it: stderr


def test_options_of_another_backend_are_refused() -> None:
    with pytest.raises(ConfigError, match="backend 'torch' takes TorchOptions, not TensorRTOptions"):
        create(Choice("torch", TensorRTOptions(), "t"))


def test_devices_move_by_the_entrys_rule() -> None:
    trt, torch, openvino = entry_for("tensorrt"), entry_for("torch"), entry_for("openvino")
    assert trt.on_device(TensorRTOptions(device=0), "cuda:3").device == 3  # TensorRT numbers its GPU
    assert torch.on_device(TorchOptions(device="cuda:0"), "cuda:3").device == "cuda:3"  # the others name it
    ov = openvino.make_options(Request(precision="fp32"), "cpu")
    assert openvino.on_device(ov, "cuda:3") is ov and openvino.device_of(ov) == "cpu"


# ----------------------------------------------------------------------------- a new backend is one entry


@dataclass(frozen=True)
class EchoOptions:
    device: str = "cpu"
    tile: int | None = None
    threads: int | None = None
    memory_budget: int | None = None


class EchoBackend(Backend[EchoOptions]):
    """Nearest-neighbour upscaling of the model's scale: stands for any new backend module."""

    name = "echo"

    def __init__(self, options: EchoOptions, load_scale: Any) -> None:
        super().__init__(options)
        self._load_scale = load_scale

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return True, "always"

    def _open(self) -> None:
        self._model = ModelConfig(scale=self._load_scale(), channels=1, blocks=0)
        self.device_label = self.options.device

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        s = self.scale
        return np.ascontiguousarray(frames.repeat(s, axis=1).repeat(s, axis=2))


def test_a_new_backend_is_one_module_and_one_entry(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path) -> None:
    from srgan_deploy.jobs.workers import on_gpu, with_built_engines, worker_specs

    entry = BackendEntry(
        "echo",
        f"{__name__}:EchoBackend",
        EchoOptions,
        "either",
        "none",
        lambda request, device: EchoOptions(device, request.tile, request.threads, request.memory_budget),
        memory=lambda precision, model: 3.0 * (1 + model.scale**2),  # only the frames: the model runs elsewhere
    )
    monkeypatch.setitem(registry.REGISTRY, "echo", entry)

    assert registry.availability()["echo"] == (True, "always")
    choice = choose("echo", Request(device="cpu", threads=2))
    assert choice == Choice("echo", EchoOptions("cpu", None, 2, None), "as requested")
    backend = create(choice, str(tiny_weights))
    frames = np.arange(2 * 5 * 7 * 3, dtype=np.uint8).reshape(2, 5, 7, 3)
    with backend:
        assert backend.bytes_per_pixel == 3.0 * 17
        assert backend.upscale(frames).shape == (2, 20, 28, 3)

    specs = worker_specs(choose("echo", Request(device="cpu")), Weights(None), 2, ["cpu"])
    assert [s.choice.options.threads for s in specs] == [max(1, usable_cpus() // 2)] * 2  # type: ignore[attr-defined]
    gpus = worker_specs(choose("echo", Request(device="cuda:0")), Weights(None), 2, ["cuda:0", "cuda:1"])
    assert [s.choice.options.device for s in gpus] == ["cuda:0", "cuda:1"]  # type: ignore[attr-defined]
    assert on_gpu(gpus[1], 0).choice.options.device == "cuda:0"  # type: ignore[attr-defined]
    assert with_built_engines(gpus, print) == gpus  # it builds no engine: its specs pass through
