from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.cli import app
from srgan_deploy.ensemble import VIEWS, _unview, _view, self_ensemble
from tests.conftest import smooth_image


def nearest(frames: np.ndarray) -> np.ndarray:
    """An upscaler that commutes with every flip and rotation."""
    return np.repeat(np.repeat(frames, 4, axis=1), 4, axis=2)


def lopsided(frames: np.ndarray) -> np.ndarray:
    """An upscaler that does not: it brightens the left columns of whatever it is shown."""
    out = nearest(frames).astype(np.int32)
    ramp = np.linspace(64, 0, out.shape[2]).astype(np.int32)
    return np.clip(out + ramp[None, None, :, None], 0, 255).astype(np.uint8)


def batch() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)


def test_the_eight_views_are_distinct_and_each_undone() -> None:
    frames = batch()
    views = [_view(frames, k) for k in range(VIEWS)]
    for k, view in enumerate(views):
        np.testing.assert_array_equal(_unview(view, k), frames)
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == VIEWS


def test_an_equivariant_upscaler_is_unchanged() -> None:
    frames = batch()
    np.testing.assert_array_equal(self_ensemble(nearest, frames), nearest(frames))


def test_the_result_is_the_mean_over_the_dihedral_group() -> None:
    """Written out with the group's own operations (transpose + flips), independently of the module's."""
    frames = batch()

    def turn(x: np.ndarray) -> np.ndarray:  # one quarter turn counter-clockwise
        return np.swapaxes(x, 1, 2)[:, ::-1]

    def unturn(x: np.ndarray) -> np.ndarray:
        return np.swapaxes(x[:, ::-1], 1, 2)

    total = np.zeros((2, 20, 28, 3))
    for mirrored in (False, True):
        for turns in range(4):
            x = frames
            for _ in range(turns):
                x = turn(x)
            if mirrored:
                x = x[:, :, ::-1]
            y = lopsided(np.ascontiguousarray(x)).astype(np.float64)
            if mirrored:
                y = y[:, :, ::-1]
            for _ in range(turns):
                y = unturn(y)
            total += y
    expected = np.clip(np.rint(total / 8), 0, 255).astype(np.uint8)
    got = self_ensemble(lopsided, frames)
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, lopsided(frames))  # the lopsidedness is averaged out
    column_means = got.astype(float).mean(axis=(0, 1, 3)) - nearest(frames).astype(float).mean(axis=(0, 1, 3))
    assert np.ptp(column_means) < 0.25 * 64  # no longer brighter on the left


def test_upscale_and_eval_take_ensemble(tmp_path: Path, tiny_weights: Path, image_dir: Path) -> None:
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), smooth_image(20, 28, seed=5))
    outputs = {}
    for flag in ([], ["--ensemble"]):
        out = tmp_path / f"out{len(flag)}"
        result = CliRunner().invoke(
            app, ["upscale", str(image), "-o", str(out), "-w", str(tiny_weights), "-b", "torch", *flag]
        )
        assert result.exit_code == 0, result.stderr
        outputs[bool(flag)] = cv2.imread(str(out / "photo.png"))
    assert outputs[True].shape == outputs[False].shape == (80, 112, 3)
    assert not np.array_equal(outputs[True], outputs[False])
    report = tmp_path / "eval.json"
    args = ["eval", str(image_dir), "-w", str(tiny_weights), "-b", "torch", "--ensemble", "--json", str(report)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert json.loads(report.read_text())["ensemble"] is True


SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "set5"


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared not present")
def test_ensemble_raises_the_default_models_set5_psnr(tmp_path: Path) -> None:
    """Measured with srgan-x4-lite: +0.19 dB on Set5, every one of the 19 Set5/Set14 images gains
    (+0.02 to +0.40 dB); a regression of the views or the averaging loses it."""
    scores = {}
    for flag in ([], ["--ensemble"]):
        report = tmp_path / f"e{len(flag)}.json"
        args = ["eval", str(SET5), "-b", "torch", "--limit", "2", "--json", str(report), *flag]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
        scores[bool(flag)] = [i["model"]["psnr"] for i in json.loads(report.read_text())["images"]]
    assert all(with_ > without + 0.1 for with_, without in zip(scores[True], scores[False], strict=True))
