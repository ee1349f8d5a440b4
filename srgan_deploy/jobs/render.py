"""Render one segment: decode its frames, upscale them, encode them into the segment's own file.

Runs wherever a worker runs (this process, a local worker process, a Ray actor); it needs only the
task, an open backend and the paths in the task. The file appears under its final name only when
complete, so a retried or duplicated task is harmless: it rewrites the same content.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from srgan_deploy.backends.base import Backend
from srgan_deploy.errors import OutputError, VideoError
from srgan_deploy.jobs.manifest import file_sha256, segment_name
from srgan_deploy.jobs.plan import Segment
from srgan_deploy.video import Decoder, Encoder
from srgan_deploy.video_job import VideoJob, output_size, run_frames, side_by_side_turns


@dataclass(frozen=True)
class SegmentTask:
    key: tuple[int, int]  # (the input's place in the queue, the segment's index)
    job: VideoJob  # encode.codec already resolved for the output container
    segment: Segment
    work_dir: Path


@dataclass(frozen=True)
class SegmentResult:
    index: int
    file: str
    bytes: int
    sha256: str  # of the file's bytes: a resumed run reuses the segment only if they still hash to this
    frames: int
    duplicates: int
    rotation: float
    bad_packets: int
    seconds: float
    codec: str
    first_time: str | None  # exact output time of the first frame ("num/den" seconds); None when empty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_segment(
    task: SegmentTask,
    backend: Backend[Any],
    on_progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] = lambda m: None,
) -> SegmentResult:
    """Raises VideoError (the input), OutputError (the work folder cannot be written) or KeyboardInterrupt.
    A segment with no decodable frame is recorded as an empty file, so a damaged stretch is not retried
    forever; the join says so when the whole input yields nothing."""
    import av

    job, segment = task.job, task.segment
    t0 = time.perf_counter()
    final = task.work_dir / segment_name(segment.index)
    tmp = task.work_dir / f".{final.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{final.suffix}"
    decoder = Decoder(job.source, job.start, job.duration, job.max_frames, window=segment.window, side_streams=False)
    encoder: Encoder | None = None
    try:
        width, height = output_size(job, decoder, backend.scale)
        encoder = Encoder(tmp, "mp4", decoder, width, height, job.encode, warn)
        stats = run_frames(job, decoder, encoder, backend, on_progress, warn)
        encoder.finish()
        codec = encoder.codec
        encoder = None
        if stats.written == 0:  # the muxer wrote nothing (not even a header): record an empty segment
            tmp.unlink(missing_ok=True)
            tmp.write_bytes(b"")
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except av.error.FFmpegError as exc:
        if exc.errno in _DISK_ERRNOS:
            raise _unwritable(task, exc) from exc
        reason = exc.strerror or type(exc).__name__  # not str(exc): it names our temporary file
        raise VideoError(f"FFmpeg failed on segment {segment.index} of {job.source}: {reason}") from exc
    except OSError as exc:
        if exc.errno in _DISK_ERRNOS or str(task.work_dir) in str(exc.filename or ""):
            raise _unwritable(task, exc) from exc
        raise
    finally:
        if encoder is not None:
            encoder.abort()
        decoder.close()
        tmp.unlink(missing_ok=True)
    return SegmentResult(
        index=segment.index,
        file=final.name,
        bytes=final.stat().st_size,
        sha256=file_sha256(final),
        frames=stats.written,
        duplicates=stats.duplicates,
        rotation=0.0 if side_by_side_turns(job) else decoder.info.rotation,  # the pair is composed upright
        bad_packets=decoder.stats.bad_packets,
        seconds=round(time.perf_counter() - t0, 3),
        codec=codec,
        first_time=str(stats.first_pts * decoder.info.time_base) if stats.first_pts is not None else None,
    )


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG)


def _unwritable(task: SegmentTask, exc: BaseException) -> OutputError:
    return OutputError(
        f"cannot write segment {task.segment.index} of {task.job.source.name} in {task.work_dir}: "
        f"{getattr(exc, 'strerror', None) or exc}; free some space (or fix the folder's permissions) and run the same command "
        "again (finished segments are kept)"
    )
