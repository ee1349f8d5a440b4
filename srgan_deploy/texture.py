"""A texture measure that needs no pretrained network: how much fine detail an upscaler puts back.

PSNR and SSIM reward the blur a pixel-loss model settles on, so they cannot tell a perceptual (GAN)
model's invented texture from noise or from nothing. This asks a narrower question that they miss: how
strong is the output's fine detail compared with the HR image's? The answer is a ratio, per image:

    texture = rms amplitude of the output's spectrum in the high band / the same for the HR image

on BT.601 Y with the PSNR protocol's border shave, where the high band is every spatial frequency of
the HR grid above the LR grid's Nyquist frequency (radius >= 1/scale of the HR Nyquist; 0.25 at x4;
corners included). 1.0 means as much fine detail as HR; a pixel-loss (SRResNet) model sits below 1
(blur), bicubic far below, a good GAN near 1, and artefacts or noise above 1. It says nothing about whether the detail is the *right*
detail; that is PSNR's job, which is why eval reports both.

Why this definition:

- Nothing in the band survives the downscale, so all of it was invented by the upscaler. The mean
  Sobel gradient magnitude, the other candidate, is dominated by the mid frequencies of large edges,
  which bicubic already restores: on five Set14 images it ranked srgan-x4-lite above srgan-x4 on every
  one, while the band ranked srgan-x4 (the larger, higher-PSNR model) above the lite one on every one.
- Why the band starts at the LR Nyquist and not higher (say half the HR Nyquist): above that, the HR
  images' own noise and JPEG blocking are a large part of the energy, which no upscaler should
  reproduce; the same model's ratio then varied 3.7x between images (0.14-0.51 for srgan-x4 on five
  Set14 images) against 1.9x (0.40-0.74) for the band used here.
- Sobel's response is zero at Nyquist, so it is blind to the checkerboard that pixel-shuffle GANs are
  prone to; the band includes Nyquist and the diagonal corners, so such artefacts push the ratio
  above 1 as they should.
- Amplitude (the square root of energy) keeps the scale linear: an output with half the HR's detail
  scores 0.5, not 0.25. The comparison is of the two images' band statistics, not pixel by pixel, so a
  sub-pixel shift of the texture (which a GAN's hallucination always has) costs nothing.
- A separable Hann window stops the image's borders (a periodic FFT sees them as edges) from putting
  energy into the band that neither image has; the mean is removed first for the same reason.

Means over images are geometric (the mean of logs): a ratio of 2 and one of 0.5 are equally far from
1 and should cancel, which an arithmetic mean does not do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from srgan_deploy.metrics import rgb_to_y, shave


def protocol(scale: int, border: int = 4) -> str:
    """The measure in words, for reports: what a reader needs to reproduce the number."""
    return (
        f"y-shave{border}; rms |FFT(Hann * Y)| at radius >= 1/{scale} Nyquist (above the LR grid's), "
        "output / HR; geometric mean over images"
    )


def high_band_amplitude(y: np.ndarray, band: float) -> float:
    """RMS spectral amplitude of a float image at radial frequencies >= ``band`` x Nyquist.

    Normalised by the window's energy and the pixel count, so images of different sizes compare; the
    ratio of two same-sized images does not depend on the normalisation at all.
    """
    if y.ndim != 2 or min(y.shape) < 4:
        raise ValueError(f"need a 2-D image of at least 4x4 pixels, got shape {y.shape}")
    h, w = y.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    spectrum = np.fft.fft2((y - y.mean()) * window)
    fy = np.fft.fftfreq(h)[:, None] * 2.0  # in units of Nyquist: -1 .. 1
    fx = np.fft.fftfreq(w)[None, :] * 2.0
    mask = np.hypot(fy, fx) >= band
    power = np.abs(spectrum[mask]) ** 2
    return math.sqrt(float(power.sum()) / (float((window * window).sum()) * h * w))


def texture_ratio(reference: np.ndarray, test: np.ndarray, scale: int, border: int = 4) -> float:
    """``test``'s amplitude above the LR Nyquist over ``reference``'s, on Y with ``border`` pixels shaved.

    NaN where the reference has no high-band detail at all (a flat image): no ratio means anything there.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {test.shape}")
    if scale < 2:
        raise ValueError(f"scale {scale}: the band above the LR grid's Nyquist needs a scale of at least 2")
    band = 1.0 / scale
    ref = high_band_amplitude(shave(rgb_to_y(reference), border), band)
    out = high_band_amplitude(shave(rgb_to_y(test), border), band)
    if ref <= 1e-9:
        return float("nan")
    return out / ref


def geometric_mean(ratios: Iterable[float]) -> float:
    """Geometric mean of the finite, positive ratios (a flat image's NaN is left out); NaN if none is."""
    logs = [math.log(r) for r in ratios if math.isfinite(r) and r > 0]
    return math.exp(sum(logs) / len(logs)) if logs else float("nan")
