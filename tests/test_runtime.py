from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from srgan_deploy.backends.options import OrtOptions, Request
from srgan_deploy.backends.registry import choose
from srgan_deploy.backends.torch import TorchBackend
from srgan_deploy.bench import BenchConfig, gemm_peak_gflops, input_for_output, model_gflops, parse_size, run_bench
from srgan_deploy.cli import app
from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import (
    BackendUnavailableError,
    ConfigError,
    EngineError,
    ShapeError,
    UnknownBackendError,
)
from srgan_deploy.gpu.inflight import SlotPipeline
from srgan_deploy.metrics import psnr
from srgan_deploy.tiling import TilePlan, upscale_tiled
from tests.conftest import make_backend, smooth_image


@pytest.fixture(scope="module")
def torch_ref(tiny_weights: Path) -> TorchBackend:
    backend = make_backend("torch", str(tiny_weights), device="cpu")
    backend.open()
    return backend


def frames_of(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    n, h, w = shape
    return np.stack([smooth_image(h, w, seed + i) for i in range(n)])


@pytest.mark.parametrize("shape", [(1, 37, 53), (2, 21, 17), (1, 1, 1)])
def test_onnxruntime_matches_torch(
    tiny_weights: Path, cache_dir: Path, torch_ref: TorchBackend, shape: tuple[int, int, int]
) -> None:
    frames = frames_of(shape)
    with make_backend("onnxruntime", str(tiny_weights), cache_dir=cache_dir, device="cpu") as ort_backend:
        out = ort_backend.upscale(frames)
        assert ort_backend.graph_rewrites == 5  # head + 2 blocks + 2 upsample PReLUs of the tiny model
    ref = torch_ref.upscale(frames)
    assert out.shape == ref.shape == (shape[0], shape[1] * 4, shape[2] * 4, 3)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.001


def test_bicubic_backend_is_plain_resize(tiny_weights: Path) -> None:
    import cv2

    frame = frames_of((1, 10, 12))
    with make_backend("bicubic", str(tiny_weights)) as backend:
        out = backend.upscale(frame)
    assert np.array_equal(out[0], cv2.resize(frame[0], (48, 40), interpolation=cv2.INTER_CUBIC))


# ----------------------------------------------------------------------------- tiling


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    tile=st.integers(2 * 12 + 1, 48),
)
def test_tiled_equals_untiled(torch_ref: TorchBackend, h: int, w: int, tile: int) -> None:
    radius = torch_ref.info.config.receptive_radius
    frames = frames_of((1, h, w), seed=h * 100 + w)
    whole = torch_ref._infer(frames)
    plan = TilePlan.for_frame(h, w, tile, radius)
    tiled = upscale_tiled(frames, plan, torch_ref._infer, 4)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1  # float reassociation across tile sizes


def test_tiles_are_all_full_size_and_cover_the_frame() -> None:
    plan = TilePlan.for_frame(100, 70, 40, 6)
    for start, a, b in plan.rows:
        assert (
            start >= 0
            and start + 40 <= 100
            and start <= a - (6 if a else 0)
            and b + (6 if b < 100 else 0) <= start + 40
        )
    assert plan.rows[0][1] == 0 and plan.rows[-1][2] == 100
    assert all(plan.rows[i][2] == plan.rows[i + 1][1] for i in range(len(plan.rows) - 1))


def test_too_small_overlap_changes_the_result(torch_ref: TorchBackend) -> None:
    frames = frames_of((1, 60, 60))
    whole = torch_ref._infer(frames)
    plan = TilePlan.for_frame(60, 60, 26, 2)
    tiled = upscale_tiled(frames, plan, torch_ref._infer, 4)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() > 1  # the radius matters


def test_tile_smaller_than_twice_the_overlap_is_refused() -> None:
    with pytest.raises(ConfigError, match="too small"):
        TilePlan.for_frame(100, 100, 20, 12)


def test_backend_tiles_automatically_with_tile_option(tiny_weights: Path) -> None:
    frames = frames_of((1, 50, 41))
    with make_backend("torch", str(tiny_weights), device="cpu", tile=30) as tiled:
        out = tiled.upscale(frames)
    with make_backend("torch", str(tiny_weights), device="cpu") as whole:
        ref = whole.upscale(frames)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


# ----------------------------------------------------------------------------- auto choice


def test_auto_picks_the_fastest_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import srgan_deploy.backends.registry as registry

    def fake(avail: dict[str, bool], ort_cuda: bool = False, cuda: bool = False, gpu: str | None = None) -> str:
        names = ("tensorrt", "tensorrt-rtx", "onnxruntime", "openvino", "torch", "bicubic")
        table = {name: (avail.get(name, False), "x") for name in names}
        monkeypatch.setattr(registry, "availability", lambda *a: table)
        monkeypatch.setattr(registry, "ort_has_cuda", lambda: ort_cuda)
        monkeypatch.setattr(registry, "torch_has_cuda", lambda: cuda)
        monkeypatch.setattr(registry, "gpu_name", lambda *a: gpu)
        monkeypatch.setattr(registry, "cpu_has_bf16", lambda: True)
        choice = choose("auto", Request())
        device = getattr(choice.options, "device", "cpu")
        return (
            f"{choice.name}/{'cuda' if isinstance(device, int) else device}/{getattr(choice.options, 'precision', '-')}"
        )

    everything = {"tensorrt": True, "tensorrt-rtx": True, "onnxruntime": True, "openvino": True, "torch": True}
    assert fake(everything, True, True, gpu="NVIDIA H100 80GB HBM3") == "tensorrt/cuda/fp16"
    assert fake(everything, True, True, gpu="NVIDIA GeForce RTX 4090") == "tensorrt-rtx/cuda/fp16"
    assert (
        fake({**everything, "tensorrt-rtx": False}, True, True, gpu="NVIDIA GeForce RTX 4090") == "tensorrt/cuda/fp16"
    )
    no_trt = {**everything, "tensorrt": False, "tensorrt-rtx": False}
    assert fake(no_trt, True, True) == "onnxruntime/cuda/fp16"
    assert fake(no_trt, False, True) == "torch/cuda/fp16"
    assert fake(no_trt, False, False) == "openvino/cpu/bf16"
    assert fake({**no_trt, "openvino": False}) == "onnxruntime/cpu/fp32"
    assert fake({**no_trt, "openvino": False, "onnxruntime": False}) == "torch/cpu/fp32"
    with pytest.raises(BackendUnavailableError):
        fake({"bicubic": True})


def test_unknown_and_unavailable_backends() -> None:
    with pytest.raises(UnknownBackendError, match="unknown backend"):
        choose("warp", Request())
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        choose("tensorrt", Request())


def test_engine_file_without_sidecar_is_refused(tmp_path: Path) -> None:
    from srgan_deploy.artifacts import EngineArtifact

    plan = tmp_path / "other.plan"
    plan.write_bytes(b"x")
    with pytest.raises(EngineError, match="sidecar"):
        EngineArtifact.from_plan(plan)
    plan.with_suffix(".json").write_text("{not json")
    with pytest.raises(EngineError, match="not a valid engine sidecar"):
        EngineArtifact.from_plan(plan)


def test_bad_frames_are_refused(torch_ref: TorchBackend) -> None:
    with pytest.raises(ShapeError):
        torch_ref.upscale(np.zeros((1, 8, 8, 4), np.uint8))
    with pytest.raises(ShapeError):
        torch_ref.upscale(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ShapeError):
        torch_ref.upscale(np.zeros((0, 8, 8, 3), np.uint8))


# ----------------------------------------------------------------------------- slot pipeline


class ThreadSlot:
    """A fake device slot: its 'stream' is a one-thread executor, so work really runs asynchronously."""

    def __init__(self, index: int, log: list[tuple[str, int]], lock: threading.Lock) -> None:
        self.index = index
        self.stream = ThreadPoolExecutor(max_workers=1)
        self.future: Future[np.ndarray] | None = None
        self.host_in = np.zeros((4, 8, 8, 3), np.uint8)  # reused buffer, like pinned memory
        self.log = log
        self.lock = lock

    def start(self, frames: np.ndarray) -> None:
        assert self.future is None, "slot reused before its result was collected"
        n = frames.shape[0]
        self.host_in[:n] = frames
        tag = int(frames[0, 0, 0, 0])

        def work() -> np.ndarray:
            time.sleep(0.002 * ((tag * 7) % 5))  # completions out of order across slots
            with self.lock:
                self.log.append(("compute", tag))
            return self.host_in[:n].repeat(2, axis=1).repeat(2, axis=2).copy()

        self.future = self.stream.submit(work)

    def finish(self) -> np.ndarray:
        assert self.future is not None
        out = self.future.result()
        self.future = None
        return out

    def close(self) -> None:
        self.stream.shutdown()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pipeline_returns_frames_in_order_with_k_in_flight(k: int) -> None:
    log: list[tuple[str, int]] = []
    lock = threading.Lock()
    slots = [ThreadSlot(i, log, lock) for i in range(k)]
    pipeline = SlotPipeline(list(slots))
    batches = [np.full((1 + i % 3, 8, 8, 3), i, np.uint8) for i in range(12)]
    outputs = list(pipeline.run(batches))
    pipeline.close()
    assert [int(o[0, 0, 0, 0]) for o in outputs] == list(range(12))
    assert all(o.shape == (b.shape[0], 16, 16, 3) for o, b in zip(outputs, batches, strict=True))
    if k > 1:
        order = [tag for _, tag in log]
        assert order != sorted(order) or k == 1  # computations really overlapped / reordered


def test_pipeline_drains_when_the_consumer_stops_early() -> None:
    log: list[tuple[str, int]] = []
    slots = [ThreadSlot(i, log, threading.Lock()) for i in range(2)]
    pipeline = SlotPipeline(list(slots))
    gen = pipeline.run(np.full((1, 8, 8, 3), i, np.uint8) for i in range(10))
    assert int(next(gen)[0, 0, 0, 0]) == 0
    gen.close()
    assert all(s.future is None for s in slots)  # nothing left in flight
    pipeline.close()


# ----------------------------------------------------------------------------- bench


def test_size_parsing() -> None:
    assert parse_size("480x270") == (270, 480)
    assert input_for_output("1080p", 4) == (270, 480)
    with pytest.raises(ConfigError):
        parse_size("480")
    with pytest.raises(ConfigError):
        input_for_output("1081x3", 4)


def test_gflops_of_the_paper_model() -> None:
    # 64x16 at 240x135: ~144 GFLOP (2 x MACs of every convolution)
    assert model_gflops(ModelConfig(), 135, 240) == pytest.approx(143.7, rel=0.01)


def test_bench_json_schema(
    tiny_weights: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRGAN_DEPLOY_CACHE", str(cache_dir))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "-w",
            str(tiny_weights),
            "-b",
            "onnxruntime,torch",
            "--input",
            "24x16",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"machine", "results"}
    keys = {
        "backend",
        "device",
        "input",
        "batch",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "fps",
        "gflops",
        "peak_gflops",
        "peak_fraction",
        "psnr_vs_torch",
        "max_abs_vs_torch",
    }
    assert [r["backend"] for r in data["results"]] == ["onnxruntime", "torch"]
    for r in data["results"]:
        assert keys <= set(r)
        assert r["input"] == [16, 24] and r["batch"] == 1
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["fps"] > 0
        assert 0 < r["peak_fraction"] < 1.5 and r["peak_gflops"] > 0
        assert r["peak_precision"] == "fp32"  # both compute in fp32: measured against the fp32 GEMM
    assert isinstance(data["machine"]["cpu_features"], list)
    assert data["results"][1]["psnr_vs_torch"] == 99.0 and data["results"][1]["max_abs_vs_torch"] == 0
    assert data["results"][0]["max_abs_vs_torch"] <= 1
    if Path("/proc/self/status").exists():  # per-backend peak memory, measured in the same run
        assert all(100 < r["extra"]["peak_rss_mb"] < 24_000 for r in data["results"])


def test_bench_measures_bf16_against_the_bf16_peak(tiny_weights: Path) -> None:
    """A bf16 run is a fraction of the same-run bf16 GEMM (not '257 % of the fp32 peak')."""
    from srgan_deploy.backends.registry import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 instructions")
    report = run_bench(
        BenchConfig(("openvino",), 16, 24, weights=str(tiny_weights), precision="bf16", warmup=1, iters=2)
    )
    (r,) = report["results"]
    assert r["peak_precision"] == "bf16" and "bf16" in r["device"]
    fp32_peak = gemm_peak_gflops("cpu", seconds=0.3)
    assert r["peak_gflops"] > 1.2 * fp32_peak  # a bf16 GEMM runs well above the fp32 one on bf16 CPUs
    assert 0 < r["peak_fraction"] < 1.0


def test_bench_rejects_unknown_backend(tiny_weights: Path) -> None:
    with pytest.raises(UnknownBackendError):
        run_bench(BenchConfig(("warp",), 8, 8, weights=str(tiny_weights)))


def test_psnr_helper() -> None:
    a = np.zeros((4, 4), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(48.13, abs=0.01)


def test_zero_stride_batch_views_are_normalised() -> None:
    from srgan_deploy.backends.base import check_frames

    image = np.zeros((5, 7, 3), np.uint8)
    view = image[None]
    assert check_frames(view).strides == (105, 21, 3, 1)


def test_the_memory_budget_bounds_tiles_and_tile_batches(tiny_weights: Path) -> None:
    """A small budget: the planner's tile and batch fit it, and the stitched output equals the untiled one."""
    frames = frames_of((1, 70, 93))
    with make_backend("torch", str(tiny_weights), device="cpu", memory_budget=2**30) as whole:
        reference = whole.upscale(frames)
        per_pixel = whole.bytes_per_pixel
    cases = (  # (budget, user tile, planned tile, tiles per call)
        (10 * 2**20, None, None, 1),  # the whole 70x93 frame needs 8.3 MiB: fits
        (6 * 2**20, None, (48, 93), 1),  # not in 6 MiB: two tiles (the fewest computed pixels that fit)
        (6 * 2**20, 32, (32, 32), 4),  # a user tile: the budget decides how many go into one call
    )
    for budget, user_tile, tile, batch in cases:
        calls: list[tuple[int, ...]] = []
        with make_backend("torch", str(tiny_weights), device="cpu", memory_budget=budget, tile=user_tile) as backend:
            chosen = backend.memory_plan(70, 93)
            inner = backend._infer

            def spy(batch_frames: np.ndarray, inner: Any = inner, calls: list[Any] = calls) -> np.ndarray:
                calls.append(batch_frames.shape)
                return inner(batch_frames)

            backend._infer = spy  # type: ignore[method-assign]
            out = backend.upscale(frames)
        assert (chosen.tile, chosen.batch) == (tile, batch), (budget, chosen)
        if tile is None:
            assert calls == [frames.shape]
        else:
            assert all(c[1:3] == tile for c in calls)
            assert max(c[0] for c in calls) == batch
            assert batch * tile[0] * tile[1] * per_pixel <= budget
        assert np.array_equal(out, reference)


def test_onnxruntime_execution_providers_follow_what_is_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from srgan_deploy.backends.ort import OnnxRuntimeBackend

    def providers(available: list[str], **options: object) -> list[object]:
        monkeypatch.setattr(ort, "get_available_providers", lambda: available)
        backend = OnnxRuntimeBackend(OrtOptions(cache_dir=tmp_path, **options), lambda: None)  # type: ignore[arg-type, return-value]
        return backend._providers()

    assert providers(["CPUExecutionProvider"], device="cpu") == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers(gpu, device="cpu") == ["CPUExecutionProvider"]
    chosen = providers(gpu, device="cuda:1", precision="fp32")
    names = [p[0] if isinstance(p, tuple) else p for p in chosen]
    assert names == gpu
    trt_options = chosen[0][1]  # type: ignore[index]
    assert trt_options["device_id"] == 1 and trt_options["trt_fp16_enable"] is False
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "ort-tensorrt")
    assert providers(gpu[1:], device="cuda")[0] == ("CUDAExecutionProvider", {"device_id": 0})
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        providers(["CPUExecutionProvider"], device="cuda")


def test_cpu_prelu_rewrite_keeps_the_function(tiny_weights: Path, tmp_path: Path) -> None:
    """PReLU -> BatchNormalization + Relu + Add: same outputs; slopes above 1 are left as PReLU."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from srgan_deploy.backends.ort_graph import prelu_as_batchnorm
    from srgan_deploy.export.onnx import export_onnx

    path = export_onnx(tiny_weights, tmp_path / "m.onnx", io="float32").path
    original = onnx.load(str(path))
    prelus = [n for n in original.graph.node if n.op_type == "PRelu"]
    steep = "steep_slopes"  # give one layer slopes > 1: that PReLU must stay
    original.graph.initializer.append(numpy_helper.from_array(np.full((8, 1, 1), 1.5, np.float32), steep))
    prelus[1].input[1] = steep
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert prelu_as_batchnorm(rewritten) == len(prelus) - 1
    assert [n.input[1] for n in rewritten.graph.node if n.op_type == "PRelu"] == [steep]
    onnx.checker.check_model(rewritten)
    names = {i.name for i in rewritten.graph.initializer}
    assert not any(n.startswith("onnx::PRelu") for n in names)  # replaced slopes pruned (no ORT warnings)
    x = np.random.default_rng(0).random((2, 3, 13, 11), dtype=np.float32)
    outputs = []
    for proto in (original, rewritten):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"input": x})[0])
    assert np.abs(outputs[0] - outputs[1]).max() < 1e-5


# ----------------------------------------------------------------------------- openvino

# bf16 budget vs torch fp32 (python -m benchmarks.openvino_budget, both bundled models): natural photos and
# video frames 53.3-57.5 dB, <= 3 levels; worst case a 1-px checkerboard, 51.2 dB and 6 levels
OPENVINO_BF16_BUDGET_DB = 45.0
OPENVINO_BF16_MAX_LEVELS = 8


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_matches_torch_within_its_budget(
    tiny_weights: Path, cache_dir: Path, torch_ref: TorchBackend, precision: str
) -> None:
    frames = frames_of((2, 23, 31))
    with make_backend("openvino", str(tiny_weights), precision=precision, cache_dir=cache_dir) as backend:
        out = backend.upscale(frames)
        # the precision is set explicitly: OpenVINO's own default is bf16 on CPUs that have it
        got = backend.inference_precision()
        assert got == {"fp32": "f32", "bf16": "bf16"}[precision]
        streamed = list(backend.upscale_many([frames[:1], frames[1:], frames[:1]]))
    ref = torch_ref.upscale(frames)
    assert out.shape == ref.shape
    assert np.array_equal(np.concatenate(streamed[:2]), out) and np.array_equal(streamed[2], out[:1])
    diff = np.abs(out.astype(int) - ref.astype(int))
    if precision == "fp32":
        assert diff.max() <= 1
    else:
        assert psnr(ref, out) >= OPENVINO_BF16_BUDGET_DB and diff.max() <= OPENVINO_BF16_MAX_LEVELS


def test_openvino_streams_keep_order_shapes_and_results_apart(tiny_weights: Path, cache_dir: Path) -> None:
    """More frames than requests, two frame sizes interleaved, a several-frame batch: each result equals the
    frame's own latency-path result, results stay put after later frames ran (fresh output arrays, not a
    request's reused buffer), and compiled shapes stay bounded."""
    from srgan_deploy.backends.openvino import SHAPES_KEPT

    small, big = frames_of((5, 19, 23), seed=1), frames_of((3, 26, 30), seed=7)
    stream = [small[0:1], big[0:1], small[1:3], big[1:2], small[3:4], big[2:3], small[4:5]]
    with make_backend("openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir) as backend:
        alone = [np.concatenate([backend.upscale(b[i : i + 1]) for i in range(len(b))]) for b in stream]
        got, kept = [], []
        for out in backend.upscale_many(iter(stream)):
            got.append(out)
            kept.append(out.copy())  # as it was when yielded
        assert all(np.array_equal(a, b) for a, b in zip(got, kept, strict=True))
        assert [g.shape for g in got] == [a.shape for a in alone]
        assert all(np.array_equal(g, a) for g, a in zip(got, alone, strict=True))
        assert np.array_equal(backend.upscale(small), np.concatenate([alone[i] for i in (0, 2, 4, 6)]))
        for side in range(8, 8 + 2 * SHAPES_KEPT, 2):  # many shapes: the compiled ones stay bounded
            backend.upscale(frames_of((2, side, side)))
        modes = [mode for mode, _ in backend._compiled]
        assert modes.count("throughput") <= SHAPES_KEPT and modes.count("latency") <= SHAPES_KEPT


def test_openvino_streams_never_hold_more_frames_than_the_memory_budget(tiny_weights: Path, cache_dir: Path) -> None:
    """On a many-core CPU the THROUGHPUT hint asks for many streams, each holding a frame: the budget caps
    them (here to one), and the frames still come out right."""
    frames = frames_of((3, 40, 40), seed=5)
    with make_backend("openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir) as probe:
        per_frame = 40 * 40 * probe.bytes_per_pixel
        alone = probe.upscale(frames)
    budget = int(1.5 * per_frame)
    with make_backend(
        "openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir, memory_budget=budget
    ) as backend:
        out = np.concatenate(list(backend.upscale_many(frames[i : i + 1] for i in range(3))))
        compiled = backend._compiled["throughput", (1, 40, 40, 3)]
        assert len(compiled.requests) == 1 and backend.streams_and_threads(compiled)[0] == 1
    assert np.array_equal(out, alone)


def test_openvino_abandoned_stream_leaves_nothing_running(tiny_weights: Path, cache_dir: Path) -> None:
    frames = frames_of((6, 17, 21), seed=3)
    with make_backend("openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir) as backend:
        stream = backend.upscale_many(frames[i : i + 1] for i in range(6))
        first = next(stream)
        stream.close()  # the consumer stops early (Ctrl-C in a video job)
        assert not backend._in_flight
        assert all(len(c.idle) == len(c.requests) for c in backend._compiled.values())
        assert np.array_equal(first, backend.upscale(frames[:1]))  # still usable
        assert len(list(backend.upscale_many(frames[i : i + 1] for i in range(6)))) == 6


def test_openvino_close_waits_for_requests_still_writing(tiny_weights: Path, cache_dir: Path) -> None:
    """A stream its caller still holds when the backend closes: close waits for every started request, so
    none writes into an output array after the backend (and the arrays' owners) let go."""
    frames = frames_of((6, 64, 64), seed=4)
    backend = make_backend("openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir)
    backend.open()
    stream = backend.upscale_many(frames[i : i + 1] for i in range(6))
    next(stream)
    started = list(backend._in_flight)
    assert started, "the stream keeps requests in flight"
    backend.close()
    assert all(job.done for job in started) and not backend._in_flight
    stream.close()


def test_openvino_a_frame_of_another_size_does_not_hold_back_the_stream(tiny_weights: Path, cache_dir: Path) -> None:
    """One frame of size A, then many of size B: A's result comes out while B frames are still being read,
    not after the whole input (which would keep every result in memory)."""
    a, b = frames_of((1, 20, 24), seed=8), frames_of((12, 18, 18), seed=9)
    read = []

    def frames() -> Any:
        yield a
        for i in range(len(b)):
            read.append(i)
            yield b[i : i + 1]

    with make_backend("openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir) as backend:
        stream = backend.upscale_many(frames())
        first = next(stream)
        assert first.shape == (1, 80, 96, 3) and len(read) <= 4, f"{len(read)} frames read before the first result"
        rest = list(stream)
        assert len(rest) == 12 and np.array_equal(np.concatenate(rest), backend.upscale(b))


def test_openvino_keeps_its_requests_and_cache_through_failures(
    tiny_weights: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure before a request starts does not lose the request; compiled shapes stay within the budget;
    OpenVINO's reason (not its source-file line) reaches the message."""
    from srgan_deploy.backends.openvino import reason

    frames = frames_of((3, 30, 30), seed=2)
    with make_backend("openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir) as backend:
        want = np.concatenate(list(backend.upscale_many(frames[i : i + 1] for i in range(3))))
        real = backend._output_for
        calls = iter([True])
        monkeypatch.setattr(
            backend,
            "_output_for",
            lambda u: (_ for _ in ()).throw(MemoryError("no")) if next(calls, False) else real(u),
        )
        with pytest.raises(MemoryError):
            list(backend.upscale_many(frames[i : i + 1] for i in range(3)))
        compiled = backend._compiled["throughput", (1, 30, 30, 3)]
        assert len(compiled.idle) == len(compiled.requests)
        assert np.array_equal(np.concatenate(list(backend.upscale_many(frames[i : i + 1] for i in range(3)))), want)
        per_pixel = backend.bytes_per_pixel
    budget = int(3 * 40 * 40 * per_pixel)  # three 40x40 frames' working sets
    with make_backend(
        "openvino", str(tiny_weights), precision="fp32", cache_dir=cache_dir, memory_budget=budget
    ) as backend:
        for side in (24, 32, 36, 40, 30):  # each fits alone; together they would not
            backend.upscale(frames_of((1, side, side)))
            assert sum(c.cost for c in backend._compiled.values()) <= budget
        assert len(backend._compiled) < 5
    text = "Exception from src/inference/src/cpp/core.cpp:117:\nException from src/x.cpp:9:\nFailed to allocate 4662000000 bytes\n"
    assert reason(RuntimeError(text)) == "Failed to allocate 4662000000 bytes"


def test_openvino_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ConfigError, match="fp32, bf16 or int8"):
        choose("openvino", Request(precision="fp16"))
    with pytest.raises(ConfigError, match="CPU"):
        choose("openvino", Request(device="cuda"))


# ----------------------------------------------------------------------------- onnxruntime CPU streams


class _CountingSession:
    """Stands in front of an onnxruntime session: counts runs and the threads they ran on."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs = 0
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.runs += 1
            self.threads.add(threading.get_ident())
        return self.session.run(*args, **kwargs)


def test_onnxruntime_streams_keep_order_shapes_and_results_apart(tiny_weights: Path, cache_dir: Path) -> None:
    """Frames of a stream run on the one-thread stream session, two at once; every result equals the frame's
    own one-call result, in input order across interleaved sizes, a several-frame batch and a frame that
    needs tiling (today's path, between streamed ones); results stay put after later frames ran."""
    small, big = frames_of((5, 19, 23), seed=1), frames_of((3, 26, 30), seed=7)
    wide = frames_of((1, 20, 70), seed=11)  # wider than --tile 64: tiled, not streamed
    stream = [small[0:1], big[0:1], small[1:3], wide, big[1:2], small[3:4], big[2:3], small[4:5]]
    with make_backend("onnxruntime", str(tiny_weights), device="cpu", threads=2, tile=64, cache_dir=cache_dir) as b:
        assert b.streams == 2 and b.device_label == "cpu x2, 2 streams"
        assert b._stream_session.get_session_options().intra_op_num_threads == 1
        alone = [np.concatenate([b.upscale(x[i : i + 1]) for i in range(len(x))]) for x in stream]
        counted = b._stream_session = _CountingSession(b._stream_session)
        got, kept = [], []
        for out in b.upscale_many(iter(stream)):
            got.append(out)
            kept.append(out.copy())  # as it was when yielded
        assert counted.runs == 8  # every frame but the tiled one, one run each
        assert len(counted.threads) <= 2 and threading.get_ident() not in counted.threads
        assert not b._in_flight
        buffer = np.empty_like(small[:1])

        def refilled() -> Any:  # a reader that reuses one buffer: frames in flight must not see it change
            for i in range(5):
                buffer[:] = small[i : i + 1]
                yield buffer

        reused = np.concatenate(list(b.upscale_many(refilled())))
        assert np.array_equal(reused, np.concatenate([alone[i] for i in (0, 2, 5, 7)]))
    assert all(np.array_equal(g, k) for g, k in zip(got, kept, strict=True))
    assert [g.shape for g in got] == [a.shape for a in alone]
    assert all(np.array_equal(g, a) for g, a in zip(got, alone, strict=True))


def test_onnxruntime_one_frame_uses_every_core(tiny_weights: Path, cache_dir: Path) -> None:
    """An image (``upscale`` of one frame) runs on the all-cores session in the caller's thread; a stream
    whose frames do not fit twice in the memory budget does too; one thread means no stream session."""
    frames = frames_of((3, 17, 21), seed=5)
    with make_backend("onnxruntime", str(tiny_weights), device="cpu", threads=2, cache_dir=cache_dir) as b:
        assert b.session.get_session_options().intra_op_num_threads == 2
        main, streamed = _CountingSession(b.session), _CountingSession(b._stream_session)
        b.session, b._stream_session = main, streamed
        b.upscale(frames[:1])
        assert (main.runs, streamed.runs) == (1, 0) and main.threads == {threading.get_ident()}
        list(b.upscale_many(frames[i : i + 1] for i in range(3)))
        assert (main.runs, streamed.runs) == (1, 3)
        b._budget = int(17 * 21 * b.bytes_per_pixel * 1.5)  # one frame fits the budget, two do not
        list(b.upscale_many(frames[i : i + 1] for i in range(3)))
        assert (main.runs, streamed.runs) == (4, 3)
    with make_backend("onnxruntime", str(tiny_weights), device="cpu", threads=1, cache_dir=cache_dir) as b:
        assert b.streams == 0 and b._pool is None and b._stream_session is None
        assert len(list(b.upscale_many(frames[i : i + 1] for i in range(3)))) == 3


def test_onnxruntime_abandoned_or_failing_stream_leaves_nothing_running(tiny_weights: Path, cache_dir: Path) -> None:
    frames = frames_of((8, 17, 21), seed=3)
    with make_backend("onnxruntime", str(tiny_weights), device="cpu", threads=2, cache_dir=cache_dir) as b:
        assert b._pool is not None
        submitted: list[Future[np.ndarray]] = []
        submit = b._pool.submit

        def spy(*args: Any, **kwargs: Any) -> Future[np.ndarray]:
            future = submit(*args, **kwargs)
            submitted.append(future)
            return future

        b._pool.submit = spy  # type: ignore[method-assign]
        real = b._stream_session

        class Slow(_CountingSession):  # frames take a while, so several are in flight when the consumer stops
            def run(self, *args: Any, **kwargs: Any) -> Any:
                time.sleep(0.05)
                return super().run(*args, **kwargs)

        b._stream_session = slow = Slow(real)
        stream = b.upscale_many(frames[i : i + 1] for i in range(8))
        first = next(stream)
        assert len(submitted) > 1  # more were in flight
        stream.close()  # the consumer stops early (Ctrl-C in a video job)
        assert not b._in_flight and all(f.done() for f in submitted)
        runs = slow.runs
        time.sleep(0.2)
        assert slow.runs == runs < 8  # nothing queued started later; the rest of the input was never read
        b._stream_session = real
        assert np.array_equal(first, b.upscale(frames[:1]))  # still usable
        assert len(list(b.upscale_many(frames[i : i + 1] for i in range(8)))) == 8

        def broken() -> Any:  # the input fails mid-stream, frames in flight
            yield from (frames[i : i + 1] for i in range(3))
            raise ValueError("decoder died")

        with pytest.raises(ValueError, match="decoder died"):
            list(b.upscale_many(broken()))
        assert not b._in_flight and all(f.done() for f in submitted)

        class Failing(_CountingSession):  # the third frame fails inside onnxruntime, others in flight
            def __init__(self, session: Any, error: str) -> None:
                super().__init__(session)
                self.error = error

            def run(self, *args: Any, **kwargs: Any) -> Any:
                with self.lock:
                    self.runs += 1
                    if self.runs == 3:
                        raise RuntimeError(self.error)
                return self.session.run(*args, **kwargs)

        b._stream_session = Failing(real, "kernel failed")
        with pytest.raises(ShapeError, match="kernel failed"):  # a typed error, nothing left running
            list(b.upscale_many(frames[i : i + 1] for i in range(8)))
        assert not b._in_flight and all(f.done() for f in submitted)
        # out of memory with frames in flight: the rest of the stream one call at a time, results unchanged
        b._stream_session = failing = Failing(real, "Failed to allocate memory for requested buffer")
        said: list[str] = []
        b.notify = said.append
        got = list(b.upscale_many(frames[i : i + 1] for i in range(8)))
        assert np.array_equal(np.concatenate(got), np.concatenate([b.upscale(frames[i : i + 1]) for i in range(8)]))
        assert failing.runs >= 3 and said == ["out of memory with 2 frames at once; running one frame at a time"]
        assert not b._in_flight
        b._stream_session = real
        assert len(list(b.upscale_many(frames[i : i + 1] for i in range(8)))) == 8
    assert b._pool is None and b._stream_session is None and b.streams == 0


def test_a_containers_cpu_quota_caps_the_threads_and_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker --cpus=2 on a big host: affinity lists every host CPU, the cgroup quota says 2."""
    from srgan_deploy import cpus as ort

    cpu_max = tmp_path / "cpu.max"
    for text, want in (("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)):
        cpu_max.write_text(text)
        assert ort.cpu_quota(cpu_max) == want
    assert ort.cpu_quota(tmp_path / "missing") is None
    cpu_max.write_text("100000 100000")
    monkeypatch.setattr(ort, "CPU_MAX", cpu_max)
    assert ort.usable_cpus() == 1 and ort.physical_core_count() == 1
