"""Fixed-size overlapping tiles, so frames larger than an engine profile or GPU memory still upscale.

Every tile has the same size (the last one per axis is shifted back inside the
frame instead of being cut short), so static-shape engines and CUDA graphs keep
working. Neighbouring tiles overlap by at least 2 x ``overlap``; each output pixel is
taken from the tile in which it lies at least ``overlap`` input pixels away from
any cut edge. With ``overlap`` >= the model's receptive-field radius the stitched
result equals the untiled one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from srgan_deploy.errors import ConfigError


def _axis(length: int, tile: int, overlap: int) -> tuple[tuple[int, int, int], ...]:
    """(tile start, keep from, keep to) along one axis, in input pixels."""
    if tile >= length:
        return ((0, 0, length),)
    stride = tile - 2 * overlap
    if stride <= 0:
        raise ConfigError(f"tile {tile} is too small for overlap {overlap}; use a tile larger than {2 * overlap}")
    starts = [*list(range(0, length - tile, stride)), length - tile]
    out = []
    keep_from = 0
    for i, start in enumerate(starts):
        if i + 1 < len(starts):
            nxt = starts[i + 1]
            keep_to = (nxt + start + tile) // 2  # middle of the overlap with the next tile
        else:
            keep_to = length
        out.append((start, keep_from, keep_to))
        keep_from = keep_to
    return tuple(out)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


@dataclass(frozen=True)
class TilePlan:
    height: int
    width: int
    tile_h: int
    tile_w: int
    rows: tuple[tuple[int, int, int], ...]
    cols: tuple[tuple[int, int, int], ...]
    align: int = 1  # tiles start at multiples of this, on the frame padded to a multiple of it

    @classmethod
    def for_frame(cls, height: int, width: int, tile: int | tuple[int, int], overlap: int, align: int = 1) -> TilePlan:
        """``align`` > 1 is a network that needs sides divisible by it (``ModelSpec.size_multiple``; a
        pixel-unshuffle network groups 2x2 pixels from its input's corner). A tile starting one pixel off that
        grid groups other pixels than the whole frame does and gives another answer everywhere, so the frame is
        padded to the multiple (bottom/right edges repeated, as the graph pads a whole frame) and tiles, their
        steps and the overlap are multiples of it."""
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        if align > 1:
            height_a, width_a = _round_up(height, align), _round_up(width, align)
            th = max(align, min(th, height_a) // align * align)
            tw = max(align, min(tw, width_a) // align * align)
            overlap = _round_up(overlap, align)
            return cls(height, width, th, tw, _axis(height_a, th, overlap), _axis(width_a, tw, overlap), align)
        th, tw = min(th, height), min(tw, width)
        return cls(height, width, th, tw, _axis(height, th, overlap), _axis(width, tw, overlap))

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)


def upscale_tiled(
    frames: np.ndarray,
    plan: TilePlan,
    infer: Callable[[np.ndarray], np.ndarray],
    scale: int,
    max_batch: int = 8,
) -> np.ndarray:
    """Run ``infer`` on equal-size tiles (batched) and stitch the kept parts."""
    n = frames.shape[0]
    height, width = plan.rows[-1][2], plan.cols[-1][2]  # the frame padded to the plan's alignment
    if (height, width) != frames.shape[1:3]:
        pad = ((0, 0), (0, height - frames.shape[1]), (0, width - frames.shape[2]), (0, 0))
        frames = np.pad(frames, pad, mode="edge")
    out = np.empty((n, height * scale, width * scale, frames.shape[3]), dtype=frames.dtype)
    jobs = [(r, c) for r in plan.rows for c in plan.cols]
    s = scale
    for f in range(n):
        for first in range(0, len(jobs), max_batch):
            chunk = jobs[first : first + max_batch]
            batch = np.stack([frames[f, r[0] : r[0] + plan.tile_h, c[0] : c[0] + plan.tile_w] for r, c in chunk])
            result = infer(batch)
            for k, (r, c) in enumerate(chunk):
                (ry, ya, yb), (cx, xa, xb) = r, c
                out[f, ya * s : yb * s, xa * s : xb * s] = result[
                    k, (ya - ry) * s : (yb - ry) * s, (xa - cx) * s : (xb - cx) * s
                ]
    if (height, width) != (plan.height, plan.width):
        out = np.ascontiguousarray(out[:, : plan.height * s, : plan.width * s])
    return out
