"""Image jobs (``srgan-deploy upscale``): still image files or folders in, upscaled files out, with any
backend; alpha is upscaled bicubically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.backends.base import Backend
from srgan_deploy.errors import InputFileError, OutputError, OutputExistsError
from srgan_deploy.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, list_images, read_image_and_icc, write_image

WRITABLE = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageJob:
    source: Path
    target: Path


def plan_jobs(inputs: list[Path], out_dir: Path, overwrite: bool = False, suffix: str | None = None) -> list[ImageJob]:
    """Map every input image to its output path; refuse collisions before any work starts."""
    if not inputs:
        raise InputFileError("no input images given")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output {out_dir} exists and is not a folder; -o takes a folder")
    jobs: list[ImageJob] = []
    for item in inputs:
        if not item.exists():
            raise InputFileError(f"no such file or folder: {item}")
        if item.is_dir():
            files = list_images(item)
            if not files:
                raise InputFileError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {item}")
            jobs += [ImageJob(f, out_dir / f.relative_to(item)) for f in files]
        else:
            jobs.append(ImageJob(item, out_dir / item.name))
    if suffix is not None:
        jobs = [ImageJob(j.source, j.target.with_suffix(suffix)) for j in jobs]
    seen: set[Path] = set()
    for job in jobs:
        if job.target.suffix.lower() not in WRITABLE:
            raise OutputError(f"cannot write '{job.target.suffix}' images; use --format png, jpg or webp")
        if job.target.resolve() == job.source.resolve():
            raise OutputExistsError(f"output {job.target} is the input itself; choose another -o folder")
        if job.target in seen:
            raise OutputExistsError(f"two inputs map to the same output {job.target}; upscale them separately")
        seen.add(job.target)
        if job.target.exists() and not overwrite:
            raise OutputExistsError(f"{job.target} exists; pass --overwrite to replace it")
    return jobs


def upscale_image(backend: Backend[Any], image: np.ndarray, ensemble: bool = False) -> np.ndarray:
    """Upscale RGB, RGBA (alpha bicubic) or grey (model on replicated RGB, back to grey).

    ``ensemble``: average the model over the 8 flips/rotations (srgan_deploy/ensemble.py), 8x the work."""
    import cv2

    from srgan_deploy.ensemble import with_ensemble

    run = with_ensemble(backend.upscale, ensemble)
    scale = backend.scale
    if image.ndim == 2:
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        return np.asarray(cv2.cvtColor(run(rgb[None])[0], cv2.COLOR_RGB2GRAY))
    out = run(np.ascontiguousarray(image[None, :, :, :3]))[0]
    if image.shape[2] == 4:
        alpha = cv2.resize(image[:, :, 3], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, alpha])
    return out


@dataclass(frozen=True)
class Failure:
    job: ImageJob
    message: str


def upscale_files(
    jobs: list[ImageJob],
    backend: Backend[Any],
    on_done: Callable[[ImageJob, tuple[int, int], tuple[int, int]], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_failure: Callable[[Failure], None] | None = None,
    ensemble: bool = False,
) -> list[Failure]:
    """Upscale every job. A file that cannot be read, decoded or written is reported and skipped, so one
    bad image in a folder of thousands does not throw away the rest; the failures are returned."""
    failures: list[Failure] = []
    for job in jobs:
        try:
            image, icc = read_image_and_icc(job.source, max_pixels)
            out = upscale_image(backend, image, ensemble)
            try:
                job.target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create {job.target.parent}: {exc.strerror}") from exc
            write_image(job.target, out, icc)
        except (InputFileError, OutputError) as exc:  # ImageReadError is an InputFileError
            failure = Failure(job, str(exc))
            failures.append(failure)
            if on_failure:
                on_failure(failure)
            continue
        if on_done:
            on_done(job, image.shape[:2], out.shape[:2])
    return failures
