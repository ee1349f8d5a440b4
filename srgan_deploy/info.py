"""What ``srgan-deploy info`` reports: versions, backends (and why not), GPU, default model.

It only reports: whether a backend is usable is decided by ``backends.registry``."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def gpu_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"cuda": False, "reason": "torch not installed"}
    if not torch.cuda.is_available():
        return {"cuda": False, "reason": "torch sees no CUDA device"}
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True,
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda_runtime": torch.version.cuda,
    }


def model_report(weights: str, notify: Callable[[str], None]) -> dict[str, Any]:
    """What the runtime knows about one model (``info -w FILE``): its spec, resolved as every command resolves
    it (a foreign ONNX is inspected and wrapped on first use, and the spec comes from that)."""
    from srgan_deploy.sources import describe, model_name, model_source, model_spec

    source = model_source(weights)
    spec = model_spec(source, notify=notify)
    return {
        "name": model_name(source),
        "source": describe(source),
        "summary": spec.describe(),
        "spec": spec.to_dict(),
    }


def collect() -> dict[str, Any]:
    from srgan_deploy import __version__
    from srgan_deploy.backends.registry import availability
    from srgan_deploy.errors import SrganDeployError
    from srgan_deploy.weights import DEFAULT_MODEL, bundled_models, read_info

    versions: dict[str, str | None] = {
        "srgan-deploy": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for dist in (
        "torch",
        "onnxruntime",
        "onnxruntime-gpu",
        "onnx",
        "av",
        "opencv-python-headless",
        "numpy",
        "tensorrt",
        "tensorrt_rtx_cu13_bindings",
        "openvino",
        "cuda-python",
        "cuda-bindings",
        "ray",  # video --ray (the [cluster] extra)
    ):
        versions[dist] = _version(dist)
    from srgan_deploy.sources import shipped_int8

    int8 = shipped_int8()
    models: dict[str, Any] = {}
    for name, path in bundled_models().items():
        try:
            info = read_info(path)
            models[name] = {
                "path": str(path),
                "default": name == DEFAULT_MODEL,
                "config": info.config.__dict__,
                "sha256": info.sha256,
                "placeholder": info.is_placeholder,
                "provenance": info.provenance,
                "int8": str(int8[name]) if name in int8 else None,  # --precision int8 -b openvino
            }
        except SrganDeployError as exc:
            models[name] = {"path": str(path), "error": str(exc)}
    backends = {name: {"available": ok, "detail": why} for name, (ok, why) in availability().items()}
    from srgan_deploy.cpus import cpu_report

    return {
        "versions": versions,
        "backends": backends,
        "cpu": cpu_report(),
        "gpu": gpu_info(),
        "default_model": DEFAULT_MODEL,
        "models": models,
    }
