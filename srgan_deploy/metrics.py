"""PSNR and SSIM on the Y channel with a border shave: the protocol of the SR literature.

Y is ITU-R BT.601 luma in [16, 235] computed from RGB, as MATLAB's ``rgb2ycbcr``
(the paper's evaluation). SSIM is Wang et al. 2004 with an 11x11 Gaussian window
(sigma 1.5), 'valid' filtering.
"""

from __future__ import annotations

import numpy as np


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8/float RGB (0-255) HxWx3, or a greyscale HxW, to float64 BT.601 Y."""
    img = image.astype(np.float64)
    if img.ndim == 2:
        return 16.0 + img * (219.0 / 255.0)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def shave(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(peak * peak / mse))


SSIM_WINDOW = 11  # Wang et al.'s Gaussian window; an image must be at least this large to have one SSIM value


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax * ax) / (2 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    import cv2

    k = window.shape[0] // 2
    out = cv2.filter2D(image, -1, window, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out[k:-k, k:-k], dtype=np.float64)


def ssim(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """Single-channel SSIM (float64 inputs in 0..peak)."""
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    if min(reference.shape[:2]) < SSIM_WINDOW:
        # the valid-window mean of nothing is NaN (with numpy warnings); a clear error instead
        raise ValueError(
            f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (after the border shave), "
            f"got {reference.shape[1]}x{reference.shape[0]}"
        )
    x = reference.astype(np.float64)
    y = test.astype(np.float64)
    window = _gaussian_window()
    mu_x = _filter_valid(x, window)
    mu_y = _filter_valid(y, window)
    sxx = _filter_valid(x * x, window) - mu_x**2
    syy = _filter_valid(y * y, window) - mu_y**2
    sxy = _filter_valid(x * y, window) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def y_psnr_ssim(reference_rgb: np.ndarray, test_rgb: np.ndarray, border: int) -> tuple[float, float]:
    """PSNR and SSIM of two uint8 RGB (or grey) images on Y with ``border`` pixels shaved."""
    if reference_rgb.shape != test_rgb.shape:
        raise ValueError(f"shape mismatch {reference_rgb.shape} vs {test_rgb.shape}")
    ry = shave(rgb_to_y(reference_rgb), border)
    ty = shave(rgb_to_y(test_rgb), border)
    return psnr(ry, ty), ssim(ry, ty)
