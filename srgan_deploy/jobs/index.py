"""One pass over an input's video packets (no decoding): every frame's timestamp, the keyframes, and a
fingerprint of the content.

Segments are cut by frame, so the join can only be frame-exact if every frame has a known, unique
presentation timestamp. Inputs where that does not hold (missing or repeated timestamps, as some
broken muxers write) are still upscaled, as one segment, which decodes them the way a single pass would.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from srgan_deploy.errors import VideoError
from srgan_deploy.video import open_input, probe

_SAMPLE = 1 << 20  # bytes hashed at each end of the file


@dataclass(frozen=True)
class InputIndex:
    path: Path
    time_base: Fraction
    origin_pts: int  # the container's start time in the stream's time base (the output's time 0)
    pts: tuple[int, ...]  # presentation timestamps, sorted; empty when irregular
    keyframes: tuple[tuple[int, int], ...]  # (pts, dts) of keyframe packets, sorted by pts
    regular: bool  # every frame has a unique timestamp: safe to cut anywhere
    reason: str  # why not regular ("" when it is)
    fingerprint: str
    frame_step: int  # typical frame duration in time-base units (for the end of the last frame)

    def seek_point(self, pts: int) -> int | None:
        """Where a segment starting at ``pts`` starts decoding: the keyframe *before* the last keyframe at or
        before it (None: the start of the file).

        One GOP of warm-up: an open GOP's leading pictures, and demuxers whose seeks are approximate
        (MPEG-PS re-delivered a packet here, decoded differently than in a single pass), then only
        touch frames before the segment, which are dropped. Decoding a GOP is cheap next to upscaling."""
        i = bisect.bisect_right([k[0] for k in self.keyframes], pts) - 2
        if i <= 0:
            return None
        return self.keyframes[i][1]


def _file_hash(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            f.seek(size - _SAMPLE)
            digest.update(f.read(_SAMPLE))
    return digest


def index_input(path: Path, on_progress: Callable[[int], None] | None = None) -> InputIndex:
    """Read every video packet's timing. Raises VideoError/InputFileError for unreadable input."""
    import av

    digest = _file_hash(path)
    container = open_input(path)
    try:
        stream = container.streams.video[0]
        info = probe(container)
        tb = info.time_base
        start = container.start_time
        origin_pts = round(max(0.0, float(start) / 1_000_000) / tb) if start is not None else 0
        pts: list[int] = []
        keys: list[tuple[int, int]] = []
        missing = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                digest.update(f"{packet.pts},{packet.dts},{packet.size},{int(packet.is_keyframe)};".encode())
                if packet.pts is None:
                    missing += 1
                    continue
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keys.append((int(packet.pts), int(packet.dts if packet.dts is not None else packet.pts)))
                if on_progress is not None and len(pts) % 500 == 0:
                    on_progress(len(pts))
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path} is damaged: reading it stopped after {len(pts)} frames ({exc})") from exc
    finally:
        container.close()
    if not pts and not missing:
        raise VideoError(f"{path} has a video stream without any frames")
    pts.sort()
    keys.sort()
    reason = ""
    if missing:
        reason = f"{missing} frame(s) without a timestamp"
    elif len(set(pts)) != len(pts):
        reason = "repeated frame timestamps"
    elif not keys:
        reason = "no keyframes marked"
    regular = not reason
    steps = sorted(b - a for a, b in itertools.pairwise(pts))
    step = steps[len(steps) // 2] if steps else (round(1 / (info.rate * tb)) if info.rate else 1)
    return InputIndex(
        path=path,
        time_base=tb,
        origin_pts=origin_pts,
        pts=tuple(pts) if regular else (),
        keyframes=tuple(keys) if regular else (),
        regular=regular,
        reason=reason,
        fingerprint=digest.hexdigest(),
        frame_step=max(1, step),
    )
