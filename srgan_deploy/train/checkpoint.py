"""Resume checkpoints: everything needed to continue a run bit-for-bit (not for deployment).

Deployment weights are the separate ``generator.safetensors``; this file holds
optimizer moments, scheduler, step and RNG, and is read with
``weights_only=True`` so it cannot run code either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from srgan_deploy.errors import TrainingError

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


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
