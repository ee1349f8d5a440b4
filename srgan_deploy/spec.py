"""What the runtime must know about a super-resolution network, whoever wrote it: the model spec.

Why a spec and not SRResNet's config: tiling, the memory planner, the backends and export need only a
handful of facts (scale, channels, I/O element type, a static shape or a size multiple, the overlap tiles
need, what a pixel costs in memory). ``ModelConfig`` computes them from SRResNet's hyper-parameters
(``ModelSpec.from_config``); any other ONNX network gets them measured once, when it is first used
(``srgan_deploy.export.foreign``), and carried in the metadata of the graph the runtime runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from srgan_deploy.config import ModelConfig
from srgan_deploy.errors import ModelError

SCALES = (1, 2, 3, 4, 8)
DTYPES = ("float32", "float16", "uint8")
LAYOUTS = ("NCHW", "NHWC")
UNIT_RANGE = (0.0, 1.0)
# Peak live float activations per LR pixel per generator channel of SRResNet x4, counted on the bundled
# graphs with the counter foreign graphs get (export/foreign.py graph_cost; tests/test_foreign_models.py
# checks it): the PReLU after the last PixelShuffle reads and writes 64 channels at 4x = 2 x 16 floats per
# channel. It turns a foreign graph's activation peak into the SRResNet width whose measured memory slope
# (memory.py) stands in for it.
ACTIVATIONS_PER_WIDTH = 32.0


@dataclass(frozen=True)
class ModelSpec:
    """The facts every stage reads; ``config`` is SRResNet's config where the spec came from one."""

    scale: int
    overlap: int  # LR pixels of context a tile needs on each side for its kept part to equal the whole frame's
    memory_width: float  # the SRResNet width (generator channels) with the same memory cost per pixel
    in_channels: int = 3
    out_channels: int = 3
    dtype: str = "float32"  # the network's own I/O element type
    layout: str = "NCHW"  # the network's own layout
    static_hw: tuple[int, int] | None = None  # the only input (height, width) the network takes
    batch: int | None = None  # the only batch size it takes; None = any
    size_multiple: int = 1  # input height/width must be a multiple of this (the runtime pads inside the graph)
    input_name: str = "input"
    output_name: str = "output"
    flops_per_pixel: float | None = None  # multiply-adds x 2 per LR input pixel; None = unknown
    exact_tiling: bool = True  # False: the output depends on the whole frame, tiles are an approximation
    value_range: tuple[float, float] = UNIT_RANGE  # what black and white are in the network's own input/output
    bgr: bool = False  # the network takes and returns channels in B, G, R order
    name: str = ""
    config: ModelConfig | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ModelError(
                f"scale {self.scale} is not supported; srgan-deploy runs models that upscale "
                f"{', '.join(map(str, SCALES))} times"
            )
        if self.in_channels not in (1, 3) or self.out_channels != self.in_channels:
            raise ModelError(
                f"the model maps {self.in_channels} to {self.out_channels} channels; srgan-deploy runs RGB (3 -> 3) "
                "or grey (1 -> 1) models"
            )
        if self.dtype not in DTYPES or self.layout not in LAYOUTS:
            raise ModelError(f"unsupported model I/O {self.dtype} {self.layout}; use float32/float16 NCHW")
        if self.overlap < 0 or self.size_multiple < 1 or not math.isfinite(self.memory_width) or self.memory_width <= 0:
            raise ModelError(
                f"invalid model spec (overlap {self.overlap}, size multiple {self.size_multiple}, "
                f"memory width {self.memory_width}); the model's metadata is damaged, delete the cached file"
            )
        if (self.static_hw is not None and min(self.static_hw) < 1) or (self.batch is not None and self.batch < 1):
            raise ModelError(f"invalid static shape {self.static_hw} / batch {self.batch} in the model spec")
        lo, hi = self.value_range
        if not (math.isfinite(lo) and math.isfinite(hi) and hi - lo >= 1e-3 and max(abs(lo), abs(hi)) <= 65504):
            raise ModelError(
                f"invalid value range {list(self.value_range)}: black must be below white (by 0.001 or more), "
                "both within ±65504"
            )

    # ------------------------------------------------------------------ made from SRResNet's config
    @classmethod
    def from_config(cls, config: ModelConfig, name: str = "") -> ModelSpec:
        """Exactly the numbers the runtime used before specs existed: same overlap, same memory, same tiles."""
        return cls(
            scale=config.scale,
            overlap=config.receptive_radius,
            memory_width=float(config.channels),
            in_channels=3,
            out_channels=3,
            flops_per_pixel=srresnet_flops_per_pixel(config),
            name=name,
            config=config,
        )

    @classmethod
    def bicubic(cls, scale: int) -> ModelSpec:
        """The bicubic baseline's spec: the one it always had for SRResNet's scales, a cubic kernel's reach else."""
        if scale in (2, 4, 8):
            return cls.from_config(ModelConfig(scale=scale, channels=1, blocks=0), "bicubic")
        return cls(scale=scale, overlap=2, memory_width=1.0, name="bicubic")

    # ------------------------------------------------------------------ what older readers ask for
    @property
    def receptive_radius(self) -> int:
        """The overlap, under ``ModelConfig``'s name (tiling reads either)."""
        return self.overlap

    @property
    def channels(self) -> float:
        """SRResNet's generator width where the spec came from one, else the equivalent memory width."""
        return self.config.channels if self.config is not None else self.memory_width

    @property
    def is_srresnet(self) -> bool:
        return self.config is not None

    @property
    def is_grey(self) -> bool:
        return self.in_channels == 1

    def gflop(self, height: int, width: int) -> float | None:
        return None if self.flops_per_pixel is None else self.flops_per_pixel * height * width / 1e9

    # ------------------------------------------------------------------ JSON (graph metadata, sidecars)
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["static_hw"] = list(self.static_hw) if self.static_hw is not None else None
        data["value_range"] = list(self.value_range)
        data["config"] = asdict(self.config) if self.config is not None else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            config = ModelConfig.from_dict(data["config"]) if data.get("config") else None
            static = data.get("static_hw")
            batch = data.get("batch")
            flops = data.get("flops_per_pixel")
            lo, hi = data.get("value_range", UNIT_RANGE)
            return cls(
                scale=int(data["scale"]),
                overlap=int(data["overlap"]),
                memory_width=float(data["memory_width"]),
                in_channels=int(data.get("in_channels", 3)),
                out_channels=int(data.get("out_channels", 3)),
                dtype=str(data.get("dtype", "float32")),
                layout=str(data.get("layout", "NCHW")),
                static_hw=(int(static[0]), int(static[1])) if static else None,
                batch=int(batch) if batch is not None else None,
                size_multiple=int(data.get("size_multiple", 1)),
                input_name=str(data.get("input_name", "input")),
                output_name=str(data.get("output_name", "output")),
                flops_per_pixel=float(flops) if flops is not None else None,
                exact_tiling=bool(data.get("exact_tiling", True)),
                value_range=(float(lo), float(hi)),
                bgr=bool(data.get("bgr", False)),
                name=str(data.get("name", "")),
                config=config,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(
                f"the model spec in the file's metadata is damaged ({exc!r}); re-export the model"
            ) from exc

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"the model spec in the file's metadata is not JSON ({exc.msg}); re-export it") from exc
        if not isinstance(data, dict):
            raise ModelError("the model spec in the file's metadata is not a JSON object; re-export it")
        return cls.from_dict(data)

    def describe(self) -> str:
        """One line for people: what runs and how the runtime will feed it."""
        shape = f"static {self.static_hw[1]}x{self.static_hw[0]} input" if self.static_hw else "any input size"
        if self.size_multiple > 1 and not self.static_hw:
            shape += f" (padded to a multiple of {self.size_multiple})"
        colour = "RGB" if self.in_channels == 3 else "grey (runs on luma, chroma bicubic)"
        batch = f", batch {self.batch}" if self.batch else ""
        tiling = "" if self.exact_tiling else ", tiles approximate (the output depends on the whole frame)"
        values = (
            ""
            if self.value_range == UNIT_RANGE
            else f", values in [{_num(self.value_range[0])}, {_num(self.value_range[1])}]"
        )
        order = ", BGR" if self.bgr and self.in_channels == 3 else ""
        return (
            f"x{self.scale} {colour}{order}, {self.dtype} {self.layout}, {shape}{batch}{values}, "
            f"overlap {self.overlap}px{tiling}"
        )


def _num(value: float) -> str:
    return f"{value:g}"


def srresnet_flops_per_pixel(config: ModelConfig) -> float:
    """Convolution FLOPs (2 x MACs) per LR pixel of SRResNet; element-wise ops are <1 % and left out."""
    c = config.channels
    macs = 3 * c * 81  # head 9x9
    macs += (2 * config.blocks + 1) * c * c * 9  # residual blocks + trunk conv
    for k in range(config.upsample_steps):
        macs += c * 4 * c * 9 * (4**k)  # conv before each PixelShuffle(2)
    macs += c * 3 * 81 * config.scale**2  # tail 9x9 at output resolution
    return 2.0 * macs
