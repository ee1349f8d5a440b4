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
from srgan_deploy.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, list_images, load_image, write_image
from srgan_deploy.notices import Notify, say_on_stderr

WRITABLE = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
NO_ALPHA = (".jpg", ".jpeg")  # outputs that cannot hold transparency
# A side shorter than this is padded (mirrored) by MIN_SIDE on both ends before the model runs, and cropped after:
# the network's zero padding dominates a picture a few pixels high, and a 1-pixel-high image came out black
# (measured: 134 levels from bicubic unpadded, 0.6 padded by 8).
MIN_SIDE = 16
PAD = 8


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

    run = padded(with_ensemble(backend.upscale, ensemble), backend.scale)
    scale = backend.scale
    if image.ndim == 2:
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        return np.asarray(cv2.cvtColor(run(rgb[None])[0], cv2.COLOR_RGB2GRAY))
    out = run(np.ascontiguousarray(image[None, :, :, :3]))[0]
    if image.shape[2] == 4:
        alpha = cv2.resize(image[:, :, 3], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, alpha])
    return out


def pad_for_model(frames: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(N, H, W, C) frames mirrored by PAD on both ends of a side shorter than MIN_SIDE, and the padding
    (rows, columns) added at each end; unchanged (0, 0) when both sides are long enough."""
    h, w = frames.shape[1:3]
    ph = PAD if h < MIN_SIDE else 0
    pw = PAD if w < MIN_SIDE else 0
    if not ph and not pw:
        return frames, 0, 0
    return np.ascontiguousarray(np.pad(frames, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="symmetric")), ph, pw


def crop_padding(upscaled: np.ndarray, ph: int, pw: int, scale: int) -> np.ndarray:
    """Undo ``pad_for_model`` on the (N, sH, sW, C) output."""
    if not ph and not pw:
        return upscaled
    h, w = upscaled.shape[1] - 2 * ph * scale, upscaled.shape[2] - 2 * pw * scale
    return np.ascontiguousarray(upscaled[:, ph * scale : ph * scale + h, pw * scale : pw * scale + w])


def padded(run: Callable[[np.ndarray], np.ndarray], scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """``run`` on frames padded by ``pad_for_model``, cropped back."""

    def call(frames: np.ndarray) -> np.ndarray:
        big, ph, pw = pad_for_model(frames)
        return crop_padding(run(big), ph, pw, scale)

    return call


def flatten_alpha(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """RGBA (or grey + alpha as RGBA) composited onto white, for an output that cannot hold alpha; and whether
    any pixel was transparent at all (a fully opaque alpha is simply dropped)."""
    alpha = image[:, :, 3:4]
    if bool((alpha == 255).all()):
        return np.ascontiguousarray(image[:, :, :3]), False
    a = alpha.astype(np.float32) / 255.0
    rgb = image[:, :, :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), True


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
    warn: Notify = say_on_stderr,
) -> list[Failure]:
    """Upscale every job. A file that cannot be read, decoded or written is reported and skipped, so one
    bad image in a folder of thousands does not throw away the rest; the failures are returned.

    ``warn`` gets a line for what is kept differently from the input: an animation or multi-page file (its
    first picture is upscaled) and transparency flattened onto white for a .jpg output."""
    failures: list[Failure] = []
    for job in jobs:
        try:
            loaded = load_image(job.source, max_pixels)
            image = loaded.image
            if loaded.frames > 1:
                warn(f"{job.source} holds {loaded.frames} pictures (an animation or pages); only the first is upscaled")
            out = upscale_image(backend, image, ensemble)
            if out.ndim == 3 and out.shape[2] == 4 and job.target.suffix.lower() in NO_ALPHA:
                out, transparent = flatten_alpha(out)
                if transparent:
                    warn(
                        f"{job.target.suffix} cannot hold the transparency of {job.source}: it is flattened onto "
                        "white (use --format png or webp to keep it)"
                    )
            try:
                job.target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create {job.target.parent}: {exc.strerror}") from exc
            write_image(job.target, out, loaded.icc)
        except (InputFileError, OutputError) as exc:  # ImageReadError is an InputFileError
            failure = Failure(job, str(exc))
            failures.append(failure)
            if on_failure:
                on_failure(failure)
            continue
        if on_done:
            on_done(job, image.shape[:2], out.shape[:2])
    return failures
