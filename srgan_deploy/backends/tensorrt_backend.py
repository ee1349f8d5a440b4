"""TensorRT backend: FP16 engine from the cache (built on first use), K in-flight CUDA slots.

The engine call is the only TensorRT-specific step; streams, pinned buffers,
events and ordering are ``srgan_deploy.gpu.inflight``, shared with the torch CUDA path.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.backends.base import Backend, check_frames
from srgan_deploy.cache import cache_dir
from srgan_deploy.errors import EngineError, ShapeError


def cuda_device_count() -> int:
    from srgan_deploy.gpu.cuda_rt import device_count

    return device_count()


class TensorRTBackend(Backend):
    name = "tensorrt"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        from srgan_deploy.info import tensorrt_status

        ok, why = tensorrt_status()
        if not ok:
            return False, why
        from srgan_deploy.gpu.cuda_rt import INSTALL_HINT, has_cuda_python

        if not has_cuda_python():
            return False, f"{why}, but {INSTALL_HINT}"
        if cuda_device_count() == 0:
            return False, f"{why}, but no CUDA GPU is visible"
        return True, why

    def _profile(self) -> Any:
        from srgan_deploy.export.shapes import ShapeProfile

        if self.options.tile is not None:
            t = self.options.tile
            return ShapeProfile.static(1, t, t)
        if self.options.max_shape is not None:
            h, w = self.options.max_shape
            return ShapeProfile((1, 16, 16), (1, min(270, h), min(480, w)), (1, h, w))
        return ShapeProfile.parse(None, None, None)

    def _open(self) -> None:
        from srgan_deploy.export.onnx import cached_onnx, read_metadata
        from srgan_deploy.export.tensorrt import BuildOptions, deserialize, get_engine

        weights = self.options.weights
        root = cache_dir(self.options.cache_dir)
        notify = self.options_notify
        if weights is not None and str(weights).endswith(".plan"):
            plan_path = Path(weights)
            sidecar = plan_path.with_suffix(".json")
            if not plan_path.is_file() or not sidecar.is_file():
                raise EngineError(
                    f"{plan_path} (with its .json sidecar) not found; build one with srgan-deploy export --format tensorrt"
                )
            meta = json.loads(sidecar.read_text())
            from srgan_deploy.export.shapes import ShapeProfile

            prof = meta["spec"]["profile"]
            profile = ShapeProfile(tuple(prof[0]), tuple(prof[1]), tuple(prof[2]))  # type: ignore[arg-type]
            self.scale = int(meta.get("scale", 4))
            self._overlap = int(meta.get("receptive_radius", 40))
        else:
            onnx_path = (
                Path(weights)
                if weights is not None and str(weights).endswith(".onnx")
                else cached_onnx(weights, root, io="uint8")
            )
            meta_onnx = read_metadata(onnx_path)
            if meta_onnx.get("srgan_deploy.io") != "uint8":
                raise EngineError(f"{onnx_path} is not a uint8-I/O export; the runtime needs --io uint8")
            from srgan_deploy.config import ModelConfig

            config = ModelConfig.from_json(meta_onnx["srgan_deploy.config"])
            self.scale = config.scale
            self._overlap = config.receptive_radius
            profile = self._profile()
            precision = "fp32" if self.options.precision == "fp32" else "fp16"
            plan_path, _, _ = get_engine(
                onnx_path,
                root / "engines",
                precision,
                profile,
                "uint8",
                BuildOptions(notify=notify),
                name=onnx_path.stem,
            )
        engine, self._runtime, self._logger = deserialize(plan_path.read_bytes())
        if engine is None:
            raise EngineError(
                f"TensorRT could not deserialize {plan_path}: built by another TensorRT version or GPU; rebuild it"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if names != ["input", "output"]:
            raise EngineError(f"{plan_path} has I/O tensors {names}: not an srgan-deploy engine")
        self.engine = engine
        self.profile = profile
        from srgan_deploy.gpu.inflight import CudaSlot, SlotPipeline, TensorRTCompute

        use_graphs = profile.is_static
        slots = [
            CudaSlot(TensorRTCompute(engine, "input", "output", use_graphs, notify), profile.max, self.scale)
            for _ in range(self.options.slots)
        ]
        self.pipeline = SlotPipeline(list(slots))
        self.device_label = "cuda fp16" if self.options.precision != "fp32" else "cuda fp32"

    def options_notify(self, message: str) -> None:
        import sys

        print(f"srgan-deploy: {message}", file=sys.stderr)

    @property
    def overlap(self) -> int:
        return getattr(self, "_overlap", 40)

    def _tile_size(self, height: int, width: int) -> int | tuple[int, int] | None:
        profile = getattr(self, "profile", None)
        if profile is not None and profile.is_static:
            if height < profile.max[1] or width < profile.max[2]:
                raise ShapeError(
                    f"frame {width}x{height} is smaller than the static engine's {profile.max[2]}x{profile.max[1]} input; "
                    "use an engine with a dynamic profile"
                )
            return (profile.max[1], profile.max[2])
        tile = super()._tile_size(height, width)
        if tile is None and profile is not None and (height > profile.max[1] or width > profile.max[2]):
            return min(profile.max[1], profile.max[2])
        return tile

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        from srgan_deploy.gpu.inflight import split_batches

        _, h, w, _ = frames.shape
        if not self.profile.accepts(1, h, w):
            raise ShapeError(f"frame {w}x{h} is outside the engine profile {self.profile.to_list()}; use --tile")
        parts = list(self.pipeline.run(split_batches(frames, self.profile.max[0])))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def upscale_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Keep K batches in flight across calls; frames that need tiling go one by one."""
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        first = check_frames(first)
        if self._tile_size(first.shape[1], first.shape[2]) is not None or first.shape[0] > self.profile.max[0]:
            yield self.upscale(first)
            for batch in it:
                yield self.upscale(batch)
            return
        yield from self.pipeline.run(itertools.chain([first], (check_frames(b) for b in it)))

    def _close(self) -> None:
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.close()
        self.engine = None
