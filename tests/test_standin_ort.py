"""The onnxruntime backend on a stand-in of onnxruntime-gpu (tests/standin/ort.py): the TensorRT provider's
profile is enforced as onnxruntime enforces it, and the pixels are real (the CPU session underneath).

Issue 24, defect 4: the TensorRT provider gets an explicit profile (batch 1..1, 64x64..540x960) but the
backend never split, padded or clamped to it. Defect 12: its cache folder was not created, so the
provider quietly did not load, and nothing said so.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from srgan_deploy.backends.options import OrtOptions
from srgan_deploy.backends.ort import TRT_PROFILE
from srgan_deploy.backends.registry import Choice, create
from srgan_deploy.sources import OnnxFile
from tests.conftest import TINY, smooth_image
from tests.standin import ort as standin

pytestmark = pytest.mark.standin

SCALE = TINY.scale


@pytest.fixture(scope="module")
def onnx_path(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from srgan_deploy.export.onnx import cached_onnx

    return cached_onnx(str(tiny_weights), tmp_path_factory.mktemp("onnx"), io="uint8")


def reference(onnx_path: Path, frames: np.ndarray) -> np.ndarray:
    """The same graph on the real CPU session, whole frames, one at a time."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["output"], {"input": f[None]})[0] for f in frames])


def frames_of(n: int, h: int, w: int) -> np.ndarray:
    return np.stack([smooth_image(h, w, seed) for seed in range(n)])


def gpu_backend(onnx_path: Path, cache: Path, **options: Any) -> Any:
    settings: dict[str, Any] = {"device": "cuda", "precision": "fp32", "cache_dir": cache, **options}
    return create(Choice("onnxruntime", OrtOptions(**settings), "test"), OnnxFile(onnx_path))


def assert_inside_profile(session: standin.StandinSession) -> None:
    assert session.profile is not None, "the TensorRT provider did not load"
    lo, hi = session.profile[0]["input"], session.profile[1]["input"]
    assert session.shapes
    for shape in session.shapes:
        assert all(a <= v <= b for a, v, b in zip(lo, shape, hi, strict=True)), (shape, lo, hi)


def close_enough(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape
    assert int(np.abs(out.astype(np.int16) - ref.astype(np.int16)).max()) <= 1


def test_batches_and_frames_larger_than_the_profile_are_split_and_tiled(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = standin.install(monkeypatch).sessions
    frames = frames_of(2, 700, 90)  # two frames (max batch 1), taller than the profile's 540
    assert TRT_PROFILE.max == (1, 540, 960)
    with gpu_backend(onnx_path, tmp_path) as backend:
        out = backend.upscale(frames)
    (session,) = sessions
    assert_inside_profile(session)
    close_enough(out, reference(onnx_path, frames))  # tiles overlap by the receptive radius: exact stitching


def test_a_user_tile_runs_one_tile_per_call(onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = standin.install(monkeypatch).sessions
    frames = frames_of(1, 300, 300)
    with gpu_backend(onnx_path, tmp_path, tile=256) as backend:
        out = backend.upscale(frames)  # the tiler batches up to 8 tiles per call; the profile takes 1
    assert_inside_profile(sessions[0])
    close_enough(out, reference(onnx_path, frames))


def test_a_memory_plan_tuple_tile_is_clamped_into_the_profile(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = standin.install(monkeypatch).sessions
    frames = frames_of(1, 1200, 40)
    with gpu_backend(onnx_path, tmp_path, memory_budget=64 * 2**20) as backend:
        planned = backend.memory_plan(1200, 40).tile
        assert isinstance(planned, tuple) and planned[0] > TRT_PROFILE.max[1]  # what the planner alone gives
        out = backend.upscale(frames)
    assert_inside_profile(sessions[0])
    close_enough(out, reference(onnx_path, frames))


def test_frames_under_the_profile_minimum_are_padded_and_cropped_back(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = standin.install(monkeypatch).sessions
    _, min_h, min_w = TRT_PROFILE.min
    h, w = max(1, min_h - 3), max(1, min_w - 2)
    frames = frames_of(3, h, w)
    with gpu_backend(onnx_path, tmp_path) as backend:
        out = backend.upscale(frames)
    assert_inside_profile(sessions[0])
    assert out.shape == (3, h * SCALE, w * SCALE, 3)
    # what the graph gives for the frame edge-padded to the profile's minimum, cropped back to the frame
    padded = np.pad(frames, ((0, 0), (0, min_h - h), (0, min_w - w), (0, 0)), mode="edge")
    close_enough(out, reference(onnx_path, padded)[:, : h * SCALE, : w * SCALE])


def test_the_tensorrt_cache_folder_is_made_and_the_loaded_provider_reported(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = standin.install(monkeypatch).sessions
    cache = tmp_path / "fresh" / "cache"  # nothing of it exists yet: onnxruntime would make one level only
    with gpu_backend(onnx_path, cache) as backend:
        assert (cache / "ort-tensorrt").is_dir()
        assert sessions[0].get_providers()[0] == standin.TRT
        assert backend.device_label == "cuda:0 Tensorrt"


def test_a_provider_that_did_not_load_is_said_and_its_profile_not_applied(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    session_type = standin.install(monkeypatch)
    monkeypatch.setattr(session_type, "trt_fails", True)
    frames = frames_of(2, 4, 5)  # below any TensorRT profile's minimum, and a batch of 2
    with gpu_backend(onnx_path, tmp_path, device="cuda:1") as backend:
        assert backend.device_label == "cuda:1 CUDA"
        out = backend.upscale(frames)
    assert "asked for Tensorrt but runs on CUDA" in capsys.readouterr().err
    assert session_type.sessions[0].shapes == [(2, 4, 5, 3)]  # CUDA takes any shape: nothing padded or split
    close_enough(out, reference(onnx_path, frames))


@pytest.mark.parametrize(
    ("double", "real", "names"),
    [
        (
            standin.StandinSession,
            onnxruntime.InferenceSession,
            ["__init__", "run", "io_binding", "run_with_iobinding", "get_providers"],
        ),
        (standin.StandinBinding, onnxruntime.IOBinding, ["bind_cpu_input", "bind_output", "copy_outputs_to_cpu"]),
    ],
)
def test_the_stand_in_has_the_real_onnxruntime_api(double: type, real: type, names: list[str]) -> None:
    for name in names:
        mine = inspect.signature(getattr(double, name)).parameters
        theirs = inspect.signature(getattr(real, name)).parameters
        assert list(mine) == list(theirs), name
        assert [p.kind for p in mine.values()] == [p.kind for p in theirs.values()], name
        defaults = {k: p.default for k, p in theirs.items() if p.default is not inspect.Parameter.empty}
        assert {k: mine[k].default for k in defaults} == defaults, name


def test_the_tensorrt_provider_builds_under_an_interprocess_lock(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers N processes would build into one engine cache at once; onnxruntime locks only threads."""
    import fcntl

    seen: list[bool] = []
    original = standin.StandinSession.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        with (tmp_path / "cache" / "ort-tensorrt" / "build.lock").open("a+b") as other:  # as another process would
            try:
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(other.fileno(), fcntl.LOCK_UN)
                seen.append(False)
            except BlockingIOError:
                seen.append(True)
        original(self, *args, **kwargs)

    standin.install(monkeypatch)
    monkeypatch.setattr(standin.StandinSession, "__init__", spy)
    with gpu_backend(onnx_path, tmp_path / "cache"):
        pass
    assert seen == [True]


def test_a_changed_model_under_the_same_file_name_gets_its_own_tensorrt_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime names a cached TensorRT engine by the model's file name and graph structure, not its weights
    (its docs: clean the engine cache when the model changes): a retrained model exported to the same file name
    must not run on the engine of the old weights."""
    from srgan_deploy.export.onnx import export_onnx
    from srgan_deploy.weights import save_generator
    from tests.conftest import make_generator

    standin.install(monkeypatch)
    frames = frames_of(1, 32, 32)
    outs, refs = [], []
    for seed in (1, 2):
        weights = tmp_path / f"run{seed}" / "tiny.safetensors"
        weights.parent.mkdir()
        save_generator(make_generator(seed=seed), weights, {"name": "tiny"})
        onnx = export_onnx(str(weights), tmp_path / f"run{seed}" / "model.onnx", io="uint8").path
        with gpu_backend(onnx, tmp_path / "cache") as backend:
            outs.append(backend.upscale(frames))
        refs.append(reference(onnx, frames))
    assert not np.array_equal(refs[0], refs[1])
    close_enough(outs[0], refs[0])
    close_enough(outs[1], refs[1])
