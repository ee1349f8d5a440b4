"""Resume checkpoints: everything needed to continue a run bit-for-bit (not for deployment).

Deployment weights are the separate ``generator.safetensors``; this file holds
optimizer moments, scheduler, step and RNG, and is read with
``weights_only=True`` so it cannot run code either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from srgan_deploy.errors import TrainingError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a full disk or a kill mid-write leaves the previous checkpoint intact and no temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:
        # torch.save reports a short write (a full disk) as RuntimeError("... unexpected pos ...")
        tmp.unlink(missing_ok=True)
        raise TrainingError(
            f"cannot write checkpoint {path}: {_write_failure(exc, path)}; free disk space and continue with --resume"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_failure(exc: BaseException, path: Path) -> str:
    import shutil

    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        return f"the disk is full ({free // 1024} KiB free)"
    return f"the write failed ({' '.join(str(exc).split())[:200]})"


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"nothing to resume: {path} does not exist (start without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot read checkpoint {path}: {exc}; start a new run or restore the file") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise TrainingError(f"{path} is not a srgan-deploy training checkpoint")
    return state
