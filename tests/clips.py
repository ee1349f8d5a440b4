"""Small test clips made with PyAV: moving gradients with a sine-wave audio track."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.conftest import smooth_image


def frame_image(i: int, h: int, w: int) -> np.ndarray:
    base = smooth_image(h + 8, w + 8, seed=0)
    return np.ascontiguousarray(base[i % 8 : i % 8 + h, (2 * i) % 8 : (2 * i) % 8 + w])


def make_clip(
    path: Path,
    width: int = 64,
    height: int = 48,
    frames: int = 20,
    fps: int = 24,
    audio: bool = True,
    pts: list[int] | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fmt: str | None = None,
    audio_codec: str = "aac",
    configure: Callable[[av.VideoStream], None] | None = None,
) -> Path:
    """Write a clip; ``pts`` (in 1/1000 s) gives variable frame timing; ``configure`` sets stream metadata."""
    with av.open(str(path), mode="w", format=fmt) as out:
        video = out.add_stream(codec, rate=fps)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if configure is not None:
            configure(video)
        tb = Fraction(1, 1000) if pts is not None else Fraction(1, fps)
        video.codec_context.time_base = tb
        if codec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "10"}
        sound = None
        if audio:
            sound = out.add_stream(audio_codec, rate=44100)
            assert isinstance(sound, av.AudioStream)
            sound.layout = "stereo"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            frame.time_base = tb
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            seconds = (pts[-1] / 1000 + 1 / fps) if pts is not None else frames / fps
            total = int(seconds * 44100)
            t = np.arange(total) / 44100
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            block = 1024
            for start in range(0, total, block):
                chunk = samples[start : start + block]
                stereo = np.stack([chunk, chunk]).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
                aframe.sample_rate = 44100
                aframe.pts = start
                aframe.time_base = Fraction(1, 44100)
                for packet in sound.encode(aframe):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], list[int], Fraction, dict[str, object]]:
    """All frames (RGB), their pts, the time base, and per-stream facts; raises on any decode error."""
    frames: list[np.ndarray] = []
    pts: list[int] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts: dict[str, object] = {
            "audio": [
                (s.codec_context.name, float(s.duration * s.time_base) if s.duration else None)
                for s in container.streams.audio
            ],
            "duration": container.duration / 1e6 if container.duration else None,
            "rate": stream.average_rate,
        }
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(int(frame.pts))
        tb = stream.time_base
        assert tb is not None
    return frames, pts, tb, facts


def audio_duration(path: Path) -> float:
    """Seconds of decoded audio samples (independent of container bookkeeping)."""
    samples = 0
    rate = 1
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return 0.0
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            samples += frame.samples
    return samples / rate
