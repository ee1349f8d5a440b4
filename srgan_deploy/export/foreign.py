"""Any ONNX super-resolution network as a model the runtime can run: inspected, measured, wrapped, checked.

A graph without srgan-deploy's metadata is resolved once, on first use, into a ``ModelSpec`` and a wrapped
graph cached under the cache dir, keyed by the file's sha256:

1. its I/O are inspected: exactly one 4-D image input and one output, float32/float16, 1 or 3 channels,
   static or dynamic height/width and batch. What cannot run is refused with one line saying why.
2. a small probe run on onnxruntime finds the scale (1, 2, 3, 4 or 8) and the size multiple the network
   needs (it runs at 64+m for the first m that gives exactly scale x the input);
   The value range the network works in ([0, 1], [-1, 1] or [0, 255]) is measured on a smooth image, or
   read from ``<model>.onnx.json`` with its channel order (``read_settings``); both go into the spec.
3. an impulse probe finds the overlap tiles need: one input pixel changed, and how far (in input pixels)
   the output moves. Why measure: a foreign graph's receptive field is unknown, and tiles stitched with less
   overlap than it differ from the whole frame. A network whose output moves everywhere (global pooling,
   attention) is flagged: its tiles are an approximation, and the runtime says so.
4. one run with every intermediate tensor exposed counts the activations (the memory planner's cost) and the
   convolution FLOPs (bench's GFLOP/s).
5. the graph is wrapped into the uint8 NHWC boundary (``export.wrap``) and the wrapped graph is checked
   against the original on onnxruntime: within one uint8 level on 99.9 % of values, or it is not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from srgan_deploy.artifacts import OnnxModel, is_ours
from srgan_deploy.errors import ExportError, ModelError, ParityError
from srgan_deploy.notices import Notify
from srgan_deploy.spec import ACTIVATIONS_PER_WIDTH, SCALES, UNIT_RANGE, ModelSpec

if TYPE_CHECKING:
    import onnx

    from srgan_deploy.export.verify import Parity

SCALE_PROBE = 64  # input edge of the scale probe: a multiple of every size multiple tried
MULTIPLES = (1, 2, 4, 8, 16, 32)
IMPULSE_PROBE = 128
CHEAP_PROBE_FLOP = 2e11  # a second, larger impulse probe only when it costs less than this
DEFAULT_OVERLAP = 16  # for networks whose output depends on the whole frame: a moderate context
VISIBLE = 0.5 / 255  # an output change below half a uint8 level cannot show after rounding (usually)
FP16_ELEM = 10  # onnx.TensorProto.FLOAT16
FLOAT_ELEM = 1  # onnx.TensorProto.FLOAT


# --------------------------------------------------------------------------- 1. inputs and outputs


@dataclass(frozen=True)
class GraphIO:
    input_name: str
    output_name: str
    dtype: str  # float32 | float16
    layout: str  # NCHW | NHWC
    channels: int
    batch: int | None
    static_hw: tuple[int, int] | None


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]


def inspect_io(model: onnx.ModelProto, what: str) -> GraphIO:
    """The one image input and output, or one line saying why this graph is not a single-image SR network."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(
            f"{what} has {len(inputs)} inputs ({names}); srgan-deploy runs super-resolution models with one image input"
        )
    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output)
        raise ModelError(
            f"{what} has {len(graph.output)} outputs ({names}); srgan-deploy runs models with one image output"
        )
    inp, out = inputs[0], graph.output[0]
    if not inp.type.HasField("tensor_type"):
        raise ModelError(f"{what}'s input '{inp.name}' is not a tensor; srgan-deploy runs image-to-image models")
    dims = _dims(inp)
    if len(dims) == 5:
        raise ModelError(
            f"{what} takes a 5-D input {_shape_text(dims)}: a multi-frame (video) model; srgan-deploy runs "
            "single-image models (N, C, H, W)"
        )
    if len(dims) != 4:
        raise ModelError(f"{what} takes a {len(dims)}-D input; srgan-deploy runs 4-D image models (N, C, H, W)")
    out_dims = _dims(out)
    if out.type.tensor_type.HasField("shape") and len(out_dims) != 4:
        raise ModelError(f"{what} returns a {len(out_dims)}-D output; srgan-deploy runs models that return an image")
    elem = inp.type.tensor_type.elem_type
    dtypes = {FLOAT_ELEM: "float32", FP16_ELEM: "float16"}
    if elem not in dtypes:
        import onnx

        name = onnx.TensorProto.DataType.Name(elem)
        raise ModelError(f"{what} takes {name} input; srgan-deploy wraps float32 or float16 models (values in [0, 1])")
    out_elem = out.type.tensor_type.elem_type
    if out_elem != elem:
        raise ModelError(f"{what} takes {dtypes[elem]} but returns another type; both must be float32 or float16")
    n, d1, d2, d3 = dims
    if d1 in (1, 3) or (d1 is None and d3 not in (1, 3)):
        layout, channels, hw = "NCHW", d1 or 3, (d2, d3)
    elif d3 in (1, 3):
        layout, channels, hw = "NHWC", d3, (d1, d2)
    else:
        raise ModelError(
            f"{what} takes {_shape_text(dims)}: neither 1 nor 3 channels; srgan-deploy runs RGB or grey models"
        )
    if layout == "NHWC" and channels == 1:
        raise ModelError(f"{what} is a grey channels-last model; srgan-deploy runs grey models in NCHW layout")
    h, w = hw
    static = (h, w) if h is not None and w is not None else None
    if (h is None) != (w is None):
        raise ModelError(
            f"{what} fixes one of height/width only ({_shape_text(dims)}); srgan-deploy runs models with both "
            "fixed or both free"
        )
    return GraphIO(inp.name, out.name, dtypes[elem], layout, channels, n, static)


def _shape_text(dims: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


# --------------------------------------------------------------------------- 2-4. probes on onnxruntime


class Probe:
    """The original graph on onnxruntime's CPU provider, fed NCHW float32 RGB in [0, 1] and returning the same:
    values and channel order are converted to and from the network's own (``value_range``, ``bgr``)."""

    def __init__(
        self,
        model: onnx.ModelProto,
        io: GraphIO,
        what: str,
        value_range: tuple[float, float] = UNIT_RANGE,
        bgr: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.io = io
        self.what = what
        self.value_range = value_range
        self.bgr = bgr and io.channels == 3
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a probe size the network refuses is expected, not news
        try:
            self.session = ort.InferenceSession(
                model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot load {what}: {_first_line(exc)}") from exc

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: (N, C, H, W) float32 in [0, 1]; batches are split to a fixed batch (padded with repeats)."""
        lo, hi = self.value_range
        if self.bgr:
            x = x[:, ::-1]
        if (lo, hi) != UNIT_RANGE:
            x = x * np.float32(hi - lo) + np.float32(lo)
        y = self.raw(np.ascontiguousarray(x, dtype=np.float32))
        if (lo, hi) != UNIT_RANGE:
            y = (y - np.float32(lo)) / np.float32(hi - lo)
        return np.ascontiguousarray(y[:, ::-1]) if self.bgr else y

    def raw(self, x: np.ndarray) -> np.ndarray:
        """x: (N, C, H, W) float32 in the network's own values and channel order."""
        b = self.io.batch
        if b is not None and len(x) != b:
            parts = []
            for i in range(0, len(x), b):
                piece = x[i : i + b]
                if len(piece) < b:
                    piece = np.concatenate([piece, np.repeat(piece[-1:], b - len(piece), axis=0)])
                parts.append(self.raw(piece)[: min(b, len(x) - i)])
            return np.concatenate(parts)
        feed = x.transpose(0, 2, 3, 1) if self.io.layout == "NHWC" else x
        dtype = np.float16 if self.io.dtype == "float16" else np.float32
        y = self.session.run(None, {self.io.input_name: np.ascontiguousarray(feed, dtype=dtype)})[0]
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 4:
            raise ModelError(f"{self.what} returned a {y.ndim}-D output; srgan-deploy runs models that return an image")
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if self.io.layout == "NHWC" else y


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _probe_input(channels: int, h: int, w: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.8, (batch, channels, h, w)).astype(np.float32)


def find_scale(probe: Probe) -> tuple[int, int]:
    """(scale, size multiple), or one line saying why the output is not a whole multiple of the input."""
    io = probe.io
    h, w = io.static_hw or (SCALE_PROBE, SCALE_PROBE)
    try:
        y = probe(_probe_input(io.channels, h, w))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{probe.what} failed on a {w}x{h} probe input: {_first_line(exc)}") from exc
    if y.shape[1] != io.channels:
        raise ModelError(
            f"{probe.what} maps {io.channels} to {y.shape[1]} channels; srgan-deploy runs RGB (3 -> 3) or grey (1 -> 1) models"
        )
    oh, ow = y.shape[2:]
    sh, sw = oh / h, ow / w
    if sh != sw:
        raise ModelError(
            f"{probe.what} scales height {sh:g}x and width {sw:g}x ({w}x{h} -> {ow}x{oh}); srgan-deploy runs models "
            "with one scale"
        )
    if sh != int(sh):
        if abs(sh * 4 - round(sh * 4)) < 1e-9:
            raise ModelError(
                f"{probe.what} has a non-integer scale {sh:g} ({w}x{h} -> {ow}x{oh}); srgan-deploy runs models that "
                f"upscale {', '.join(map(str, SCALES))} times"
            )
        raise ModelError(
            f"{probe.what}'s output {ow}x{oh} is not a multiple of its {w}x{h} input; srgan-deploy runs models whose "
            "output is exactly scale x the input (no cropping or valid-padding networks)"
        )
    scale = int(sh)
    if scale not in SCALES:
        raise ModelError(
            f"{probe.what} upscales {scale} times; srgan-deploy runs models that upscale "
            f"{', '.join(map(str, SCALES))} times"
        )
    if io.static_hw is not None:
        return scale, 1
    for m in MULTIPLES:
        size = SCALE_PROBE + m
        try:
            y = probe(_probe_input(io.channels, size, size))
        except ModelError:
            raise
        except Exception:  # noqa: BLE001 - a size the network refuses: try the next multiple
            continue
        if y.shape[2:] == (size * scale, size * scale):
            return scale, m
    return scale, SCALE_PROBE


def _reach(mask: np.ndarray, scale: int, cy: int, cx: int) -> int:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0
    return int(max(np.abs(ys // scale - cy).max(), np.abs(xs // scale - cx).max()))


def find_overlap(probe: Probe, scale: int, multiple: int, flops_per_pixel: float | None) -> tuple[int, bool]:
    """(overlap in LR pixels, whether tiles stitched with it equal the whole frame).

    One input pixel is raised on one random background and lowered on another; every output pixel that moves
    is within the network's receptive radius of it. The radius measured plus one pixel of margin (a path a
    ReLU happened to close on both backgrounds) is the overlap. When the change reaches the probe's border,
    a larger probe is tried if it is cheap; else the reach of changes that can show after rounding (half a
    uint8 level) is used, and tiles are flagged as approximate."""
    io = probe.io
    if io.static_hw is not None:
        sizes = [io.static_hw]
    else:
        edge = -(-IMPULSE_PROBE // multiple) * multiple
        sizes = [(edge, edge)]
        big = 2 * edge
        if flops_per_pixel is not None and flops_per_pixel * big * big * 4 < CHEAP_PROBE_FLOP:
            sizes.append((big, big))
    visible_reach, limit = 0, 0
    for h, w in sizes:
        base = _probe_input(io.channels, h, w, batch=2, seed=1)
        moved = base.copy()
        cy, cx = h // 2, w // 2
        moved[0, :, cy, cx] += 0.3
        moved[1, :, cy, cx] -= 0.3
        diff = np.abs(probe(moved) - probe(base)).max(axis=(0, 1))
        limit = min(h, w) // 2 - 2
        exact = _reach(diff > 0, scale, cy, cx)
        if exact < limit:
            return exact + 1, True
        visible_reach = _reach(diff > VISIBLE, scale, cy, cx)
    if visible_reach < limit:
        return visible_reach + 1, False
    return min(DEFAULT_OVERLAP, limit), False


RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))  # the conventions networks are trained with
SANE_DB = 25.0  # fed its own range, a network returns a smooth image close to its bicubic upscale
BROKEN_DB = 20.0  # below this on a smooth image, the output is not the input upscaled


def _smooth_input(channels: int, h: int, w: int) -> np.ndarray:
    """A band-limited image (a coarse random grid upscaled bicubically): what any SR network, fed the values
    it was trained on, should return close to the bicubic upscale of (it has no detail to invent)."""
    import cv2

    rng = np.random.default_rng(3)
    coarse = rng.uniform(0.15, 0.85, (channels, 6, 6)).astype(np.float32)
    planes = [cv2.resize(plane, (w, h), interpolation=cv2.INTER_CUBIC) for plane in coarse]
    return np.clip(np.stack(planes)[None], 0.1, 0.9).astype(np.float32)


def range_scores(probe: Probe, scale: int, multiple: int) -> dict[tuple[float, float], float]:
    """PSNR (dB) of the network's output against the bicubic upscale of a smooth input, fed in each value
    convention and read back in the same one; -inf where it fails or returns non-finite values."""
    io = probe.io
    edge = -(-SCALE_PROBE // multiple) * multiple
    h, w = io.static_hw or (edge, edge)
    x = _smooth_input(io.channels, h, w)
    expected = cubic_upscale(x, scale) if scale > 1 else x
    out_side = min(h, w) * scale
    border = min(4 * scale, out_side // 4)  # networks pad their borders their own way
    scores: dict[tuple[float, float], float] = {}
    saved = probe.value_range
    try:
        for value_range in RANGES:
            probe.value_range = value_range
            try:
                y = probe(x)
            except Exception:  # noqa: BLE001 - a network that cannot take these values simply scores nothing
                scores[value_range] = float("-inf")
                continue
            inner = (slice(None), slice(None), slice(border, out_side - border), slice(border, out_side - border))
            with np.errstate(all="ignore"):
                mse = float(np.mean((y[inner].astype(np.float64) - expected[inner]) ** 2))
            scores[value_range] = (
                10 * np.log10(1.0 / mse)
                if np.isfinite(mse) and mse > 0
                else (float("inf") if mse == 0 else float("-inf"))
            )
    finally:
        probe.value_range = saved
    return scores


def pick_range(scores: dict[tuple[float, float], float]) -> tuple[float, float]:
    """[0, 1] (the common convention) unless its output is not the input upscaled and another convention's is.

    Why not simply the best score: a network fed a sub-range of its own (a [-1, 1] network fed [0, 1], i.e. a
    washed-out image) still returns the right picture, often closer to bicubic than when fed its full range;
    only a range that breaks the output is evidence."""
    unit = scores.get(UNIT_RANGE, float("-inf"))
    best = max(RANGES, key=lambda r: scores.get(r, float("-inf")))
    if unit < BROKEN_DB and scores.get(best, float("-inf")) >= SANE_DB:
        return best
    return UNIT_RANGE


@dataclass(frozen=True)
class GraphCost:
    activations_per_pixel: float  # peak float activations live around one node, per LR input pixel
    flops_per_pixel: float  # 2 x multiply-adds of Conv/ConvTranspose/MatMul/Gemm per LR input pixel


def graph_cost(model: onnx.ModelProto, io: GraphIO, multiple: int) -> GraphCost:
    """Every intermediate tensor exposed for one run at a small size: real shapes, whatever the graph does."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    h, w = io.static_hw or (max(32, multiple), max(32, multiple))
    batch = io.batch or 1
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    graph = exposed.graph
    known = {o.name for o in graph.output}
    for node in graph.node:
        for name in node.output:
            if name and name not in known:
                graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a probe size the network refuses is expected, not news
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    session = ort.InferenceSession(
        exposed.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    x = _probe_input(io.channels, h, w, batch)
    feed = x.transpose(0, 2, 3, 1) if io.layout == "NHWC" else x
    dtype = np.float16 if io.dtype == "float16" else np.float32
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {io.input_name: np.ascontiguousarray(feed, dtype=dtype)})
    shapes: dict[str, tuple[int, ...]] = {n: tuple(np.shape(v)) for n, v in zip(names, values, strict=True)}
    shapes[io.input_name] = tuple(feed.shape)
    weights = {i.name: tuple(numpy_helper.to_array(i).shape) for i in graph.initializer}
    data = {io.input_name}  # tensors that depend on the input: activations, not weights or shapes
    peak = 0.0
    macs = 0.0
    for node in model.graph.node:
        if not any(i in data for i in node.input):
            continue
        data.update(o for o in node.output if o)
        live = sum(float(np.prod(shapes[t])) for t in (*node.input, *node.output) if t in data and t in shapes)
        peak = max(peak, live)
        macs += _node_macs(node, shapes, weights)
    pixels = float(batch * h * w)
    return GraphCost(peak / pixels, 2.0 * macs / pixels)


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]) -> float:
    def shape(name: str) -> tuple[int, ...] | None:
        return shapes.get(name) or weights.get(name)

    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) >= 2:
        kernel, x, y = shape(node.input[1]), shape(node.input[0]), shape(node.output[0])
        if kernel is None or x is None or y is None:
            return 0.0
        per_position = float(np.prod(kernel[1:]))  # (C_in / group) x kh x kw, or (C_out / group) x kh x kw
        if node.op_type == "Conv":
            return float(np.prod(y)) * per_position
        return float(np.prod(x)) * per_position
    if node.op_type in ("MatMul", "Gemm") and len(node.input) >= 2:
        a, y = shape(node.input[0]), shape(node.output[0])
        if a is None or y is None or not a:
            return 0.0
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        k = a[-2] if trans_a and len(a) >= 2 else a[-1]
        return float(np.prod(y)) * k
    return 0.0


# --------------------------------------------------------------------------- the spec, the wrapped graph


@dataclass(frozen=True)
class Settings:
    """What a user says about a model that cannot be measured reliably, in ``<model>.onnx.json`` beside it:
    ``{"value_range": [-1, 1], "channel_order": "BGR"}``. Both keys optional."""

    value_range: tuple[float, float] | None = None
    bgr: bool = False
    text: str = ""  # canonical JSON, part of the cache key and of a resumed job's identity

    @property
    def digest(self) -> str:
        import hashlib

        return hashlib.sha256(self.text.encode()).hexdigest()


KNOWN_SETTINGS = ("value_range", "channel_order")


MAX_VALUE = 65504.0  # float16's largest: the range must survive an fp16 network's input and output
MIN_SPAN = 1e-3  # a narrower range would turn uint8 levels into float noise


def _range_of(raw: object) -> tuple[float, float] | None:
    """[black, white] as floats a float32/float16 graph can hold, or None."""
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in raw)
    ):
        return None
    try:
        lo, hi = float(raw[0]), float(raw[1])
    except OverflowError:  # an integer too large for a float
        return None
    if not (abs(lo) <= MAX_VALUE and abs(hi) <= MAX_VALUE and float(np.float32(hi) - np.float32(lo)) >= MIN_SPAN):
        return None
    return lo, hi


def settings_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_settings(path: Path) -> Settings | None:
    """The settings file beside ``path``, or None; a file that cannot be used is one line saying why."""
    import json

    side = settings_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8-sig"))  # a BOM, as Windows editors write, is fine
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{side} is not readable JSON ({_first_line(exc)}); fix it or delete it") from exc
    if not isinstance(data, dict):
        raise ModelError(f'{side} must be a JSON object such as {{"value_range": [-1, 1]}}')
    unknown = sorted(set(data) - set(KNOWN_SETTINGS))
    if unknown:
        raise ModelError(f"{side}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KNOWN_SETTINGS)}")
    value_range: tuple[float, float] | None = None
    if "value_range" in data:
        value_range = _range_of(data["value_range"])
        if value_range is None:
            raise ModelError(
                f"{side}: value_range must be [black, white], numbers with black < white and both within "
                f"±{MAX_VALUE:g}, e.g. [0, 1], [-1, 1] or [0, 255]"
            )
    order = data.get("channel_order", "RGB")
    if order not in ("RGB", "BGR"):
        raise ModelError(f'{side}: channel_order must be "RGB" or "BGR", not {json.dumps(order)}')
    canonical = {"value_range": list(value_range) if value_range else None, "channel_order": order}
    return Settings(value_range, order == "BGR", json.dumps(canonical, sort_keys=True))


def inspect_model(
    model: onnx.ModelProto, name: str, what: str, settings: Settings | None = None, notify: Notify | None = None
) -> ModelSpec:
    """The spec of a foreign graph, measured on onnxruntime (seconds for small networks)."""
    from srgan_deploy.export.wrap import with_min_opset

    io = inspect_io(model, what)
    probe = Probe(model, io, what, bgr=settings.bgr if settings else False)
    scale, multiple = find_scale(probe)
    if settings is not None and settings.value_range is not None:
        probe.value_range = settings.value_range
    else:
        scores = range_scores(probe, scale, multiple)
        probe.value_range = pick_range(scores)
        if notify is not None:
            _say_range(probe.value_range, scores, what, notify)
    try:
        cost: GraphCost | None = graph_cost(with_min_opset(model, what), io, multiple)
    except Exception:  # noqa: BLE001 - the cost is an estimate; a graph it cannot expose still runs
        cost = None
    flops = cost.flops_per_pixel if cost is not None else None
    overlap, exact = find_overlap(probe, scale, multiple, flops)
    if io.channels == 1 and scale > 1:
        overlap = max(overlap, 2)  # the chroma's bicubic kernel reaches 2 LR pixels
    if io.static_hw is not None:
        cap = (min(io.static_hw) - 2) // 2  # a tile must keep something between its two overlaps
        if overlap > cap:
            overlap, exact = max(cap, 0), False
    width = cost.activations_per_pixel / ACTIVATIONS_PER_WIDTH if cost is not None else 64.0
    return ModelSpec(
        scale=scale,
        overlap=overlap,
        memory_width=max(width, 1.0),
        in_channels=io.channels,
        out_channels=io.channels,
        dtype=io.dtype,
        layout=io.layout,
        static_hw=io.static_hw,
        batch=io.batch,
        size_multiple=multiple if io.static_hw is None else 1,
        input_name=io.input_name,
        output_name=io.output_name,
        flops_per_pixel=flops if flops else None,
        exact_tiling=exact,
        value_range=probe.value_range,
        bgr=probe.bgr,
        name=name,
    )


def _bracket(value_range: tuple[float, float]) -> str:
    return f"[{value_range[0]:g}, {value_range[1]:g}]"


def _say_range(
    chosen: tuple[float, float], scores: dict[tuple[float, float], float], what: str, notify: Notify
) -> None:
    unit = scores.get(UNIT_RANGE, float("-inf"))
    hint = f'if that is wrong, put {{"value_range": [black, white]}} in {what}.json beside it'
    if chosen != UNIT_RANGE:
        notify(
            f"{what} takes values in {_bracket(chosen)} (measured: fed [0, 1] its output was {unit:.0f} dB from the "
            f"input upscaled, fed {_bracket(chosen)} {scores[chosen]:.0f} dB); {hint}"
        )
    elif unit < BROKEN_DB:
        notify(
            f"{what}'s output does not look like its input upscaled ({unit:.0f} dB from bicubic on a smooth image, "
            f'fed [0, 1], [-1, 1] or [0, 255]); {hint}, and "channel_order": "BGR" if it takes BGR'
        )


def load_model(path: Path) -> onnx.ModelProto:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model ({_first_line(exc)})") from exc


def wrapped_path(path: Path, sha256: str, cache: Path, settings: Settings | None = None) -> Path:
    from srgan_deploy.export.wrap import WRAP_VERSION

    said = f"-s{settings.digest[:8]}" if settings is not None else ""
    return cache / "foreign" / f"{path.stem}-{sha256[:16]}{said}-w{WRAP_VERSION}.onnx"


def model_sha256(path: Path) -> str:
    """The file's sha256, or for a model whose weights live in external data files (large exports), one
    over the graph file and every data file it names: new weights in ``model.onnx.data`` are a new model."""
    import hashlib

    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    from srgan_deploy.weights import file_sha256

    sha = file_sha256(path)
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable file is refused with its own message when it is loaded
        return sha
    locations = sorted({ExternalDataInfo(t).location for t in _tensors(graph.graph) if uses_external_data(t)})
    if not locations:
        return sha
    digest = hashlib.sha256(sha.encode())
    for location in locations:
        data = path.parent / location
        if not data.is_file():
            raise ModelError(f"{path.name} keeps its weights in {location}, which is not beside it; copy it there")
        digest.update(f"{location}:{file_sha256(data)}".encode())
    return digest.hexdigest()


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    """Every tensor a graph holds: initializers and attribute tensors, in subgraphs (If/Loop/Scan) too."""
    from onnx import AttributeProto

    found = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                found.append(attr.t)
            elif attr.type == AttributeProto.TENSORS:
                found.extend(attr.tensors)
            elif attr.type == AttributeProto.GRAPH:
                found.extend(_tensors(attr.g))
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found.extend(_tensors(sub))
    return found


def identity(path: Path) -> str:
    """What a resumed job compares: the model's sha256, its settings file's when there is one, and the wrapper's
    version (a new wrapper may measure or feed the network differently: a different graph runs)."""
    from srgan_deploy.export.wrap import WRAP_VERSION

    settings = read_settings(path)
    sha = model_sha256(path)
    said = "" if settings is None else f"+{settings.digest}"
    return f"{sha}{said}+w{WRAP_VERSION}"


_SAID: set[str] = set()


def resolve_onnx(path: Path, cache: Path, notify: Notify) -> OnnxModel:
    """The graph the runtime runs for this ONNX file: the file itself when srgan-deploy wrote it, else its
    wrapped graph from the cache, made (inspected, wrapped, verified) on first use under a lock, so
    ``--workers N`` processes make it once."""
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    try:
        ours = is_ours(path)
    except ExportError as exc:
        raise ModelError(f"{path} is not a readable ONNX model; give an .onnx file (or a .safetensors)") from exc
    if ours:
        return OnnxModel.from_path(path)
    from srgan_deploy.files import file_lock

    settings = read_settings(path)
    sha = model_sha256(path)
    target = wrapped_path(path, sha, cache, settings)
    said = settings.text if settings is not None else ""
    model = _cached(target, sha, said)
    if model is None:
        with file_lock(target.with_suffix(".lock")):
            model = _cached(target, sha, said) or _make_wrapped(path, sha, target, settings, notify)
    _say_once(model, notify)
    return model


def _cached(target: Path, sha: str, settings: str) -> OnnxModel | None:
    if not target.is_file():
        return None
    try:
        model = OnnxModel.from_path(target)
    except Exception:  # noqa: BLE001 - a damaged cache file is remade, not reported
        return None
    meta = model.metadata
    fresh = meta.get("srgan_deploy.source_sha256") == sha and meta.get("srgan_deploy.settings", "") == settings
    return model if fresh else None


def _make_wrapped(path: Path, sha: str, target: Path, settings: Settings | None, notify: Notify) -> OnnxModel:
    import onnx

    from srgan_deploy.export.wrap import WRAP_VERSION, wrap_graph
    from srgan_deploy.files import partial_path

    what = path.name
    original = load_model(path)
    inspect_io(original, what)  # a graph that cannot run is refused before anything is said about measuring it
    notify(f"{what} is not an srgan-deploy model: measuring it once (scale, overlap, cost) and wrapping it")
    spec = inspect_model(original, path.stem, what, settings, notify)
    meta = {
        "srgan_deploy.spec": spec.to_json(),
        "srgan_deploy.io": "uint8",
        "srgan_deploy.model_name": path.stem,
        "srgan_deploy.source": path.name,
        "srgan_deploy.source_sha256": sha,
        "srgan_deploy.wrap_version": str(WRAP_VERSION),
    }
    if settings is not None:
        meta["srgan_deploy.settings"] = settings.text
    wrapped = wrap_graph(original, spec, meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    try:
        onnx.save(wrapped, str(tmp))
        parity = verify_wrapped(original, tmp, spec)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    worst = max(p.max_abs for p in parity)
    notify(f"{what}: {spec.describe()}; wrapped graph matches the original on onnxruntime (max diff {worst:g} level)")
    return OnnxModel.from_path(target)


def _say_once(model: OnnxModel, notify: Notify) -> None:
    """What changes how the output is made, said once per model and process."""
    spec = model.spec
    key = str(model.path)
    if key in _SAID:
        return
    _SAID.add(key)
    if spec.is_grey:
        notify(f"{spec.name} is a grey (1-channel) model: it runs on luma (Y); colour is upscaled bicubically")
    if not spec.exact_tiling:
        notify(
            f"{spec.name}'s output depends on more of the frame than a {spec.overlap}px overlap covers (measured): "
            "tiles (from --tile or the memory budget) may differ slightly from a whole frame"
        )


# --------------------------------------------------------------------------- references and parity


def cubic_upscale(planes: np.ndarray, scale: int) -> np.ndarray:
    """(N, C, H, W) float32 upscaled by OpenCV's bicubic (a = -0.75, pixel centres, edges repeated)."""
    import cv2

    n, c, h, w = planes.shape
    out = np.empty((n, c, h * scale, w * scale), np.float32)
    for i in range(n):
        hwc = np.ascontiguousarray(planes[i].transpose(1, 2, 0))
        up = cv2.resize(hwc, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
        out[i] = (up[:, :, None] if up.ndim == 2 else up).transpose(2, 0, 1)
    return out


class OriginalReference:
    """The original graph on onnxruntime with the boundary done in numpy: uint8 NHWC RGB in and out.

    What the wrapped graph and every engine built from it are checked against: the network itself, fed the
    way its authors feed it (float in its value range and channel order). Static-shape networks are tiled (and small frames padded) as the
    runtime does; size multiples are met by edge padding, as the wrapper does."""

    def __init__(self, model: onnx.ModelProto | Path, spec: ModelSpec) -> None:
        original = load_model(model) if isinstance(model, Path) else model
        self.spec = spec
        io = GraphIO(
            spec.input_name, spec.output_name, spec.dtype, spec.layout, spec.in_channels, spec.batch, spec.static_hw
        )
        self.probe = Probe(original, io, spec.name or "the model", spec.value_range, spec.bgr)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        from srgan_deploy.export.wrap import LUMA

        spec, s = self.spec, self.spec.scale
        x = frames.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        chroma_up = None
        if spec.is_grey:
            luma = np.tensordot(np.array(LUMA, np.float32), x, axes=([0], [1]))[:, None].astype(np.float32)
            chroma = x - luma
            chroma_up = cubic_upscale(chroma, s) if s > 1 else chroma
            x = luma
        y = self._network(x)
        if chroma_up is not None:
            y = y + chroma_up
        out = np.clip(np.round(y * np.float32(255.0)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out.transpose(0, 2, 3, 1))

    def _network(self, x: np.ndarray) -> np.ndarray:
        spec, s = self.spec, self.spec.scale
        _, _, h, w = x.shape
        if spec.static_hw is not None:
            th, tw = spec.static_hw
            if h <= th and w <= tw:
                padded = np.pad(x, ((0, 0), (0, 0), (0, th - h), (0, tw - w)), mode="edge")
                return self.probe(padded)[:, :, : h * s, : w * s]
            from srgan_deploy.tiling import TilePlan, upscale_tiled

            plan = TilePlan.for_frame(h, w, (th, tw), spec.overlap)
            nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

            def run(tiles: np.ndarray) -> np.ndarray:
                nchw = tiles.transpose(0, 3, 1, 2)
                return self._network(np.ascontiguousarray(nchw)).transpose(0, 2, 3, 1)

            return np.ascontiguousarray(upscale_tiled(nhwc, plan, run, s).transpose(0, 3, 1, 2))
        m = spec.size_multiple
        ph, pw = -h % m, -w % m
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        return self.probe(x)[:, :, : h * s, : w * s]


def verify_shapes(spec: ModelSpec) -> list[tuple[int, int, int]]:
    """(batch, height, width) the wrapped graph is checked at: the static shape, or a square and an odd one."""
    if spec.static_hw is not None:
        h, w = spec.static_hw
        return [(spec.batch or 1, h, w), (spec.batch or 2, h, w)]
    return [(spec.batch or 1, 32, 32), (spec.batch or 2, 37, 53)]


def verify_wrapped(original: onnx.ModelProto | Path, wrapped: Path, spec: ModelSpec) -> list[Parity]:
    """The wrapped graph (uint8 boundary) against the original network on onnxruntime: within one level on
    99.9 % of values (rounding of values within float error of .5 may differ), or ParityError."""
    import onnxruntime as ort

    from srgan_deploy.export.verify import UINT8_FRACTION, compare
    from srgan_deploy.images import make_input

    reference = OriginalReference(original, spec)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a probe size the network refuses is expected, not news
    session = ort.InferenceSession(str(wrapped), sess_options=options, providers=["CPUExecutionProvider"])
    results = []
    for k, shape in enumerate(verify_shapes(spec)):
        frames = make_input(shape, seed=k)
        ref = reference(frames)
        out = np.asarray(session.run(["output"], {"input": frames})[0])
        if out.shape != ref.shape:
            raise ParityError(
                f"the wrapped {spec.name} returns {out.shape} where the original gives {ref.shape}; report a bug"
            )
        result = compare(ref, out, shape, 255.0)
        results.append(result)
        if result.within_one < UINT8_FRACTION or result.max_abs > 2:
            raise ParityError(
                f"the wrapped {spec.name} does not match the original on onnxruntime at {result.line()}; report a bug"
            )
    return results
