"""Cut a job into segments of a few seconds, by frame: every input frame belongs to exactly one segment."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from srgan_deploy.errors import ConfigError, VideoError
from srgan_deploy.jobs.index import InputIndex
from srgan_deploy.video import PtsWindow
from srgan_deploy.video_job import MAX_SECONDS

DEFAULT_SEGMENT_SECONDS = 4.0


@dataclass(frozen=True)
class Segment:
    index: int
    window: PtsWindow | None  # None: the whole job in one pass (an input without regular timestamps)
    frames: int  # frames the index expects (0 = unknown)


@dataclass(frozen=True)
class Plan:
    segments: tuple[Segment, ...]
    frames: int  # frames the whole job expects (0 = unknown)
    end_seconds: float | None  # side streams are copied up to here (output clock); None = to the end


def check_segment_seconds(seconds: float) -> float:
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise ConfigError(f"--segment-seconds {seconds:g} must be a positive number of seconds (4 is the default)")
    return seconds


def plan_segments(
    index: InputIndex,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    start: float | None = None,
    duration: float | None = None,
    max_frames: int | None = None,
) -> Plan:
    """The segments of one job (the --start/--duration/--max-frames range of the input)."""
    check_segment_seconds(segment_seconds)
    tb = index.time_base
    zero = index.origin_pts + round((start or 0.0) / tb)
    end_limit = zero + round(duration / tb) if duration is not None else None
    if not index.regular:
        return Plan((Segment(0, None, 0),), 0, duration)
    lo = bisect.bisect_left(index.pts, zero)
    hi = bisect.bisect_left(index.pts, end_limit) if end_limit is not None else len(index.pts)
    chosen = index.pts[lo:hi]
    if max_frames is not None:
        chosen = chosen[:max_frames]
    if not chosen:
        where = f" after {start:g} s" if start else ""
        raise VideoError(f"{index.path} has no video frames{where} in the requested range")
    length = max(1, round(segment_seconds / tb))
    firsts = [0]
    for i, pts in enumerate(chosen):
        if pts - chosen[firsts[-1]] >= length:
            firsts.append(i)
    # the job's end: the duration's end, one past the last chosen frame, or the end of the file
    limited = max_frames is not None and len(chosen) < hi - lo
    job_end: int | None = end_limit
    if limited:
        job_end = chosen[-1] + 1
    segments = []
    for n, first in enumerate(firsts):
        last = firsts[n + 1] if n + 1 < len(firsts) else len(chosen)
        window_first = zero if n == 0 else chosen[first]
        window_end = chosen[last] if last < len(chosen) else job_end
        seek = index.seek_point(chosen[first])
        if n == 0 and not start:
            seek = None
        segments.append(Segment(n, PtsWindow(window_first, window_end, zero, seek), last - first))
    end_seconds: float | None = None
    if limited:
        end_seconds = float((chosen[-1] + index.frame_step - zero) * tb)
    elif duration is not None:
        end_seconds = duration
    return Plan(tuple(segments), len(chosen), end_seconds)
