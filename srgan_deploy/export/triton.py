"""Triton Inference Server model repository: the path for users who outgrow one machine.

Layout written (one Triton model per format, since a model has one platform):

    REPO/<name>_onnx/config.pbtxt + 1/model.onnx      (platform onnxruntime_onnx)
    REPO/<name>_trt/config.pbtxt  + 1/model.plan      (platform tensorrt_plan)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from srgan_deploy.artifacts import ShapeProfile
from srgan_deploy.errors import OutputError

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}


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
            return tok[1:-1]
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
