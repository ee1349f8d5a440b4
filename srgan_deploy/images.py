"""Reading and writing still images as RGB(A) uint8 arrays (OpenCV for the codecs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srgan_deploy.errors import ImageReadError, InputFileError, OutputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(path: Path, recursive: bool = True) -> list[Path]:
    """Image files under a folder (sorted, so runs are reproducible), or the file itself."""
    if not path.exists():
        raise InputFileError(f"no such file or folder: {path}")
    if path.is_file():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """HxWx3 RGB, HxWx4 RGBA or HxW grey uint8. 16-bit images are reduced to 8 bits."""
    import cv2

    if not path.exists():
        raise InputFileError(f"no such file: {path}")
    if path.is_dir():
        raise InputFileError(f"expected an image file, got a folder: {path}")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc.strerror}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image or corrupt (supported: png, jpg, webp, bmp, tiff)")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype}; convert it to 8-bit")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return np.ascontiguousarray(image)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write RGB/RGBA/grey uint8; the codec follows the suffix. Atomic: temp file, then rename."""
    import cv2

    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    params: list[int] = []
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 95]
    ok, buf = cv2.imencode(suffix or ".png", image, params)
    if not ok:
        raise OutputError(f"cannot encode {path}: unsupported format '{suffix}' (use png, jpg or webp)")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        buf.tofile(str(tmp))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Drop alpha / expand grey so the model always sees HxWx3."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def make_input(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A deterministic uint8 NHWC batch with smooth regions, edges and noise (like real frames)."""
    b, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for i in range(b):
        base = np.stack([np.sin(xx / (3 + i + c) + c) * np.cos(yy / (4 + c)) for c in range(3)], axis=2)
        edges = ((xx > w / 2) ^ (yy > h / 3))[..., None] * 0.3
        noise = rng.normal(0, 0.08, (h, w, 3))
        frames.append(np.clip((0.35 * base + 0.35 + edges + noise) * 255, 0, 255))
    return np.stack(frames).astype(np.uint8)
