"""The Triton repository's Python-backend model and the triton client's pieces, checked without a server
(tests/test_triton_server.py serves them for real)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.artifacts import read_onnx_metadata
from srgan_deploy.backends.options import Request, TritonOptions, TritonServer
from srgan_deploy.backends.registry import MODEL_BACKENDS, choose
from srgan_deploy.backends.triton import Endpoint
from srgan_deploy.cli import app
from srgan_deploy.errors import ConfigError, ShapeError
from srgan_deploy.export.triton import parse_pbtxt, python_config_text
from srgan_deploy.triton_model import DEFAULT_MAX_PIXELS, ServedRuntime, check_request


def params_of(folder: Path) -> dict[str, str]:
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    return {p["key"]: p["value"]["string_value"] for p in config["parameters"]}


@pytest.fixture(scope="module")
def exported(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repo")
    result = CliRunner().invoke(
        app, ["export", "-o", str(folder / "out"), "-w", str(tiny_weights), "--triton-repo", str(folder / "repo")]
    )
    assert result.exit_code == 0, result.output
    assert f"triton: {folder / 'repo' / 'tiny_py'}" in result.stdout
    return folder / "repo"


def test_the_python_model_runs_our_runtime_on_uint8_nhwc(exported: Path, tiny_weights: Path) -> None:
    folder = exported / "tiny_py"
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert config["name"] == "tiny_py" and config["backend"] == "python" and config["max_batch_size"] == 8
    for tensor in (config["input"][0], config["output"][0]):
        assert tensor["data_type"] == "TYPE_UINT8" and tensor["dims"] == [-1, -1, 3]
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]
    assert config["instance_group"][0] == {"count": 1, "kind": "KIND_AUTO"}
    params = params_of(folder)
    meta = read_onnx_metadata(folder / "1" / "model.onnx")
    assert params["srgan_deploy.scale"] == "4" and params["srgan_deploy.overlap"] == "12"
    assert params["srgan_deploy.weights_sha256"] == meta["srgan_deploy.weights_sha256"]
    assert json.loads(params["srgan_deploy.config"]) == {"blocks": 2, "channels": 8, "in_channels": 3, "scale": 4}
    assert params["srgan_deploy.backend"] == "auto" and params["srgan_deploy.max_pixels"] == str(DEFAULT_MAX_PIXELS)
    assert params["EXECUTION_ENV_PATH"] == sys.prefix  # the venv that exported it
    assert (folder / "1" / "weights.safetensors").read_bytes() == tiny_weights.read_bytes()
    shim = (folder / "1" / "model.py").read_text()
    assert "from srgan_deploy.triton_model import TritonPythonModel" in shim
    # the _onnx model is written as before, beside it
    assert parse_pbtxt((exported / "tiny_onnx" / "config.pbtxt").read_text())["platform"] == "onnxruntime_onnx"


def test_config_strings_are_quoted_for_protobuf_text() -> None:
    text = python_config_text("m_py", {"EXECUTION_ENV_PATH": 'C:\\odd "env"', "x": '{"a": 1}'})
    assert params_of_text(text) == {"EXECUTION_ENV_PATH": 'C:\\odd "env"', "x": '{"a": 1}'}
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def params_of_text(text: str) -> dict[str, str]:
    return {p["key"]: p["value"]["string_value"] for p in parse_pbtxt(text)["parameters"]}


def test_the_server_environment_option(tiny_weights: Path, tmp_path: Path) -> None:
    def export(*extra: str) -> tuple[int, str]:
        repo = tmp_path / "repo"
        result = CliRunner().invoke(
            app, ["export", "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "--triton-repo", str(repo), *extra]
        )
        return result.exit_code, result.output

    code, _ = export("--triton-env", "none", "--io", "float32", "--no-verify")
    assert code == 0
    params = params_of(tmp_path / "repo" / "tiny_py")
    assert "EXECUTION_ENV_PATH" not in params
    # a float32 export still serves the uint8 boundary
    assert read_onnx_metadata(tmp_path / "repo" / "tiny_py" / "1" / "model.onnx")["srgan_deploy.io"] == "uint8"
    code, output = export("--triton-env", str(tmp_path), "--no-verify")
    assert code == 2 and "is not a virtual environment" in output


def test_served_runtime_checks_each_request_and_groups_sizes(exported: Path) -> None:
    params = params_of(exported / "tiny_py")
    runtime = ServedRuntime(exported / "tiny_py" / "1", {**params, "srgan_deploy.max_pixels": "400"}, "cpu", log=print)
    try:
        a = np.zeros((1, 8, 9, 3), np.uint8)
        b = np.full((2, 8, 9, 3), 200, np.uint8)
        results = runtime.run([a, np.zeros((1, 0, 9, 3), np.uint8), b, np.zeros((1, 30, 30, 3), np.uint8)])
        assert [type(r).__name__ for r in results] == ["ndarray", "ShapeError", "ndarray", "ShapeError"]
        assert results[0].shape == (1, 32, 36, 3) and results[2].shape == (2, 32, 36, 3)  # type: ignore[union-attr]
        assert "over this model's limit of 0.0 MP" in str(results[3])
    finally:
        runtime.close()
    with pytest.raises(ShapeError, match="uint8"):
        check_request(np.zeros((1, 4, 4, 3), np.float32), 100)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost:8000", "http://localhost:8000"),
        ("http://10.0.0.5:8000/", "http://10.0.0.5:8000"),
        ("https://triton.example/v2proxy", "https://triton.example:443/v2proxy"),
    ],
)
def test_server_addresses(url: str, expected: str) -> None:
    assert str(Endpoint.parse(url)) == expected


@pytest.mark.parametrize("url", ["ftp://host:21", "http://:8000", "host:port"])
def test_bad_server_addresses(url: str) -> None:
    with pytest.raises(ConfigError, match="not an HTTP address"):
        Endpoint.parse(url)


def test_the_registry_makes_a_client_from_the_request() -> None:
    choice = choose("triton", Request(slots=3, triton=TritonServer("h:9000", "m_py", 5.0)))
    assert choice.options == TritonOptions(url="h:9000", model="m_py", timeout=5.0, slots=3)
    assert "triton" not in MODEL_BACKENDS  # a server is benchmarked only when named
    with pytest.raises(ConfigError, match="--triton-timeout"):
        choose("triton", Request(triton=TritonServer(timeout=0)))
