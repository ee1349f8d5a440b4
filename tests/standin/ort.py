"""A stand-in for onnxruntime's ``InferenceSession`` on an NVIDIA GPU, for tests on a CPU.

It keeps the contracts of the real GPU providers that the backend has to obey, and computes real
pixels with the real CPU session underneath:

- the TensorRT provider, given an explicit profile (``trt_profile_min/max_shapes``), refuses every
  input outside it, as onnxruntime does (an error, not a rebuild);
- the TensorRT provider's engine cache folder is created only one level deep (onnxruntime's
  ``create_directory`` is not recursive); when it cannot be made, the provider does not load and
  the graph quietly runs on the next provider (CUDA), as onnxruntime does;
- the TensorRT provider's engine cache names an engine as onnxruntime's ``TRTGenerateId`` does: by the
  model's file name and its graph's input, initializer and node-output names, not its weights; an engine
  found under that name is loaded and run (the weights it was built with) whatever the file holds now;
- an output bound on a GPU must be bound on the session's GPU;
- ``get_providers()`` lists the providers that actually loaded, first the one that runs the graph.

Its constructor, ``run``, ``io_binding``, ``run_with_iobinding`` and the binding's methods have the
real API's names and parameters; ``tests/test_standin_ort.py`` checks them with ``inspect``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_RealSession = onnxruntime.InferenceSession


def _shape(text: str) -> dict[str, tuple[int, ...]]:
    """``input:1x64x64x3,other:...`` -> {name: dims}, the provider options' format."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in text.split(","):
        name, dims = item.rsplit(":", 1)
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    return shapes


def _cached_engine(model: str | bytes | Any, folder: Path) -> bytes:
    """The "engine" the TensorRT provider runs: the one cached under onnxruntime's id for this model when there
    is one (built from whatever the model was then), else the model now, cached under that id."""
    import hashlib

    import onnx

    named = isinstance(model, (str, Path))
    data = Path(model).read_bytes() if named else bytes(model)
    graph = onnx.load_from_string(data).graph
    key = hashlib.sha256(Path(model).name.encode() if named else b"")
    for name in [i.name for i in graph.input] + [t.name for t in graph.initializer]:
        key.update(name.encode())
    for node in graph.node:
        for output in node.output:
            key.update(output.encode())
    engine = folder / f"TensorrtExecutionProvider_TRTKernel_graph_{graph.name}_{key.hexdigest()[:16]}_0_0_sm89.engine"
    if engine.is_file():
        return engine.read_bytes()
    engine.write_bytes(data)
    return data


class StandinSession:
    """``onnxruntime.InferenceSession`` as it behaves with the TensorRT and CUDA providers."""

    trt_fails: ClassVar[bool] = False  # a test sets it: the TensorRT provider fails to load for another reason
    sessions: ClassVar[list[StandinSession]] = []  # every session made, for tests to look at

    def __init__(
        self,
        path_or_bytes: str | bytes | Any,
        sess_options: Any = None,
        providers: Sequence[str | tuple[str, dict[Any, Any]]] | None = None,
        provider_options: Sequence[dict[Any, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        names: list[str] = []
        options: dict[str, dict[Any, Any]] = {}
        for k, item in enumerate(providers or [CPU]):
            name, opts = (item, {}) if isinstance(item, str) else item
            if provider_options is not None and k < len(provider_options):
                opts = {**opts, **provider_options[k]}
            names.append(name)
            options[name] = dict(opts)
        self.requested = names
        self.provider_options = options
        self.loaded = [name for name in names if self._loads(name, options[name])]
        trt = options.get(TRT, {})
        self.profile: tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]] | None = None
        if self.loaded and self.loaded[0] == TRT and "trt_profile_min_shapes" in trt:
            self.profile = (_shape(trt["trt_profile_min_shapes"]), _shape(trt["trt_profile_max_shapes"]))
        gpu = options.get(self.loaded[0], {}) if self.loaded else {}
        self.device_id = int(gpu.get("device_id", 0))
        self.shapes: list[tuple[int, ...]] = []  # every input shape a run was given
        model = path_or_bytes
        if (
            self.loaded
            and self.loaded[0] == TRT
            and trt.get("trt_engine_cache_enable")
            and trt.get("trt_engine_cache_path")
        ):
            model = _cached_engine(path_or_bytes, Path(trt["trt_engine_cache_path"]))
        self._session = _RealSession(model, sess_options=sess_options, providers=[CPU])
        StandinSession.sessions.append(self)

    def _loads(self, name: str, opts: dict[Any, Any]) -> bool:
        if name != TRT:
            return name in (CUDA, CPU)
        if self.trt_fails:
            return False
        cache = opts.get("trt_engine_cache_path")
        if opts.get("trt_engine_cache_enable") and cache:
            folder = Path(cache)
            if not folder.is_dir():
                if not folder.parent.is_dir():
                    return False  # create_directory makes one level only: the provider fails to load
                folder.mkdir()
        return True

    def get_providers(self) -> Sequence[str]:
        return list(self.loaded)

    def _check(self, name: str, shape: tuple[int, ...]) -> None:
        self.shapes.append(shape)
        if self.profile is None:
            return
        lo, hi = self.profile[0].get(name), self.profile[1].get(name)
        if lo is None or hi is None:
            return
        if len(shape) != len(lo) or any(not a <= v <= b for a, v, b in zip(lo, shape, hi, strict=True)):
            raise Fail(
                f"[ONNXRuntimeError] : 1 : FAIL : TensorRT EP failed to call nvinfer1::IExecutionContext::"
                f"setInputShape() for input '{name}' (shape {list(shape)} is outside the profile "
                f"{list(lo)}..{list(hi)})"
            )

    def run(self, output_names: Any, input_feed: dict[str, Any], run_options: Any = None) -> Any:
        for name, value in input_feed.items():
            self._check(name, tuple(np.asarray(value).shape))
        return self._session.run(output_names, input_feed, run_options)

    def io_binding(self) -> StandinBinding:
        return StandinBinding(self)

    def run_with_iobinding(self, iobinding: StandinBinding, run_options: Any = None) -> None:
        if iobinding.session is not self:
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : the IOBinding belongs to another session")
        iobinding.outputs = list(self.run(list(iobinding.output_names), dict(iobinding.inputs), run_options))


class StandinBinding:
    """``onnxruntime.IOBinding``: CPU inputs, outputs bound on the session's device."""

    def __init__(self, session: StandinSession) -> None:
        self.session = session
        self.inputs: dict[str, np.ndarray] = {}
        self.output_names: list[str] = []
        self.outputs: list[np.ndarray] = []

    def bind_cpu_input(self, name: str, arr_on_cpu: np.ndarray) -> None:
        self.inputs[name] = np.asarray(arr_on_cpu)

    def bind_output(
        self,
        name: str,
        device_type: str = "cpu",
        device_id: int = 0,
        element_type: Any = None,
        shape: Any = None,
        buffer_ptr: Any = None,
    ) -> None:
        on_gpu = bool(self.session.loaded) and self.session.loaded[0] in (TRT, CUDA)
        if device_type == "cuda" and (not on_gpu or device_id != self.session.device_id):
            raise Fail(
                f"[ONNXRuntimeError] : 1 : FAIL : output '{name}' bound on cuda:{device_id}, but the session "
                f"runs on {'cuda:' + str(self.session.device_id) if on_gpu else 'the CPU'}"
            )
        self.output_names.append(name)

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        return [np.array(o) for o in self.outputs]


def install(monkeypatch: Any, providers: Sequence[str] = (TRT, CUDA, CPU)) -> type[StandinSession]:
    """Make ``onnxruntime`` look like onnxruntime-gpu with these providers, for one test."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))
    monkeypatch.setattr(onnxruntime, "InferenceSession", StandinSession)
    monkeypatch.setattr(StandinSession, "sessions", [])
    monkeypatch.setattr(StandinSession, "trt_fails", False)
    return StandinSession
