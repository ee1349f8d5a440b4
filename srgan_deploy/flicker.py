"""Temporal stability of upscalers on video: how much each output changes from frame to frame.

A GAN invents texture per frame, with nothing tying frame t's invention to frame t-1's, so on video it
can shimmer where a pixel-loss model is steady; single-image scores cannot see this. Per stream
(bicubic, each model) and per consecutive frame pair this records, on BT.601 Y:

- ``change``: mean |Y_t - Y_{t-1}|. Its mean over pairs divided by bicubic's is ``flicker`` (1.0 = as
  stable as bicubic), and divided by the LR input's own mean change it is ``flicker_vs_input`` (per-pixel
  means do not depend on the grid's size, so the LR figure needs no rescaling).
- ``warped_change``: the same after moving frame t-1 onto frame t along the optical flow of the LR
  input, so real motion cancels and what remains is change the scene did not make; its ratio to
  bicubic's is ``flicker_warped``.

Why both: the raw change counts motion, and a sharper output changes more under the same motion (an edge
that moves one pixel changes more pixels by more when it is sharp), so a perfectly stable but sharp model
scores above 1 on ``flicker``. The warped figure removes most of that; it is still raised a little by
sharpness where the flow is wrong (occlusions, fast motion), so compare models with each other on it,
not against 1 alone. The flow is computed once per pair on the LR input, so every stream is judged
against the same motion, and no model's output can bend it.

Streaming (``FlickerMeter.add`` per frame): only the previous frame's Y planes are kept, so 40 frames at
720p cost tens of megabytes, not gigabytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from srgan_deploy.metrics import rgb_to_y

REFERENCE = "bicubic"


@dataclass(frozen=True)
class StreamFlicker:
    """One stream's per-pair changes and its ratios (NaN where the reference did not change at all)."""

    name: str
    change: list[float]
    warped_change: list[float]
    flicker: float
    flicker_vs_input: float
    flicker_warped: float


@dataclass
class FlickerMeter:
    """Feed it each LR frame with every stream's upscaled frame, in order; ``results`` gives the ratios."""

    reference: str = REFERENCE
    input_change: list[float] = field(default_factory=list)
    _change: dict[str, list[float]] = field(default_factory=dict)
    _warped: dict[str, list[float]] = field(default_factory=dict)
    _previous_lr: np.ndarray | None = None
    _previous: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, lr: np.ndarray, upscaled: Mapping[str, np.ndarray]) -> None:
        """``lr``: HxWx3 RGB (or HxW grey); ``upscaled``: stream name -> its (sH)x(sW) frame, the reference included."""
        if self.reference not in upscaled:
            raise ValueError(f"the frames must include the reference stream '{self.reference}'")
        names = set(upscaled)
        if self._previous and names != set(self._previous):
            raise ValueError(f"streams changed between frames: {sorted(self._previous)} then {sorted(names)}")
        y_lr = rgb_to_y(lr).astype(np.float32)
        planes = {name: rgb_to_y(frame).astype(np.float32) for name, frame in upscaled.items()}
        shapes = {p.shape for p in planes.values()}
        if len(shapes) != 1:
            raise ValueError(f"every stream's frame must have one size, got {sorted(shapes)}")
        if self._previous_lr is not None:
            self.input_change.append(float(np.mean(np.abs(y_lr - self._previous_lr))))
            (shape,) = shapes
            sample_x, sample_y, inside = _backward_map(y_lr, self._previous_lr, shape)
            for name, plane in planes.items():
                before = self._previous[name]
                self._change.setdefault(name, []).append(float(np.mean(np.abs(plane - before))))
                moved = cv2.remap(before, sample_x, sample_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                residual = np.abs(plane - moved)[inside]
                self._warped.setdefault(name, []).append(float(residual.mean()) if residual.size else float("nan"))
        self._previous_lr = y_lr
        self._previous = planes

    @property
    def pairs(self) -> int:
        return len(self.input_change)

    def results(self) -> dict[str, StreamFlicker]:
        if self.pairs == 0:
            raise ValueError("flicker needs at least two frames")
        ref = _mean(self._change[self.reference])
        ref_warped = _mean(self._warped[self.reference])
        source = _mean(self.input_change)
        out = {}
        for name in self._change:
            change, warped = self._change[name], self._warped[name]
            out[name] = StreamFlicker(
                name=name,
                change=change,
                warped_change=warped,
                flicker=_ratio(_mean(change), ref),
                flicker_vs_input=_ratio(_mean(change), source),
                flicker_warped=_ratio(_mean(warped), ref_warped),
            )
        return out


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else float("nan")


def _backward_map(
    current: np.ndarray, previous: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each output pixel of frame t was in frame t-1 (x and y sample maps), and which of those
    lie inside the frame: Farneback flow from t to t-1 on the LR Y, enlarged to the output grid."""
    flow = cv2.calcOpticalFlowFarneback(
        _to_u8(current), _to_u8(previous), None, 0.5, 3, 15, 3, 5, 1.2, 0
    )  # current(p) ~ previous(p + flow(p))
    h, w = shape[:2]
    lr_h, lr_w = current.shape
    big = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sample_x = xx + big[..., 0] * (w / lr_w)
    sample_y = yy + big[..., 1] * (h / lr_h)
    inside = (sample_x >= 0) & (sample_x <= w - 1) & (sample_y >= 0) & (sample_y <= h - 1)
    return sample_x, sample_y, inside


def _to_u8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
