"""Duplicate-frame skipping (``--dedup``): a frame that repeats the last one the model ran on reuses its output.

Animation is often drawn "on twos" or "on threes": each drawing is held for 2-3 frames, and after lossy
compression the held frames differ from each other only by coding noise. Running the model once per
drawing saves that much time.

The test is against the last frame that actually went through the model (the *reference*), not the
previous input frame: a slow fade or pan then cannot creep past the threshold one small step at a time,
so every reused output is within the stated difference of the frame it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from srgan_deploy.errors import ConfigError
from srgan_deploy.video import DecodedFrame


@dataclass(frozen=True)
class DedupRule:
    """Two frames are the same drawing when the largest and the mean absolute difference of their 8-bit RGB
    values are both at most these (0, 0 = bit-identical only)."""

    max_diff: int = 0
    mean_diff: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_diff <= 255:
            raise ConfigError(f"--dedup max difference {self.max_diff} must be between 0 and 255")
        if not (math.isfinite(self.mean_diff) and 0 <= self.mean_diff <= 255):
            raise ConfigError(f"--dedup mean difference {self.mean_diff} must be between 0 and 255")

    def same(self, a: np.ndarray, b: np.ndarray) -> bool:
        if a.shape != b.shape:
            return False
        import cv2

        diff = cv2.absdiff(a, b)
        if int(diff.max()) > self.max_diff:
            return False
        return float(diff.mean()) <= self.mean_diff

    def describe(self) -> str:
        if self.max_diff == 0:
            return "bit-identical frames"
        return f"max |diff| <= {self.max_diff} and mean |diff| <= {self.mean_diff:g} (8-bit RGB)"


# Measured on the animation-like clip of benchmarks/segments.py (the sample's pictures held 2-3 frames,
# x264 crf 18): held copies differ by at most 27 levels (mean 0.14) after coding, while the least different
# consecutive pictures differ by 127 levels somewhere (mean 0.23). The max decides; the mean guards
# against noise spread over the whole frame.
DEFAULT_RULE = DedupRule(max_diff=32, mean_diff=0.5)


def parse_rule(text: str) -> DedupRule:
    """``exact``, ``default``, or ``MAX,MEAN`` (e.g. ``8,0.3``)."""
    value = text.strip().lower()
    if value == "exact":
        return DedupRule(0, 0.0)
    if value in ("", "default", "on"):
        return DEFAULT_RULE
    parts = value.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return DedupRule(int(parts[0]), float(parts[1]))
    except ValueError:
        raise ConfigError(
            f"--dedup '{text}' is not a rule; use exact, default or MAX,MEAN (e.g. 10,0.5 on 0-255 values)"
        ) from None


def collapse(frames: Iterable[DecodedFrame], rule: DedupRule) -> Iterator[DecodedFrame]:
    """Yield only frames that differ from the reference; the pts of skipped ones ride along in ``repeats``.

    One frame is held back until the next distinct frame (or the end) arrives, so its repeats are complete
    when it is yielded; order and every pts are kept."""
    held: DecodedFrame | None = None
    for frame in frames:
        if held is not None and rule.same(frame.rgb, held.rgb):
            held.repeats.append(frame.pts)
            continue
        if held is not None:
            yield held
        held = frame
    if held is not None:
        yield held
