"""Where exported ONNX files and TensorRT engines are cached between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: Path | None = None) -> Path:
    """``override``, else $SRGAN_DEPLOY_CACHE, else the platform's user cache dir."""
    if override is not None:
        return override
    env = os.environ.get("SRGAN_DEPLOY_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("srgan-deploy"))
