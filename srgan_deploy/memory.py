"""A memory budget that decides whether to tile, the tile size and how many tiles go in one batch.

The cost of upscaling grows with the input's pixels and the model's width: activations at 1x, 2x and
4x resolution, plus the output frame. Measured per backend as bytes per input pixel per generator
channel (``python -m benchmarks.memory``, 2026-12-02, both bundled models, fresh processes; the slope
between two frame sizes, so library and weight memory are not counted):

| backend, precision | bytes / input pixel / channel | lite (32 ch) | paper (64 ch) |
|---|---|---|---|
| openvino bf16 | 43 | 1.4 KB | 2.7 KB |
| openvino fp32 | 83 | 2.7 KB | 5.2 KB |
| onnxruntime fp32 | 265 | 8.4 KB | 16.7 KB |
| torch fp32 | 140 | 4.1 KB | 9.1 KB |

GPU backends plan against device memory with the fp16 activations of the same network (an estimate
from the architecture: not measured, no GPU was available).

Other networks (``-w any.onnx``) are planned as the SRResNet width whose peak of live activations per
pixel equals theirs (``ModelSpec.memory_width``, counted on the graph when it is first inspected): the
slopes above are SRResNet's, and a graph's activation peak is what scales them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from srgan_deploy.errors import ConfigError
from srgan_deploy.spec import ModelSpec

# bytes per LR input pixel per generator channel, measured (table above); a 15 % margin on top
PER_CHANNEL = {
    ("openvino", "bf16"): 43.0,
    ("openvino", "fp32"): 83.0,
    ("openvino", "int8"): 43.0,  # taken as bf16's (uint8 activations between int8 convolutions, bf16 elsewhere)
    ("onnxruntime", "fp32"): 265.0,
    ("onnxruntime", "fp16"): 265.0,
    ("torch", "fp32"): 140.0,
    ("torch", "fp16"): 70.0,
    ("tensorrt", "fp16"): 60.0,
    ("tensorrt", "fp32"): 120.0,
    ("tensorrt-rtx", "fp16"): 60.0,
    ("tensorrt-rtx", "fp32"): 120.0,
}
MARGIN = 1.15
# The budget covers the model's working set. The process needs about 1 GB more (libraries, weights, the
# input and output frames), so a 2 GiB default keeps a whole run near 3 GB (measured, docs/performance.md).
DEFAULT_CAP = 2 * 2**30
MAX_TILE_BATCH = 8
TILE_STEP = 16  # tile edges are multiples of this (friendlier to convolution kernels)


def bytes_per_pixel(backend: str, precision: str, model: ModelSpec) -> float:
    per_channel = PER_CHANNEL.get((backend, precision), 265.0)
    output = 3.0 * model.scale * model.scale  # the uint8 output frame itself
    return MARGIN * (per_channel * model.memory_width + output)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where that is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def total_memory() -> int | None:
    """This machine's memory, or its container's limit where that is lower (cgroup v2); None where unknown."""
    import os

    try:
        total: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
    except OSError:
        limit = ""
    if limit.isdigit():
        total = min(total or int(limit), int(limit))
    return total


def memory_capacity(device: str) -> tuple[int | None, str]:
    """(bytes, in words) of the memory a budget on ``device`` ("cpu", "cuda:N") is a share of: the GPU's
    where CUDA can say, else this machine's. Why not always the host's: a 140 GB GPU in a 128 GB host."""
    if device.startswith("cuda"):
        from srgan_deploy.errors import BackendUnavailableError, EngineError
        from srgan_deploy.gpu.cuda_rt import device_properties

        index = int(device.partition(":")[2] or 0)
        try:
            return device_properties(index).total_memory, f"GPU {index}"
        except (BackendUnavailableError, EngineError):
            return None, ""
    return total_memory(), "this machine"


def check_budget(budget: int, capacity: int | None, where: str) -> None:
    """Refuse a ``--memory-budget`` larger than the memory it is a budget of: such a number plans whole frames
    that cannot be held, and the run ends out of memory (or swapping) instead of tiling."""
    if capacity is not None and budget > capacity:
        raise ConfigError(
            f"--memory-budget {budget / 2**30:.4g}G is more than {where} has ({capacity / 2**30:.1f} GiB); "
            f"give at most {capacity // 2**30}G, or leave it out (default: half the free memory, at most 2G)"
        )


def default_budget() -> int:
    """Half of the memory available now, capped at 2 GiB, and never below 256 MiB."""
    free = available_memory()
    budget = DEFAULT_CAP if free is None else min(DEFAULT_CAP, free // 2)
    return max(budget, 256 * 2**20)


def parse_budget(text: str) -> int:
    """``3G``, ``512M``, ``1.5GiB`` or a number of bytes -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ConfigError(f"--memory-budget '{text}' must be a size like 3G, 512M or 1.5GiB")
    value = float(m.group(1)) * 1024 ** "_KMGT".index((m.group(2) or "_").upper())
    if not math.isfinite(value) or value < 64 * 2**20:
        raise ConfigError(f"--memory-budget '{text}' is too small; give at least 64M")
    return int(value)


@dataclass(frozen=True)
class MemoryPlan:
    tile: tuple[int, int] | None  # LR tile (height, width); None = whole frames
    batch: int  # tiles per inference call
    budget: int
    per_pixel: float

    @property
    def peak_estimate(self) -> float:
        if self.tile is None:
            return 0.0
        return self.tile[0] * self.tile[1] * self.batch * self.per_pixel


def _round_up(value: float, step: int = TILE_STEP) -> int:
    return int(math.ceil(value / step) * step)


def plan(height: int, width: int, frames: int, per_pixel: float, budget: int, overlap: int) -> MemoryPlan:
    """Whole frames when the batch fits the budget; else the tiling that fits it and computes the fewest
    pixels (overlaps are computed twice), then as many tiles per call as fit (at most 8).

    Why not a fixed tile size: on a 2-core CPU a 720p frame of the paper-size model cut into 512x512
    tiles took 1.6x as long as the same frame in two tiles (measured), all of it in the overlaps."""
    if frames * height * width * per_pixel <= budget:
        return MemoryPlan(None, 1, budget, per_pixel)
    best: tuple[float, int, int, int] | None = None  # (computed pixels, tiles, tile h, tile w)
    for rows in range(1, 65):
        th = min(height, _round_up((height + 2 * overlap * (rows - 1)) / rows))
        if th <= 2 * overlap and rows > 1:
            break
        for cols in range(1, 65):
            tw = min(width, _round_up((width + 2 * overlap * (cols - 1)) / cols))
            if tw <= 2 * overlap and cols > 1:
                break
            if th * tw * per_pixel > budget:
                continue
            candidate = (float(rows * cols * th * tw), rows * cols, th, tw)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
            break  # more columns only add overlap
    if best is None:
        smallest = 2 * overlap + TILE_STEP
        raise ConfigError(
            f"a memory budget of {budget / 2**20:.0f} MiB cannot hold even a {smallest}x{smallest} tile of this "
            f"model ({per_pixel * smallest * smallest / 2**20:.0f} MiB); raise --memory-budget"
        )
    _, tiles, th, tw = best
    batch = max(1, min(MAX_TILE_BATCH, tiles, int(budget // (th * tw * per_pixel))))
    return MemoryPlan((th, tw), batch, budget, per_pixel)
