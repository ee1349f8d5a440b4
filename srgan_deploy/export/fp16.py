"""FP16: convert the ONNX graph's compute core to float16, and measure what FP16 does to the model.

Only the network body (Conv, PRelu, Add, DepthToSpace) becomes float16; the
uint8<->float pre/post-processing (scale by 255, round, clip, cast) stays float32,
because in float16 the spacing of values near 255 is 0.125, which would move
rounding decisions. This is the graph a strongly typed TensorRT network is
built from (TensorRT >= 11 has no other way to run FP16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from srgan_deploy.errors import ExportError

if TYPE_CHECKING:
    import onnx

CORE_OPS = frozenset({"Conv", "PRelu", "Add", "DepthToSpace"})
# A foreign network's body (a graph srgan-deploy wrapped, export/wrap.py) has more kinds of layers. These run
# in float16 there when every input and output of the node is a float32 tensor (never a shape computation) and
# the node is not one of the wrapper's own ``srgan_io/`` nodes, which stay float32 like our pre/post-processing.
FOREIGN_CORE_OPS = CORE_OPS | {
    "ConvTranspose",
    "Sub",
    "Mul",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Concat",
    "SpaceToDepth",
}
WRAPPER_PREFIX = "srgan_io/"
# bump when convert_core_to_fp16 changes: it names the cached fp16-core graphs, so stale ones are not reused
CONVERTER_VERSION = 1


def convert_core_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy whose CORE_OPS run in float16 with Casts at the boundaries.

    A wrapped foreign graph (its metadata carries a model spec) converts its body's layers instead; one that
    is float16 already is returned as it is (its body was made to run in float16 by its authors)."""
    import onnx

    meta = {p.key: p.value for p in model.metadata_props}
    if "srgan_deploy.spec" not in meta:
        return _convert(model, lambda node: node.op_type in CORE_OPS, foreign=False)
    from srgan_deploy.spec import ModelSpec

    if ModelSpec.from_json(meta["srgan_deploy.spec"]).dtype == "float16":
        return onnx.ModelProto.FromString(model.SerializeToString())
    types = _float_tensors(model)

    def is_core(node: onnx.NodeProto) -> bool:
        if node.op_type not in FOREIGN_CORE_OPS or node.name.startswith(WRAPPER_PREFIX):
            return False
        return all(not name or name in types for name in (*node.input, *node.output))

    return _convert(model, is_core, foreign=True)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the float32 tensors (values, initializers, Constant outputs) by ONNX's type inference."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    floats = {
        v.name
        for v in (*graph.value_info, *graph.input, *graph.output)
        if v.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    floats |= {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    for node in graph.node:
        value = node.attribute[0] if node.op_type == "Constant" and node.attribute else None
        if value is not None and value.type == onnx.AttributeProto.TENSOR and value.t.data_type == TensorProto.FLOAT:
            floats.update(node.output)
    return floats


def _convert(model: onnx.ModelProto, is_core: Callable[[onnx.NodeProto], bool], foreign: bool) -> onnx.ModelProto:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = list(graph.node)  # held, so each node keeps one Python object (its id marks it as core)
    core_ids = {id(n) for n in nodes if is_core(n)}
    core = [n for n in nodes if id(n) in core_ids]
    if not core:
        raise ExportError("the ONNX graph has no convolution layers to convert to FP16")
    if foreign:
        _split_shared_initializers(graph, nodes, core_ids)
    produced_in_core = {o for n in core for o in n.output}
    init_names = {i.name for i in graph.initializer}
    used_by_core = {i for n in core for i in n.input}
    for init in graph.initializer:
        if init.name in used_by_core and init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    new_nodes: list[onnx.NodeProto] = []
    to_half: dict[str, str] = {}
    for node in nodes:
        if id(node) in core_ids:
            for k, name in enumerate(node.input):
                if name and name not in produced_in_core and name not in init_names:
                    if name not in to_half:
                        to_half[name] = f"{name}__fp16"
                        new_nodes.append(
                            helper.make_node(
                                "Cast", [name], [to_half[name]], to=TensorProto.FLOAT16, name=f"{name}__to_fp16"
                            )
                        )
                    node.input[k] = to_half[name]
            new_nodes.append(node)
        else:
            new_nodes.append(node)
    # tensors leaving the core: rename the producer's output, cast back under the original name
    consumers_outside = {i for n in nodes if id(n) not in core_ids for i in n.input} | {o.name for o in graph.output}
    final: list[onnx.NodeProto] = []
    for node in new_nodes:
        final.append(node)
        if id(node) in core_ids:
            for k, name in enumerate(node.output):
                if name in consumers_outside:
                    half = f"{name}__fp16"
                    node.output[k] = half
                    for other in new_nodes:
                        if id(other) in core_ids:
                            for j, inp in enumerate(other.input):
                                if inp == name:
                                    other.input[j] = half
                    final.append(
                        helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT, name=f"{name}__to_fp32")
                    )
    del graph.node[:]
    graph.node.extend(final)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=not foreign)  # a foreign op may not infer
    onnx.checker.check_model(model)
    return model


def _split_shared_initializers(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], core_ids: set[int]) -> None:
    """An initializer read by a float16 layer and by a float32 one gets a float16 copy of its own for the
    float16 readers (converting it in place would hand the float32 reader half-precision values)."""
    from onnx import TensorProto

    outside = {name for n in nodes if id(n) not in core_ids for name in n.input}
    inside = {name for n in nodes if id(n) in core_ids for name in n.input}
    for init in list(graph.initializer):
        if init.name in outside and init.name in inside and init.data_type == TensorProto.FLOAT:
            copy = graph.initializer.add()
            copy.CopyFrom(init)
            copy.name = f"{init.name}__core"
            for node in nodes:
                if id(node) in core_ids:
                    for k, name in enumerate(node.input):
                        if name == init.name:
                            node.input[k] = copy.name


def write_fp16_onnx(src: Path, dst: Path) -> Path:
    import onnx

    from srgan_deploy.files import partial_path

    model = convert_core_to_fp16(onnx.load(str(src)))
    tmp = partial_path(dst)  # worker processes may convert the same graph at once
    try:
        onnx.save(model, str(tmp))
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def cached_fp16_core(src: Path, digest: str, work_dir: Path) -> Path:
    """The fp16-core graph of ``src`` under ``work_dir``, converted on first use.

    Named by the source's digest and the converter's version, so a changed graph or a changed converter
    never reuses a stale file. One rule for both users: the engine builder (fp16 engines) and onnxruntime's
    TensorRT provider at fp16, which must see the same graph the engine would be built from."""
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{src.stem}-{digest[:12]}-fp16core-v{CONVERTER_VERSION}.onnx"
    if not target.exists():
        write_fp16_onnx(src, target)
    return target


@dataclass(frozen=True)
class Fp16Report:
    """PSNR (dB) of FP16 output against FP32 output, per test image, and activation headroom."""

    psnr: dict[str, float]
    max_abs: dict[str, int]
    peak_activation: float  # largest |activation| seen in FP32 over all inputs
    budget_db: float

    @property
    def min_psnr(self) -> float:
        return min(self.psnr.values())

    @property
    def headroom(self) -> float:
        """How many times larger activations could grow before float16 overflows (65504)."""
        return 65504.0 / max(self.peak_activation, 1e-12)


# The TensorRT FP16 parity check requires PSNR(torch fp32, engine) >= this. Set from
# measure_fp16() on the shipped model (see docs/performance.md "FP16 numerics budget"): the
# measured minimum minus a margin for TensorRT's own kernel choices.
FP16_BUDGET_DB = 40.0


def stress_images(size: int = 48) -> dict[str, np.ndarray]:
    """Saturated and high-contrast inputs: where FP16 overflow ("black frames") shows first."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w]
    checker = (((yy // 2 + xx // 2) % 2) * 255).astype(np.uint8)
    return {
        "white": np.full((h, w, 3), 255, np.uint8),
        "black": np.zeros((h, w, 3), np.uint8),
        "checker-1px": np.repeat((((yy + xx) % 2) * 255).astype(np.uint8)[:, :, None], 3, axis=2),
        "checker-2px-colour": np.stack([checker, 255 - checker, checker], axis=2),
    }


def measure_fp16(weights: str | Path | None, images: dict[str, np.ndarray]) -> Fp16Report:
    """Run the model in float16 (torch, on GPU if present) and compare with float32 on uint8 output.

    Torch is the reference the whole project is checked against, and its float16
    convolutions keep float16 activations between layers, as TensorRT's FP16
    kernels do. Also records the largest FP32 activation, to show the distance
    from float16's overflow at 65504 (the "black frames" failure).
    """
    import torch

    from srgan_deploy.metrics import psnr
    from srgan_deploy.models import DeployGenerator
    from srgan_deploy.weights import load_generator

    generator, _ = load_generator(weights)
    model32 = DeployGenerator(generator)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model32 = model32.to(device)
    model16 = DeployGenerator(generator).to(device, torch.float16)
    peak = 0.0

    def track(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal peak
        peak = max(peak, float(out.detach().abs().max()))

    hooks = [
        m.register_forward_hook(track) for m in model32.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.PReLU))
    ]
    scores: dict[str, float] = {}
    worst: dict[str, int] = {}
    try:
        for name, image in images.items():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)
            with torch.no_grad():
                ref = model32(x).mul(255).round().clamp(0, 255).byte().cpu().numpy()
                half = model16(x.half()).float()
                if not torch.isfinite(half).all():
                    raise ExportError(f"FP16 produced inf/NaN on '{name}': the model overflows float16")
                out = half.mul(255).round().clamp(0, 255).byte().cpu().numpy()
            scores[name] = min(psnr(ref, out), 99.0)
            worst[name] = int(np.abs(ref.astype(np.int16) - out.astype(np.int16)).max())
    finally:
        for hook in hooks:
            hook.remove()
    return Fp16Report(scores, worst, peak, FP16_BUDGET_DB)
