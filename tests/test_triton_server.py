"""A real Triton Inference Server (the pip wheel's, Python backend) serving a repository our CLI exported.

The server is started on 127.0.0.1 with free ports from tools/triton_server.py's functions, the way a
user's `python tools/triton_server.py REPO` starts it, and killed with its whole process group (the
Python-backend stubs included) in a fixture's teardown, so a failing test leaves no server behind. These
tests are never skipped: without the server's files they fail with the command that installs them.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.backends.options import TritonServer
from srgan_deploy.backends.triton import TritonBackend
from srgan_deploy.cli import app
from srgan_deploy.errors import ModelError, ServerError, ShapeError
from srgan_deploy.images import make_input
from tests.clips import make_clip, read_video
from tests.conftest import make_backend

pytestmark = pytest.mark.triton


def _load_tool() -> ModuleType:
    """tools/ is scripts, not a package: load the launcher by its path."""
    path = Path(__file__).resolve().parents[1] / "tools" / "triton_server.py"
    spec = importlib.util.spec_from_file_location("triton_server_tool", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ts = _load_tool()

MODEL = "tiny_py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One tritonserver process in its own process group; ``kill`` takes the group (server and stubs)."""

    def __init__(self, files: ts.ServerFiles, repo: Path, work: Path, ports: ts.Ports | None = None) -> None:
        self.files, self.repo, self.work = files, repo, work
        self.ports = ports or ts.Ports(free_port(), free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.ports.http}"
        self.log = work / f"server-{self.ports.http}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        models = ts.python_models(self.repo)
        backends = ts.backend_folder(self.files, self.work, ts.python_version(next(iter(models.values()))))
        argv, env = ts.server_command(self.files, self.repo, backends, list(models), self.ports)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ts.wait_ready(self.url, self.process, timeout=120, log=self.log)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the server's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # stubs that outlived the server get the same signal
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"processes of the Triton server's group {pgid} are still alive")
        self.process = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def server_files() -> ts.ServerFiles:
    try:
        return ts.find_server()
    except ts.ServerSetupError as exc:
        pytest.fail(f"the Triton server is not installed: {exc}", pytrace=False)


FLOAT_MODEL_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("not for inference")) for _ in requests]
"""


@pytest.fixture(scope="module")
def repo(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository exported by our CLI, plus a float32 NCHW model a client must refuse to drive."""
    folder = tmp_path_factory.mktemp("triton")
    result = CliRunner().invoke(
        app, ["export", "-o", str(folder / "out"), "-w", str(tiny_weights), "--triton-repo", str(folder / "repo")]
    )
    assert result.exit_code == 0, result.output
    float_model = folder / "repo" / "float_py"
    (float_model / "1").mkdir(parents=True)
    (float_model / "1" / "model.py").write_text(FLOAT_MODEL_PY)
    (float_model / "config.pbtxt").write_text(
        'name: "float_py"\nbackend: "python"\nmax_batch_size: 4\n'
        'input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]\n'
        'output [ { name: "output" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]\n'
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        f'parameters [ {{ key: "EXECUTION_ENV_PATH" value: {{ string_value: "{sys.prefix}" }} }} ]\n'
    )
    return folder / "repo"


@pytest.fixture(scope="module")
def server(server_files: ts.ServerFiles, repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(server_files, repo, tmp_path_factory.mktemp("server"))
    try:
        yield running.start()
    finally:
        running.kill()


def client(server: Server, **options: object) -> TritonBackend:
    backend = make_backend("triton", triton=TritonServer(server.url, MODEL), **options)
    assert isinstance(backend, TritonBackend)
    return backend


def post(url: str, body: bytes, headers: dict[str, str], model: str = MODEL) -> tuple[int, str]:
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, (data.decode(errors="replace") if response.status != 200 else "")


def infer_body(array: np.ndarray, datatype: str) -> tuple[bytes, dict[str, str]]:
    import tritonclient.http as th

    request = th.InferInput("input", list(array.shape), datatype)
    request.set_data_from_numpy(array, binary_data=True)
    body, length = th.InferenceServerClient.generate_request_body(
        [request], outputs=[th.InferRequestedOutput("output", binary_data=True)]
    )
    return body, {"Inference-Header-Content-Length": str(length)}


def healthy(server: Server) -> bool:
    status, _ = json_get(server.url, "/v2/health/ready")
    return status == 200


def json_get(url: str, path: str) -> tuple[int, object]:
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


# --------------------------------------------------------------------------- served = local


def test_served_output_equals_the_local_runtime_frame_for_frame(server: Server, tiny_weights: Path) -> None:
    frames = [make_input((2, 37, 53), 1), make_input((1, 61, 40), 2), make_input((3, 16, 16), 3)]
    with make_backend("auto", tiny_weights, device="cpu") as local:
        expected = [local.upscale(f) for f in frames]
        big = make_input((1, 90, 100), 4)
        expected_big = local.upscale(big)
        # the server took the same rung of auto's ladder, with the same settings (its log says which)
        assert f"backend: {local.name} on {local.device_label}" in server.text()
    with client(server, slots=3) as served:
        assert served.scale == 4 and served.overlap == 12 and served.max_batch == 8
        assert served.describe()["model"] == MODEL
        for got, want in zip(served.upscale_many(iter(frames)), expected, strict=True):
            assert np.array_equal(got, want)
        served.max_pixels = 48 * 48  # a frame over the model's limit is tiled here: same pixels as untiled
        assert np.array_equal(served.upscale(big), expected_big)


def test_the_client_keeps_the_backend_lifecycle(server: Server) -> None:
    from tests.test_lifecycle import FRAMES, check_lifecycle

    check_lifecycle(client(server), FRAMES)


def test_the_scale_and_spec_come_from_the_server(server: Server) -> None:
    status, config = json_get(server.url, f"/v2/models/{MODEL}/config")
    assert status == 200 and isinstance(config, dict)
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["srgan_deploy.scale"] == "4" and params["srgan_deploy.model_name"] == "tiny"
    assert json.loads(params["srgan_deploy.config"])["channels"] == 8
    assert params["EXECUTION_ENV_PATH"] == sys.prefix
    assert config["dynamic_batching"] is not None and config["instance_group"][0]["count"] == 1


def test_a_resumed_job_knows_the_served_model_not_the_local_file(server: Server, tiny_weights: Path) -> None:
    """The resume identity of -b triton is what the server serves (the weights' sha256 our export wrote into
    config.pbtxt), whatever -w says locally; a repository made elsewhere is known by its whole config."""
    from srgan_deploy.backends.triton import served_identity
    from srgan_deploy.weights import file_sha256

    with client(server) as backend:
        identity = backend.served_model_identity()
    assert identity == f"triton:{MODEL}:sha256:{file_sha256(tiny_weights)}"
    config = {"name": "other", "max_batch_size": 4}
    assert served_identity("other", {}, config).startswith("triton:other:config:")
    assert served_identity("other", {}, config) != served_identity("other", {}, {**config, "max_batch_size": 8})


def test_video_through_triton(server: Server, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=12)
    out = tmp_path / "out.mp4"
    args = ["video", str(clip), str(out), "-b", "triton", "--triton-url", server.url, "--triton-model", MODEL]
    result = CliRunner().invoke(app, [*args, "--preset", "ultrafast"])
    assert result.exit_code == 0, result.output
    assert "backend triton" in result.stdout
    frames, _, _, facts = read_video(out)
    assert len(frames) == 12 and frames[0].shape == (192, 256, 3) and facts["audio"]


def test_bench_through_triton(server: Server, tiny_weights: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    args = ["bench", "-b", "triton", "--triton-url", server.url, "--triton-model", MODEL, "-w", str(tiny_weights)]
    result = CliRunner().invoke(
        app, [*args, "--input", "24x16", "--iters", "3", "--warmup", "1", "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(report.read_text())["results"]
    assert row["backend"] == "triton" and row["device"] == f"{MODEL} at {server.url}"
    assert row["max_abs_vs_torch"] <= 2 and row["fps"] > 0  # the served model is the weights' own


def test_two_clients_at_once(server: Server, tiny_weights: Path) -> None:
    inputs = {k: [make_input((1, 24, 32), 10 * k + i) for i in range(6)] for k in (0, 1)}
    with make_backend("auto", tiny_weights, device="cpu") as local:
        expected = {k: [local.upscale(f) for f in frames] for k, frames in inputs.items()}
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            with client(server, slots=2) as served:
                results[k] = list(served.upscale_many(iter(inputs[k])))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for k in (0, 1):
        assert all(np.array_equal(a, b) for a, b in zip(results[k], expected[k], strict=True))


# --------------------------------------------------------------------------- bad requests


def test_bad_requests_get_an_error_and_the_server_stays_healthy(server: Server) -> None:
    cases = {
        "wrong dtype": (infer_body(np.zeros((1, 5, 7, 3), np.float32), "FP32"), 400, "expects 'UINT8'"),
        "wrong rank": (infer_body(np.zeros((1, 5, 3), np.uint8), "UINT8"), 400, "unexpected shape"),
        "empty": (infer_body(np.zeros((1, 0, 7, 3), np.uint8), "UINT8"), 500, "empty input"),
        "40 MP": (infer_body(np.zeros((1, 5000, 8000, 3), np.uint8), "UINT8"), 500, "over this model's limit"),
        "not JSON": ((b"{not json", {}), 500, "failed to parse"),
    }
    for name, ((body, headers), status, words) in cases.items():
        got, text = post(server.url, body, headers)
        assert got == status and words in text, (name, got, text)
        assert healthy(server), name
    # a request cut off mid-body: the server drops it and goes on
    with socket.create_connection(("127.0.0.1", server.ports.http), timeout=10) as sock:
        sock.sendall(
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 120\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
            + b'{"inputs":[{"name":"input","shape":[1,5,7,3],"datatype":"UINT8"'
        )
    assert healthy(server)
    with client(server) as served:  # and the next real request is answered
        assert served.upscale(make_input((1, 9, 11), 0)).shape == (1, 36, 44, 3)
        with pytest.raises(ShapeError, match="uint8"):
            served.upscale(np.zeros((1, 5, 7, 3), np.float32))  # refused before it is sent


def test_a_model_the_client_cannot_drive_is_one_clear_error(server: Server) -> None:
    with pytest.raises(ModelError, match=r"model 'float_py' on http://127\.0\.0\.1:\d+ is not a uint8 NHWC"):
        make_backend("triton", triton=TritonServer(server.url, "float_py")).open()
    with pytest.raises(
        ServerError,
        match=r"model 'nope' is not ready on the Triton server at .* \(it has float_py, tiny_py ready\); check --triton",
    ):
        make_backend("triton", triton=TritonServer(server.url, "nope")).open()
    with pytest.raises(Exception, match=r"2 models ready .*name one with --triton-model"):
        make_backend("triton", triton=TritonServer(server.url)).open()


def test_no_server_is_one_line_and_exit_2(image_dir: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app, ["upscale", str(image_dir / "a.png"), "-o", str(tmp_path / "o"), "-b", "triton", "--triton-url", url]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: Triton server at {url} refused the connection: no server is running there; start it "
        "(README: Serving) or fix --triton-url"
    ]


# --------------------------------------------------------------------------- the server dies mid-run


def test_server_killed_during_video_is_one_line_exit_2_and_the_rerun_resumes(
    server_files: ts.ServerFiles, repo: Path, tmp_path: Path
) -> None:
    from srgan_deploy.jobs.manifest import work_dir_for

    clip = make_clip(tmp_path / "clip.mp4", width=96, height=64, frames=72, audio=False)
    out = tmp_path / "out.mp4"
    own = Server(server_files, repo, tmp_path)
    try:
        own.start()
        command = [sys.executable, "-m", "srgan_deploy.cli", "video", str(clip), str(out), "-b", "triton"]
        command += ["--triton-url", own.url, "--triton-model", MODEL, "--segment-seconds", "0.25"]
        command += ["--preset", "ultrafast", "--triton-timeout", "20"]
        video = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        work = work_dir_for(out)
        deadline = time.monotonic() + 60
        while not list(work.glob("seg-*.mp4")) and video.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        own.kill()  # mid-run: at least one segment is done, the rest is not
        _, stderr = video.communicate(timeout=60)
        lines = stderr.decode().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        assert video.returncode == 2, stderr.decode()
        assert len(errors) == 1 and own.url in errors[0] and "Traceback" not in stderr.decode(), lines
        assert "stopped answering" in errors[0] and "re-run" in errors[0]
        assert not out.exists()
        own.start()  # the same ports again: the same command resumes
        rerun = subprocess.run(command, capture_output=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr.decode()
        assert "segments reused" in rerun.stdout.decode()
        frames, _, _, _ = read_video(out)
        assert len(frames) == 72 and frames[0].shape == (256, 384, 3)
    finally:
        own.kill()
