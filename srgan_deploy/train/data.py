"""HR image folder -> aligned (LR, HR) training patches.

LR images are made once per image at start-up (whole-image degradation, so a
patch's border sees real neighbours, not padding), then every step draws
random aligned crops with flips and 90-degree rotations. Sampling is a pure
function of (seed, step, rank): a resumed run sees exactly the batches an
uninterrupted one would, without saving any data-loader state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srgan_deploy.errors import ConfigError, ImageReadError, TrainingError
from srgan_deploy.images import list_images, read_image, to_rgb
from srgan_deploy.resize import imresize

log = logging.getLogger(__name__)

DEGRADATIONS = ("bicubic", "blur")


@dataclass(frozen=True)
class DegradationConfig:
    kind: str = "bicubic"
    blur_sigma: float = 1.0
    blur_kernel: int = 7

    def __post_init__(self) -> None:
        if self.kind not in DEGRADATIONS:
            raise ConfigError(f"unknown degradation '{self.kind}'; choose one of {', '.join(DEGRADATIONS)}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ConfigError(f"blur kernel must be an odd positive size (got {self.blur_kernel})")


def degrade(hr: np.ndarray, scale: int, config: DegradationConfig) -> np.ndarray:
    """HR uint8 RGB -> LR uint8 RGB at 1/scale."""
    if config.kind == "blur":
        import cv2

        hr = cv2.GaussianBlur(hr, (config.blur_kernel, config.blur_kernel), config.blur_sigma)
    return imresize(hr, 1.0 / scale)


def _augment(patch: np.ndarray, flip: bool, rot: int) -> np.ndarray:
    if flip:
        patch = patch[:, ::-1]
    return np.rot90(patch, rot)


class PatchSampler:
    """Holds the (LR, HR) pairs of a folder and draws batches of aligned random crops."""

    def __init__(
        self,
        folder: Path,
        scale: int,
        crop: int,
        degradation: DegradationConfig,
        warn: Callable[[str], None] = log.warning,
    ) -> None:
        if crop % scale:
            raise ConfigError(f"crop size {crop} must be a multiple of the scale {scale}")
        self.scale = scale
        self.crop = crop
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.names: list[str] = []
        files = list_images(folder)
        for path in files:
            try:
                hr = to_rgb(read_image(path))
            except ImageReadError as exc:
                warn(f"skipping {path}: {exc}")
                continue
            h, w = hr.shape[:2]
            if h < crop or w < crop:
                warn(f"skipping {path}: {w}x{h} is smaller than the {crop}px crop")
                continue
            hr = hr[: h - h % scale, : w - w % scale]
            self.pairs.append((degrade(hr, scale, degradation), np.ascontiguousarray(hr)))
            self.names.append(str(path))
        if not self.pairs:
            raise TrainingError(
                f"no usable training images in {folder} (png/jpg/jpeg/bmp/webp of at least {crop}x{crop} px)"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def indices(self, seed: int, step: int, batch: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """Image indices for one step: epoch-wise permutations split across ranks (DistributedSampler's rule)."""
        n = len(self.pairs)
        per_rank = max(1, n // world)
        start = step * batch
        out = np.empty(batch, dtype=np.int64)
        for i in range(batch):
            epoch, offset = divmod(start + i, per_rank)
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            out[i] = perm[(offset * world + rank) % n]
        return out

    def batch(self, seed: int, step: int, batch: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(LR, HR) float32 NCHW arrays in [0, 1] for ``step``."""
        rng = np.random.default_rng([seed, step, rank, 1])
        lr_crop = self.crop // self.scale
        lrs = np.empty((batch, 3, lr_crop, lr_crop), dtype=np.float32)
        hrs = np.empty((batch, 3, self.crop, self.crop), dtype=np.float32)
        for i, idx in enumerate(self.indices(seed, step, batch, rank, world)):
            lr, hr = self.pairs[int(idx)]
            y = int(rng.integers(0, lr.shape[0] - lr_crop + 1))
            x = int(rng.integers(0, lr.shape[1] - lr_crop + 1))
            flip = bool(rng.integers(0, 2))
            rot = int(rng.integers(0, 4))
            lp = _augment(lr[y : y + lr_crop, x : x + lr_crop], flip, rot)
            s = self.scale
            hp = _augment(hr[y * s : (y + lr_crop) * s, x * s : (x + lr_crop) * s], flip, rot)
            lrs[i] = lp.transpose(2, 0, 1) / 255.0
            hrs[i] = hp.transpose(2, 0, 1) / 255.0
        return lrs, hrs
