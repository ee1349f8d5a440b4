"""The GPU path end to end on the stand-in GPU (tests/standin): the real TensorRT / TensorRT-RTX backends,
slot pipeline, tiling, padding and engine build, against CUDA's and TensorRT's rules, with real pixels
compared to the torch reference. Marked ``standin``; runs in every ``make test``, never skipped.

What the stand-in cannot prove: kernel timing, the numerics of TensorRT's own fp16 kernels (it runs the
fp16-core graph in onnxruntime), driver quirks, and CUDA rules it does not model (see tests/standin).
"""

from __future__ import annotations

import ast
import gc
import inspect
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from srgan_deploy.errors import BackendStateError, EngineError, ShapeError
from tests.conftest import make_backend
from tests.standin import DeviceSpec, StandinGPU, install
from tests.standin import cuda as scuda

pytestmark = pytest.mark.standin
ROOT = Path(__file__).resolve().parents[1]
FP16_PSNR = 40.0  # dB against the fp32 torch reference: what an fp16 engine must keep (uint8 output)
FP16_MAX_ABS = 8  # uint8 levels; rounding at the boundary plus fp16 accumulation


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def frames_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    from tests.conftest import smooth_image

    return np.stack([smooth_image(h, w, seed + i) for i in range(n)])


@pytest.fixture(scope="session")
def micro_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-channel, 1-block x4 generator: the whole pipeline at 1080p in seconds on the CPU."""
    from srgan_deploy.config import ModelConfig
    from srgan_deploy.weights import save_generator
    from tests.conftest import make_generator

    path = tmp_path_factory.mktemp("micro") / "micro.safetensors"
    save_generator(make_generator(ModelConfig(scale=4, channels=2, blocks=1), seed=3), path, {"name": "micro"})
    return path


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> StandinGPU:
    return install(monkeypatch, [DeviceSpec(), DeviceSpec("NVIDIA GeForce RTX 4080", 8, 9, 16 * 2**30)])


_REFS: dict[tuple[str, tuple[int, ...], int], np.ndarray] = {}


def reference(weights: str | Path, frames: np.ndarray) -> np.ndarray:
    key = (str(weights), frames.shape, hash(frames.tobytes()))
    if key not in _REFS:
        with make_backend("torch", weights, device="cpu") as ref:
            _REFS[key] = ref.upscale(frames)
    return _REFS[key]


def check_parity(out: np.ndarray, ref: np.ndarray, padded_margin: int = 0) -> None:
    """Within the fp16 budget everywhere, except the band next to a padded bottom/right edge (a frame below a
    static engine's shape is padded, and the network's own zero padding then sits elsewhere): that band only
    has to stay close."""
    assert out.shape == ref.shape
    if padded_margin:
        assert psnr(out, ref) >= 25.0, f"PSNR {psnr(out, ref):.1f} dB against torch"
        out, ref = out[:, :-padded_margin, :-padded_margin], ref[:, :-padded_margin, :-padded_margin]
    assert psnr(out, ref) >= FP16_PSNR, f"PSNR {psnr(out, ref):.1f} dB against torch"
    assert int(np.abs(out.astype(int) - ref.astype(int)).max()) <= FP16_MAX_ABS


# ----------------------------------------------------------------------------- the stand-in is the real API


def _stub_signatures() -> dict[str, int]:
    """Function name -> positional arity, from the stubs generated off cuda-bindings (typings/cuda)."""
    tree = ast.parse((ROOT / "typings/cuda/bindings/runtime.pyi").read_text())
    return {
        node.name: len(node.args.posonlyargs) + len(node.args.args)
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }


def test_the_cuda_standin_has_the_bindings_names_and_arity() -> None:
    stubs = _stub_signatures()
    own = [n for n, f in inspect.getmembers(scuda.StandinCudart, inspect.isfunction) if n.startswith("cuda")]
    assert len(own) > 25
    for name in own:
        assert name in stubs, f"{name} is not a cuda-bindings runtime function"
        params = inspect.signature(getattr(scuda.StandinCudart, name)).parameters
        assert len(params) - 1 == stubs[name], f"{name}: arity {len(params) - 1}, the binding's {stubs[name]}"
    # and every cudart call the product makes is one the stand-in implements
    used = set()
    for path in (ROOT / "srgan_deploy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cudart":
                used.add(node.attr)
    missing = {n for n in used if n.startswith("cuda") and not hasattr(scuda.StandinCudart, n)}
    assert not missing, f"the product calls cudart functions the stand-in lacks: {missing}"


def test_the_tensorrt_standin_uses_the_real_runtime_names() -> None:
    import tensorrt_rtx_bindings as rtx

    from tests.standin import tensorrt as strt

    pairs = [
        (strt.StandinRuntime, rtx.Runtime),
        (strt.StandinEngine, rtx.ICudaEngine),
        (strt.StandinContext, rtx.IExecutionContext),
        (strt.StandinRuntimeConfig, rtx.IRuntimeConfig),
        (strt.StandinRuntimeCache, rtx.IRuntimeCache),
    ]
    for standin, real in pairs:
        names = [n for n in vars(standin) if not n.startswith("_") and n not in ("engine", "device", "flavour")]
        for name in names:
            if name in ("header", "onnx", "io", "profiles", "contexts", "runtime", "logger", "cache", "blob"):
                continue  # the stand-in's own state
            if name in ("shapes", "addresses", "compiled", "settled", "state", "executions", "released"):
                continue
            assert hasattr(real, name), f"{standin.__name__}.{name} is not in TensorRT-RTX's {real.__name__}"


# ----------------------------------------------------------------------------- the stand-in enforces the rules


def test_streams_are_lazy_and_events_order_host_reads(gpu: StandinGPU) -> None:
    from srgan_deploy.gpu import cuda_rt

    stream, event = cuda_rt.Stream(), cuda_rt.Event()
    host_in, host_out, dev = cuda_rt.PinnedBuffer(16), cuda_rt.PinnedBuffer(16), cuda_rt.DeviceBuffer(16)
    host_in.array[:] = 7
    cuda_rt.copy_h2d_async(dev, host_in, 16, stream)
    cuda_rt.copy_d2h_async(host_out, dev, 16, stream)
    event.record(stream)
    assert (host_out.array == 0).all(), "a read before the event is synchronized sees stale bytes"
    host_in.array[:] = 9  # overwritten before the copy ran: the copy takes the new bytes, as DMA would
    event.synchronize()
    assert (host_out.array == 9).all()
    for item in (host_in, host_out):
        item.free()
    dev.free()
    event.destroy()
    stream.destroy()
    gpu.assert_released()


def test_the_current_device_is_per_thread_and_kernels_check_it(gpu: StandinGPU) -> None:
    from srgan_deploy.gpu import cuda_rt

    cuda_rt.set_device(1)
    stream = cuda_rt.Stream()
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(cuda_rt.current_device()))
    worker.start()
    worker.join()
    assert seen == [0] and cuda_rt.current_device() == 1
    cuda_rt.set_device(0)
    with pytest.raises(scuda.CudaFault, match="device 1"), gpu.cudart._lock:
        gpu.cudart.launch(stream.handle, "kernel", lambda: None)
    event = cuda_rt.Event()  # device 0
    with pytest.raises(EngineError, match="cudaErrorInvalidResourceHandle"):
        event.record(stream)
    with pytest.raises(EngineError, match="cudaErrorInvalidDevice"):
        cuda_rt.set_device(2)
    event.destroy()
    stream.destroy()


def test_device_memory_is_counted_and_capture_refuses_synchronizing_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from srgan_deploy.gpu import cuda_rt

    gpu = install(monkeypatch, [DeviceSpec(memory=1 << 20)])
    a = cuda_rt.DeviceBuffer(600 << 10)
    with pytest.raises(EngineError, match="cudaErrorMemoryAllocation"):
        cuda_rt.DeviceBuffer(600 << 10)
    a.free()
    stream = cuda_rt.Stream()
    with pytest.raises(EngineError, match="cudaErrorStreamCaptureInvalidated"):
        cuda_rt.Graph.capture(stream, stream.synchronize)
    stream.destroy()
    gpu.assert_released()


# ----------------------------------------------------------------------------- backends: property tests

CASES = [
    # (backend, model, frames (n, h, w), request options)
    ("tensorrt", "tiny", (1, 16, 16), {}),
    ("tensorrt-rtx", "tiny", (3, 17, 33), {}),
    ("tensorrt", "tiny", (2, 64, 96), {"slots": 3}),
    ("tensorrt", "micro", (1, 1080, 1920), {}),  # the review's crash: 1080p at default settings
    ("tensorrt-rtx", "micro", (1, 1080, 1920), {"memory_budget": 256 * 2**20}),
    ("tensorrt", "micro", (1, 721, 1283), {"memory_budget": 8 * 2**30}),
    ("tensorrt", "tiny", (2, 100, 150), {"tile": 64}),
    ("tensorrt-rtx", "tiny", (1, 40, 300), {"tile": 96, "slots": 1}),
    ("tensorrt", "tiny", (5, 32, 48), {"max_shape": (48, 64)}),
    ("tensorrt", "tiny", (1, 130, 70), {"max_shape": (64, 64)}),
    ("tensorrt", "srgan-x4-lite", (1, 90, 160), {}),
    ("tensorrt-rtx", "srgan-x4", (1, 45, 80), {"device": "cuda:1"}),
    ("tensorrt", "srgan-x4-lite", (2, 60, 200), {"device": "cuda:1", "tile": 64}),
]


@pytest.mark.parametrize(
    ("name", "model", "shape", "options"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES]
)
def test_gpu_backends_match_torch_inside_the_rules(
    gpu: StandinGPU,
    tiny_weights: Path,
    micro_weights: Path,
    cache_dir: Path,
    name: str,
    model: str,
    shape: tuple[int, ...],
    options: dict[str, Any],
) -> None:
    weights: str | Path = {"tiny": tiny_weights, "micro": micro_weights}.get(model, model)
    frames = frames_of(*shape)
    big = shape[1] * shape[2] > 500_000  # big frames run once (onnxruntime on 2 cores), small ones streamed too
    device = options.get("device", "cuda")
    want = int(device.split(":")[1]) if ":" in device else 0
    backend = make_backend(name, weights, cache_dir=cache_dir, **{**options, "device": device})
    with backend:
        out = backend.upscale(frames)
        streamed = [out[:1], out] if big else list(backend.upscale_many([frames[:1], frames]))
        if model == "srgan-x4":  # 1.3 GB of host-budget estimate per 416x704 tile: still several per call
            assert backend._tiles_per_call(416, 704) >= 2
        tile = options.get("tile")
        padded = tile is not None and min(shape[1:]) < tile
        margin = backend.overlap * backend.scale if padded else 0
    check_parity(out, reference(weights, frames), margin)
    assert np.array_equal(streamed[1], out) and np.array_equal(streamed[0], out[:1])
    assert gpu.devices_used() == {want}, f"resources on {gpu.devices_used()}, asked for cuda:{want}"
    assert not gpu.errors, gpu.errors
    assert all(e.spin_waits == 0 for e in gpu.cudart.events), "events must block, not spin"
    gpu.assert_released()


def test_batch_profiles_above_one_are_padded(gpu: StandinGPU, tiny_weights: Path, tmp_path: Path) -> None:
    from srgan_deploy.artifacts import ShapeProfile
    from srgan_deploy.export.onnx import export_onnx
    from srgan_deploy.export.tensorrt import BuildOptions, get_engine

    onnx = export_onnx(str(tiny_weights), tmp_path / "t.onnx", io="uint8").path
    profile = ShapeProfile((2, 16, 16), (4, 32, 32), (4, 64, 64))
    plan, _, _ = get_engine(onnx, tmp_path, "fp16", profile, "uint8", BuildOptions(), flavour="tensorrt")
    frames = frames_of(7, 40, 50)
    with make_backend("tensorrt", plan, device="cuda") as backend:
        out = backend.upscale(frames)
        single = backend.upscale(frames[:1])
        many = list(backend.upscale_many([frames[:3], frames[3:4]]))
    check_parity(out, reference(tiny_weights, frames))
    assert np.array_equal(single, out[:1]) and np.array_equal(np.concatenate(many), out[:4])
    assert not gpu.errors, gpu.errors
    gpu.assert_released()


def test_a_thread_other_than_opens_runs_on_the_requested_gpu(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    """The video pipeline opens the backend in one thread and upscales in another: CUDA's current device is
    per thread, so each entry point must set it."""
    frames = frames_of(1, 32, 32)
    results: list[Any] = []
    with make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda:1") as backend:
        worker = threading.Thread(target=lambda: results.append(backend.upscale(frames)))
        worker.start()
        worker.join()
    assert len(results) == 1 and isinstance(results[0], np.ndarray), gpu.errors
    check_parity(results[0], reference(tiny_weights, frames))
    assert gpu.devices_used() == {1}


def test_the_rtx_runtime_config_outlives_its_context_and_graphs_are_the_runtimes(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    frames = frames_of(2, 64, 64)
    with make_backend("tensorrt-rtx", tiny_weights, cache_dir=cache_dir, device="cuda", tile=64) as backend:
        gc.collect()  # a config only the context pointed at would be gone now
        for _ in range(3):
            out = backend.upscale(frames)
        contexts = [slot.compute.context for slot in backend.pipeline.slots]  # type: ignore[attr-defined]
        strategies = {c._config_ref().cuda_graph_strategy.name for c in contexts}
    check_parity(out, reference(tiny_weights, frames))
    assert strategies == {"WHOLE_GRAPH_CAPTURE"}
    assert not gpu.errors, gpu.errors


def test_tensorrt_engines_replay_cuda_graphs_per_shape(gpu: StandinGPU, tiny_weights: Path, cache_dir: Path) -> None:
    frames = frames_of(1, 64, 64)
    with make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda", tile=64, slots=1) as backend:
        outs = [backend.upscale(frames) for _ in range(4)]
    assert len(gpu.cudart.graphs) == 1, "one graph for the one static shape"
    assert all(np.array_equal(o, outs[0]) for o in outs)
    check_parity(outs[0], reference(tiny_weights, frames))


def test_cuda_graphs_run_only_after_one_plain_enqueue_since_the_shape_changed(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    """Images of several sizes through one context: NVIDIA's rule is one plain enqueueV3 after every input
    shape change before a graph of that shape is captured or replayed (the shape's set-up is in no graph)."""
    small, wide = frames_of(1, 32, 32), frames_of(1, 24, 40, seed=5)
    order = [small, small, small, wide, wide, small, wide, small, small]
    with make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda", slots=1) as backend:
        outs = [backend.upscale(f) for f in order]
        assert backend.pipeline.slots[0].compute.use_graphs, gpu.errors  # type: ignore[attr-defined]
    assert not gpu.errors, gpu.errors
    assert len(gpu.cudart.graphs) == 2, "one graph per shape, replayed after the shape's plain run"
    for frames, out in zip(order, outs, strict=True):
        check_parity(out, reference(tiny_weights, frames))
    gpu.assert_released()


def test_k_batches_stay_in_flight_while_the_consumer_works(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    frames = frames_of(1, 32, 32)
    in_flight: list[int] = []
    with make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda", slots=3) as backend:
        streams = [slot.stream.raw for slot in backend.pipeline.slots]  # type: ignore[attr-defined]
        for _ in backend.upscale_many(frames for _ in range(8)):
            in_flight.append(sum(s.submitted > s.done for s in streams))
    assert in_flight[:5] == [3] * 5, f"batches queued on the GPU while the consumer held a result: {in_flight}"


def test_a_refused_shape_enqueues_nothing_and_says_what_tensorrt_said(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    with make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda", slots=1, max_shape=(48, 64)) as b:
        slot = b.pipeline.slots[0]  # type: ignore[attr-defined]
        with pytest.raises(ShapeError, match=r"TensorRT: .*outside the optimization profile"):
            slot.start(np.zeros((1, 8, 8, 3), np.uint8))  # the profile starts at 16x16
        assert slot.stream.raw.submitted == 0, "a copy was enqueued for a shape the engine refuses"


def test_a_context_tensorrt_cannot_make_fails_in_tensorrts_words(
    monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    """Another process takes the GPU's memory between our check and the context (defect 10): the error says
    what TensorRT logged, and nothing stays allocated."""
    from tests.standin import tensorrt as strt

    gpu = install(monkeypatch, [DeviceSpec()])
    make = strt.StandinEngine.create_execution_context

    def after_another_process(engine: Any, config: Any = None) -> Any:
        free = gpu.cudart.devices[0].memory - gpu.cudart.used[0]
        gpu.cudart.charge(0, free - 2**20)
        try:
            return make(engine, config)
        finally:
            gpu.cudart.charge(0, -(free - 2**20))

    monkeypatch.setattr(strt.StandinEngine, "create_execution_context", after_another_process)
    with pytest.raises(EngineError, match=r"could not create an execution context \(TensorRT: Requested amount of GPU"):
        make_backend("tensorrt", tiny_weights, cache_dir=tmp_path, device="cuda").open()
    gpu.assert_released()


def test_an_engine_that_fails_to_run_says_what_tensorrt_said(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    """enqueueV3 returning false (defect 10): one EngineError carrying TensorRT's last log line."""
    from tests.standin import tensorrt as strt

    with make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda", slots=1) as backend:
        backend.upscale(frames_of(1, 32, 32))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                strt.StandinContext,
                "execute_async_v3",
                lambda self, stream: self._error("IExecutionContext::enqueueV3: an illegal memory access"),
            )
            with pytest.raises(EngineError, match=r"could not run the engine \(TensorRT: .*illegal memory access"):
                backend.upscale(frames_of(1, 32, 32))
    gpu.assert_released()


def test_results_outlive_close_and_a_late_generator_touches_no_freed_memory(
    gpu: StandinGPU, tiny_weights: Path, cache_dir: Path
) -> None:
    frames = frames_of(1, 32, 32)
    backend = make_backend("tensorrt", tiny_weights, cache_dir=cache_dir, device="cuda")
    backend.open()
    gen = backend.upscale_many(frames for _ in range(5))
    first = next(gen)
    kept = first.copy()
    slot = backend.pipeline.slots[0]
    backend.close()
    assert np.array_equal(first, kept), "a result handed out must not be a view of pinned memory"
    with pytest.raises(BackendStateError):
        slot.finish()
    del gen
    gc.collect()  # the abandoned generator's cleanup must not touch the freed slots
    assert not [f for f in gpu.cudart.faults if "IllegalAddress" in f]
    gpu.assert_released()


def test_the_gpu_size_shapes_the_profile_and_a_big_plan_gets_fewer_slots(
    monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = frames_of(1, 64, 64)
    sizes = {}
    for memory in (24 * 2**30, 2 * 2**30, 400 * 2**20):
        gpu = install(monkeypatch, [DeviceSpec(memory=memory)])
        cache = tmp_path / str(memory)
        with make_backend("tensorrt", tiny_weights, cache_dir=cache, device="cuda", slots=3) as backend:
            sizes[memory] = backend.profile.max[1:]  # type: ignore[attr-defined]
            assert len(backend.pipeline.slots) == 3  # type: ignore[attr-defined]
            check_parity(backend.upscale(frames), reference(tiny_weights, frames))
            if memory == 24 * 2**30:
                big_plan = backend.artifact.path  # type: ignore[attr-defined]
        gpu.assert_released()
    assert sizes[24 * 2**30] == (1088, 1920)  # 1080p input runs whole
    assert sizes[2 * 2**30] == (540, 960)
    assert sizes[400 * 2**20][0] < 540
    install(monkeypatch, [DeviceSpec(memory=2 * 2**30)])
    with make_backend("tensorrt", big_plan, device="cuda", slots=3) as backend:  # fewer slots, and said
        assert len(backend.pipeline.slots) == 1  # type: ignore[attr-defined]
        check_parity(backend.upscale(frames), reference(tiny_weights, frames))
    assert "holds 1 of 3 slots" in capsys.readouterr().err
    install(monkeypatch, [DeviceSpec(memory=256 * 2**20)])
    with pytest.raises(EngineError, match="smaller --max-shape"):
        make_backend("tensorrt", big_plan, device="cuda").open()


def test_a_plan_for_another_gpu_is_refused_with_tensorrts_words(
    monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    install(monkeypatch, [DeviceSpec(), DeviceSpec("NVIDIA H100", 9, 0, 80 * 2**30)])
    with make_backend("tensorrt", tiny_weights, cache_dir=tmp_path, device="cuda:0") as backend:
        plan = backend.artifact.path  # type: ignore[attr-defined]
    with pytest.raises(EngineError, match=r"TensorRT: .*built for"):
        make_backend("tensorrt", plan, device="cuda:1").open()


# ----------------------------------------------------------------------------- the CLI on the stand-in


def test_cli_upscale_and_video_run_on_the_standin(gpu: StandinGPU, tiny_weights: Path, tmp_path: Path) -> None:
    import av
    from typer.testing import CliRunner

    from srgan_deploy.cli import app
    from tests.clips import make_clip

    runner = CliRunner()
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), frames_of(1, 70, 90)[0][:, :, ::-1])
    env = {"SRGAN_DEPLOY_CACHE": str(tmp_path / "cache")}
    result = runner.invoke(
        app, ["upscale", str(image), "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "-b", "tensorrt"], env=env
    )
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "out").iterdir()
    assert cv2.imread(str(written)).shape == (280, 360, 3)
    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=64, height=48)
    out = tmp_path / "x4.mp4"
    result = runner.invoke(app, ["video", str(clip), str(out), "-w", str(tiny_weights), "-b", "tensorrt-rtx"], env=env)
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (192, 256, 3)
    assert gpu.cudart.kernels > 6
    assert not gpu.errors, gpu.errors


# ----------------------------------------------------------------------------- torch on CUDA (the slot path)


@pytest.mark.parametrize("device", ["cuda:0", "cuda:1"])
def test_torch_cuda_slots_live_on_the_requested_gpu(
    gpu: StandinGPU, monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, device: str
) -> None:
    from tests.standin import install_torch_cuda

    install_torch_cuda(monkeypatch, gpu)
    frames = frames_of(3, 24, 40)
    results: list[np.ndarray] = []
    with make_backend("torch", tiny_weights, device=device, precision="fp32") as backend:
        out = backend.upscale(frames)
        # a second thread (as the video pipeline's upscale thread), batches growing past the first
        worker = threading.Thread(target=lambda: results.extend(backend.upscale_many([frames[:1], frames, frames[1:]])))
        worker.start()
        worker.join()
    ref = reference(tiny_weights, frames)
    assert int(np.abs(out.astype(int) - ref.astype(int)).max()) <= 1
    assert [r.shape[0] for r in results] == [1, 3, 2] and np.array_equal(results[1], out)
    assert gpu.devices_used() == {int(device[-1])}
    assert gpu.cudart.faults == []
    gpu.assert_released()


def test_export_with_verification_on_a_gpu_deserializes_the_plan_at_most_twice(
    gpu: StandinGPU, tiny_weights: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from srgan_deploy.cli import app

    args = ["export", "-w", str(tiny_weights), "-o", str(tmp_path / "out"), "--format", "tensorrt"]
    env = {"SRGAN_DEPLOY_CACHE": str(tmp_path / "cache")}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "tensorrt vs PyTorch" in result.output, result.output  # the engine ran on the stand-in, compared
    first = gpu.flavours["tensorrt"].deserialized
    assert first == 1, "a fresh build is verified once"
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "taken from the cache" in result.output
    assert gpu.flavours["tensorrt"].deserialized - first <= 2, "cache check + verification, nothing more"


def test_export_verifies_its_plan_on_the_registrys_backend_and_plan_loader(
    gpu: StandinGPU, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The written plan runs the way ``upscale -w PLAN`` runs it: the backend ``registry.create`` makes, on
    the loader a plan file gets; no backend of the export command's own (fp32: the exact-parity branch)."""
    import srgan_deploy.backends.registry as registry
    from srgan_deploy.export.command import ExportRequest, run_export
    from srgan_deploy.sources import EnginePlan

    made: list[tuple[str, Any, str]] = []
    create = registry.create

    def recording(choice: Any, source: Any = None, notify: Any = None) -> Any:
        made.append((choice.name, source, choice.options.precision))
        return create(choice, source, notify)

    monkeypatch.setattr(registry, "create", recording)
    monkeypatch.setenv("SRGAN_DEPLOY_CACHE", str(tmp_path / "cache"))
    request = ExportRequest(out_dir=tmp_path / "out", weights=str(tiny_weights), fmt="tensorrt", precision="fp32")
    report = run_export(request)
    assert report.engine is not None and report.engine.parent == tmp_path / "out" and report.engine_built
    assert made == [("tensorrt", EnginePlan(report.engine), "fp32")]
    assert len(report.engine_parity) == 2 and all(p.within_one >= 0.999 for p in report.engine_parity)
    assert not gpu.errors, gpu.errors
    gpu.assert_released()


def test_frames_beyond_the_profile_get_the_fewest_pixels_of_tiles_and_keep_the_slots_busy(
    gpu: StandinGPU, micro_weights: Path, cache_dir: Path
) -> None:
    from srgan_deploy.tiling import TilePlan

    frames = frames_of(1, 1080, 1920)
    opts = {"cache_dir": cache_dir, "device": "cuda", "max_shape": (540, 960), "slots": 2}
    with make_backend("tensorrt", micro_weights, **opts) as backend:
        tile = backend._tile_size(1080, 1920)
        assert tile is not None and tile[0] <= 540 and tile[1] <= 960
        plan = TilePlan.for_frame(1080, 1920, tile, backend.overlap)
        computed = plan.count * tile[0] * tile[1]
        assert computed <= 1.2 * 1080 * 1920, f"{tile}: {computed / (1080 * 1920):.2f}x the frame's pixels"
        depth: list[int] = []
        streams = [slot.stream.raw for slot in backend.pipeline.slots]  # type: ignore[attr-defined]
        original = gpu.cudart.run_until

        def watch(stream: Any, target: int) -> None:
            depth.append(sum(s.submitted - s.done > 0 for s in streams))
            original(stream, target)

        gpu.cudart.run_until = watch  # type: ignore[method-assign]
        out = backend.upscale(frames)
    check_parity(out, reference(micro_weights, frames))
    assert max(depth) == 2, "tiles of one frame went through the slots one at a time"


def test_gpu_workers_split_their_gpus_memory_not_the_hosts(gpu: StandinGPU) -> None:
    from srgan_deploy.backends.options import TensorRTOptions
    from srgan_deploy.backends.registry import Choice
    from srgan_deploy.jobs.workers import parse_devices, worker_specs
    from srgan_deploy.sources import Weights

    specs = worker_specs(Choice("tensorrt", TensorRTOptions(), "t"), Weights(None), 3, parse_devices("cuda:0,cuda:1"))
    budgets = [(s.choice.options.device, s.choice.options.memory_budget) for s in specs]  # type: ignore[union-attr]
    share = int(24 * 2**30 * 0.6)
    assert budgets == [(0, share // 2), (1, None), (0, share // 2)]  # GPU 1's worker has it to itself
    many = worker_specs(Choice("tensorrt", TensorRTOptions(), "t"), Weights(None), 12, parse_devices("cuda:0"))
    assert {s.choice.options.memory_budget for s in many} == {share // 12}  # type: ignore[union-attr]


def test_torch_running_out_of_gpu_memory_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tiny_weights: Path
) -> None:
    """On a GPU the plan follows the GPU's free memory (not the host's): a frame too large for it is tiled and
    comes out right. torch's CUDA OutOfMemoryError (a RuntimeError) when the memory goes anyway, e.g. to
    another process, reaches the user as the project's typed error that says what to do, not a traceback."""
    from tests.standin import install_torch_cuda

    gpu = install(monkeypatch, [DeviceSpec(memory=8 * 2**20)])
    install_torch_cuda(monkeypatch, gpu)
    big = frames_of(1, 96, 96)
    with make_backend("torch", tiny_weights, device="cuda", precision="fp32", slots=1) as backend:
        assert backend.memory_budget <= 0.8 * 8 * 2**20
        assert backend.memory_plan(96, 96).tile is not None
        assert int(np.abs(backend.upscale(big).astype(int) - reference(tiny_weights, big).astype(int)).max()) <= 1
        taken = gpu.cudart.devices[0].memory - gpu.cudart.used[0] - 1024  # another process takes the GPU
        gpu.cudart.used[0] += taken
        with pytest.raises((ShapeError, EngineError), match=r"out of GPU memory.*--tile"):
            backend.upscale(big)  # torch's own error, or CUDA's for the slot buffers: both say what to do
        gpu.cudart.used[0] -= taken
        small = frames_of(1, 24, 24)
        ref = reference(tiny_weights, small)
        assert int(np.abs(backend.upscale(small).astype(int) - ref.astype(int)).max()) <= 1  # still usable
    gpu.assert_released()
