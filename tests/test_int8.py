"""--precision int8: the calibrated int8 graphs shipped for the bundled models (tools/quantize_int8.py), run by
OpenVINO; what they are matched to, what they cost in accuracy, and what is refused in one line."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.cli import app
from srgan_deploy.sources import is_quantized, shipped_int8
from srgan_deploy.video import Decoder
from srgan_deploy.weights import read_info
from tests.conftest import make_backend

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bbb_2s_180p.mp4"
# int8 vs fp32 (tools/quantize_int8.py, 128 photo + 128 synthetic crops): frames of the sample clip >= 38.5 dB,
# <= 18 levels; Set14 >= 34.6 dB (a slide's corner pixel 52 levels off); Set5/Set14 0.08-0.20 dB below fp32
INT8_BUDGET_DB = 34.0
INT8_MAX_LEVELS = 40


def sample_frames(count: int = 3) -> np.ndarray:
    decoder = Decoder(SAMPLE, max_frames=30)
    frames = [f.rgb for f in decoder.frames(lambda p: None, lambda s: None)][:: 30 // count][:count]
    decoder.close()
    return np.ascontiguousarray(np.stack([f[40:120, 80:200] for f in frames]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_every_bundled_model_that_ships_int8_is_matched_to_its_weights() -> None:
    """A retrained bundled model without a new int8 graph fails here, not at a user's --precision int8."""
    import onnx

    shipped = shipped_int8()
    assert set(shipped) == {"srgan-x4", "srgan-x4-lite"}
    for name, path in shipped.items():
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert meta["srgan_deploy.weights_sha256"] == read_info(name).sha256, name
        assert meta["srgan_deploy.precision"] == "int8" and "NNCF" in meta["srgan_deploy.int8"]
        assert meta["srgan_deploy.io"] == "uint8" and is_quantized(path)


def test_openvino_int8_runs_the_int8_graph_within_its_budget(cache_dir: Path) -> None:
    frames = sample_frames()
    with make_backend("openvino", "srgan-x4-lite", precision="fp32", cache_dir=cache_dir) as fp32:
        ref = fp32.upscale(frames)
    with make_backend("openvino", "srgan-x4-lite", precision="int8", cache_dir=cache_dir) as int8:
        assert int8.onnx.path == shipped_int8()["srgan-x4-lite"]
        assert "int8" in int8.device_label
        out = int8.upscale(frames)
        streamed = np.concatenate(list(int8.upscale_many(frames[i : i + 1] for i in range(len(frames)))))
    with make_backend("openvino", "srgan-x4-lite", precision="bf16", cache_dir=cache_dir) as bf16:
        near = bf16.upscale(frames)
    assert np.array_equal(streamed, out)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert psnr(ref, out) >= INT8_BUDGET_DB and diff.max() <= INT8_MAX_LEVELS
    # int8 arithmetic, not bf16's: visibly further from fp32 than the bf16 path, which stays within 8 levels
    assert np.abs(near.astype(int) - ref.astype(int)).max() <= 8 < diff.max()


def cli(args: list[str], cache: Path) -> Any:
    return CliRunner().invoke(app, args, env={"SRGAN_DEPLOY_CACHE": str(cache)})


def test_upscale_takes_precision_int8(tmp_path: Path, cache_dir: Path) -> None:
    image = sample_frames(1)[0]
    cv2.imwrite(str(tmp_path / "in.png"), image[:, :, ::-1])
    result = cli(
        ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "-b", "openvino", "--precision", "int8"],
        cache_dir,
    )
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(tmp_path / "out" / "in.png"))
    assert written.shape == (image.shape[0] * 4, image.shape[1] * 4, 3)
    bicubic = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    assert psnr(bicubic, written[:, :, ::-1]) > 25  # the picture, upscaled (not a blank or a colour swap)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-b", "onnxruntime"], "onnxruntime on CPU runs fp32, not int8; try -b openvino for int8"),
        (["-b", "torch"], "not int8"),
        (["-b", "openvino", "-w", "TINY"], "has none: make one with python tools/quantize_int8.py"),
        (["-b", "openvino", "-w", "FOREIGN"], "is not quantized"),
        (["-b", "openvino", "-w", "GARBAGE"], "is not a readable ONNX model"),
    ],
)
def test_int8_where_there_is_no_int8_graph_is_one_line(
    tmp_path: Path, cache_dir: Path, tiny_weights: Path, args: list[str], words: str
) -> None:
    import torch

    foreign = tmp_path / "foreign.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval(),
            (torch.rand(1, 3, 16, 16),),
            str(foreign),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "H", 3: "W"}},
            opset_version=17,
            dynamo=False,
        )
    shutil.copy(tiny_weights, tmp_path / "tiny.safetensors")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf at all \xff\x00")
    named = {
        "TINY": str(tmp_path / "tiny.safetensors"),
        "FOREIGN": str(foreign),
        "GARBAGE": str(tmp_path / "garbage.onnx"),
    }
    args = [named.get(a, a) for a in args]
    cv2.imwrite(str(tmp_path / "in.png"), np.full((16, 16, 3), 128, np.uint8))
    result = cli(
        ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"), "--precision", "int8", *args], cache_dir
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_auto_takes_int8_to_openvino_even_where_a_gpu_backend_would_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from srgan_deploy.backends import registry
    from srgan_deploy.backends.options import Request
    from srgan_deploy.errors import ConfigError

    monkeypatch.setattr(registry, "gpu_name", lambda index=0: "NVIDIA H100")
    monkeypatch.setattr(registry, "availability", lambda index=0: dict.fromkeys(registry.REGISTRY, (True, "")))
    monkeypatch.setattr(registry, "backend_availability", lambda name, index=0: (True, ""))
    assert registry.choose("auto", Request()).name == "tensorrt"  # what auto picks on this machine otherwise
    choice = registry.choose("auto", Request(precision="int8"))
    assert choice.name == "openvino" and choice.options.precision == "int8"
    with pytest.raises(ConfigError, match="int8 runs on the CPU"):
        registry.choose("auto", Request(precision="int8", device="cuda"))


def test_info_names_each_models_int8_graph(cache_dir: Path) -> None:
    import json

    result = cli(["info", "--json"], cache_dir)
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)["models"]
    assert {name: Path(m["int8"]).name if m["int8"] else None for name, m in models.items()} == {
        "srgan-x4": "srgan-x4-int8.onnx",
        "srgan-x4-lite": "srgan-x4-lite-int8.onnx",
        "srgan-x4-gan": None,
    }


def test_a_resumed_int8_video_job_knows_the_int8_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The shipped int8 graph can be remade while the weights stay: a job resumed across that must start over."""
    from srgan_deploy import sources
    from srgan_deploy.jobs.videos import _model_identity

    source = sources.model_source("srgan-x4-lite")
    int8 = make_backend("openvino", "srgan-x4-lite", precision="int8")
    bf16 = make_backend("openvino", "srgan-x4-lite", precision="bf16")
    before = _model_identity(int8, source, remote=False)
    assert before != _model_identity(bf16, source, remote=False)
    remade = tmp_path / "srgan-x4-lite-int8.onnx"
    remade.write_bytes(shipped_int8()["srgan-x4-lite"].read_bytes() + b"\0")
    monkeypatch.setattr(sources, "shipped_int8", lambda: {"srgan-x4-lite": remade})
    assert _model_identity(int8, source, remote=False) != before


def test_onnxruntime_on_the_cpu_points_only_where_the_precision_runs() -> None:
    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import choose
    from srgan_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="not int8; try -b openvino for int8"):
        choose("onnxruntime", Request(precision="int8", device="cpu"))
    with pytest.raises(ConfigError, match="not fp16; use --precision fp32"):  # openvino has no fp16 either
        choose("onnxruntime", Request(precision="fp16", device="cpu"))


def test_a_served_foreign_models_identity_covers_its_settings_and_wrapper() -> None:
    from srgan_deploy.backends.triton import served_identity

    base = {"srgan_deploy.source_sha256": "ab" * 32, "srgan_deploy.wrap_version": "2"}
    plain = served_identity("m_py", base, {})
    said = served_identity("m_py", {**base, "srgan_deploy.settings": '{"value_range": [-1.0, 1.0]}'}, {})
    older = served_identity("m_py", {**base, "srgan_deploy.wrap_version": "1"}, {})
    assert len({plain, said, older}) == 3
