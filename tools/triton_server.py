"""Serve a repository written by `srgan-deploy export --triton-repo` with the Triton server from PyPI, on a CPU.

    python tools/triton_server.py REPO [--http-port 8000] [--grpc-port 8001] [--host 127.0.0.1]

The Triton Inference Server inside the `nvidia-pytriton` wheel (Triton 2.51, Python backend only) runs as
it is, but three things pytriton normally does for it are done here: the Python backend gets the stub
built for the serving environment's Python (`python_backend_stubs/3.X/`), in a backend folder of its own
(the installed files stay untouched); the wheel's bundled libraries go on LD_LIBRARY_PATH; and only the
models its one backend can load are loaded (`<name>_py`; `_onnx` and `_trt` need NVIDIA's container, and
one model that fails to load would stop the server).

Install the server's files apart from srgan-deploy's environment (the wheel pins numpy<2, our OpenCV
needs numpy>=2; the binary needs no Python package):

    pip install --no-deps --target .triton-server nvidia-pytriton==0.7.0     (or: make install-dev)

The tests start servers through these same functions (tests/test_triton_server.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTRITON = "nvidia-pytriton==0.7.0"
DEFAULT_DIR = ROOT / ".triton-server"
ENV_VAR = "SRGAN_DEPLOY_TRITON_SERVER"
INSTALL = f"pip install --no-deps --target {DEFAULT_DIR} {PYTRITON} (or make install-dev)"


class ServerSetupError(RuntimeError):
    """The server's files are missing or the repository has nothing it can serve; the text says what to do."""


@dataclass(frozen=True)
class ServerFiles:
    """An installed nvidia-pytriton: ``server`` is its ``pytriton/tritonserver`` folder."""

    server: Path
    libs: Path  # the wheel's bundled shared libraries (auditwheel's nvidia_pytriton.libs)

    @property
    def binary(self) -> Path:
        return self.server / "bin" / "tritonserver"

    def stub(self, python: str) -> Path:
        return self.server / "python_backend_stubs" / python / "triton_python_backend_stub"


def _candidates(base: Path) -> list[Path]:
    """Where a ``--target`` install and a virtual environment keep the package under ``base``."""
    return [base / "pytriton" / "tritonserver", *sorted(base.glob("lib/python3*/site-packages/pytriton/tritonserver"))]


def find_server(where: Path | None = None) -> ServerFiles:
    """The server given, or named by $SRGAN_DEPLOY_TRITON_SERVER, or installed in .triton-server."""
    bases = [where] if where is not None else []
    if where is None and os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]))
    if where is None:
        bases.append(DEFAULT_DIR)
    for base in bases:
        for server in _candidates(base.expanduser()):
            if (server / "bin" / "tritonserver").is_file():
                libs = server.parents[1] / "nvidia_pytriton.libs"
                return ServerFiles(server, libs if libs.is_dir() else server / "external_libs")
    looked = ", ".join(str(b) for b in bases)
    raise ServerSetupError(f"no Triton server found in {looked}; install one: {INSTALL}")


def _config_value(text: str, key: str) -> str | None:
    match = re.search(r'key:\s*"' + re.escape(key) + r'"\s*value:\s*\{\s*string_value:\s*"((?:[^"\\]|\\.)*)"', text)
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else None


def python_models(repo: Path) -> dict[str, Path | None]:
    """The repository's Python-backend models and the environment (EXECUTION_ENV_PATH) each runs in."""
    found: dict[str, Path | None] = {}
    for config in sorted(repo.glob("*/config.pbtxt")):
        text = config.read_text()
        if re.search(r'^\s*backend:\s*"python"', text, re.MULTILINE):
            env = _config_value(text, "EXECUTION_ENV_PATH")
            found[config.parent.name] = Path(env) if env else None
    if not found:
        raise ServerSetupError(
            f"{repo} has no Python-backend model (<name>_py/); write one with srgan-deploy export --triton-repo {repo}"
        )
    return found


def python_version(env: Path | None) -> str:
    """The stub must match the Python of the environment the models run in (pyvenv.cfg's version)."""
    if env is not None and (env / "pyvenv.cfg").is_file():
        match = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", (env / "pyvenv.cfg").read_text(), re.MULTILINE)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def backend_folder(files: ServerFiles, work: Path, python: str) -> Path:
    """A backend directory holding the python backend with the stub for ``python``; links, no copies: the
    stub's RPATH ($ORIGIN) then still finds the wheel's libraries."""
    stub = files.stub(python)
    if not stub.is_file():
        have = sorted(p.parent.name for p in files.server.glob("python_backend_stubs/*/triton_python_backend_stub"))
        raise ServerSetupError(f"the Triton wheel has no Python stub for Python {python} (it has {', '.join(have)})")
    folder = work / "backends" / "python"
    folder.mkdir(parents=True, exist_ok=True)
    for source in (
        files.server / "backends" / "python" / "libtriton_python.so",
        files.server / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        link = folder / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return work / "backends"


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def server_command(
    files: ServerFiles, repo: Path, backends: Path, models: list[str], ports: Ports, host: str = "127.0.0.1"
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a server that loads ``models`` (explicit mode: the others are never tried)."""
    argv = [
        str(files.binary),
        f"--model-repository={repo.absolute()}",
        f"--backend-directory={backends.absolute()}",
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in models),
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--exit-timeout-secs=5",
    ]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(files.libs), str(files.server / "lib"), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return argv, env


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    """Until the server answers ready (every loaded model is), or fail with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.is_file() else ""
            raise ServerSetupError(f"tritonserver exited with code {process.returncode} while starting:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ServerSetupError(f"tritonserver at {url} was not ready after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path, help="model repository (srgan-deploy export --triton-repo REPO)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--server-dir", type=Path, default=None, help=f"nvidia-pytriton install (default {DEFAULT_DIR})"
    )
    args = parser.parse_args()
    try:
        files = find_server(args.server_dir)
        models = python_models(args.repo)
        envs = [e for e in models.values() if e is not None]
        work = Path(tempfile.mkdtemp(prefix="srgan-triton-"))
    except (ServerSetupError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        backends = backend_folder(files, work, python_version(envs[0] if envs else None))
        ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
        argv, env = server_command(files, args.repo, backends, list(models), ports, args.host)
        process = subprocess.Popen(argv, env=env)
        # the server stops on SIGINT/SIGTERM by itself; forward ours and wait for it to finish
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: process.send_signal(signum))
        shown = "127.0.0.1" if args.host == "0.0.0.0" else args.host
        url = f"http://{shown}:{ports.http}"
        try:
            wait_ready(url, process, timeout=300)
        except ServerSetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            process.terminate()
            process.wait(30)
            return 2
        print(
            f"serving {', '.join(models)} at {url} (gRPC :{ports.grpc}); try: srgan-deploy video IN OUT -b triton "
            f"--triton-url {url} --triton-model {next(iter(models))}   (Ctrl-C stops the server)",
            flush=True,
        )
        return process.wait()
    except ServerSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
