"""Defects of the GPU path from the second review (issue 24), each shown on a CPU by what it does wrong:
the GPU an engine is built for, concurrent engine builds, Ray's GPU numbering, TF32 in fp32 engines
and TensorRT-RTX on a GPU it cannot target.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import srgan_deploy.export.tensorrt as trt_export
import srgan_deploy.gpu.cuda_rt as cuda_rt
from srgan_deploy.artifacts import ShapeProfile
from srgan_deploy.backends.options import OrtOptions, TensorRTOptions, TensorRTRtxOptions, TorchOptions
from srgan_deploy.backends.registry import Choice
from srgan_deploy.errors import BackendUnavailableError
from srgan_deploy.files import partial_path
from srgan_deploy.gpu.cuda_rt import GpuProperties
from srgan_deploy.gpu.trt_runtime import make_logger


def fake_flavour(name: str, **module: Any) -> trt_export.Flavour:
    return trt_export.Flavour(name, SimpleNamespace(__version__="0-test", **module))


def tiny_onnx(path: Path) -> Path:
    """A valid ONNX file (an Identity): the engine cache hashes and reads it; the fake builder ignores it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 8, 8, 3])
    y = helper.make_tensor_value_info("output", TensorProto.UINT8, [1, 8, 8, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# ----------------------------------------------------------------------------- 2: --device cuda:N


def test_a_runtime_built_engine_is_built_for_and_on_the_requested_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_weights: Path
) -> None:
    """Two different GPUs; the backend runs on cuda:1. The engine must be built for GPU 1 (its name and
    compute capability in the cache key) and on it (the builder's thread has GPU 1 current)."""
    from srgan_deploy.sources import Weights, engine_loader

    gpus = {0: GpuProperties("NVIDIA A100-SXM4-80GB", "8.0", 80 << 30), 1: GpuProperties("RTX 4090", "8.9", 24 << 30)}
    current = threading.local()  # the current device is per host thread, 0 until set
    monkeypatch.setattr(cuda_rt, "device_count", lambda: 2)
    monkeypatch.setattr(cuda_rt, "device_properties", lambda device=0: gpus[device])  # sets no device
    monkeypatch.setattr(cuda_rt, "set_device", lambda device: setattr(current, "device", device))
    built_on: list[int] = []

    def build(flavour: Any, onnx: Path, spec: Any, options: Any, log: Path) -> trt_export.BuildResult:
        built_on.append(getattr(current, "device", 0))
        return trt_export.BuildResult(b"PLAN", (), (), 0.0)

    monkeypatch.setattr(trt_export, "build_serialized", build)
    monkeypatch.setattr(trt_export.Flavour, "load", classmethod(lambda cls, name: fake_flavour(name)))
    loader = engine_loader(
        Weights(str(tiny_weights)), TensorRTOptions(device=1, precision="fp32"), "tensorrt", tmp_path, lambda m: None
    )
    artifacts: list[Any] = []
    worker = threading.Thread(target=lambda: artifacts.append(loader()))  # a fresh thread: nothing current
    worker.start()
    worker.join()
    (artifact,) = artifacts
    assert artifact.sidecar["spec"]["gpu_name"] == "RTX 4090"
    assert artifact.sidecar["spec"]["targets"] == ["SM89"]
    assert built_on == [1]


def test_a_gpu_that_is_not_there_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_rt, "device_count", lambda: 1)
    monkeypatch.setattr(cuda_rt, "device_properties", lambda device=0: GpuProperties("A", "8.9", 1))
    with pytest.raises(BackendUnavailableError, match="GPU 2 is not visible"):
        fake_flavour("tensorrt").default_targets(2)


# ----------------------------------------------------------------------------- 5: --workers N on TensorRT


def test_concurrent_writers_never_rename_each_others_temporary_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Writer B runs from start to end while writer A is between writing its temporary plan and renaming
    it: with one fixed temporary name B renames A's file away and A's rename fails."""
    spec = trt_export.EngineSpec(
        "ab" * 32, "tensorrt-rtx", "1", "aot", ("SM89",), "fp32", ShapeProfile.parse(None, None, None), "uint8", 1
    )
    paths = trt_export.EnginePaths.for_spec(tmp_path, spec)
    original = os.replace
    interleaved: list[bool] = []

    def replace(src: Any, dst: Any) -> None:
        if Path(src).read_bytes() == b"plan A" and not interleaved:  # A's plan is written, not yet renamed
            interleaved.append(True)
            other = threading.Thread(target=trt_export.write_engine, args=(paths, spec, b"plan B"))
            other.start()
            other.join()
        original(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    trt_export.write_engine(paths, spec, b"plan A")
    assert interleaved
    assert trt_export.cache_status(paths, spec) == (True, "cached engine matches")
    assert paths.plan.read_bytes() == b"plan A"
    assert not list(tmp_path.glob("*.partial"))


def _build_in_child(onnx: str, engine_dir: str, log: str, barrier: Any, results: Any) -> None:
    """One worker process: a builder that takes a second, then get_engine at the same moment as the other."""
    import srgan_deploy.export.tensorrt as export

    def slow_build(flavour: Any, source: Path, spec: Any, options: Any, log_path: Path) -> export.BuildResult:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return export.BuildResult(f"plan built by {os.getpid()}".encode(), (), (), 1.0)

    export.build_serialized = slow_build  # type: ignore[assignment]
    export.Flavour.load = classmethod(lambda cls, name: fake_flavour(name))  # type: ignore[method-assign, assignment]
    barrier.wait(timeout=120)
    plan, _, built = export.get_engine(
        Path(onnx),
        Path(engine_dir),
        "fp32",
        None,
        "uint8",
        export.BuildOptions(targets=("SM89",)),
        flavour="tensorrt-rtx",
        check_deserialize=False,
    )
    results.put((os.getpid(), str(plan), plan.read_bytes(), built, partial_path(plan).name))


def test_two_worker_processes_build_the_engine_once(tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    onnx = tiny_onnx(tmp_path / "m.onnx")
    log = tmp_path / "builds.log"
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    args = (str(onnx), str(tmp_path / "engines"), str(log), barrier, results)
    procs = [ctx.Process(target=_build_in_child, args=args) for _ in range(2)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert len(log.read_text().split()) == 1  # one build; the other process waited, then took the plan
    (pid_a, plan_a, bytes_a, built_a, tmp_a), (pid_b, plan_b, bytes_b, built_b, tmp_b) = got
    assert plan_a == plan_b and bytes_a == bytes_b and sorted([built_a, built_b]) == [False, True]
    assert tmp_a != tmp_b and str(pid_a) in tmp_a and str(pid_b) in tmp_b


def test_workers_get_the_plan_the_coordinator_built_once_per_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from srgan_deploy import sources
    from srgan_deploy.jobs.workers import WorkerSpec, with_built_engines, worker_specs

    built: list[int] = []

    def engine_loader(source: Any, options: Any, flavour: str, root: Path, notify: Any) -> Any:
        def load() -> Any:
            built.append(options.device)
            return SimpleNamespace(path=tmp_path / f"gpu{options.device}.plan")

        return load

    monkeypatch.setattr(sources, "engine_loader", engine_loader)
    choice = Choice("tensorrt", TensorRTOptions(cache_dir=tmp_path), "t")
    specs = worker_specs(choice, sources.Weights(None), 4, ["cuda:0", "cuda:1"])
    cpu = WorkerSpec(Choice("onnxruntime", OrtOptions(), "t"), sources.Weights(None))
    ready = with_built_engines([*specs, cpu], lambda message: None)
    assert sorted(built) == [0, 1]  # once per GPU, not once per worker
    assert [s.source for s in ready[:4]] == [sources.EnginePlan(tmp_path / f"gpu{d}.plan") for d in (0, 1, 0, 1)]
    assert ready[4] == cpu


# ----------------------------------------------------------------------------- 6: --ray with GPUs


def test_a_ray_gpu_actor_uses_the_gpu_ray_gave_it() -> None:
    from srgan_deploy.jobs.workers import WorkerSpec, on_gpu, ray_gpu_index
    from srgan_deploy.sources import Weights

    assert ray_gpu_index([3], "3") == 0  # Ray set CUDA_VISIBLE_DEVICES to the actor's one GPU
    assert ray_gpu_index(["1"], "0,1") == 1  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: its place in the list
    assert ray_gpu_index([2], None) == 2  # nothing hidden: Ray's ID is the device index
    assert ray_gpu_index([], "0") is None  # a CPU actor
    trt = WorkerSpec(Choice("tensorrt", TensorRTOptions(device=3), "t"), Weights(None))
    assert on_gpu(trt, 0).choice.options.device == 0  # type: ignore[union-attr]
    torch = WorkerSpec(Choice("torch", TorchOptions(device="cuda:3"), "t"), Weights(None))
    assert on_gpu(torch, 0).choice.options.device == "cuda:0"  # type: ignore[union-attr]
    cpu = WorkerSpec(Choice("torch", TorchOptions(device="cpu"), "t"), Weights(None))
    assert on_gpu(cpu, 0) == cpu


def test_the_ray_actor_body_renumbers_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The actor's own constructor (Ray runs it with CUDA_VISIBLE_DEVICES=3) opens its backend on device 0."""
    import srgan_deploy.backends.registry as registry
    from srgan_deploy.jobs import ray_pool
    from srgan_deploy.jobs.workers import WorkerSpec
    from srgan_deploy.sources import Weights

    opened: list[Any] = []

    class Opened:
        def open(self) -> None:
            pass

    def create(choice: Choice, source: Any, notify: Any = None) -> Opened:
        opened.append(choice.options.device)  # type: ignore[union-attr]
        return Opened()

    monkeypatch.setattr(ray_pool, "import_ray", lambda: SimpleNamespace(get_gpu_ids=lambda: [3]))
    monkeypatch.setattr(registry, "create", create)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    worker = ray_pool.SegmentWorker(WorkerSpec(Choice("tensorrt", TensorRTOptions(device=3), "t"), Weights(None)))
    del worker
    assert opened == [0]


# ----------------------------------------------------------------------------- 9: fp32 engines and TF32


class RecordingConfig:
    def __init__(self) -> None:
        self.flags = {"TF32"}  # TensorRT's default on Ampere and later
        self.pools: dict[str, int] = {}

    def clear_flag(self, flag: str) -> None:
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("fp16", True)])
def test_fp32_engines_are_built_without_tf32(precision: str, tf32: bool) -> None:
    flavour = fake_flavour(
        "tensorrt", BuilderFlag=SimpleNamespace(TF32="TF32"), MemoryPoolType=SimpleNamespace(WORKSPACE="ws")
    )
    config = RecordingConfig()
    flavour.configure(config, ("SM89",), 1024, precision)
    assert ("TF32" in config.flags) is tf32 and config.pools == {"ws": 1024 << 20}
    no_flag = fake_flavour("tensorrt", BuilderFlag=SimpleNamespace(), MemoryPoolType=SimpleNamespace(WORKSPACE="ws"))
    no_flag.configure(RecordingConfig(), ("SM89",), 1024, precision)  # a module without the flag: nothing to clear


def test_an_fp32_tensorrt_rtx_builder_config_has_tf32_cleared() -> None:
    """On NVIDIA's real builder config (TensorRT-RTX builds without a GPU): TF32 is on by default."""
    rtx = trt_export.Flavour.load("tensorrt-rtx")
    builder = rtx.module.Builder(make_logger(rtx.module))
    fp32, fp16 = builder.create_builder_config(), builder.create_builder_config()
    assert fp32.get_flag(rtx.module.BuilderFlag.TF32)
    rtx.configure(fp32, ("SM89",), 1024, "fp32")
    rtx.configure(fp16, ("SM89",), 1024, "fp16")
    assert not fp32.get_flag(rtx.module.BuilderFlag.TF32)
    assert fp16.get_flag(rtx.module.BuilderFlag.TF32)  # fp16 graphs keep fp32 only for the uint8 edges


# ----------------------------------------------------------------------------- 11: auto and TensorRT-RTX


@pytest.fixture
def gpu_box(monkeypatch: pytest.MonkeyPatch) -> dict[int, GpuProperties]:
    """A machine with TensorRT-RTX installed and a GPU, no full TensorRT, no CUDA onnxruntime or torch."""
    import srgan_deploy.backends.registry as registry
    from srgan_deploy.backends.trt import TensorRTBackend, TensorRTRtxBackend

    gpus: dict[int, GpuProperties] = {}
    monkeypatch.setattr(cuda_rt, "device_count", lambda: len(gpus))
    monkeypatch.setattr(cuda_rt, "has_cuda_python", lambda: True)
    monkeypatch.setattr(cuda_rt, "device_properties", lambda device=0: gpus[device])
    monkeypatch.setattr(TensorRTRtxBackend, "availability", classmethod(lambda cls: (True, "tensorrt_rtx 1.7")))
    monkeypatch.setattr(TensorRTBackend, "availability", classmethod(lambda cls: (False, "TensorRT is not installed")))
    monkeypatch.setattr(registry, "ort_has_cuda", lambda: False)
    monkeypatch.setattr(registry, "torch_has_cuda", lambda: False)
    return gpus


def test_auto_does_not_pick_tensorrt_rtx_on_a_gpu_it_cannot_target(gpu_box: dict[int, GpuProperties]) -> None:
    from srgan_deploy.backends.options import Request
    from srgan_deploy.backends.registry import availability, choose

    gpu_box[0] = GpuProperties("NVIDIA H100 80GB HBM3", "9.0", 80 << 30)
    assert choose("auto").name != "tensorrt-rtx"
    ok, why = availability()["tensorrt-rtx"]
    assert not ok and "H100" in why and "SM 9.0" in why
    with pytest.raises(BackendUnavailableError, match=r"cannot run on NVIDIA H100 .*use -b tensorrt") as info:
        choose("tensorrt-rtx")
    assert "\n" not in str(info.value)
    gpu_box[1] = GpuProperties("NVIDIA GeForce RTX 4090", "8.9", 24 << 30)  # a second GPU it can run on
    choice = choose("auto", Request(device="cuda:1"))
    assert choice.name == "tensorrt-rtx" and isinstance(choice.options, TensorRTRtxOptions)
    assert choice.options.device == 1
    gpu_box[0] = GpuProperties("Tesla V100-SXM2-16GB", "7.0", 16 << 30)
    assert choose("auto").name != "tensorrt-rtx"
