"""Triton Inference Server model repository: the path for users who outgrow one machine.

Layout written (one Triton model per format, since a model has one platform):

    REPO/<name>_py/config.pbtxt   + 1/model.py, model.onnx (+ weights.safetensors)   (backend python)
    REPO/<name>_onnx/config.pbtxt + 1/model.onnx      (platform onnxruntime_onnx)
    REPO/<name>_trt/config.pbtxt  + 1/model.plan      (platform tensorrt_plan)

The ``_py`` model runs our own runtime inside Triton's Python backend (``srgan_deploy.triton_model``), so
the one server binary that installs from PyPI (Python backend only) can serve it on a CPU, and on a GPU
host it picks TensorRT like any local run. Its ``model.py`` is a two-line shim: the code that serves is
the installed package's, type-checked and tested with it, not a copy frozen into each repository.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from srgan_deploy.artifacts import ShapeProfile
from srgan_deploy.errors import ConfigError, OutputError
from srgan_deploy.triton_model import DEFAULT_MAX_PIXELS

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
# Largest frame (input pixels) the _py model accepts in one piece: 1080p in, 8K out. The triton client tiles
# larger frames itself, so a photo still upscales; one request can never make the server hold gigabytes.
SERVED_MAX_PIXELS = DEFAULT_MAX_PIXELS
SERVED_MAX_BATCH = 8
MODEL_PY = (
    '"""Triton Python-backend entry point written by `srgan-deploy export --triton-repo`: the model that\n'
    "serves is srgan_deploy's (srgan_deploy/triton_model.py), imported from the EXECUTION_ENV_PATH\n"
    'environment named in config.pbtxt."""\n\n'
    "from srgan_deploy.triton_model import TritonPythonModel\n\n"
    '__all__ = ["TritonPythonModel"]\n'
)


def config_text(model_name: str, fmt: str, io: str, max_batch: int, instances: int = 1) -> str:
    platform, filename = PLATFORMS[fmt]
    dtype = "TYPE_UINT8" if io == "uint8" else "TYPE_FP32"
    dims = "[ -1, -1, 3 ]" if io == "uint8" else "[ 3, -1, -1 ]"
    batching = "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}\n" if max_batch > 1 else ""
    return (
        f'name: "{model_name}"\n'
        f'platform: "{platform}"\n'
        f'default_model_filename: "{filename}"\n'
        f"max_batch_size: {max_batch}\n"
        f'input [\n  {{\n    name: "input"\n    data_type: {dtype}\n    dims: {dims}\n  }}\n]\n'
        f'output [\n  {{\n    name: "output"\n    data_type: {dtype}\n    dims: {dims}\n  }}\n]\n'
        f"{batching}"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {'KIND_GPU' if fmt == 'tensorrt' else 'KIND_AUTO'}\n  }}\n]\n"
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def served_parameters(onnx_uint8: Path, weights_file: str | None, env: Path | None) -> dict[str, str]:
    """The ``_py`` model's parameters: the graph's own ``srgan_deploy.*`` metadata (model name, weights sha256,
    config or spec), so an operator can tell which weights a running server holds and a client learns the
    scale and the tile overlap from the server alone; then how the server runs it."""
    from srgan_deploy.artifacts import OnnxModel

    model = OnnxModel.from_path(onnx_uint8).require_uint8("the Triton Python-backend model")
    params = {
        k: v for k, v in model.metadata.items() if k.startswith("srgan_deploy.") and k != "srgan_deploy.provenance"
    }
    params.update(
        {
            "srgan_deploy.scale": str(model.config.scale),
            "srgan_deploy.overlap": str(model.config.receptive_radius),
            "srgan_deploy.model_file": "model.onnx",
            "srgan_deploy.max_pixels": str(SERVED_MAX_PIXELS),
            "srgan_deploy.backend": "auto",
            "srgan_deploy.precision": "auto",
        }
    )
    if weights_file is not None:
        params["srgan_deploy.weights_file"] = weights_file
    if env is not None:
        params["EXECUTION_ENV_PATH"] = str(env)
    return params


def python_config_text(
    model_name: str,
    parameters: dict[str, str],
    max_batch: int = SERVED_MAX_BATCH,
    instances: int = 1,
    queue_delay_us: int = 2000,
) -> str:
    """config.pbtxt of the ``_py`` model. ``KIND_AUTO``: one instance per GPU on a GPU host (each opens our
    runtime on its own device), CPU instances elsewhere; the dynamic batcher merges same-size frames from
    different clients into one call."""
    params = ",\n".join(
        f"  {{\n    key: {_quote(k)}\n    value: {{ string_value: {_quote(v)} }}\n  }}" for k, v in parameters.items()
    )
    return (
        f"name: {_quote(model_name)}\n"
        'backend: "python"\n'
        f"max_batch_size: {max_batch}\n"
        'input [\n  {\n    name: "input"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1, 3 ]\n  }\n]\n'
        'output [\n  {\n    name: "output"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1, 3 ]\n  }\n]\n'
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_AUTO\n  }}\n]\n"
        f"parameters [\n{params}\n]\n"
    )


def served_env(option: str | None) -> Path | None:
    """The virtual environment whose srgan_deploy the server runs (EXECUTION_ENV_PATH).

    By default the one running this export (``sys.prefix``): it has srgan_deploy and its backends installed,
    which is right when the server runs on this host. "none" leaves the parameter out (NVIDIA's container with
    srgan-deploy installed into its own Python); a system interpreter has no ``bin/activate`` for Triton to
    source, so outside a virtual environment it is left out too."""
    if option is not None:
        return None if option.strip().lower() == "none" else Path(option).expanduser().absolute()
    prefix = Path(sys.prefix)
    return prefix if sys.prefix != sys.base_prefix and (prefix / "bin" / "activate").is_file() else None


def write_served_model(
    repo: Path, name: str, onnx_path: Path, io: str, weights: str | None, env_option: str | None
) -> Path:
    """``REPO/<name>_py``: the uint8 ONNX (what every backend but torch runs), the weights when the model came
    from ours (torch runs nothing else), the shim and the config. The environment (EXECUTION_ENV_PATH) must
    exist under the same path on the server host: ``served_env`` says which one."""
    from srgan_deploy.sources import Weights, model_source

    env = served_env(env_option)
    if env is not None and not (env / "bin" / "activate").is_file():
        raise ConfigError(
            f"--triton-env {env} is not a virtual environment (no bin/activate); give the folder of the venv "
            "that has srgan-deploy installed on the server host, or 'none'"
        )
    model_name = f"{name}_py"
    folder = repo / model_name
    version = folder / "1"
    source = model_source(weights)
    try:
        version.mkdir(parents=True, exist_ok=True)
        if io != "uint8":  # a float32 export: the server runs the uint8 boundary, exported beside it
            from srgan_deploy.export.onnx import export_onnx

            export_onnx(weights, version / "model.onnx", io="uint8")
        elif onnx_path.resolve() != (version / "model.onnx").resolve():
            shutil.copyfile(onnx_path, version / "model.onnx")
        weights_file = None
        if isinstance(source, Weights):
            from srgan_deploy.weights import resolve_weights

            weights_file = "weights.safetensors"
            shutil.copyfile(resolve_weights(source.name_or_path), version / weights_file)
        (version / "model.py").write_text(MODEL_PY)
        parameters = served_parameters(version / "model.onnx", weights_file, env)
        (folder / "config.pbtxt").write_text(python_config_text(model_name, parameters))
    except OSError as exc:
        raise OutputError(f"cannot write Triton repository {repo}: {exc.strerror}") from exc
    return folder


def write_model(repo: Path, name: str, fmt: str, artifact: Path, io: str, profile: ShapeProfile | None) -> Path:
    model_name = f"{name}_{'trt' if fmt == 'tensorrt' else 'onnx'}"
    folder = repo / model_name
    max_batch = profile.max[0] if (profile is not None and fmt == "tensorrt") else 8
    try:
        (folder / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact, folder / "1" / PLATFORMS[fmt][1])
        (folder / "config.pbtxt").write_text(config_text(model_name, fmt, io, max_batch))
    except OSError as exc:
        raise OutputError(f"cannot write Triton repository {repo}: {exc.strerror}") from exc
    return folder


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([{}\[\]:,])|("(?:[^"\\]|\\.)*")|([^\s{}\[\]:,"#]+))')


def parse_pbtxt(text: str) -> dict[str, Any]:
    """A small protobuf text-format reader, enough to check the structure of config.pbtxt files."""
    tokens = [
        m.group(2) or m.group(3) or m.group(4) for m in _TOKEN.finditer(text) if not m.group(1) and m.group(0).strip()
    ]
    pos = 0

    def value() -> Any:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if tok.startswith('"'):
            return re.sub(r"\\(.)", r"\1", tok[1:-1])
        try:
            return int(tok)
        except ValueError:
            return tok

    def message(end: str | None) -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            out[key] = value()
        pos += 1
        return out

    return message(None)
