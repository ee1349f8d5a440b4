"""The model Triton's Python backend serves (``REPO/<name>_py``): our runtime behind Triton's request loop.

Why our runtime and not Triton's own onnxruntime / TensorRT backends: the server that installs from PyPI has
only the Python backend, and our runtime already picks the host's fastest backend (TensorRT on a GPU,
OpenVINO or onnxruntime on a CPU), plans tiles to its memory budget and checks shapes, so a served frame is
upscaled exactly as a local one would be.

Tensors cross the stub's boundary through DLPack, never ``as_numpy()`` / ``Tensor(name, array)``: the stub of
the pip server (Triton 2.51) is built against numpy 1's ABI, and with numpy 2 in the environment it reads an
input as zeros and writes an output of zero bytes (measured). DLPack carries no numpy ABI.

Errors answer the request they belong to, with one line that names the model: a bad frame from one client
must not fail the frames of the others batched with it, nor the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.errors import ShapeError, SrganDeployError

DEFAULT_MAX_PIXELS = 1920 * 1088  # as export/triton.py writes it; a config without the parameter gets the same


def check_request(frames: np.ndarray, max_pixels: int) -> np.ndarray:
    """One request's frames, or a ShapeError that says what the client must change. Triton has already
    checked the dtype and the rank against config.pbtxt; this catches what the config cannot say."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ShapeError(f"input must be uint8 (N, H, W, 3) RGB; got {frames.dtype} {tuple(frames.shape)}")
    n, h, w, _ = frames.shape
    if n == 0 or h == 0 or w == 0:
        raise ShapeError(f"empty input {tuple(frames.shape)}; send at least one frame of at least 1x1 pixels")
    if h * w > max_pixels:
        raise ShapeError(
            f"a {w}x{h} frame ({h * w / 1e6:.1f} MP) is over this model's limit of {max_pixels / 1e6:.1f} MP per "
            "frame; send tiles (srgan-deploy -b triton tiles larger frames itself)"
        )
    return frames


class ServedRuntime:
    """The part that does not need Triton: open the backend the parameters ask for, upscale groups of frames."""

    def __init__(self, folder: Path, params: dict[str, str], device: str, log: Any = print) -> None:
        from srgan_deploy.backends.options import Request
        from srgan_deploy.backends.registry import choose, create
        from srgan_deploy.sources import OnnxFile, Weights

        self.max_pixels = int(params.get("srgan_deploy.max_pixels", DEFAULT_MAX_PIXELS))
        threads = int(params["srgan_deploy.threads"]) if params.get("srgan_deploy.threads") else None
        request = Request(device=device, precision=params.get("srgan_deploy.precision", "auto"), threads=threads)
        choice = choose(params.get("srgan_deploy.backend", "auto"), request)
        weights = params.get("srgan_deploy.weights_file")
        source: OnnxFile | Weights = OnnxFile(folder / params.get("srgan_deploy.model_file", "model.onnx"))
        if choice.name == "torch" and weights:  # the one backend that runs weights, not the graph
            source = Weights(str(folder / weights))
        self.backend = create(choice, source, notify=log)
        self.backend.open()
        log(f"backend: {choice.name} on {self.backend.device_label} ({choice.reason})")

    def run(self, batches: list[np.ndarray]) -> list[np.ndarray | SrganDeployError]:
        """Upscale each request's frames; requests of one frame size run as one call (Triton's dynamic
        batcher hands over several at once). A failed call fails only the requests in it."""
        results: list[np.ndarray | SrganDeployError | None] = [None] * len(batches)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, frames in enumerate(batches):
            try:
                check_request(frames, self.max_pixels)
            except ShapeError as exc:
                results[i] = exc
                continue
            groups.setdefault(tuple(frames.shape[1:]), []).append(i)
        for members in groups.values():
            parts = [batches[i] for i in members]
            try:
                out = self.backend.upscale(parts[0] if len(parts) == 1 else np.concatenate(parts))
            except SrganDeployError as exc:
                for i in members:
                    results[i] = exc
                continue
            except MemoryError:
                for i in members:
                    results[i] = ShapeError("the server ran out of memory on this request; send smaller frames")
                continue
            start = 0
            for i, part in zip(members, parts, strict=True):
                results[i] = np.ascontiguousarray(out[start : start + part.shape[0]])
                start += part.shape[0]
        return [r if r is not None else ShapeError("request not run (a bug)") for r in results]

    def close(self) -> None:
        self.backend.close()


class TritonPythonModel:
    """Triton's entry point (the name and the three methods are the Python backend's contract)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        config = json.loads(args["model_config"])
        self.name = str(config.get("name", "srgan"))
        params = {k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}
        kind = args.get("model_instance_kind", "CPU")
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        folder = Path(args["model_repository"]) / str(args["model_version"])
        try:
            self.runtime = ServedRuntime(folder, params, device, log=lambda m: pb_utils.Logger.log_info(str(m)))
        except SrganDeployError as exc:
            # Triton marks the model UNAVAILABLE with this text; the server goes on serving the others
            raise RuntimeError(f"{self.name}: {exc}") from exc

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        batches: list[np.ndarray] = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "input")
            batches.append(np.from_dlpack(tensor) if tensor is not None else np.zeros((0, 0, 0, 3), np.uint8))
        try:
            results = self.runtime.run(batches)
        except Exception as exc:  # noqa: BLE001 - a bug answers every request with its text; the server lives on
            results = [ShapeError(f"internal error: {type(exc).__name__}: {exc}") for _ in requests]
        responses = []
        for result in results:
            if isinstance(result, np.ndarray):
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("output", result)]))
            else:
                text = " ".join(str(result).split())
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {text}")))
        return responses

    def finalize(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
