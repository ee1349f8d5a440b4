"""A client of a Triton Inference Server: ``-b triton --triton-url URL --triton-model NAME``.

The model runs on the server (one per GPU box, or a CPU host with the pip server); this process only
decodes, sends uint8 NHWC frames, and encodes. Why it exists: a fleet serves while many clients do the
video work elsewhere, and ``video``, ``upscale`` and ``bench`` run against a served model unchanged.

Transport: Triton's HTTP/REST protocol with binary tensors, encoded and decoded by ``tritonclient.http``
(``generate_request_body`` / ``parse_response_body``) and sent over the standard library's
``http.client``, one keep-alive connection per worker thread. ``tritonclient.http``'s own client runs on
gevent, which may only be used by the thread that made it; the video pipeline opens a backend in one
thread and upscales in another, and several requests must be in flight at once (the slots). Its gRPC
client would pin protobuf below 7.

What the server says about the model decides the rest: the scale and tile overlap come from the
``srgan_deploy.*`` parameters our export writes into config.pbtxt (a model without them is probed once
with a small frame), and frames above the model's ``srgan_deploy.max_pixels`` are tiled here, so a large
photo still upscales while no single request makes the server hold gigabytes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.backends.options import TritonOptions
from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ConfigError, ModelError, ServerError, ShapeError, SrganDeployError
from srgan_deploy.spec import ModelSpec

INSTALL = "pip install tritonclient[http] (or pip install 'srgan-deploy[triton]')"
PROBE_EDGE = 16  # LR frame edge used to learn the scale of a model whose config does not state it


@dataclass(frozen=True)
class Endpoint:
    """Where the server is: ``http://host:port`` (``host:port`` means http; https is supported too)."""

    scheme: str
    host: str
    port: int
    prefix: str  # a path the server is mounted under behind a proxy, "" for Triton itself

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        text = url.strip()
        if "://" not in text:
            text = f"http://{text}"
        parts = urllib.parse.urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ConfigError(
                f"--triton-url '{url}' is not an HTTP address; give http://HOST:PORT (Triton's HTTP port, 8000 by default)"
            )
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default, parts.path.rstrip("/"))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"


class Connection:
    """One keep-alive connection to the server; reconnects once when the server closed an idle one."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        """(status, response, body); OSError and http.client errors are left to the caller."""
        for attempt in (0, 1):
            fresh = self._conn is None
            if self._conn is None:
                kind = http.client.HTTPSConnection if self.endpoint.scheme == "https" else http.client.HTTPConnection
                self._conn = kind(self.endpoint.host, self.endpoint.port, timeout=self.timeout)
            try:
                self._conn.request(method, self.endpoint.prefix + path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt == 1:  # a new connection that fails means the server is gone
                    raise
                continue  # the server closed a kept-alive connection between two requests: once more, anew
            except BaseException:
                self.close()
                raise
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, response, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _error_text(data: bytes) -> str:
    try:
        message = json.loads(data.decode("utf-8", "replace")).get("error", "")
    except (ValueError, AttributeError):
        message = data.decode("utf-8", "replace")
    return " ".join(str(message).split())[:300] or "no reason given"


def served_identity(model: str, params: dict[str, str], config: dict[str, Any]) -> str:
    """The served model as a resumed job must find it again: the weights' (or foreign graph's) sha256 our
    export writes into config.pbtxt; for a model repository made elsewhere, a hash of the whole model config
    the server reports (a changed config, scale or version policy is a different model)."""
    sha = params.get("srgan_deploy.weights_sha256") or params.get("srgan_deploy.source_sha256")
    if sha:
        # a foreign model's <model>.onnx.json and the wrapper's version change the served graph too
        said = "".join(
            f":{key}:{hashlib.sha256(value.encode()).hexdigest()[:16]}"
            for key in ("settings", "wrap_version")
            if (value := params.get(f"srgan_deploy.{key}"))
        )
        return f"triton:{model}:sha256:{sha}{said}"
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return f"triton:{model}:config:{hashlib.sha256(canonical).hexdigest()}"


def spec_from_parameters(params: dict[str, str], scale: int) -> ModelSpec:
    """The model's spec as the server's config states it: SRResNet's config or a foreign model's spec when our
    export wrote one, else the scale with the overlap given (or a generous one: tiles are only for big frames)."""
    if params.get("srgan_deploy.spec"):
        return ModelSpec.from_json(params["srgan_deploy.spec"])
    if params.get("srgan_deploy.config"):
        return ModelSpec.from_config(ModelConfig.from_json(params["srgan_deploy.config"]))
    overlap = int(params.get("srgan_deploy.overlap", "40"))
    return ModelSpec(scale=scale, overlap=overlap, memory_width=64.0)


class TritonBackend(Backend[TritonOptions]):
    name = "triton"

    def __init__(self, options: TritonOptions, load: Callable[[], Any] | None = None) -> None:
        super().__init__(options)
        # ``load`` (the registry's loader for a local model file) is never called: the server has the model
        self.endpoint = Endpoint.parse(options.url)
        self.served = ""  # the Triton model name, resolved at open
        self._identity: str | None = None  # the served model as a resumed job must find it again
        self.max_pixels: int | None = None  # frames above this are tiled here
        self.max_batch = 1
        self._input_name = "input"
        self._output_name = "output"
        self._answered = False  # once the server has answered, losing it is "stopped answering", not "not there"
        # one connection per thread (keyed by thread id: a thread's id is reused only after it ended)
        self._connections: dict[int, Connection] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._encode: Any = None  # tritonclient.http's InferenceServerClient (its static encode/decode)
        self._infer_input: Any = None
        self._requested_output: Any = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            from importlib.metadata import version

            import tritonclient.http  # noqa: F401
        except ImportError:
            return False, f"tritonclient is not installed ({INSTALL})"
        return True, f"tritonclient {version('tritonclient')}: a client, the model runs on the server at --triton-url"

    # ------------------------------------------------------------------ talking to the server
    def _connection(self) -> Connection:
        key = threading.get_ident()
        with self._lock:
            conn = self._connections.get(key)
            if conn is None:
                conn = self._connections[key] = Connection(self.endpoint, self.options.timeout)
        return conn

    def _call(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        """One request; every way of not getting an answer becomes a ServerError that names the server."""
        where = f"Triton server at {self.endpoint}"
        try:
            answer = self._connection().request(method, path, body, headers)
            self._answered = True
            return answer
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            if self._answered:
                raise ServerError(
                    f"{where} stopped answering (connection {'refused' if refused else 'closed'}); restart it, then "
                    "re-run the same command (a video resumes where it stopped)"
                ) from exc
            if refused:
                raise ServerError(
                    f"{where} refused the connection: no server is running there; start it (README: Serving) "
                    "or fix --triton-url"
                ) from exc
            raise ServerError(f"{where} closed the connection before answering; is it a Triton server?") from exc
        except TimeoutError as exc:
            raise ServerError(
                f"{where} did not answer within {self.options.timeout:g} s; is it overloaded? "
                "(raise --triton-timeout, or check the server's log)"
            ) from exc
        except socket.gaierror as exc:
            raise ServerError(
                f"{where}: host '{self.endpoint.host}' not found ({exc.strerror}); fix --triton-url"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
            raise ServerError(f"{where}: {reason}; check the server and --triton-url, then re-run") from exc

    def _get_json(self, path: str) -> tuple[int, Any]:
        status, _, data = self._call("GET", path)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {}

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        import tritonclient.http as triton_http

        self._encode = triton_http.InferenceServerClient
        self._infer_input = triton_http.InferInput
        self._requested_output = triton_http.InferRequestedOutput
        status, _ = self._get_json("/v2/health/ready")
        if status != 200:
            raise ServerError(f"Triton server at {self.endpoint} is not ready (HTTP {status}); wait for it to load")
        self.served = self.options.model or self._only_model()
        config = self._model_config(self.served)
        self.max_batch = self._check_io(config)
        params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()}
        max_pixels = params.get("srgan_deploy.max_pixels", "")
        self.max_pixels = int(max_pixels) if max_pixels.isdigit() else None
        scale_text = params.get("srgan_deploy.scale", "")
        scale = int(scale_text) if scale_text.isdigit() else self._probe_scale()
        self._model = spec_from_parameters(params, scale)
        if self._model.scale != scale:
            raise ModelError(
                f"model '{self.served}' on {self.endpoint} states scale {scale} and a spec of {self._model.scale}"
            )
        self._identity = served_identity(self.served, params, config)
        self._pool = ThreadPoolExecutor(max_workers=self.options.slots, thread_name_prefix="triton")
        self.device_label = f"{self.served} at {self.endpoint}"

    def served_model_identity(self) -> str | None:
        self._require_open()
        return self._identity

    def _only_model(self) -> str:
        status, _, data = self._call("POST", "/v2/repository/index", b"{}", {"Content-Type": "application/json"})
        models = json.loads(data) if status == 200 and data else []
        ready = sorted({m["name"] for m in models if isinstance(m, dict) and m.get("state") == "READY"})
        if len(ready) == 1:
            return ready[0]
        listed = ", ".join(ready) or "none"
        raise ConfigError(
            f"Triton server at {self.endpoint} has {len(ready)} models ready ({listed}); name one with --triton-model"
        )

    def _model_config(self, model: str) -> dict[str, Any]:
        quoted = urllib.parse.quote(model, safe="")
        status, _ = self._get_json(f"/v2/models/{quoted}/ready")
        if status != 200:
            raise ServerError(f"model '{model}' is not ready on the Triton server at {self.endpoint}{self._why(model)}")
        status, config = self._get_json(f"/v2/models/{quoted}/config")
        if status != 200 or not isinstance(config, dict):
            raise ServerError(
                f"the Triton server at {self.endpoint} did not give model '{model}''s config (HTTP {status})"
            )
        return config

    def _why(self, model: str) -> str:
        """What the repository index says about a model that is not ready: missing, loading, or failed and why."""
        try:
            status, _, data = self._call("POST", "/v2/repository/index", b"{}", {"Content-Type": "application/json"})
            models = json.loads(data) if status == 200 and data else []
        except (SrganDeployError, ValueError):
            return ""
        names = sorted({m.get("name", "") for m in models if isinstance(m, dict) and m.get("state") == "READY"})
        for entry in models:
            if isinstance(entry, dict) and entry.get("name") == model:
                reason = " ".join(str(entry.get("reason", "")).split())[:200]
                return f" (state {entry.get('state', 'unknown')}{': ' + reason if reason else ''})"
        return f" (it has {', '.join(names) or 'no model'} ready); check --triton-model"

    def _check_io(self, config: dict[str, Any]) -> int:
        """The served model must take and give uint8 NHWC RGB frames with a batch axis, as ours do."""
        inputs, outputs = config.get("input") or [], config.get("output") or []
        max_batch = int(config.get("max_batch_size", 0))

        def nhwc_uint8(tensors: list[dict[str, Any]]) -> bool:
            return (
                len(tensors) == 1
                and tensors[0].get("data_type") == "TYPE_UINT8"
                and len(tensors[0].get("dims", [])) == 3
                and int(tensors[0]["dims"][2]) == 3
            )

        if max_batch < 1 or not nhwc_uint8(inputs) or not nhwc_uint8(outputs):
            seen = ", ".join(f"{t.get('name')} {t.get('data_type')} {t.get('dims')}" for t in [*inputs, *outputs])
            raise ModelError(
                f"model '{self.served}' on {self.endpoint} is not a uint8 NHWC model with batching (it has {seen}, "
                f"max_batch_size {max_batch}); serve the <name>_py model from srgan-deploy export --triton-repo"
            )
        self._input_name, self._output_name = str(inputs[0]["name"]), str(outputs[0]["name"])
        return max_batch

    def _probe_scale(self) -> int:
        out = self._send(np.zeros((1, PROBE_EDGE, PROBE_EDGE, 3), np.uint8), check_scale=False)
        scale = out.shape[1] // PROBE_EDGE
        if out.shape[1] != scale * PROBE_EDGE or out.shape[2] != scale * PROBE_EDGE or scale < 1:
            raise ModelError(
                f"model '{self.served}' on {self.endpoint} turned a {PROBE_EDGE}x{PROBE_EDGE} frame into "
                f"{out.shape[2]}x{out.shape[1]}; -b triton runs models with one integer scale"
            )
        self.notify(f"{self.served}'s config states no scale; measured x{scale} with one small request")
        return scale

    # ------------------------------------------------------------------ inference
    def _send(self, frames: np.ndarray, check_scale: bool = True) -> np.ndarray:
        """One inference request; any thread (each has its own connection)."""
        request = self._infer_input(self._input_name, list(frames.shape), "UINT8")
        request.set_data_from_numpy(frames, binary_data=True)
        wanted = self._requested_output(self._output_name, binary_data=True)
        body, header_length = self._encode.generate_request_body([request], outputs=[wanted])
        headers = {"Content-Type": "application/octet-stream"}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        quoted = urllib.parse.quote(self.served, safe="")
        status, response, data = self._call("POST", f"/v2/models/{quoted}/infer", body, headers)
        shape = "x".join(map(str, frames.shape))
        if status != 200:
            text = _error_text(data)
            if status in (404, 503) or "unknown model" in text or "not found" in text:
                raise ServerError(f"Triton server at {self.endpoint}: {text} (HTTP {status})")
            raise ShapeError(f"Triton server at {self.endpoint} refused a {shape} batch for '{self.served}': {text}")
        length = response.getheader("Inference-Header-Content-Length")
        try:
            result = self._encode.parse_response_body(
                data,
                header_length=int(length) if length else None,
                content_encoding=response.getheader("Content-Encoding"),
            )
            out = result.as_numpy(self._output_name)
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(
                f"Triton server at {self.endpoint} sent a damaged answer for '{self.served}': {exc}"
            ) from exc
        if out is None or out.dtype != np.uint8 or out.ndim != 4:
            raise ModelError(f"model '{self.served}' on {self.endpoint} did not answer with uint8 (N, H, W, 3) frames")
        if check_scale:
            n, h, w = frames.shape[:3]
            s = self.scale
            if out.shape != (n, h * s, w * s, 3):
                raise ModelError(
                    f"model '{self.served}' on {self.endpoint} turned {shape} into {'x'.join(map(str, out.shape))}, "
                    f"not x{s}; is --triton-model the model you meant?"
                )
        return np.array(out, copy=True)  # the decoded view shares the response's bytes; callers may write

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        if frames.shape[0] <= self.max_batch:
            return self._send(frames)
        return np.concatenate(
            [self._send(frames[i : i + self.max_batch]) for i in range(0, frames.shape[0], self.max_batch)]
        )

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """Whole frames unless --tile asks, or the frame is over the served model's pixel limit."""
        if self.options.tile is not None and (height > self.options.tile or width > self.options.tile):
            return self.options.tile
        if self.max_pixels is None or height * width <= self.max_pixels:
            return None
        edge = int(self.max_pixels**0.5) // 16 * 16
        return max(edge, 2 * self.overlap + 16)

    def _upscale_planned(self, frames: np.ndarray, tile: int | tuple[int, int] | None) -> np.ndarray:
        """The memory plan is the server's business: whole batches go as they are, tiles in batches the model takes."""
        if tile is None:
            return self._infer(frames)
        from srgan_deploy.tiling import TilePlan, upscale_tiled

        plan = TilePlan.for_frame(frames.shape[1], frames.shape[2], tile, self.overlap)
        return upscale_tiled(frames, plan, self._infer, self.scale, self.max_batch)

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Up to ``slots`` requests in flight (one connection each), results in input order. Frames that need
        tiling go through ``upscale`` after what is in flight."""
        self._require_open()
        assert self._pool is not None
        pending: deque[Future[np.ndarray]] = deque()
        try:
            for raw in batches:
                batch = check_frames(raw)
                if self._tile_size(batch.shape[1], batch.shape[2]) is not None:
                    while pending:
                        yield pending.popleft().result()
                    yield self.upscale(batch)
                    continue
                if len(pending) == self.options.slots:
                    yield pending.popleft().result()
                pending.append(self._pool.submit(self._infer, batch))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # abandoned by the consumer or an error: nothing more is sent
                future.cancel()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._connections.values():
                conn.close()

    def _release(self) -> None:
        self._identity = None
        self._pool = None
        self._connections.clear()  # the same dict: __init__ made it, close() empties it
        self.served = ""
        self.max_pixels = None
        self.max_batch = 1
        self._input_name = "input"
        self._output_name = "output"
        self._answered = False
        self._encode = None
        self._infer_input = None
        self._requested_output = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "server": str(self.endpoint), "model": self.served}
