"""onnxruntime backend: the CPU fast path, and a CUDA/TensorRT path through its execution providers.

It runs the uint8-I/O ONNX graph, so conversion to and from float happens inside
the graph (fused by ORT) and never on the Python side. On the TensorRT provider every call
must fit the explicit shape profile it is given (an input outside it is an error, not a
rebuild): batches are split to its max batch, frames below its minimum are padded, and
tiles are clamped into it, as the TensorRT backend does for its own engines.

On the CPU, a stream of frames (``upscale_many``: video, bench's throughput) runs several frames at once,
one per physical core (or per ``--threads``), each on a second session with one intra-op thread, called
from a small thread pool (``InferenceSession.run`` is thread-safe and releases the GIL). Frames this
small do not split well over intra-op threads: on 2 Zen 4 cores a stream of 320x180 srgan-x4-lite frames
took 430 ms/frame on one 2-thread session and 388 ms/frame as two 1-thread frames at once (1.11x;
srgan-x4 240x135: 953 -> 890 ms, 1.08x; ``python -m benchmarks.ort_streams``). One frame on its own
(an image, ``upscale``) still gets every core on that one frame. Each session has its own arena; the
stream session's grows to what the frames running at once need, which the memory budget bounds
(``_stream_limit``). GPU providers keep one call after another.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from srgan_deploy.artifacts import OnnxModel, ShapeProfile
from srgan_deploy.backends.base import Backend, check_frames, out_of_memory
from srgan_deploy.backends.fit import needs_fitting, run_fitted, static_tile
from srgan_deploy.backends.options import OrtOptions
from srgan_deploy.cache import cache_dir
from srgan_deploy.cpus import physical_core_count, usable_cpus
from srgan_deploy.errors import BackendStateError, BackendUnavailableError, ExportError, OutputError, ShapeError
from srgan_deploy.sources import OnnxLoader

# A batch of a stream and its frames' runs (one future per frame, or per fixed batch of the network)
_Group = tuple[np.ndarray, list["Future[np.ndarray]"]]

# The profile onnxruntime's TensorRT provider gets: the one our own engines default to, so a new frame or
# tile size inside it does not make the provider build another engine in the middle of a video.
TRT_PROFILE = ShapeProfile.parse(None, None, None)


class OnnxRuntimeBackend(Backend[OrtOptions]):
    name = "onnxruntime"

    def __init__(self, options: OrtOptions, load: OnnxLoader) -> None:
        super().__init__(options)
        self._load = load
        self.session: Any = None
        self.providers: list[Any] = []
        self.graph_rewrites = 0
        self.on_gpu = False
        self.onnx: OnnxModel | None = None
        self.provider = ""  # the execution provider that actually took the graph
        self.trt_profile: ShapeProfile | None = None  # the TensorRT provider's profile, when that provider runs
        # CPU streams: frames run at once (0: none, every call on ``session``), the one-thread session they
        # run on, the pool that calls it, and the frames submitted whose results are not yet handed out
        self.streams = 0
        self._stream_session: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: deque[Future[np.ndarray]] = deque()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install 'srgan-deploy[cpu]' or onnxruntime-gpu)"
        providers = [p.replace("ExecutionProvider", "") for p in ort.get_available_providers()]
        return True, f"onnxruntime {ort.__version__} ({', '.join(providers)})"

    def _providers(self) -> list[Any]:
        import onnxruntime as ort

        from srgan_deploy.weights import file_sha256

        available = ort.get_available_providers()
        device = self.options.device
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError(
                "onnxruntime has no CUDA provider here; install onnxruntime-gpu or use --device cpu"
            )
        index = self.device_index
        providers: list[Any] = []
        if "TensorrtExecutionProvider" in available:
            # onnxruntime builds and caches its own TensorRT engines for the graph (or the parts of it
            # TensorRT takes); CUDA then CPU run whatever is left. The explicit profile is the one our own
            # engines use, so a new frame or tile size inside it does not rebuild an engine mid-video.
            lo, opt, hi = self._trt_profile().tensor_shapes("uint8")
            root = cache_dir(self.options.cache_dir) / "ort-tensorrt"
            # onnxruntime names a cached engine by the model's file name and graph structure, not its weights
            # (its docs: clean the cache when the model changes): one folder per model content, so a model
            # re-exported under the same name never runs on the engine of the old weights
            engines = root / file_sha256(self.onnx.path)[:16] if self.onnx is not None else root
            # the provider creates only the last folder of the path (its create_directory is not recursive)
            # and, when that fails, onnxruntime quietly runs the graph on CUDA instead: make every level
            try:
                engines.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"cannot create onnxruntime's TensorRT cache {engines}: {exc.strerror}; set SRGAN_DEPLOY_CACHE to a writable folder"
                ) from exc
            providers.append(
                (
                    "TensorrtExecutionProvider",
                    {
                        "device_id": index,
                        # fp16 comes from the graph (the fp16-core ONNX the registry loads at fp16): TensorRT
                        # 11 has no fp16 builder flag, so trt_fp16_enable would silently build fp32 there
                        "trt_fp16_enable": False,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(engines),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(root),
                        "trt_profile_min_shapes": f"input:{'x'.join(map(str, lo))}",
                        "trt_profile_opt_shapes": f"input:{'x'.join(map(str, opt))}",
                        "trt_profile_max_shapes": f"input:{'x'.join(map(str, hi))}",
                    },
                )
            )
        return [*providers, ("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]

    def _engine_cache_lock(self) -> contextlib.AbstractContextManager[None]:
        """With the TensorRT provider, one process at a time builds into its engine cache: onnxruntime's own lock
        covers threads of one process only (onnxruntime PR 13356), and --workers N starts N processes that
        would otherwise build the same engine at once and read each other's half-written files. With explicit
        profile shapes the provider builds while the session is made, so the lock spans that."""
        uses_trt = any(p[0] == "TensorrtExecutionProvider" for p in self.providers if isinstance(p, tuple))
        if not uses_trt:
            return contextlib.nullcontext()
        from srgan_deploy.files import file_lock

        return file_lock(cache_dir(self.options.cache_dir) / "ort-tensorrt" / "build.lock")

    def _trt_profile(self) -> ShapeProfile:
        """The provider's profile: ours, narrowed to the model's static shape or fixed batch."""
        return TRT_PROFILE.fitted(self.onnx.spec) if self.onnx is not None else TRT_PROFILE

    @property
    def device_index(self) -> int:
        device = self.options.device
        return int(device.split(":")[1]) if ":" in device else 0

    @staticmethod
    def _session_options(threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        # Memory patterns pre-plan one allocation per input shape and keep it: with the shapes tiling and
        # mixed inputs produce, that held 1.54 GB where 0.86 GB suffice, at no speed gain (3.7 s vs 3.5 s for
        # six sizes; python -m benchmarks.ort_allocator). The arena stays on: without it runs are slower.
        opts.enable_mem_pattern = False
        return opts

    def _open(self) -> None:
        import onnxruntime as ort

        self.onnx = self._load().require_uint8("onnxruntime")
        path = self.onnx.path
        opts = self._session_options(self.options.threads or usable_cpus())
        self.providers = self._providers()
        model: str | bytes = str(path)
        if self.providers == ["CPUExecutionProvider"]:
            model, self.graph_rewrites = self._cpu_graph(path)
        try:
            with self._engine_cache_lock():
                self.session = ort.InferenceSession(model, sess_options=opts, providers=self.providers)
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load {path}: {exc}") from exc
        loaded = str(self.session.get_providers()[0])
        asked = self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]
        self.provider = loaded
        self.on_gpu = loaded != "CPUExecutionProvider"
        self.trt_profile = self._trt_profile() if loaded == "TensorrtExecutionProvider" else None
        short = loaded.replace("ExecutionProvider", "")
        self.device_label = f"cuda:{self.device_index} {short}" if self.on_gpu else f"cpu x{opts.intra_op_num_threads}"
        streams = self.options.threads or physical_core_count()
        if self.providers == ["CPUExecutionProvider"] and streams > 1:
            self._open_streams(model, streams)
            self.device_label += f", {streams} streams"
        if loaded != asked:
            self.notify(
                f"onnxruntime asked for {asked.replace('ExecutionProvider', '')} but runs on {short} "
                "(that provider failed to load; onnxruntime's log says why)"
            )
        self._model = self.onnx.spec

    def _open_streams(self, model: str | bytes, streams: int) -> None:
        """The one-thread session frames of a stream run on, ``streams`` at once. One session for all of
        them, not one each: concurrent runs share its weights and arena, which held 0.81 GiB peak for two
        320x180 srgan-x4-lite frames where two sessions held 1.0 GiB, at the same frames/s."""
        import onnxruntime as ort

        try:
            self._stream_session = ort.InferenceSession(
                model, sess_options=self._session_options(1), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ExportError(f"onnxruntime cannot load {self.onnx.path if self.onnx else 'the model'}: {exc}") from exc
        self._pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="srgan-ort-stream")
        self.streams = streams

    @staticmethod
    def _cpu_graph(path: Any) -> tuple[bytes, int]:
        """The graph with PReLUs rewritten for onnxruntime's blocked CPU layout (see ort_graph.py)."""
        import onnx

        from srgan_deploy.backends.ort_graph import prelu_as_batchnorm

        proto = onnx.load(str(path))
        count = prelu_as_batchnorm(proto)
        return proto.SerializeToString(), count

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        """The memory plan's tile (or the user's --tile), clamped into the TensorRT provider's profile on
        each axis: at most its max (a larger tile is an error there), at least its min (a smaller one
        would only be padded up again). Frames larger than the profile are tiled even when memory allows.
        A network that takes one shape gets tiles of exactly that shape."""
        if self.model.static_hw is not None:
            return static_tile(self.model, height, width)
        tile = super()._tile_size(height, width)
        profile = self.trt_profile
        if profile is None:
            return tile
        (_, min_h, min_w), (_, max_h, max_w) = profile.min, profile.max
        if tile is None:
            if height <= max_h and width <= max_w:
                return None
            tile = (height, width)
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        return (max(min_h, min(th, max_h)), max(min_w, min(tw, max_w)))

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        spec = self._model
        if spec is not None and needs_fitting(spec, frames):  # a static-shape or fixed-batch network
            return run_fitted(frames, spec, self._infer)
        profile = self.trt_profile
        if profile is None:
            return self._run(frames)
        n, h, w, _ = frames.shape
        (min_n, min_h, min_w), (max_n, max_h, max_w) = profile.min, profile.max
        if h > max_h or w > max_w:
            raise ShapeError(
                f"a {w}x{h} input is larger than onnxruntime's TensorRT profile {profile.to_list()}; use --tile"
            )
        if h < min_h or w < min_w:
            # below the profile: pad with edge pixels to its minimum, upscale, crop the answer back
            padded = np.pad(frames, ((0, 0), (0, max(0, min_h - h)), (0, max(0, min_w - w)), (0, 0)), mode="edge")
            s = self.scale
            return np.ascontiguousarray(self._infer(padded)[:, : h * s, : w * s])
        if n < min_n:  # a profile whose batch starts above 1: pad with copies of the last frame
            padded = np.concatenate([frames, np.repeat(frames[-1:], min_n - n, axis=0)])
            return self._infer(padded)[:n]
        if n > max_n:
            return np.concatenate([self._infer(frames[i : i + max_n]) for i in range(0, n, max_n)])
        return self._run(frames)

    def _run(self, frames: np.ndarray, session: Any = None) -> np.ndarray:
        """``frames`` through ``session`` (the all-cores one unless a stream passes its own)."""
        try:
            if session is not None:
                return np.asarray(session.run(["output"], {"input": frames})[0])
            if self.on_gpu:
                binding = self.session.io_binding()
                binding.bind_cpu_input("input", frames)
                binding.bind_output("output", "cuda", self.device_index)  # the session's GPU, not GPU 0
                self.session.run_with_iobinding(binding)
                return np.asarray(binding.copy_outputs_to_cpu()[0])
            return np.asarray(self.session.run(["output"], {"input": frames})[0])
        except Exception as exc:
            raise ShapeError(f"onnxruntime failed on a {frames.shape} batch: {exc}; try --tile 256") from exc

    # ------------------------------------------------------------ streams (CPU)
    def _stream_limit(self, pixels: int) -> int:
        """Units of ``pixels`` input pixels each (a frame, or a fixed-batch network's batch) a stream may
        have submitted and not finished, or 0 for one call at a time.

        Every frame running holds its own working set in the stream session's arena, so as many run at
        once as the memory budget holds, at most ``streams`` (one per pool thread). With all of them
        running, as many again wait queued in the pool (an input frame each, no arena), so a thread that
        finishes starts its next frame at once while the consumer handles a result. When only one frame
        fits, one frame on one thread would be slower than today's path: 0, all cores on each frame."""
        fits = int(self.memory_budget // max(1.0, pixels * self.bytes_per_pixel))
        if fits >= self.streams:
            return 2 * self.streams
        return fits if fits >= 2 else 0

    def _submit(self, unit: np.ndarray, limit: int) -> Future[np.ndarray]:
        """Queue ``unit`` on the stream pool once fewer than ``limit`` submitted frames are unfinished."""
        assert self._pool is not None
        while True:
            running = [f for f in self._in_flight if not f.done()]
            if len(running) < limit:
                break
            wait(running, return_when=FIRST_COMPLETED)
        future = self._pool.submit(self._run, unit, self._stream_session)
        self._in_flight.append(future)
        return future

    def _collect(self, group: _Group) -> np.ndarray:
        """The results of one batch's frames, in order, each a fresh array (never a buffer shared with
        another frame); those frames are no longer in flight."""
        _, futures = group
        try:
            outs = [f.result() for f in futures]
        except CancelledError as exc:
            raise BackendStateError("the onnxruntime backend was closed while a stream was running") from exc
        finally:
            for f in futures:
                with contextlib.suppress(ValueError):
                    self._in_flight.remove(f)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _drain(self) -> None:
        """On an error or an abandoned stream: cancel what has not started and wait for what has, so nothing
        runs on after the generator is gone. Their own errors are dropped: the error that got us here is
        the one to report."""
        for f in self._in_flight:
            f.cancel()
        wait(list(self._in_flight))
        self._in_flight.clear()

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """On the CPU, every frame of every batch (or every fixed batch of a fixed-batch network) on the
        stream session, ``streams`` at once; results in input order, batches as they came. Frames that
        need tiling or padding to a static network's shape, or of which fewer than two fit the memory
        budget at once, go through ``upscale`` (all cores on each) after what is in flight. GPU providers,
        and one thread, keep one call after another."""
        self._require_open()
        if self._pool is None:
            yield from super().upscale_many(batches)
            return
        groups: deque[_Group] = deque()
        one_by_one = False  # after running out of memory with frames in flight: today's path from then on
        try:
            for raw in batches:
                batch = check_frames(raw)
                h, w = batch.shape[1:3]
                step = self.model.batch or 1  # a unit: one frame, or a fixed-batch network's batch
                whole_units = len(batch) % step == 0 and not needs_fitting(self.model, batch[:step])
                limit = 0
                if not one_by_one and whole_units and self._tile_size(h, w) is None:
                    limit = self._stream_limit(step * h * w)
                if limit == 0:
                    while groups:
                        one_by_one = yield from self._hand_out(groups, one_by_one)
                    yield self.upscale(batch)
                    continue
                # our own copy: a caller may refill the buffer it passed as soon as the generator asks for
                # the next batch, while this one is still running (one call at a time never had that hazard)
                if np.may_share_memory(batch, raw):  # check_frames copies only non-contiguous input
                    batch = np.array(batch, copy=True)
                groups.append((batch, [self._submit(batch[i : i + step], limit) for i in range(0, len(batch), step)]))
                # finished results count too: behind a slow first frame they would otherwise pile up
                while groups and (one_by_one or all(f.done() for f in groups[0][1]) or len(self._in_flight) > limit):
                    one_by_one = yield from self._hand_out(groups, one_by_one)
            while groups:
                one_by_one = yield from self._hand_out(groups, one_by_one)
        except BaseException:
            self._drain()
            raise

    def _hand_out(self, groups: deque[_Group], one_by_one: bool) -> Generator[np.ndarray, None, bool]:
        """Yield the oldest batch's result; whether the stream runs one call at a time from now on.

        A frame that runs out of memory with others in flight is not the end of a video: what is in flight
        is let go and that batch and every later one go through ``upscale``, which halves its tiles if even
        one frame at a time does not fit (as it did before streams)."""
        batch, _ = group = groups.popleft()
        if one_by_one:
            yield self.upscale(batch)
            return True
        try:
            out = self._collect(group)
        except (MemoryError, ShapeError) as exc:
            if not out_of_memory(exc):
                raise
            self._drain()
            self.notify(f"out of memory with {self.streams} frames at once; running one frame at a time")
            self._stop_streams()  # its arena never shrinks: the one-at-a-time calls need that memory back
            yield self.upscale(batch)
            return True
        yield out
        return False

    def _stop_streams(self) -> None:
        """Let a stream's queued frames go and its running ones finish, end the pool's threads and drop the
        stream session (and with it its memory arena)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._stream_session = None
        self.streams = 0

    def _close(self) -> None:
        self._stop_streams()

    def _release(self) -> None:
        self._in_flight.clear()
        self.streams = 0
        self._stream_session = None
        self._pool = None
        self.session = None
        self.providers = []
        self.graph_rewrites = 0
        self.on_gpu = False
        self.onnx = None
        self.provider = ""
        self.trt_profile = None
