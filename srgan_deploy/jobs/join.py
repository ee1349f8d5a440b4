"""Join finished segments into the output: video packets copied in order (no re-encoding), audio and
subtitles copied once from the source over the whole range, written to a temp file and renamed.

Every segment was encoded with the job's shared clock, so its packets keep their timestamps: the output
has exactly the input's frames at the input's times (variable frame rate included). Only a decode
timestamp that would not increase across a boundary (B-frame delay after a change of frame rate) is
nudged forward by one tick; presentation times never change.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from srgan_deploy.errors import OutputError, VideoError
from srgan_deploy.files import fsync_dir
from srgan_deploy.jobs.plan import Plan
from srgan_deploy.video import Decoder, SideStreams, container_format
from srgan_deploy.video_job import VideoJob


def _video_packets(segments: list[tuple[Path, Fraction]], out_stream: Any) -> Iterator[tuple[float, bool, Any]]:
    import av

    last: Fraction | int | None = None
    for path, first_time in segments:
        with av.open(str(path), mode="r") as seg:
            stream = seg.streams.video[0]
            tb = stream.time_base or Fraction(1, 90000)
            packets: Iterator[Any] = (
                p for p in seg.demux(stream) if p.size and p.dts is not None and p.pts is not None
            )
            # the smallest pts among the first packets is the segment's first frame (x264 segments start
            # closed); read ahead that far, once, to find how far the muxer moved the segment's clock
            head = list(itertools.islice(packets, 64))
            if not head:
                raise VideoError(f"segment {path.name} has no timestamps; re-run with --restart")
            shift_ticks = round((min(p.pts for p in head) * tb - first_time) / tb)
            for packet in itertools.chain(head, packets):
                packet.pts -= shift_ticks
                packet.dts -= shift_ticks
                dts = packet.dts * tb
                if last is not None and dts <= last:
                    packet.dts = int(last / tb) + 1
                    dts = packet.dts * tb
                last = dts
                packet.stream = out_stream
                yield float(dts), True, packet


def join_segments(
    job: VideoJob,
    plan: Plan,
    segments: list[tuple[Path, str | None]],
    rotation: float,
    warn: Callable[[str], None] = lambda m: None,
) -> tuple[int, int, int]:
    """Write ``job.target`` from ``segments`` (file, exact time of its first frame), in order; returns
    (frames, width, height) written. Empty segments (nothing decodable in their range) are skipped."""
    import av

    fmt = container_format(job.target)
    files = [(f, Fraction(t)) for f, t in segments if t is not None]
    if not files:
        raise VideoError(f"no video frames could be decoded from {job.source} (in the requested range)")
    tmp = job.target.with_name(f".{job.target.stem}.joining-{os.getpid()}{job.target.suffix}")
    decoder = Decoder(job.source, job.start, job.duration, job.max_frames)
    frames = 0
    try:
        with av.open(str(tmp), mode="w", format=fmt) as out, av.open(str(files[0][0]), mode="r") as first:
            template = first.streams.video[0]
            size = (template.codec_context.width, template.codec_context.height)
            video = out.add_stream_from_template(template)
            if rotation:
                video.set_display_rotation(rotation)  # type: ignore[attr-defined]
            side = SideStreams(out, fmt, decoder, warn)
            sides = ((t, False, packet) for t, packet in decoder.side_packets(plan.end_seconds))
            merged = heapq.merge(_video_packets(files, video), sides, key=lambda item: item[0])
            for _, is_video, packet in merged:
                if is_video:
                    frames += 1
                    out.mux(packet)
                else:
                    side.write(packet)
            side.flush()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, job.target)
        fsync_dir(job.target.parent)
    except OSError as exc:  # FFmpeg's errors too; their text names our temporary file, so it is not quoted
        reason = exc.strerror or type(exc).__name__
        if not isinstance(exc, av.error.FFmpegError) or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES):
            raise OutputError(
                f"cannot write {job.target}: {reason}; the finished segments are kept - free some space and run "
                "the same command again to join them"
            ) from exc
        raise VideoError(f"FFmpeg failed while joining {job.target.name}: {reason}; no output written") from exc
    finally:
        decoder.close()
        tmp.unlink(missing_ok=True)
    return frames, size[0], size[1]
