from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from srgan_deploy.artifacts import ShapeProfile, parse_shape, read_onnx_metadata
from srgan_deploy.cli import app
from srgan_deploy.errors import BackendUnavailableError, ConfigError, OutputError, WeightsError
from srgan_deploy.export.command import ExportRequest, run_export
from srgan_deploy.export.fp16 import FP16_BUDGET_DB, convert_core_to_fp16, measure_fp16, stress_images
from srgan_deploy.export.onnx import export_onnx
from srgan_deploy.export.tensorrt import EnginePaths, EngineSpec, cache_status, parse_targets, write_engine
from srgan_deploy.export.triton import config_text, parse_pbtxt
from srgan_deploy.export.verify import torch_reference, verify_onnx
from srgan_deploy.gpu.trt_runtime import flavour_status, import_flavour_module
from srgan_deploy.images import make_input
from srgan_deploy.metrics import psnr
from srgan_deploy.weights import read_info


@pytest.fixture(scope="module")
def exported(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {io: export_onnx(tiny_weights, folder / f"m-{io}.onnx", io=io).path for io in ("uint8", "float32")}


@pytest.mark.parametrize("io", ["uint8", "float32"])
def test_onnx_matches_torch_on_several_shapes(exported: dict[str, Path], tiny_weights: Path, io: str) -> None:
    shapes = [(1, 16, 16), (2, 37, 53), (1, 9, 31)]
    results = verify_onnx(exported[io], tiny_weights, io, shapes)
    assert [r.shape for r in results] == shapes
    for r in results:
        if io == "float32":
            assert r.max_abs <= 1e-4
        else:
            assert r.within_one >= 0.999 and r.max_abs <= 1


def test_onnx_graph_is_valid_dynamic_and_annotated(exported: dict[str, Path], tiny_weights: Path) -> None:
    model = onnx.load(str(exported["uint8"]))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "Clip" in ops and "DepthToSpace" in ops
    meta = read_onnx_metadata(exported["uint8"])
    info = read_info(tiny_weights)
    assert meta["srgan_deploy.scale"] == "4"
    assert meta["srgan_deploy.weights_sha256"] == info.sha256
    assert json.loads(meta["srgan_deploy.config"])["channels"] == info.config.channels


def test_uint8_output_is_actual_bytes(exported: dict[str, Path]) -> None:
    session = ort.InferenceSession(str(exported["uint8"]), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": make_input((2, 11, 13), 0)})[0]
    assert out.dtype == np.uint8 and out.shape == (2, 44, 52, 3)


def test_fp16_core_graph_stays_within_budget(exported: dict[str, Path], tiny_weights: Path) -> None:
    half = convert_core_to_fp16(onnx.load(str(exported["uint8"])))
    types = {i.name: i.data_type for i in half.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types.values()
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8  # I/O unchanged
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    frames = make_input((1, 40, 40), 3)
    out = session.run(None, {"input": frames})[0]
    ref = torch_reference(tiny_weights, "uint8")(frames)
    assert psnr(ref, out) >= FP16_BUDGET_DB


def test_fp16_budget_holds_on_saturated_and_high_contrast_inputs(tiny_weights: Path) -> None:
    report = measure_fp16(tiny_weights, stress_images(24))
    assert set(report.psnr) == {"white", "black", "checker-1px", "checker-2px-colour"}
    assert report.min_psnr >= FP16_BUDGET_DB
    assert report.headroom > 10  # activations far below float16's 65504


def test_run_export_writes_onnx_and_triton(tmp_path: Path, tiny_weights: Path) -> None:
    repo = tmp_path / "triton"
    report = run_export(ExportRequest(out_dir=tmp_path / "out", weights=str(tiny_weights), triton_repo=repo))
    assert report.onnx is not None and report.onnx.path.exists()
    assert len(report.onnx_parity) == 3
    config = parse_pbtxt((repo / "tiny_onnx" / "config.pbtxt").read_text())
    assert config["platform"] == "onnxruntime_onnx"
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and config["input"][0]["dims"] == [-1, -1, 3]
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert (repo / "tiny_onnx" / "1" / "model.onnx").read_bytes() == report.onnx.path.read_bytes()


def test_triton_tensorrt_config_structure() -> None:
    text = config_text("m_trt", "tensorrt", "uint8", max_batch=4)
    config = parse_pbtxt(text)
    assert config["platform"] == "tensorrt_plan" and config["default_model_filename"] == "model.plan"
    assert config["instance_group"][0]["kind"] == "KIND_GPU"
    assert config["output"][0]["name"] == "output"
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


@pytest.mark.parametrize("text", ["1x3x0x64", "1x3x64", "1x4x64x64", "axbxcxd", "-1x3x8x8"])
def test_invalid_shape_strings(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_shape(text)


def test_profile_rules() -> None:
    assert parse_shape("1×3×270×480") == (1, 3, 270, 480)
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile.parse("1x3x300x300", "1x3x270x480", None)
    p = ShapeProfile.parse(None, None, None)
    assert p.min == (1, 8, 8) and p.opt == (1, 270, 480) and p.max == (1, 540, 960)
    assert p.tensor_shapes("uint8")[2] == (1, 540, 960, 3)
    assert p.tensor_shapes("float32")[0] == (1, 3, 8, 8)
    assert p.accepts(1, 270, 480) and not p.accepts(1, 2000, 480)


def _spec(**kw: object) -> EngineSpec:
    base = dict(
        onnx_sha256="a" * 64,
        flavour="tensorrt",
        tensorrt_version="10.13.0",
        gpu_name="NVIDIA H100",
        targets=("SM90",),
        precision="fp16",
        profile=ShapeProfile.parse(None, None, None),
        io="uint8",
        workspace_mib=4096,
    )
    base.update(kw)
    return EngineSpec(**base)  # type: ignore[arg-type]


def test_engine_cache_key_changes_with_every_setting() -> None:
    keys = {
        _spec().key,
        _spec(onnx_sha256="b" * 64).key,
        _spec(tensorrt_version="11.0.0").key,
        _spec(gpu_name="NVIDIA L4").key,
        _spec(targets=("SM89",)).key,
        _spec(precision="fp32").key,
        _spec(profile=ShapeProfile.static(1, 256, 256)).key,
        _spec(flavour="tensorrt-rtx").key,
        _spec(workspace_mib=1024).key,
    }
    assert len(keys) == 9
    assert _spec().key == _spec().key


def test_engine_cache_rebuild_decisions(tmp_path: Path) -> None:
    spec = _spec()
    paths = EnginePaths.for_spec(tmp_path, spec)
    assert cache_status(paths, spec) == (False, "no cached engine for these settings")
    write_engine(paths, spec, b"PLAN-BYTES")
    assert cache_status(paths, spec) == (True, "cached engine matches")
    ok, why = cache_status(paths, _spec(gpu_name="NVIDIA L4"))
    assert not ok and "gpu_name: NVIDIA H100 -> NVIDIA L4" in why
    paths.plan.write_bytes(b"TAMPERED")
    ok, why = cache_status(paths, spec)
    assert not ok and "checksum" in why
    paths.sidecar.write_text("{broken")
    assert cache_status(paths, spec)[1].endswith("is unreadable")
    paths.sidecar.unlink()
    assert "no sidecar" in cache_status(paths, spec)[1]


def test_tensorrt_stubs_are_not_mistaken_for_tensorrt() -> None:
    import importlib.util

    ok, why = flavour_status("tensorrt")
    assert not ok
    if importlib.util.find_spec("tensorrt") is not None:
        assert "stubs" in why
    with pytest.raises(BackendUnavailableError, match="pip install"):
        import_flavour_module("tensorrt")


def test_rtx_targets_are_parsed_and_checked() -> None:
    assert parse_targets("86, 89,sm120,8.9") == ("SM86", "SM89", "SM120")
    assert parse_targets(None) == ()
    with pytest.raises(ConfigError, match="Hopper"):
        parse_targets("90")


def test_export_tensorrt_without_tensorrt_is_one_clear_line(tmp_path: Path, tiny_weights: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", "-o", str(tmp_path / "o"), "-w", str(tiny_weights), "--format", "tensorrt"]
    )
    assert result.exit_code == 2
    assert "TensorRT" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "o").exists()  # failed before doing any work


def test_export_cli_onnx(tmp_path: Path, tiny_weights: Path) -> None:
    result = CliRunner().invoke(app, ["export", "-o", str(tmp_path / "o"), "-w", str(tiny_weights), "--io", "float32"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "o" / "tiny-float32.onnx").exists()
    assert "PSNR" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["-w", "MISSING"], "not found"),
        (["--format", "coreml"], "unknown --format"),
        (["--max-shape", "1x3x0x64"], "zero or negative"),
        (["--io", "int4"], "unknown --io"),
    ],
)
def test_export_bad_inputs(tmp_path: Path, tiny_weights: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / "missing.safetensors") if a == "MISSING" else a for a in args]
    if "-w" not in args:
        args += ["-w", str(tiny_weights)]
    result = CliRunner().invoke(app, ["export", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_unwritable_output_dir(tmp_path: Path, tiny_weights: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        run_export(ExportRequest(out_dir=blocker / "sub", weights=str(tiny_weights)))


def test_wrong_weights_format(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(WeightsError):
        run_export(ExportRequest(out_dir=tmp_path / "o", weights=str(bad)))
