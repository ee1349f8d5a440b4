"""One video job (``VideoJob``): decode -> upscale -> encode in three threads with bounded queues.

``run_frames`` is that frame loop over a ``video.Decoder`` and a ``video.Encoder``; ``upscale_video`` runs
a whole job in one pass, and ``srgan_deploy.jobs`` runs it segment by segment (``jobs.render``).

Decode and encode run in worker threads (PyAV/FFmpeg release the GIL), the
upscale stage runs in the calling thread (GPU contexts and Ctrl-C stay there).
Queues are bounded, so a fast decoder waits instead of filling memory; frames
keep their order end to end. The output is written to a temporary file in the
destination folder and renamed only on success: an error, Ctrl-C or SIGTERM
never leaves a truncated file where the output should be.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from srgan_deploy.backends.base import Backend
from srgan_deploy.dedup import DedupRule, collapse
from srgan_deploy.errors import ConfigError, Interrupted, OutputError, OutputExistsError, VideoError
from srgan_deploy.image_jobs import crop_padding, pad_for_model
from srgan_deploy.interrupts import sigterm_as_interrupt
from srgan_deploy.video import Decoder, EncodeOptions, Encoder, container_format

_END = object()
MAX_SECONDS = 1e9  # --start/--duration/--segment-seconds: 31 years, and still exact in any time base's ticks


@dataclass(frozen=True)
class VideoJob:
    source: Path
    target: Path
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    start: float | None = None
    duration: float | None = None
    max_frames: int | None = None
    batch: int = 1
    queue_size: int = 8
    side_by_side: bool = False
    label: str = "model"  # burned into the right half of --side-by-side frames (the left says "bicubic")
    overwrite: bool = False
    dedup: DedupRule | None = None

    def __post_init__(self) -> None:
        if self.batch < 1 or self.queue_size < 1:
            raise ConfigError("--batch and the queue size must be >= 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError("--max-frames must be >= 1")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise ConfigError(f"--duration {self.duration} must be a positive number of seconds")
        if self.start is not None and not (math.isfinite(self.start) and self.start >= 0):
            raise ConfigError(f"--start {self.start} must be a number of seconds >= 0")
        for name, value in (("--start", self.start), ("--duration", self.duration)):
            if value is not None and value > MAX_SECONDS:
                # far past any video; such a time cannot even be counted in a stream's clock ticks
                raise ConfigError(f"{name} {value:g} is longer than any video; give at most {MAX_SECONDS:g} seconds")


@dataclass
class VideoResult:
    frames: int
    seconds: float
    output: Path
    output_bytes: int
    width: int
    height: int
    bad_packets: int
    side_packets: int
    codec: str
    duplicates: int = 0  # frames whose output was reused (--dedup)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Stage(threading.Thread):
    """A worker thread that records its exception instead of dying silently."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = exc


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put with backpressure, giving up when the pipeline is stopping."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event, stages: list[_Stage]) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            for stage in stages:
                if stage.error is not None:
                    raise stage.error from None
            if stop.is_set():
                return _END


def check_paths(job: VideoJob) -> str:
    if not job.source.exists():
        from srgan_deploy.errors import InputFileError

        raise InputFileError(f"no such file: {job.source}")
    fmt = container_format(job.target)
    if job.target.resolve() == job.source.resolve():
        raise OutputExistsError("output and input are the same file; choose another output name")
    if job.target.is_dir():
        raise OutputError(
            f"the output {job.target} is a folder; give a file name (or -o {job.target} to write into that folder)"
        )
    if job.target.exists() and not job.overwrite:
        raise OutputExistsError(f"{job.target} exists; pass --overwrite to replace it")
    if not job.target.parent.exists():
        raise OutputError(f"output folder {job.target.parent} does not exist; create it first or choose another output")
    return fmt


def upright_turns(rotation: float) -> int:
    """np.rot90's k (quarter turns counter-clockwise) that shows a frame as players do for its display
    rotation; 0 for an angle that is not a multiple of 90 (left to the player)."""
    quarter = rotation / 90.0
    return round(quarter) % 4 if abs(quarter - round(quarter)) < 1e-6 else 0


def side_by_side_turns(job: VideoJob) -> int:
    """A side-by-side job composes its halves upright and writes no rotation: composed in the stored
    orientation, a player would turn the pair into a stack with sideways labels."""
    if not job.side_by_side:
        return 0
    from srgan_deploy.video import display_rotation

    return upright_turns(display_rotation(job.source))


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.concatenate([left, right], axis=2)


def burn_label(frame: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner on a dark box, sized to the frame, so a viewer (or a
    screenshot of one) always knows which half is which."""
    import cv2

    height = frame.shape[0]
    scale = max(0.4, height / 720)
    thickness = max(1, round(2 * scale))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, round(8 * scale))
    out = np.ascontiguousarray(frame)
    x1, y1 = min(out.shape[1], w + 2 * pad), min(out.shape[0], h + base + 2 * pad)
    out[:y1, :x1] = (out[:y1, :x1] * 0.35).astype(np.uint8)
    cv2.putText(out, text, (pad, pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


@dataclass
class FrameStats:
    written: int = 0
    duplicates: int = 0
    first_pts: int | None = None  # output pts of the first frame written (the segment join aligns on it)


def run_frames(
    job: VideoJob,
    decoder: Decoder,
    encoder: Encoder,
    backend: Backend[Any],
    on_progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] = lambda m: None,
) -> FrameStats:
    """decode -> (dedup) -> upscale -> encode for every frame ``decoder`` yields; ``encoder`` is not finished here.

    ``on_progress`` gets the number of frames written so far. Raises ``KeyboardInterrupt`` (Ctrl-C,
    SIGTERM) and any stage's error; the caller owns the files."""
    scale = backend.scale
    turns = side_by_side_turns(job)
    stop = threading.Event()
    frames_q: queue.Queue[Any] = queue.Queue(maxsize=job.queue_size)
    out_q: queue.Queue[Any] = queue.Queue(maxsize=job.queue_size)
    side_q: queue.Queue[Any] = queue.Queue()
    stats = FrameStats()
    stages: list[_Stage] = []
    try:

        def decode() -> None:
            frames: Iterator[Any] = decoder.frames(side_q.put, warn)
            if job.dedup is not None:
                frames = collapse(frames, job.dedup)
            for frame in frames:
                if not _put(frames_q, frame, stop):
                    return
            _put(frames_q, _END, stop)

        def encode() -> None:
            while True:
                item = _get(out_q, stop, [])
                while not side_q.empty():
                    encoder.write_side_packet(side_q.get_nowait())
                if item is _END:
                    break
                rgb, pts_list = item
                if encoder.frames == 0:
                    encoder.set_rotation(0.0 if turns else decoder.info.rotation)
                    stats.first_pts = pts_list[0]
                for pts in pts_list:
                    encoder.write_frame(rgb, pts)
                stats.written = encoder.frames
                if on_progress:
                    on_progress(encoder.frames)
            while not side_q.empty():
                encoder.write_side_packet(side_q.get_nowait())

        decoding = _Stage("decode", decode)
        encoding = _Stage("encode", encode)
        stages = [decoding, encoding]
        decoding.start()
        encoding.start()

        pending_pts: list[list[list[int]]] = []
        pending_lr: list[np.ndarray] = []
        pending_pad: list[tuple[int, int]] = []  # a picture a few pixels high is mirrored out for the model

        def batches() -> Iterator[np.ndarray]:
            while True:
                first = _get(frames_q, stop, stages)
                if first is _END:
                    return
                group = [first]
                while len(group) < job.batch:
                    try:
                        nxt = frames_q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _END:
                        frames_q.put(_END)
                        break
                    group.append(nxt)
                if group[0].rgb.shape != group[-1].rgb.shape:
                    raise VideoError("frame size changes mid-stream; split the video first")
                pending_pts.append([[f.pts, *f.repeats] for f in group])
                stats.duplicates += sum(len(f.repeats) for f in group)
                lr = np.stack([f.rgb for f in group])
                if job.side_by_side:
                    pending_lr.append(lr)
                lr, ph, pw = pad_for_model(lr)
                pending_pad.append((ph, pw))
                yield lr

        with sigterm_as_interrupt():
            bicubic = None
            if job.side_by_side:
                import cv2

                def bicubic(frame: np.ndarray) -> np.ndarray:
                    return np.asarray(cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))

            for upscaled in backend.upscale_many(batches()):
                upscaled = crop_padding(upscaled, *pending_pad.pop(0), scale)
                pts_lists = pending_pts.pop(0)
                lows = pending_lr.pop(0) if job.side_by_side else None
                for k, pts_list in enumerate(pts_lists):
                    frame = upscaled[k]
                    if lows is not None and bicubic is not None:
                        left, right = bicubic(lows[k]), frame
                        if turns:
                            left, right = np.rot90(left, turns), np.rot90(right, turns)
                        left, right = burn_label(left, "bicubic"), burn_label(right, job.label)
                        frame = np.concatenate([left, right], axis=1)
                    if not _put(out_q, (frame, pts_list), stop):
                        break
                if encoding.error is not None:
                    raise encoding.error
            _put(out_q, _END, stop)
            while encoding.is_alive():
                encoding.join(timeout=0.1)
            for stage in stages:
                if stage.error is not None:
                    raise stage.error
    finally:
        stop.set()
        for stage in stages:
            stage.join(timeout=5)
    stats.written = encoder.frames
    return stats


def output_size(job: VideoJob, decoder: Decoder, scale: int) -> tuple[int, int]:
    width, height = decoder.info.width * scale, decoder.info.height * scale
    if side_by_side_turns(job) % 2:  # composed upright: a portrait pair from a landscape-stored clip
        width, height = height, width
    return width * (2 if job.side_by_side else 1), height


def upscale_video(
    job: VideoJob,
    backend: Backend[Any],
    on_progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] = lambda m: None,
) -> VideoResult:
    """The whole job in one pass (no segments, no resume): the baseline the segmented jobs are measured
    against, and the simplest library call. The backend must already be open."""
    fmt = check_paths(job)
    decoder = Decoder(job.source, job.start, job.duration, job.max_frames)
    width, height = output_size(job, decoder, backend.scale)
    tmp = job.target.with_name(f".{job.target.stem}.partial-{os.getpid()}{job.target.suffix}")
    encoder: Encoder | None = None
    t0 = time.perf_counter()
    try:
        encoder = Encoder(tmp, fmt, decoder, width, height, job.encode, warn)
        expected = decoder.expected_frames()
        stats = run_frames(
            job, decoder, encoder, backend, (lambda n: on_progress(n, expected)) if on_progress else None, warn
        )
        if encoder.frames == 0:
            raise VideoError(f"no video frames could be decoded from {job.source} (in the requested segment)")
        encoder.finish()
        encoded, codec = encoder.frames, encoder.codec
        encoder = None
        tmp.replace(job.target)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; no output written ({job.target} left untouched)") from None
    except av.error.FFmpegError as exc:
        raise VideoError(f"FFmpeg failed while writing {job.target.name}: {exc}; no output written") from exc
    finally:
        if encoder is not None:
            encoder.abort()
        decoder.close()
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - t0
    return VideoResult(
        frames=encoded,
        seconds=seconds,
        output=job.target,
        output_bytes=job.target.stat().st_size,
        width=width,
        height=height,
        bad_packets=decoder.stats.bad_packets,
        side_packets=decoder.stats.side_packets,
        codec=codec,
        duplicates=stats.duplicates,
    )
