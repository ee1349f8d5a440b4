"""Put a foreign super-resolution graph inside the runtime's boundary by editing the graph, not re-tracing it.

The runtime feeds every network uint8 NHWC RGB and takes uint8 NHWC RGB back (backends/base.py). A foreign
ONNX takes float NCHW in [0, 1] under its own tensor names. The network's nodes are kept as they are and
wrapped by nodes of our own (all named ``srgan_io/...``, so the fp16 converter leaves them in float32):

    input (uint8 NHWC) -> Cast float32 -> Transpose NCHW -> / 255 -> [luma] -> [edge pad to the size multiple]
        -> [RGB to BGR] -> [to the network's value range] -> [Transpose NHWC] -> [Cast float16] -> the network
        -> [Cast float32] -> [Transpose NCHW] -> [crop] -> [from its value range] -> [BGR to RGB]
        -> [+ chroma, bicubic] -> * 255 -> Round -> Clip 0..255 -> Transpose NHWC -> Cast uint8 -> output

The uint8 tensors touch only the boundary Casts (TensorRT takes uint8 nowhere else, NVIDIA/TensorRT#3985),
as in our own exported graphs. Grey (1-channel) networks run on the luma (Y of BT.601 YCbCr); the chroma
(RGB minus Y, the same information as Cb/Cr) is upscaled bicubically beside them and added back, so grey
input (R = G = B) stays grey.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from srgan_deploy.errors import ModelError
from srgan_deploy.spec import UNIT_RANGE, ModelSpec

if TYPE_CHECKING:
    import onnx

PREFIX = "srgan_io/"
WRAP_VERSION = 2  # bump when the wrapper's nodes change: it names the cached wrapped graphs
MIN_OPSET = 11  # Round and Clip-with-inputs, which the boundary needs
LUMA = (0.299, 0.587, 0.114)  # BT.601, as JPEG's YCbCr
CUBIC_A = -0.75  # OpenCV's and PyTorch's bicubic (the runtime's alpha channel is upscaled with OpenCV's)


def ai_onnx_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def with_min_opset(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """The model at opset 11 or later (the boundary's Round needs it); older graphs are converted by ONNX's
    own version converter, and the wrapped graph is checked against the original afterwards anyway."""
    if ai_onnx_opset(model) >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors and more
        raise ModelError(
            f"{what} uses ONNX opset {ai_onnx_opset(model)} and ONNX cannot convert it to {MIN_OPSET} "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); re-export it with opset 11 or newer"
        ) from exc


def _rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename tensors everywhere they are named, subgraphs (If/Loop bodies) included."""
    from onnx import AttributeProto

    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _rename(attr.g, mapping)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _rename(sub, mapping)
    for infos in (graph.input, graph.output, graph.value_info):
        for info in infos:
            if info.name in mapping:
                info.name = mapping[info.name]


class _Builder:
    """Appends our nodes and constants, every name under ``srgan_io/``."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        full = f"{PREFIX}{name}"
        self.constants.append(numpy_helper.from_array(value, full))
        return full

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = output or f"{PREFIX}{op_type.lower()}{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{PREFIX}{op_type}_{self._count}", **attrs))
        return out


def wrap_graph(model: onnx.ModelProto, spec: ModelSpec, metadata: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``model`` with uint8 NHWC RGB ``input``/``output`` around it; ``metadata`` is added."""
    import onnx
    from onnx import TensorProto, helper

    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(with_min_opset(model, spec.name or "the model"))
    graph = wrapped.graph
    body_in, body_out = f"{PREFIX}model_in", f"{PREFIX}model_out"
    _rename(graph, {spec.input_name: body_in, spec.output_name: body_out})
    kept = [i for i in graph.input if i.name != body_in]
    del graph.input[:]
    graph.input.extend(kept)
    del graph.output[:]

    b = _Builder()
    s = spec.scale
    c255 = b.const("c255", np.array(255.0, np.float32))
    x = b.op("Cast", ["input"], to=TensorProto.FLOAT)
    x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = b.op("Div", [x, c255])
    chroma_up: str | None = None
    if spec.is_grey:
        weights = b.const("luma_weights", np.array(LUMA, np.float32).reshape(1, 3, 1, 1))
        luma = b.op("Conv", [x, weights])
        chroma = b.op("Sub", [x, luma])
        chroma_up = chroma
        if s > 1:
            roi = b.const("roi", np.zeros(0, np.float32))
            scales = b.const("chroma_scales", np.array([1, 1, s, s], np.float32))
            chroma_up = b.op(
                "Resize",
                [chroma, roi, scales],
                mode="cubic",
                coordinate_transformation_mode="half_pixel",
                cubic_coeff_a=CUBIC_A,
                exclude_outside=0,
            )
        x = luma
    out_hw: str | None = None
    m = spec.size_multiple
    if m > 1 and spec.static_hw is None:
        # pad bottom/right with edge pixels to the next multiple; the output is cropped back to scale x input
        shape = b.op("Shape", [x])
        hw = b.op("Slice", [shape, b.const("i2", np.array([2], np.int64)), b.const("i4", np.array([4], np.int64))])
        mult = b.const("multiple", np.array(m, np.int64))
        rounded = b.op("Mul", [b.op("Div", [b.op("Add", [hw, b.const("m_1", np.array(m - 1, np.int64))]), mult]), mult])
        pads = b.op("Concat", [b.const("zeros6", np.zeros(6, np.int64)), b.op("Sub", [rounded, hw])], axis=0)
        x = b.op("Pad", [x, pads], mode="edge")
        out_hw = b.op("Mul", [hw, b.const("scale_i", np.array(s, np.int64))])
    bgr = spec.bgr and not spec.is_grey
    if bgr:
        x = b.op("Gather", [x, b.const("bgr", np.array([2, 1, 0], np.int64))], axis=1)
    lo, hi = spec.value_range
    custom_range = (lo, hi) != UNIT_RANGE
    if custom_range:
        x = b.op(
            "Add",
            [
                b.op("Mul", [x, b.const("span", np.array(hi - lo, np.float32))]),
                b.const("black", np.array(lo, np.float32)),
            ],
        )
    if spec.layout == "NHWC":
        x = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    if spec.dtype == "float16":
        x = b.op("Cast", [x], to=TensorProto.FLOAT16)
    b.op("Identity", [x], body_in)
    pre = b.nodes
    b.nodes = []

    y = body_out
    if spec.dtype == "float16":
        y = b.op("Cast", [y], to=TensorProto.FLOAT)
    if spec.layout == "NHWC":
        y = b.op("Transpose", [y], perm=[0, 3, 1, 2])
    if out_hw is not None:
        y = b.op("Slice", [y, b.const("zeros2", np.zeros(2, np.int64)), out_hw, b.const("axes23", np.array([2, 3]))])
    if custom_range:
        y = b.op("Div", [b.op("Sub", [y, f"{PREFIX}black"]), f"{PREFIX}span"])
    if bgr:
        y = b.op("Gather", [y, f"{PREFIX}bgr"], axis=1)
    if chroma_up is not None:
        y = b.op("Add", [y, chroma_up])
    y = b.op("Mul", [y, c255])
    y = b.op("Round", [y])
    y = b.op("Clip", [y, b.const("zero", np.array(0.0, np.float32)), c255])
    y = b.op("Transpose", [y], perm=[0, 2, 3, 1])
    b.op("Cast", [y], "output", to=TensorProto.UINT8)

    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*pre, *body, *b.nodes])
    graph.initializer.extend(b.constants)
    batch: int | str = spec.batch if spec.batch is not None else "batch"
    if spec.static_hw is not None:
        h, w = spec.static_hw
        in_dims: list[int | str] = [batch, h, w, 3]
        out_dims: list[int | str] = [batch, h * s, w * s, 3]
    else:
        in_dims = [batch, "height", "width", 3]
        out_dims = [batch, "out_height", "out_width", 3]
    graph.input.insert(0, helper.make_tensor_value_info("input", TensorProto.UINT8, in_dims))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.UINT8, out_dims))
    for key, value in metadata.items():
        prop = wrapped.metadata_props.add()
        prop.key, prop.value = key, value
    wrapped.doc_string = f"srgan-deploy: uint8 NHWC RGB boundary around {spec.name or 'a foreign model'} x{s}"
    try:
        onnx.checker.check_model(wrapped)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the wrapped graph of {spec.name} is not valid ONNX ({str(exc).splitlines()[0]})") from exc
    return wrapped
