"""The texture measure: a perceptual model's fine detail against the HR image's, without a pretrained network."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from srgan_deploy.evaluate import evaluate, write_reports_json
from srgan_deploy.resize import imresize
from srgan_deploy.texture import geometric_mean, texture_ratio
from tests.conftest import smooth_image


def textured(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """Grey float image: a smooth ramp plus fine random texture (the texture fills the high band)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return 100.0 + 0.3 * xx + 0.2 * yy + rng.normal(0, 12, (h, w))


def test_texture_of_the_image_itself_is_one_a_blurred_copy_less_a_noisy_copy_more() -> None:
    hr = textured()
    assert texture_ratio(hr, hr, 4) == 1.0
    blurred = cv2.GaussianBlur(hr, (0, 0), 1.0)
    # white texture through a Gaussian of sigma 1 px: sqrt(mean |H(f)|^2 over the band) = 0.213 for the
    # continuous kernel; OpenCV's sampled, truncated one passes a little more
    assert texture_ratio(hr, blurred, 4) == pytest.approx(0.213, abs=0.012)
    noisy = hr + np.random.default_rng(1).normal(0, 12, hr.shape)
    # independent noise of the same strength: the band's energy doubles, its amplitude grows by sqrt(2)
    assert texture_ratio(hr, noisy, 4) == pytest.approx(math.sqrt(2), abs=0.03)


def test_texture_is_linear_in_the_detail_and_ignores_what_the_lr_grid_holds() -> None:
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float64)
    coarse = 60.0 * np.sin(xx / 20.0)  # far below the LR grid's Nyquist at x4: outside the band
    fine = np.sin(0.6 * np.pi * xx + 0.5 * np.pi * yy)  # radius ~0.78 Nyquist: inside it
    hr = 120.0 + coarse + 20.0 * fine
    assert texture_ratio(hr, 120.0 + coarse + 10.0 * fine, 4) == pytest.approx(0.5, abs=0.005)
    assert texture_ratio(hr, 120.0 + 0.5 * coarse + 20.0 * fine, 4) == pytest.approx(1.0, abs=0.005)


def test_a_checkerboard_artefact_at_nyquist_counts_as_excess_detail() -> None:
    """Pixel-shuffle GANs' typical artefact; a Sobel gradient is blind to it, the band is not."""
    hr = textured()
    board = np.indices(hr.shape).sum(axis=0) % 2 * 16.0 - 8.0
    # the texture's power (12^2) spreads over the 95 % of the spectrum that is in the band; the board's (8^2)
    # sits at the Nyquist corner
    band_fraction = 1 - math.pi * 0.25**2 / 4
    assert texture_ratio(hr, hr + board, 4) == pytest.approx(math.sqrt(1 + 64 / (144 * band_fraction)), abs=0.03)


def test_texture_of_a_flat_image_is_undefined_and_left_out_of_the_mean() -> None:
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert math.isnan(texture_ratio(flat, flat, 4))
    assert geometric_mean([2.0, 0.5, float("nan")]) == pytest.approx(1.0)
    assert math.isnan(geometric_mean([float("nan")]))


def test_eval_reports_texture_per_image_per_set_and_keeps_the_mean_schema(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    hr = smooth_image(64, 80, 2)
    cv2.imwrite(str(folder / "a.png"), hr[:, :, ::-1])

    report = evaluate(folder, lambda lr: hr, 4)  # an oracle: gives back the HR image
    (item,) = report.images
    assert item.texture.model == 1.0
    assert 0.05 < item.texture.bicubic < 0.5
    bicubic = evaluate(folder, lambda lr: imresize(lr, 4.0), 4)
    assert bicubic.images[0].texture.model == pytest.approx(bicubic.images[0].texture.bicubic)

    out = tmp_path / "both.json"
    write_reports_json([report, bicubic], out)
    data = json.loads(out.read_text())
    first = data["sets"][0]
    assert set(first["mean"]["model"]) == {"psnr", "ssim"}  # readers of `mean` see no new keys
    assert first["images"][0]["texture"] == {"bicubic": item.texture.bicubic, "model": 1.0}
    assert first["texture"]["model"] == 1.0 and "1/4 Nyquist" in first["texture_protocol"]
    assert data["texture"]["model"] == pytest.approx(math.sqrt(item.texture.bicubic))  # geometric mean of sets
