"""Bring your own model: ONNX super-resolution networks of the shapes users download, written here in PyTorch
and exported in the test, through the spec probe, the uint8 wrapper, onnxruntime/OpenVINO, NVIDIA's
TensorRT-RTX parser and builder, the TensorRT backends on the GPU stand-in and the commands.

Parity is always against the network itself: its original graph on onnxruntime (and PyTorch, which wrote
it). The shapes: a static 32x32 x2 net, an ESPCN-like x3 (PixelShuffle 3), a grey x2, a Real-ESRGAN-compact
x4 (PReLU, PixelShuffle, nearest-upsampled residual) at opset 11, an RRDB-like x4 with nearest Resize
upsampling, a x1 restoration net, a float16-I/O file and a pixel-unshuffle x2 (sizes must be even).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from srgan_deploy.artifacts import OnnxModel, ShapeProfile
from srgan_deploy.cli import app
from srgan_deploy.export.foreign import OriginalReference, load_model, verify_wrapped
from srgan_deploy.sources import resolve_onnx
from tests.conftest import make_backend, smooth_image

# ----------------------------------------------------------------------------- the networks users bring


class Static2x(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.b(self.act(self.a(x))), 2)


class Espcn3x(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 5, padding=2), nn.Conv2d(16, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 27, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.c(torch.tanh(self.b(torch.tanh(self.a(x))))), 3)


class Grey2x(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.b(F.relu(self.a(x))), 2) + F.interpolate(x, scale_factor=2, mode="nearest")


class Compact(nn.Module):
    """Real-ESRGAN's SRVGGNetCompact, small: convs + PReLU, PixelShuffle, nearest-upsampled input added."""

    def __init__(self, scale: int = 4, feat: int = 16, convs: int = 2) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, feat, 3, padding=1), nn.PReLU(feat)]
        for _ in range(convs):
            layers += [nn.Conv2d(feat, feat, 3, padding=1), nn.PReLU(feat)]
        layers += [nn.Conv2d(feat, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class One1x(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.b(F.relu(self.a(x)))


class Rdb(nn.Module):
    def __init__(self, c: int = 8, g: int = 4) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, g, 3, padding=1), nn.Conv2d(c + g, g, 3, padding=1)
        self.c3 = nn.Conv2d(c + 2 * g, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.leaky_relu(self.c1(x), 0.2)
        b = F.leaky_relu(self.c2(torch.cat([x, a], 1)), 0.2)
        return x + 0.2 * self.c3(torch.cat([x, a, b], 1))


class Rrdb4x(nn.Module):
    """ESRGAN's RRDBNet, small: dense blocks, LeakyReLU, residual scaling, nearest Resize upsampling."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.first, self.blocks, self.trunk = (
            nn.Conv2d(3, c, 3, padding=1),
            nn.Sequential(Rdb(c), Rdb(c)),
            nn.Conv2d(c, c, 3, padding=1),
        )
        self.up1, self.up2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.hr, self.last = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.first(x)
        f = f + 0.2 * self.trunk(self.blocks(f))
        f = F.leaky_relu(self.up1(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        f = F.leaky_relu(self.up2(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(f), 0.2))


class Unshuffle2x(nn.Module):
    """Real-ESRGAN x2plus's trick: pixel-unshuffle first, so its input must have even sides."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(12, 16, 3, padding=1), nn.Conv2d(16, 48, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.b(F.relu(self.a(F.pixel_unshuffle(x, 2)))), 4)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.a(x + y), 2)


class MultiFrame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.a(x.mean(1)), 2)


class OnePointFive(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.a(x), scale_factor=1.5, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Case:
    make: type[nn.Module]
    scale: int
    radius: int  # the network's true receptive radius in input pixels (what tiling must cover)
    channels: int = 3
    static: tuple[int, int] | None = None
    opset: int = 17
    half: bool = False
    multiple: int = 1
    names: tuple[str, str] = ("input", "output")


CASES = {
    "static2x": Case(Static2x, 2, 2, static=(32, 32)),
    "espcn3x": Case(Espcn3x, 3, 4),
    "grey2x": Case(Grey2x, 2, 2, channels=1),
    "compact4x": Case(Compact, 4, 4, opset=11, names=("x", "y")),
    "rrdb4x": Case(Rrdb4x, 4, 10),
    "one1x": Case(One1x, 1, 2),
    "half2x": Case(lambda: Compact(scale=2), 2, 4, half=True),  # type: ignore[arg-type]
    "unshuffle2x": Case(Unshuffle2x, 2, 5, multiple=2),
}
DONE_WHEN = ("static2x", "espcn3x", "grey2x")  # the gate: through every command


def export(module: nn.Module, path: Path, case: Case | None = None, **kw: Any) -> Path:
    case = case or Case(type(module), 1, 0)
    shape = (1, case.channels, *(case.static or (24, 24)))
    args = kw.pop("args", None) or (torch.rand(*shape),)
    if case.half:
        module, args = module.half(), tuple(a.half() for a in args)
    names = kw.pop("names", case.names)
    axes = (
        None
        if case.static or kw.pop("static", False)
        else {names[0]: {0: "b", 2: "h", 3: "w"}, names[-1]: {0: "b", 2: "H", 3: "W"}}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=list(names[:-1]),
            output_names=[names[-1]],
            dynamic_axes=axes,
            opset_version=case.opset,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    """Randomly initialised; the nets without a residual get their last bias raised by 0.5 so that, like a
    trained network, they answer mid-range images (not half of the pixels clipped to black)."""
    torch.manual_seed(0)
    made = {name: case.make().eval() for name, case in CASES.items()}
    for name in ("static2x", "espcn3x", "rrdb4x", "unshuffle2x"):
        last = [m for m in made[name].modules() if isinstance(m, nn.Conv2d)][-1]
        assert last.bias is not None
        with torch.no_grad():
            last.bias += 0.5
    return made


@pytest.fixture(scope="module")
def files(nets: dict[str, nn.Module], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {name: export(nets[name], folder / f"{name}.onnx", CASES[name]) for name in CASES}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def wrapped(files: dict[str, Path], cache: Path) -> dict[str, OnnxModel]:
    said: list[str] = []
    models = {name: resolve_onnx(path, cache, said.append) for name, path in files.items()}
    assert sum("measuring it once" in s for s in said) == len(CASES)
    assert [s for s in said if "grey (1-channel) model" in s] == [
        "grey2x is a grey (1-channel) model: it runs on luma (Y); colour is upscaled bicubically"
    ]
    return models


def frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.stack([smooth_image(h, w, seed + i) for i in range(n)])


def torch_reference(net: nn.Module, case: Case, batch: np.ndarray) -> np.ndarray:
    """What PyTorch computes for the network on RGB uint8 frames (luma + bicubic chroma for grey ones)."""
    import cv2

    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        if case.channels == 1:
            y_lr = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            y = net(y_lr)
            chroma = (x - y_lr).permute(0, 2, 3, 1).numpy()
            up = np.stack(
                [cv2.resize(c, None, fx=case.scale, fy=case.scale, interpolation=cv2.INTER_CUBIC) for c in chroma]
            )
            y = y + torch.from_numpy(up).permute(0, 3, 1, 2)
        else:
            h, w = x.shape[2:]
            m = case.multiple  # edge-padded to the size the network takes, cropped back (as the wrapper does)
            x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate") if m > 1 else x
            y = net(x.half()).float() if case.half else net(x)
            y = y[:, :, : h * case.scale, : w * case.scale]
    return np.clip(np.round(y.numpy() * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def within_one(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.mean(np.abs(a.astype(int) - b.astype(int)) <= 1))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ----------------------------------------------------------------------------- the spec each graph gets


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_probe_finds_what_the_network_is(wrapped: dict[str, OnnxModel], name: str) -> None:
    case, spec = CASES[name], wrapped[name].spec
    assert (spec.scale, spec.in_channels, spec.static_hw, spec.size_multiple) == (
        case.scale,
        case.channels,
        case.static,
        case.multiple,
    )
    assert spec.dtype == ("float16" if case.half else "float32") and spec.layout == "NCHW"
    assert spec.batch == (1 if case.static else None)  # torch fixes the batch of a graph exported without axes
    assert (spec.input_name, spec.output_name) == case.names
    # the impulse probe finds the true radius; the overlap adds one pixel of margin
    assert spec.overlap == case.radius + 1 and spec.exact_tiling
    assert wrapped[name].io == "uint8" and wrapped[name].metadata["srgan_deploy.source_sha256"]


def test_flops_and_memory_are_counted_on_the_graph(
    wrapped: dict[str, OnnxModel], tiny_weights: Path, tmp_path: Path
) -> None:
    compact = wrapped["compact4x"].spec
    # convs 3->16, 2x 16->16, 16->48, all 3x3: 11952 multiply-adds per input pixel
    assert compact.flops_per_pixel == 2 * (3 * 16 + 2 * 16 * 16 + 16 * 48) * 9
    assert compact.memory_width == pytest.approx(3 * 48 / 32)  # the residual Add: 3 tensors of 48 per pixel
    # the counter gives SRResNet's calibration on our own graph: 32 floats per pixel per generator channel
    from srgan_deploy.export.foreign import graph_cost, inspect_io
    from srgan_deploy.export.onnx import export_onnx
    from srgan_deploy.spec import ACTIVATIONS_PER_WIDTH

    ours = load_model(export_onnx(tiny_weights, tmp_path / "tiny.onnx", io="float32").path)
    cost = graph_cost(ours, inspect_io(ours, "tiny"), 1)
    assert cost.activations_per_pixel == ACTIVATIONS_PER_WIDTH * 8


# ----------------------------------------------------------------------------- the wrapper, on onnxruntime


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_wrapped_graph_matches_the_original(
    nets: dict[str, nn.Module], files: dict[str, Path], wrapped: dict[str, OnnxModel], name: str
) -> None:
    model, case = wrapped[name], CASES[name]
    parity = verify_wrapped(load_model(files[name]), model.path, model.spec)
    assert all(p.max_abs <= 1 and p.within_one == 1.0 for p in parity)
    # and both against PyTorch, which wrote the graph
    shape = case.static or (29, 35)
    batch = frames(1, *shape, seed=5)
    original = OriginalReference(files[name], model.spec)(batch)
    assert within_one(original, torch_reference(nets[name], case, batch)) >= 0.999


def test_the_fp16_core_of_a_foreign_body_stays_within_the_budget(wrapped: dict[str, OnnxModel], tmp_path: Path) -> None:
    """LeakyReLU, Concat and the residual Mul run in float16; the boundary and Resize stay float32."""
    import onnx
    import onnxruntime as ort

    from srgan_deploy.export.fp16 import write_fp16_onnx

    graphs = {}
    for precision, path in (
        ("fp32", wrapped["rrdb4x"].path),
        ("fp16", write_fp16_onnx(wrapped["rrdb4x"].path, tmp_path / "c.onnx")),
    ):
        graphs[precision] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    half = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "c.onnx")))
    fp16 = {v.name for v in half.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    in_half = {n.op_type for n in half.graph.node if set(n.output) & fp16 and n.op_type != "Cast"}
    assert in_half == {"Conv", "LeakyRelu", "Concat", "Mul", "Add"}
    wrapper = [n for n in half.graph.node if n.name.startswith("srgan_io/") and n.op_type != "Cast"]
    assert wrapper and not [n.name for n in wrapper if set(n.output) & fp16]  # the boundary stays float32
    batch = frames(1, 24, 40)
    a, b = (np.asarray(graphs[p].run(["output"], {"input": batch})[0]) for p in ("fp32", "fp16"))
    assert psnr(a, b) >= 40.0


# ----------------------------------------------------------------------------- backends, tiling


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_backends_run_it_and_tiles_equal_the_whole_frame(
    files: dict[str, Path], wrapped: dict[str, OnnxModel], cache: Path, backend: str, name: str
) -> None:
    spec = wrapped[name].spec
    # odd sides: the pixel-unshuffle net's tiles must start on its 2-pixel grid; larger than the static net's
    # 32x32, which is tiled at exactly that size
    batch = frames(2, 45, 69, seed=1)
    reference = OriginalReference(files[name], spec)(batch)
    with make_backend(backend, files[name], device="cpu", cache_dir=cache, precision="fp32") as whole:
        out = whole.upscale(batch)
    assert out.shape == (2, 45 * spec.scale, 69 * spec.scale, 3)
    assert within_one(out, reference) >= 0.999 and int(np.abs(out.astype(int) - reference.astype(int)).max()) <= 2
    if spec.static_hw is None:  # a fixed-shape network is always tiled; the others: small tiles = whole frame
        with make_backend(backend, files[name], device="cpu", cache_dir=cache, precision="fp32", tile=24) as tiled:
            assert tiled.memory_plan(45, 69).tile == (24, 24)
            cut = tiled.upscale(batch)
        assert np.array_equal(cut, out)


def test_a_static_network_is_fed_exactly_its_shape(
    files: dict[str, Path], cache: Path, nets: dict[str, nn.Module]
) -> None:
    """Tiles of exactly 32x32; a frame smaller than that is padded and cropped; the stitched result equals
    PyTorch on the whole frame (the network itself takes any size) away from a padded edge."""
    big, small = frames(1, 70, 90, seed=2), frames(3, 20, 27, seed=3)
    with make_backend("onnxruntime", files["static2x"], device="cpu", cache_dir=cache) as engine:
        assert engine._tile_size(70, 90) == (32, 32) and engine._tile_size(20, 27) is None
        out_big, out_small = engine.upscale(big), engine.upscale(small)
    assert out_big.shape == (1, 140, 180, 3) and out_small.shape == (3, 40, 54, 3)
    assert within_one(out_big, torch_reference(nets["static2x"], CASES["static2x"], big)) >= 0.999
    margin = 2 * 3  # the band next to the padded bottom/right edges (overlap x scale)
    ref_small = torch_reference(nets["static2x"], CASES["static2x"], small)
    assert within_one(out_small[:, :-margin, :-margin], ref_small[:, :-margin, :-margin]) >= 0.999


# ----------------------------------------------------------------------------- NVIDIA's parser and builder


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_tensorrt_rtx_parses_and_builds_the_wrapped_graph(
    wrapped: dict[str, OnnxModel], tmp_path: Path, name: str, precision: str
) -> None:
    from srgan_deploy.export.tensorrt import BuildOptions, EngineSpec, Flavour, build_serialized, engine_source

    model = wrapped[name]
    profile = ShapeProfile.parse(None, None, None).fitted(model.spec)
    spec = EngineSpec("0" * 64, "tensorrt-rtx", "gate", "ahead-of-time", ("SM89",), precision, profile, "uint8", 1024)
    result = build_serialized(
        Flavour.load("tensorrt-rtx"), engine_source(model.path, spec, tmp_path), spec, BuildOptions(), tmp_path / "log"
    )
    dims = (1, 32, 32, 3) if CASES[name].static else (-1, -1, -1, 3)
    s = CASES[name].scale
    out_dims = (1, 32 * s, 32 * s, 3) if CASES[name].static else (-1, -1, -1, 3)
    assert [(t.name, t.dtype, t.dims) for t in (*result.inputs, *result.outputs)] == [
        ("input", "UINT8", dims),
        ("output", "UINT8", out_dims),
    ]
    assert len(result.plan) > 100_000


@pytest.mark.standin
@pytest.mark.parametrize("flavour", ["tensorrt", "tensorrt-rtx"])
@pytest.mark.parametrize("name", DONE_WHEN)
def test_the_tensorrt_backends_run_it_on_the_standin(
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, Path],
    wrapped: dict[str, OnnxModel],
    tmp_path: Path,
    flavour: str,
    name: str,
) -> None:
    from tests.standin import install

    gpu = install(monkeypatch)
    batch = frames(2, 40, 52, seed=4)
    reference = OriginalReference(files[name], wrapped[name].spec)(batch)
    with make_backend(flavour, files[name], device="cuda", cache_dir=tmp_path) as engine:
        out = engine.upscale(batch)
        streamed = list(engine.upscale_many([batch[:1], batch]))
    s = CASES[name].scale
    assert out.shape == (2, 40 * s, 52 * s, 3) and np.array_equal(streamed[1], out)
    assert psnr(out, reference) >= 40.0  # the fp16 engine against the original graph in fp32
    assert not gpu.errors, gpu.errors
    gpu.assert_released()


# ----------------------------------------------------------------------------- the commands


def cli(args: list[str], cache: Path) -> Any:
    return CliRunner().invoke(app, args, env={"SRGAN_DEPLOY_CACHE": str(cache)})


@pytest.mark.parametrize("name", DONE_WHEN)
def test_upscale_video_export_and_bench_take_it(
    files: dict[str, Path], wrapped: dict[str, OnnxModel], cache: Path, tmp_path: Path, name: str
) -> None:
    import av
    import cv2

    from tests.clips import make_clip

    spec, s = wrapped[name].spec, CASES[name].scale
    image = frames(1, 37, 45, seed=6)[0]
    cv2.imwrite(str(tmp_path / "in.png"), image[:, :, ::-1])
    result = cli(
        ["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "up"), "-w", str(files[name]), "-b", "onnxruntime"],
        cache,
    )
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(tmp_path / "up" / "in.png"))[:, :, ::-1]
    assert within_one(written[None], OriginalReference(files[name], spec)(image[None])) >= 0.999

    clip = make_clip(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    result = cli(["video", str(clip), str(tmp_path / "out.mp4"), "-w", str(files[name]), "-b", "openvino"], cache)
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (48 * s, 64 * s, 3)

    out = tmp_path / "export"
    args = ["export", "-w", str(files[name]), "-o", str(out), "--format", "tensorrt-rtx", "--sm", "89"]
    result = cli([*args, "--engine-dir", str(tmp_path / "engines")], cache)
    assert result.exit_code == 0, result.output
    assert "wrapped vs original on onnxruntime" in result.stderr and "engine not executed: no CUDA GPU" in result.stderr
    sidecar = json.loads((out / f"{name}-rtx-fp16.json").read_text())
    assert sidecar["model_spec"]["scale"] == s and sidecar["spec"]["targets"] == ["SM89"]
    assert sidecar["spec"]["profile"][2] == ([1, 32, 32] if spec.static_hw else [1, 540, 960])

    report = tmp_path / "bench.json"
    result = cli(
        [
            "bench",
            "-w",
            str(files[name]),
            "-b",
            "onnxruntime,openvino",
            "--input",
            "48x40",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--json",
            str(report),
        ],
        cache,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["config"]["reference"] == "onnxruntime fp32 on the original graph"
    assert [r["backend"] for r in data["results"]] == ["onnxruntime", "openvino"]
    for r in data["results"]:
        assert r["max_abs_vs_torch"] <= 1 and r["psnr_vs_torch"] > 50 and r["fps"] > 0
        assert r["gflop_per_frame"] == pytest.approx(spec.flops_per_pixel * 48 * 40 / 1e9)


def test_info_shows_the_spec(files: dict[str, Path], cache: Path) -> None:
    result = cli(["info", "-w", str(files["grey2x"]), "--json"], cache)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["spec"]["scale"] == 2 and data["spec"]["in_channels"] == 1 and data["spec"]["overlap"] == 3
    assert "grey" in data["summary"]


def test_eval_shaves_the_models_scale(files: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "set"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), smooth_image(48, 60, 1))
    report = tmp_path / "eval.json"
    result = cli(["eval", str(folder), "-w", str(files["espcn3x"]), "-b", "onnxruntime", "--json", str(report)], cache)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["scale"] == 3 and data["protocol"] == "y-shave3"


def test_what_cannot_run_gets_one_line(tmp_path: Path, cache: Path, files: dict[str, Path]) -> None:
    bad = {
        "two.onnx": (
            TwoInputs(),
            {"args": (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)), "names": ("a", "b", "out"), "static": True},
            "has 2 inputs (a, b)",
        ),
        "video.onnx": (
            MultiFrame(),
            {"args": (torch.rand(1, 5, 3, 16, 16),), "static": True},
            "5-D input 1x5x3x16x16: a multi-frame",
        ),
        "x1.5.onnx": (OnePointFive(), {}, "non-integer scale 1.5"),
    }
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), smooth_image(16, 16))
    for file, (module, kw, words) in bad.items():
        path = export(module, tmp_path / file, **kw)
        result = cli(["upscale", str(image), "-o", str(tmp_path / "o"), "-w", str(path)], cache)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and words in errors[0], result.stderr
    pth = tmp_path / "RealESRGAN_x4plus.pth"
    pth.write_bytes(b"not unpickled")
    result = cli(["upscale", str(image), "-o", str(tmp_path / "o"), "-w", str(pth)], cache)
    assert result.exit_code == 2 and "never unpickles" in result.stderr and "torch.onnx.export" in result.stderr
    result = cli(["upscale", str(image), "-o", str(tmp_path / "o"), "-w", str(files["espcn3x"]), "-b", "torch"], cache)
    assert result.exit_code == 2 and "use -b onnxruntime, openvino, tensorrt or tensorrt-rtx" in result.stderr


def test_an_odd_video_output_is_cropped_for_yuv420p_with_a_warning(
    files: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    """x3 of an odd-sized (yuv444p) clip is odd; yuv420p needs even sides, so the encoder gets the last
    column and row cropped, said once; yuv444p keeps every pixel."""
    import av

    from tests.clips import make_clip

    clip = make_clip(tmp_path / "odd.mp4", frames=3, width=63, height=47, pix_fmt="yuv444p")
    sizes = {}
    for pix_fmt in ("yuv420p", "yuv444p"):
        out = tmp_path / f"{pix_fmt}.mp4"
        result = cli(
            ["video", str(clip), str(out), "-w", str(files["espcn3x"]), "-b", "onnxruntime", "--pix-fmt", pix_fmt],
            cache,
        )
        assert result.exit_code == 0, result.output
        with av.open(str(out)) as container:
            stream = container.streams.video[0]
            sizes[pix_fmt] = (stream.width, stream.height, sum(1 for _ in container.decode(video=0)))
        assert ("cropped to 188x140" in result.stderr) == (pix_fmt == "yuv420p"), result.stderr
    assert sizes == {"yuv420p": (188, 140, 3), "yuv444p": (189, 141, 3)}


# ----------------------------------------------------------------------------- value ranges and channel order


class Trained255(nn.Module):
    """x4, trained on [0, 255] (EDSR's convention): a mean shift, and an input floor that only makes sense on
    that scale (fed [0, 1], every pixel is below it and the picture is lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 48, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(torch.clamp(x, min=20.0), scale_factor=4, mode="bicubic", align_corners=False)
        return base + 0.5 * F.pixel_shuffle(self.conv(x - 114.0), 4)


class TanhBgr(nn.Module):
    """x2 with a tanh output in [-1, 1], channels B, G, R, and a detail branch that is not the same for every
    channel order (so feeding RGB would show)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.clamp(F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False), -0.99, 0.99)
        blue_boost = 0.3 * x[:, :1] - 0.3 * x[:, 2:]
        detail = F.pixel_shuffle(self.conv(x), 2) + F.interpolate(blue_boost, scale_factor=2, mode="nearest")
        return torch.tanh(0.5 * torch.log((1 + z) / (1 - z)) + detail)


def test_a_network_trained_on_0_255_is_measured_and_fed_its_range(tmp_path: Path, cache: Path) -> None:
    torch.manual_seed(1)
    net = Trained255().eval()
    path = export(net, tmp_path / "edsr_like.onnx", Case(Trained255, 4, 2))
    said: list[str] = []
    model = resolve_onnx(path, cache, said.append)
    assert model.spec.value_range == (0.0, 255.0)
    assert any("takes values in [0, 255] (measured" in s and "edsr_like.onnx.json" in s for s in said), said
    batch = frames(2, 24, 32, seed=4)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch).permute(0, 3, 1, 2).float()).numpy()  # [0, 255] in and out
    expected8 = np.clip(np.round(expected), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for backend in ("onnxruntime", "openvino"):
        with make_backend(backend, path, device="cpu", cache_dir=cache, precision="fp32") as runner:
            assert within_one(runner.upscale(batch), expected8) >= 0.999, backend
    assert within_one(OriginalReference(path, model.spec)(batch), expected8) >= 0.999


def test_a_settings_file_names_the_range_and_channel_order(tmp_path: Path, cache: Path) -> None:
    torch.manual_seed(2)
    net = TanhBgr().eval()
    path = export(net, tmp_path / "tanh_bgr.onnx", Case(TanhBgr, 2, 2))
    batch = frames(2, 20, 28, seed=5)
    with torch.no_grad():
        x = torch.from_numpy(batch[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1  # BGR in [-1, 1]
        y = ((net(x) + 1) * 127.5).numpy()[:, ::-1]  # back to RGB [0, 255]
    expected = np.clip(np.round(y), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    unsaid = resolve_onnx(path, cache, lambda _: None)  # without the file: measured, a [0, 1] RGB network
    assert (unsaid.spec.value_range, unsaid.spec.bgr) == ((0.0, 1.0), False)
    with make_backend("onnxruntime", path, device="cpu", cache_dir=cache) as runner:
        assert within_one(runner.upscale(batch), expected) < 0.9

    (tmp_path / "tanh_bgr.onnx.json").write_text('{"value_range": [-1, 1], "channel_order": "BGR"}')
    said: list[str] = []
    model = resolve_onnx(path, cache, said.append)
    assert model.path != unsaid.path and (model.spec.value_range, model.spec.bgr) == ((-1.0, 1.0), True)
    assert not any("takes values in" in s for s in said)  # said by the user, not measured
    assert any("BGR" in s and "values in [-1, 1]" in s for s in said), said
    for backend in ("onnxruntime", "openvino"):
        with make_backend(backend, path, device="cpu", cache_dir=cache, precision="fp32") as runner:
            assert within_one(runner.upscale(batch), expected) >= 0.999, backend

    from srgan_deploy.sources import OnnxFile, digest

    before = digest(OnnxFile(path))
    (tmp_path / "tanh_bgr.onnx.json").write_text('{"value_range": [-1, 1]}')
    assert digest(OnnxFile(path)) != before  # a resumed video job made with the other settings starts over
    assert resolve_onnx(path, cache, lambda _: None).spec.bgr is False


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{nope", "is not readable JSON"),
        ('{"value_range": [1, -1]}', "black < white"),
        ('{"value_range": [0, "255"]}', "black < white"),
        ('{"channel_order": "GRB"}', 'must be "RGB" or "BGR"'),
        ('{"range": [0, 1]}', "unknown key(s) range"),
        ("[0, 1]", "must be a JSON object"),
        ('{"value_range": [0, 1e300]}', "within ±65504"),  # float32 would hold an infinite span
        ('{"value_range": [0, 1e-60]}', "black < white"),  # a zero span in float32
        ('{"value_range": [false, true]}', "black < white"),  # JSON booleans are not numbers
        ('{"value_range": [0, ' + "1" * 400 + "]}", "black < white"),  # no float holds it
        ('{"value_range": [0, ' + "1" * 5000 + "]}", "is not readable JSON"),  # Python's int-digit limit
    ],
)
def test_a_settings_file_that_cannot_be_used_is_one_line(
    files: dict[str, Path], cache: Path, tmp_path: Path, text: str, words: str
) -> None:
    import shutil

    path = tmp_path / "m.onnx"
    shutil.copy(files["espcn3x"], path)
    (tmp_path / "m.onnx.json").write_text(text)
    result = cli(["info", "-w", str(path)], cache)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and words in errors[0] and "m.onnx.json" in errors[0], (
        result.stderr
    )


def test_the_range_rule_switches_only_when_unit_range_breaks_the_picture() -> None:
    from srgan_deploy.export.foreign import pick_range

    inf = float("inf")
    assert pick_range({(0.0, 1.0): 38.0, (-1.0, 1.0): 45.0, (0.0, 255.0): 12.0}) == (0.0, 1.0)  # a sub-range works
    assert pick_range({(0.0, 1.0): -26.0, (-1.0, 1.0): -10.0, (0.0, 255.0): 48.0}) == (0.0, 255.0)
    assert pick_range({(0.0, 1.0): 15.0, (-1.0, 1.0): 31.0, (0.0, 255.0): -inf}) == (-1.0, 1.0)
    assert pick_range({(0.0, 1.0): 8.0, (-1.0, 1.0): 12.0, (0.0, 255.0): 18.0}) == (0.0, 1.0)  # nothing looks right


def test_weights_in_an_external_data_file_are_part_of_the_models_identity(
    files: dict[str, Path], cache: Path, tmp_path: Path
) -> None:
    """Large exports keep their weights in ``model.onnx.data``: new weights there are a new model (cache,
    resumed jobs), and a data file left behind is one line."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    from srgan_deploy.sources import OnnxFile, digest

    folder = tmp_path / "a"
    folder.mkdir()
    path = folder / "m.onnx"
    model = onnx.load(str(files["espcn3x"]))
    onnx.save(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    first = resolve_onnx(path, cache, lambda _: None)
    identity = digest(OnnxFile(path))
    graph_bytes = path.read_bytes()
    # new biases written into the data file in place: the graph file stays byte for byte the same
    data = bytearray((folder / "m.onnx.data").read_bytes())
    for init in onnx.load(str(path), load_external_data=False).graph.initializer:
        if init.name.endswith("bias"):
            info = ExternalDataInfo(init)
            view = np.frombuffer(data, np.float32, count=info.length // 4, offset=info.offset).copy()
            data[info.offset : info.offset + info.length] = (view + np.float32(0.25)).tobytes()
    (folder / "m.onnx.data").write_bytes(bytes(data))
    assert path.read_bytes() == graph_bytes
    second = resolve_onnx(path, cache, lambda _: None)
    assert second.path != first.path and digest(OnnxFile(path)) != identity
    batch = frames(1, 16, 16)
    with make_backend("onnxruntime", path, device="cpu", cache_dir=cache) as runner:
        out = runner.upscale(batch)
    assert within_one(out, OriginalReference(path, second.spec)(batch)) >= 0.999
    assert within_one(out, OriginalReference(files["espcn3x"], first.spec)(batch)) < 0.5  # not the old weights
    (tmp_path / "a" / "m.onnx.data").unlink()
    result = cli(["info", "-w", str(path)], cache)
    assert result.exit_code == 2 and "keeps its weights in m.onnx.data, which is not beside it" in result.stderr


def test_a_settings_file_with_a_byte_order_mark_is_read(files: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "m.onnx"
    shutil.copy(files["espcn3x"], path)
    (tmp_path / "m.onnx.json").write_bytes(b"\xef\xbb\xbf" + b'{"value_range": [-1, 1]}')  # as Notepad saves it
    assert resolve_onnx(path, cache, lambda _: None).spec.value_range == (-1.0, 1.0)


def test_a_tiny_static_network_is_not_misjudged_by_the_range_probe(tmp_path: Path, cache: Path) -> None:
    """A static 8x8 x4 network: the range probe's border crop must leave pixels to compare (else every range
    scored -inf and the user was told the output does not look like its input upscaled)."""

    class Up4(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)

    path = export(Up4(), tmp_path / "tiny_static.onnx", Case(Up4, 4, 2, static=(8, 8)))
    said: list[str] = []
    spec = resolve_onnx(path, cache, said.append).spec
    assert spec.static_hw == (8, 8) and spec.value_range == (0.0, 1.0)
    assert not any("does not look like" in s for s in said), said
