"""NVIDIA's own ONNX parser and builder on every graph we hand to TensorRT, in every CI run, no GPU.

TensorRT-RTX builds ahead of time for named compute capabilities, so its parser and builder run
on a CPU-only machine. RTX, TensorRT 11 and our TensorRT 10 path are all strongly typed, so a
graph RTX accepts here is the graph the other two parse on a GPU (same ONNX parser, onnx-tensorrt).
These tests go through the project's own build function and are never skipped: without the
wheels they fail with the command that installs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from srgan_deploy.artifacts import ShapeProfile
from srgan_deploy.cli import app
from srgan_deploy.errors import BackendUnavailableError, EngineError
from srgan_deploy.export.onnx import export_onnx
from srgan_deploy.export.tensorrt import (
    BuildOptions,
    EngineSpec,
    Flavour,
    build_serialized,
    engine_source,
)
from srgan_deploy.export.triton import config_text, parse_pbtxt
from srgan_deploy.gpu.trt_runtime import RTX_INSTALL

TARGET = ("SM89",)
PROFILES = {
    "dynamic": ShapeProfile.parse(None, None, None),
    "static": ShapeProfile.static(1, 256, 256),  # what --static-shape 1x3x256x256 / --tile 256 builds
}
EXPECTED_IO = {  # what the runtime binds: name, TensorRT dtype, dims with -1 for dynamic axes
    "uint8": (("input", "UINT8", (-1, -1, -1, 3)), ("output", "UINT8", (-1, -1, -1, 3))),
    "float32": (("input", "FLOAT", (-1, 3, -1, -1)), ("output", "FLOAT", (-1, 3, -1, -1))),
}


@pytest.fixture(scope="module")
def rtx() -> Flavour:
    try:
        return Flavour.load("tensorrt-rtx")
    except BackendUnavailableError as exc:
        pytest.fail(f"TensorRT-RTX is required for the NVIDIA build gate: {exc}. Install: {RTX_INSTALL}")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """The shipped models' ONNX exactly as export and the runtime make them (both I/O layouts)."""
    folder = tmp_path_factory.mktemp("gate")
    out: dict[tuple[str, str], Path] = {}
    for model in ("srgan-x4-lite", "srgan-x4"):
        for io in ("uint8", "float32"):
            out[(model, io)] = export_onnx(model, folder / f"{model}-{io}.onnx", io=io).path
    return out


def _spec(onnx: Path, precision: str, profile: ShapeProfile, io: str) -> EngineSpec:
    return EngineSpec(
        onnx_sha256="0" * 64,
        flavour="tensorrt-rtx",
        tensorrt_version="gate",
        gpu_name="ahead-of-time",
        targets=TARGET,
        precision=precision,
        profile=profile,
        io=io,
        workspace_mib=1024,
    )


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("io", ["uint8", "float32"])
@pytest.mark.parametrize("model", ["srgan-x4-lite", "srgan-x4"])
def test_nvidia_parser_and_builder_accept_the_graph(
    rtx: Flavour,
    graphs: dict[tuple[str, str], Path],
    tmp_path: Path,
    model: str,
    io: str,
    precision: str,
    profile_name: str,
) -> None:
    """Every graph we hand to TensorRT: parsed, I/O as the runtime expects, built into a plan."""
    onnx = graphs[(model, io)]
    spec = _spec(onnx, precision, PROFILES[profile_name], io)
    source = engine_source(onnx, spec, tmp_path)  # fp16: the fp16-core graph strongly typed builds parse
    assert (source != onnx) == (precision == "fp16")
    try:
        result = build_serialized(rtx, source, spec, BuildOptions(), tmp_path / "build.log")
    except EngineError as exc:  # the parser's own words are in the message
        pytest.fail(f"NVIDIA TensorRT-RTX {rtx.version} rejected {source.name}: {exc}")
    got = tuple((t.name, t.dtype, t.dims) for t in (*result.inputs, *result.outputs))
    assert got == EXPECTED_IO[io]
    assert len(result.plan) > 100_000  # a real serialized engine, not an empty blob
    print(f"{model} {io} {precision} {profile_name}: plan {len(result.plan) / 1e6:.2f} MB in {result.seconds:.2f} s")


def test_a_uint8_op_inside_the_graph_is_caught(
    rtx: Flavour, graphs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """The gate fails on the defect it exists for: uint8 into a Transpose (the pre-3 graph layout)."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(graphs[("srgan-x4-lite", "uint8")]))
    nodes = list(proto.graph.node)
    cast, transpose = nodes[0], nodes[1]
    assert (cast.op_type, transpose.op_type) == ("Cast", "Transpose")  # uint8 -> Cast -> Transpose: the fix
    # swap them back: Transpose now reads the uint8 input, as graph version 2 did
    moved = helper.make_node("Transpose", ["input"], ["t_u8"], perm=list(transpose.attribute[0].ints))
    recast = helper.make_node("Cast", ["t_u8"], [transpose.output[0]], to=onnx.TensorProto.FLOAT)
    del proto.graph.node[:2]
    proto.graph.node.insert(0, recast)
    proto.graph.node.insert(0, moved)
    bad = tmp_path / "uint8-transpose.onnx"
    onnx.save(proto, str(bad))
    spec = _spec(bad, "fp32", PROFILES["dynamic"], "uint8")
    with pytest.raises(EngineError, match="could not parse") as info:
        build_serialized(rtx, bad, spec, BuildOptions(), tmp_path / "build.log")
    assert "Transpose" in str(info.value) and (tmp_path / "build.log").exists()


def test_triton_plan_config_matches_the_network(
    rtx: Flavour, graphs: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """config.pbtxt's I/O dtypes and dims are those of the network TensorRT parses."""
    onnx = graphs[("srgan-x4-lite", "uint8")]
    spec = _spec(onnx, "fp16", PROFILES["dynamic"], "uint8")
    result = build_serialized(rtx, engine_source(onnx, spec, tmp_path), spec, BuildOptions(), tmp_path / "b.log")
    config = parse_pbtxt(config_text("m_trt", "tensorrt", "uint8", max_batch=1))
    dtype = {"UINT8": "TYPE_UINT8", "FLOAT": "TYPE_FP32"}
    for entry, tensor in ((config["input"][0], result.inputs[0]), (config["output"][0], result.outputs[0])):
        assert entry["name"] == tensor.name
        assert entry["data_type"] == dtype[tensor.dtype]
        assert entry["dims"] == list(tensor.dims[1:])  # Triton's dims leave out the batch axis


def test_export_tensorrt_rtx_command_writes_an_engine(rtx: Flavour, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--format",
            "tensorrt-rtx",
            "-o",
            str(out),
            "-w",
            str(tiny_weights),
            "--sm",
            "86,89",
            "--engine-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    plan = out / "tiny-rtx-fp16.plan"
    import json

    sidecar: dict[str, Any] = json.loads(plan.with_suffix(".json").read_text())
    assert plan.stat().st_size > 10_000
    assert sidecar["spec"]["flavour"] == "tensorrt-rtx" and sidecar["spec"]["targets"] == ["SM86", "SM89"]
    assert sidecar["inputs"][0]["dtype"] == "UINT8"
    assert "engine not executed: no CUDA GPU here" in result.stderr
    from srgan_deploy.artifacts import EngineArtifact

    artifact = EngineArtifact.from_plan(plan)  # what the tensorrt-rtx backend loads on a GPU
    assert artifact.flavour == "tensorrt-rtx" and artifact.config.channels == 8
    again = CliRunner().invoke(
        app,
        [
            "export",
            "-f",
            "tensorrt-rtx",
            "-o",
            str(out),
            "-w",
            str(tiny_weights),
            "--sm",
            "86,89",
            "--engine-dir",
            str(tmp_path / "cache"),
            "--no-verify",
        ],
    )
    assert again.exit_code == 0 and "taken from the cache" in again.stderr
    bad = CliRunner().invoke(app, ["export", "-f", "tensorrt-rtx", "-o", str(out), "--sm", "90"])
    assert bad.exit_code == 2 and "Hopper" in bad.stderr
