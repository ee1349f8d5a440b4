"""Benchmark-protocol evaluation: HR folder -> bicubic LR -> (bicubic, model) vs HR on Y with a shave.

Pure numpy around a ``upscale`` callable, so training validation (torch model in
memory) and ``srgan-deploy eval`` (any backend) share one implementation. Beside PSNR/SSIM each
image gets a texture ratio (``srgan_deploy.texture``), because fidelity alone ranks a blurred
answer above a perceptual one. It sits in its own ``texture`` keys so readers of ``mean`` keep
seeing exactly ``psnr`` and ``ssim``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.errors import ConfigError, InputFileError
from srgan_deploy.images import list_images, read_image, to_rgb
from srgan_deploy.metrics import SSIM_WINDOW, mod_crop, y_psnr_ssim
from srgan_deploy.resize import imresize
from srgan_deploy.texture import geometric_mean, texture_ratio
from srgan_deploy.texture import protocol as texture_protocol

Upscaler = Callable[[np.ndarray], np.ndarray]  # HxWx3 uint8 RGB -> (sH)x(sW)x3 uint8 RGB


PAPER_TABLE = {  # Ledig et al. 2017, Table 2, 4x, Y-PSNR dB / SSIM
    "set5": {"bicubic": (28.43, 0.8211), "SRResNet": (32.05, 0.9019), "SRGAN": (29.40, 0.8472)},
    "set14": {"bicubic": (25.99, 0.7486), "SRResNet": (28.49, 0.8184), "SRGAN": (26.02, 0.7397)},
}


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


@dataclass(frozen=True)
class Texture:
    """High-band amplitude over HR's (1.0 = as much fine detail as HR; NaN for a flat HR image)."""

    bicubic: float
    model: float


@dataclass(frozen=True)
class ImageScore:
    name: str
    bicubic: Score
    model: Score
    texture: Texture


@dataclass
class EvalReport:
    dataset: str
    scale: int
    images: list[ImageScore] = field(default_factory=list)
    protocol: str = "y-shave4"
    extra: dict[str, Any] = field(default_factory=dict)
    texture_protocol: str = ""

    def mean(self, which: str) -> Score:
        scores = [getattr(i, which) for i in self.images]
        return Score(float(np.mean([s.psnr for s in scores])), float(np.mean([s.ssim for s in scores])))

    def mean_texture(self) -> Texture:
        """Geometric means: ratios of 2 and 0.5 are equally far from 1."""
        return Texture(
            geometric_mean(i.texture.bicubic for i in self.images),
            geometric_mean(i.texture.model for i in self.images),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "protocol": self.protocol,
            "mean": {"bicubic": asdict(self.mean("bicubic")), "model": asdict(self.mean("model"))},
            "texture": asdict(self.mean_texture()),
            "texture_protocol": self.texture_protocol,
            "images": [asdict(i) for i in self.images],
            **self.extra,
        }

    def write_json(self, path: Path) -> None:
        _write_strict_json(path, self.to_dict())


def mean_of_sets(reports: list[EvalReport], which: str) -> Score:
    """Each set's mean weighted equally: the figure the project compares models on (Set5 + Set14), so
    fourteen Set14 images do not outvote five Set5 ones."""
    means = [r.mean(which) for r in reports]
    return Score(float(np.mean([m.psnr for m in means])), float(np.mean([m.ssim for m in means])))


def texture_of_sets(reports: list[EvalReport]) -> Texture:
    """Each set's geometric mean counted once, as ``mean_of_sets`` does for PSNR."""
    means = [r.mean_texture() for r in reports]
    return Texture(geometric_mean(m.bicubic for m in means), geometric_mean(m.model for m in means))


def write_reports_json(reports: list[EvalReport], path: Path, extra: dict[str, Any] | None = None) -> None:
    """One set: that report as it is. Several: ``{"sets": [...], "mean_of_sets": ..., "texture": ...}``."""
    if len(reports) == 1:
        data = reports[0].to_dict()
    else:
        data = {
            "sets": [r.to_dict() for r in reports],
            "mean_of_sets": {w: asdict(mean_of_sets(reports, w)) for w in ("bicubic", "model")},
            "texture": asdict(texture_of_sets(reports)),
            "texture_protocol": reports[0].texture_protocol,
        }
    _write_strict_json(path, {**data, **(extra or {})})


def _write_strict_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON: a perfect reconstruction's infinite PSNR is written as null, never as Infinity."""
    path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def lr_hr_pairs(folder: Path, scale: int, limit: int | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) for every image: HR mod-cropped to the scale, grey kept grey, LR by MATLAB bicubic."""
    files = list_images(folder)
    if not files:
        raise InputFileError(f"no images in {folder} (png/jpg/webp/bmp/tiff)")
    for path in files[:limit]:
        image = read_image(path)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        hr = mod_crop(image, scale)
        yield path.stem, imresize(hr, 1.0 / scale), hr


def evaluate(
    folder: Path,
    upscale: Upscaler,
    scale: int,
    limit: int | None = None,
    shave: int = 4,
    warn: Callable[[str], None] = lambda message: None,
) -> EvalReport:
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} must be at least 1 (leave it out for every image)")
    report = EvalReport(
        dataset=folder.name,
        scale=scale,
        protocol=f"y-shave{shave}",
        texture_protocol=texture_protocol(scale, shave),
    )
    smallest = max(2 * shave + SSIM_WINDOW, 4 * scale)  # SSIM's 11x11 window must fit after the shave
    for name, lr, hr in lr_hr_pairs(folder, scale, limit):
        if min(hr.shape[:2]) < smallest:
            warn(
                f"skipping {name}: {hr.shape[1]}x{hr.shape[0]} is smaller than {smallest}x{smallest}, too small to score"
            )
            continue
        bicubic = imresize(lr, float(scale))
        sr = upscale(to_rgb(lr))
        if hr.ndim == 2:
            import cv2

            sr = cv2.cvtColor(sr, cv2.COLOR_RGB2GRAY)
        b = y_psnr_ssim(hr, bicubic, shave)
        m = y_psnr_ssim(hr, sr, shave)
        texture = Texture(texture_ratio(hr, bicubic, scale, shave), texture_ratio(hr, sr, scale, shave))
        report.images.append(ImageScore(name, Score(*b), Score(*m), texture))
    if not report.images:
        raise InputFileError(f"no image in {folder} is large enough to score (at least {smallest}x{smallest} px)")
    return report
