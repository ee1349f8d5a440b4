"""The flicker measure: how much upscaled video changes from frame to frame, against bicubic's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from srgan_deploy.flicker import FlickerMeter

Y_GAIN = 219.0 / 255.0  # a grey level step of 1 is this much on BT.601 Y


def scene(h: int, w: int) -> np.ndarray:
    """A grey scene (float) with detail at a few px, enough for the optical flow to lock on, and smooth
    enough that the per-frame noise below is not lost in its own change under motion."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return 128.0 + 40.0 * np.sin(xx / 4.0) * np.cos(yy / 3.2) + 40.0 * np.sin(xx / 9.2 + yy / 6.8)


def panning(frames: int) -> list[np.ndarray]:
    """LR frames of the scene moving one pixel right per frame."""
    wide = scene(40, 60 + frames)
    return [wide[:, frames - t : frames - t + 60] for t in range(frames)]


def nearest(frame: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(frame, 4, axis=0), 4, axis=1)


def test_a_static_scene_does_not_flicker_and_per_frame_noise_does() -> None:
    still = scene(24, 32)
    sigma = 4.0
    rng = np.random.default_rng(0)
    meter = FlickerMeter()
    for _ in range(6):
        up = nearest(still)
        meter.add(still, {"bicubic": up, "steady": up, "noisy": up + rng.normal(0, sigma, up.shape)})
    results = meter.results()
    assert meter.pairs == 5 and results["steady"].change == [0.0] * 5
    assert math.isnan(results["steady"].flicker)  # nothing to compare with: bicubic did not change either
    # |difference of two independent N(0, s)| has mean 2 s / sqrt(pi); s on Y is sigma * 219/255
    expected = 2 * sigma * Y_GAIN / math.sqrt(math.pi)
    assert np.mean(results["noisy"].change) == pytest.approx(expected, rel=0.01)


def test_flicker_is_one_for_bicubic_itself_and_above_one_with_noise_per_frame() -> None:
    rng = np.random.default_rng(0)
    meter = FlickerMeter()
    for lr in panning(8):
        up = nearest(lr)
        meter.add(lr, {"bicubic": up, "same": up.copy(), "noisy": up + rng.normal(0, 6.0, up.shape)})
    results = meter.results()
    same, noisy = results["same"], results["noisy"]
    assert same.flicker == 1.0 and same.flicker_warped == 1.0
    assert same.flicker_vs_input == pytest.approx(1.0, abs=0.02)  # nearest-neighbour keeps the per-pixel change
    assert noisy.flicker == pytest.approx(1.72, abs=0.05)
    # the flow finds the pan, so almost nothing of bicubic's change is left after warping, and the same
    # noise weighs far more against what is
    assert np.mean(same.warped_change) < 0.05 * np.mean(same.change)
    assert noisy.flicker_warped > 10 * noisy.flicker


def test_flicker_refuses_streams_that_change_or_lack_the_reference() -> None:
    frame = np.zeros((8, 8), np.float64)
    meter = FlickerMeter()
    with pytest.raises(ValueError, match="reference"):
        meter.add(frame, {"model": nearest(frame)})
    meter.add(frame, {"bicubic": nearest(frame)})
    with pytest.raises(ValueError, match="streams changed"):
        meter.add(frame, {"bicubic": nearest(frame), "model": nearest(frame)})
    with pytest.raises(ValueError, match="two frames"):
        FlickerMeter().results()
