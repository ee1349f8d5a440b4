"""Video I/O on PyAV (FFmpeg's libraries): decode to RGB frames, encode upscaled frames, copy audio/subtitles.

What is kept from the source: frame timestamps (variable frame rate too), frame
rate, duration, display rotation, colour range/primaries/transfer/matrix, and
audio + subtitle streams, copied packet for packet without re-encoding (re-encoded
only when the output container cannot hold the codec, with a warning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.errors import ConfigError, InputFileError, VideoError

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
# codecs each container can hold without re-encoding (anything for matroska)
AUDIO_OK = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"},
    "webm": {"opus", "vorbis"},
}
SUBTITLE_OK = {"mp4": {"mov_text"}, "mov": {"mov_text"}, "webm": {"webvtt"}}
VIDEO_OK = {"webm": {"libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"}}
CODEC_ALIASES = {
    "h264": "libx264",
    "hevc": "libx265",
    "h265": "libx265",
    "x264": "libx264",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "nvenc": "h264_nvenc",
}
# AVColorSpace -> swscale colorspace constant (SWS_CS_*)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


@dataclass(frozen=True)
class EncodeOptions:
    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str = "yuv420p"

    def __post_init__(self) -> None:
        """Checked before any decoding: a bad value found by the encoder would waste the whole run."""
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise ConfigError(
                f"--crf {self.crf} is out of range; use 0 (lossless) to 51 (x264/x265) or 63 (VP9), 18 is the default"
            )
        if self.preset is not None and not self.preset.replace("-", "").isalnum():
            raise ConfigError(f"--preset '{self.preset}' is not a preset name (e.g. ultrafast, fast, medium, slow)")
        import av

        try:
            av.VideoFormat(self.pix_fmt)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"--pix-fmt '{self.pix_fmt}' is not a pixel format FFmpeg knows; use yuv420p, yuv444p or yuv420p10le"
            ) from exc

    def resolved_codec(self, container: str, warn: Callable[[str], None]) -> str:
        import av

        name = CODEC_ALIASES.get(self.codec.lower(), self.codec.lower())
        if container in VIDEO_OK and name not in VIDEO_OK[container]:
            warn(f"{container} cannot hold {name}; encoding VP9 instead")
            name = "libvpx-vp9"
        if name not in av.codec.codecs_available:
            if name.endswith("_nvenc"):
                warn(f"{name} is not in this FFmpeg build; falling back to libx264")
                return "libx264" if container != "webm" else "libvpx-vp9"
            raise ConfigError(
                f"codec '{self.codec}' is not available in PyAV's FFmpeg; use libx264, libx265 or libvpx-vp9"
            )
        return name


@dataclass
class SourceInfo:
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None
    frames: int  # container's count or an estimate from duration (0 = unknown)
    duration_s: float | None
    codec: str
    color: dict[str, int]
    rotation: float = 0.0
    audio: list[str] = field(default_factory=list)
    sar: Fraction | None = None  # pixel shape (sample aspect ratio) when not square: anamorphic DVD/broadcast video
    other_video: int = 0  # further video streams (not cover art), which are not upscaled
    subtitles: list[str] = field(default_factory=list)


def encoder_opens(codec: str, width: int, height: int, pix_fmt: str) -> bool:
    """Whether FFmpeg can open this encoder here (NVENC is compiled in but needs an NVIDIA driver)."""
    import av

    try:
        context = av.CodecContext.create(codec, "w")
        assert isinstance(context, av.VideoCodecContext)
        context.width, context.height, context.pix_fmt = width, height, pix_fmt
        context.time_base = Fraction(1, 25)
        context.open()
    except av.error.FFmpegError:
        return False
    return True


AUTO_PRESET = "auto"
# --preset auto: x264/x265's speed when the model computes on this machine's CPU, and when it does not. On the
# CPU the encoder takes its cycles from the model: 720p at crf 18 costs 46 ms of CPU per frame at medium and
# 22 ms at veryfast (files 4 % smaller, 0.5 dB further from the upscaled frames at ~41 dB), against ~340 ms of
# inference (srgan-x4-lite bf16, AMD EPYC; python -m benchmarks.video_throughput), so medium alone would cap
# the video at 87 % of the model's frames/s. Where the model runs elsewhere (a GPU, a Triton server) the
# encoder has the cores to itself and medium's better compression per bit is free.
PRESET_SHARING_CORES = "veryfast"
PRESET_OWN_CORES = "medium"


def with_auto_preset(options: EncodeOptions, model_on_cpu: bool) -> EncodeOptions:
    """``--preset auto`` resolved for where the model computes (see PRESET_SHARING_CORES); others kept."""
    if options.preset != AUTO_PRESET:
        return options
    return dataclasses.replace(options, preset=PRESET_SHARING_CORES if model_on_cpu else PRESET_OWN_CORES)


def encoder_settings(codec: str, options: EncodeOptions) -> dict[str, str]:
    """The encoder's own options for ``options`` (one place: the check before a job and its encoders agree)."""
    opts: dict[str, str] = {}
    if options.crf is not None and codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"):
        opts["crf"] = str(options.crf)
        if codec == "libvpx-vp9":
            opts["b"] = "0"
    elif options.crf is not None and codec.endswith("_nvenc"):
        opts["cq"] = str(options.crf)
    if options.preset and codec in ("libx264", "libx265"):
        opts["preset"] = PRESET_OWN_CORES if options.preset == AUTO_PRESET else options.preset
    elif options.preset and codec == "libsvtav1" and options.preset.lstrip("-").isdigit():
        opts["preset"] = options.preset  # SVT-AV1's presets are numbers; x264's names (the default) do not apply
    elif options.preset and codec.endswith("_nvenc"):
        opts["preset"] = "p4"
    if codec == "libx265":
        opts["x265-params"] = "log-level=error"
    if codec == "libx264":
        # x264 takes the stream's time base (the source's: 1/10240, 1/90000) for the frame rate it writes into
        # the H.264 headers unless told the rate is the stream's: MKV then said 10240 frames/s and tools that
        # trust it (ffmpeg to a constant-rate format) made 1000 frames of 4. Timestamps are passed through as
        # they are (variable frame rate kept).
        opts["x264-params"] = "force-cfr=1"
    return opts


X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


@functools.lru_cache(maxsize=32)
def check_encoder(codec: str, options: EncodeOptions) -> None:
    """Open ``codec`` once on a small picture with the job's settings, before any work, and name the option
    the encoder refuses. Why: x264 takes ``--preset veryfastt`` and libx264 ``--pix-fmt gray16le`` only
    to fail at the first frame, hours into a queue, with FFmpeg's words. NVENC that cannot start here is
    left to the encoder's fallback (libx264, with a warning)."""
    if codec.endswith("_nvenc"):
        return
    settings = encoder_settings(codec, options)
    plain = {k: v for k, v in settings.items() if k not in ("preset", "crf", "cq")}
    if _encoder_refuses(codec, options.pix_fmt, plain):
        supported = _pixel_formats(codec)
        if supported and options.pix_fmt not in supported:
            raise ConfigError(
                f"--pix-fmt '{options.pix_fmt}' cannot be encoded by {codec}; use one of {', '.join(supported)}"
            )
        raise ConfigError(
            f"the encoder {codec} cannot start here with --pix-fmt {options.pix_fmt}; try --codec libx264"
        )
    if "preset" in settings and _encoder_refuses(codec, options.pix_fmt, {**plain, "preset": settings["preset"]}):
        known = f"use one of {', '.join(X264_PRESETS)}" if codec in ("libx264", "libx265") else "see its documentation"
        raise ConfigError(f"--preset '{options.preset}' is not a preset of {codec}; {known}")
    if _encoder_refuses(codec, options.pix_fmt, settings):
        raise ConfigError(f"--crf {options.crf} is refused by {codec}; use a value in its range (18 is the default)")


def _pixel_formats(codec: str) -> list[str]:
    import av

    try:
        return sorted(f.name for f in av.Codec(codec, "w").video_formats or ())
    except (av.error.FFmpegError, ValueError):
        return []


def _encoder_refuses(codec: str, pix_fmt: str, settings: dict[str, str]) -> bool:
    import av

    from srgan_deploy.files import captured_stderr

    with captured_stderr():  # the encoder's own complaint ("x264 [error]: invalid preset") is said our way
        try:
            context = av.CodecContext.create(codec, "w")
            assert isinstance(context, av.VideoCodecContext)
            context.width, context.height, context.pix_fmt = 64, 64, pix_fmt
            context.time_base = Fraction(1, 25)
            context.framerate = Fraction(25)
            context.options = dict(settings)
            context.open()
        except (av.error.FFmpegError, ValueError):
            return True
    return False


def container_format(path: Path) -> str:
    fmt = CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"output '{path.name}' must end in .mp4, .mkv, .mov or .webm")
    return fmt


def open_input(path: Path) -> Any:
    import av

    if not path.exists():
        raise InputFileError(f"no such file: {path}")
    if path.is_dir():
        raise InputFileError(f"expected a video file, got a folder: {path}")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path} is not a readable media file ({exc.strerror or exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def probe(container: Any) -> SourceInfo:
    import av

    stream = container.streams.video[0]
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    frames = int(stream.frames or 0)
    if not frames and duration and rate:
        frames = round(duration * float(rate))
    color = {
        "range": int(cc.color_range),
        "primaries": int(cc.color_primaries),
        "trc": int(cc.color_trc),
        "matrix": int(cc.colorspace),
    }
    sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
    cover = int(av.stream.Disposition.attached_pic)  # cover art is a one-picture "video" stream
    others = [s for s in container.streams.video[1:] if not int(s.disposition) & cover]
    return SourceInfo(
        width=cc.width,
        height=cc.height,
        time_base=stream.time_base or Fraction(1, 90000),
        rate=Fraction(rate) if rate else None,
        frames=frames,
        duration_s=duration,
        codec=cc.name,
        color=color,
        audio=[s.codec_context.name for s in container.streams.audio],
        subtitles=[s.codec_context.name for s in container.streams.subtitles],
        sar=Fraction(sar) if sar and sar > 0 and sar != 1 else None,
        other_video=len(others),
    )


def display_rotation(path: Path, packets: int = 500) -> float:
    """The display rotation of the first video frame (degrees counter-clockwise, as players apply it), or 0.

    Why a separate open: PyAV reports the display matrix on decoded frames only, and a side-by-side job must
    know it before its encoder is made (the halves are turned upright, so the output's size changes)."""
    import av

    try:
        with av.open(str(path)) as container:
            for n, packet in enumerate(container.demux(video=0)):
                for frame in packet.decode():
                    return float(getattr(frame, "rotation", 0) or 0)
                if n >= packets:
                    break
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # the decoder proper reports what is wrong with the file
    return 0.0


def working_matrix(info: SourceInfo) -> tuple[int, int]:
    """(swscale matrix, AVColorSpace) used for both RGB conversions: the source's, or the usual one for its size."""
    tagged = info.color["matrix"]
    if tagged in _SWS_MATRIX:
        return _SWS_MATRIX[tagged], tagged
    return (1, 1) if info.height >= 720 else (5, 6)  # BT.709 for HD, BT.601 (SMPTE 170M) for SD


@dataclass(frozen=True)
class PtsWindow:
    """The frames of one segment: source pts in ``[first, end)`` (end None = to the end of the file).

    ``zero`` is the source pts that becomes 0 in the output (the job's first frame, so every segment of
    one job shares one clock), ``seek`` the pts of the keyframe to seek to (None = decode from the start).
    """

    first: int
    end: int | None
    zero: int
    seek: int | None = None


@dataclass
class DecodedFrame:
    rgb: np.ndarray
    pts: int  # in the source stream's time base, already shifted so the segment starts at 0
    repeats: list[int] = field(default_factory=list)  # pts of following frames that duplicate this one (--dedup)


@dataclass
class DecodeStats:
    frames: int = 0
    bad_packets: int = 0
    side_packets: int = 0


class Decoder:
    """Demuxes and decodes one input: RGB video frames out, audio/subtitle packets to ``on_side_packet``."""

    def __init__(
        self,
        path: Path,
        start: float | None = None,
        duration: float | None = None,
        max_frames: int | None = None,
        *,
        window: PtsWindow | None = None,
        side_streams: bool = True,
    ) -> None:
        self.path = path
        self.window = window
        self.container = open_input(path)
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.info = probe(self.container)
        self.start = max(0.0, start or 0.0)
        self.end = self.start + duration if duration is not None else None
        # Where the file's clock starts (an MPEG-TS cut from a broadcast starts at 1.4 s, say). Times are
        # taken from there, so the output starts at 0 with audio and video shifted alike.
        first = self.container.start_time
        self.origin = max(0.0, float(first) / 1_000_000) if first is not None else 0.0
        self.max_frames = max_frames
        self.stats = DecodeStats()
        self.matrix, self.matrix_tag = working_matrix(self.info)
        self.side_streams = (
            [s for s in self.container.streams if s.type in ("audio", "subtitle")] if side_streams else []
        )

    def expected_frames(self) -> int:
        total = self.info.frames
        if self.info.rate:
            if self.end is not None:
                total = min(total or 1 << 30, round((self.end - self.start) * float(self.info.rate)))
            elif self.start:
                total = max(0, total - round(self.start * float(self.info.rate)))
        if self.max_frames is not None:
            total = min(total or self.max_frames, self.max_frames)
        return total

    def _seek(self) -> None:
        if self.window is not None:
            if self.window.seek is not None:
                self.container.seek(self.window.seek, stream=self.video, backward=True, any_frame=False)
            return
        if self.start > 0:
            target = int((self.origin + self.start) / self.video.time_base) if self.video.time_base else 0
            self.container.seek(target, stream=self.video, backward=True, any_frame=False)

    def frames(self, on_side_packet: Callable[[Any], None], warn: Callable[[str], None]) -> Iterator[DecodedFrame]:
        import av

        self._seek()
        tb = self.info.time_base
        if self.window is not None:
            start_pts, end_pts, zero_pts = self.window.first, self.window.end, self.window.zero
        else:
            start_pts = round((self.origin + self.start) / tb)
            end_pts = round((self.origin + self.end) / tb) if self.end is not None else None
            zero_pts = start_pts
        last_pts: int | None = None
        last_seconds = 0.0
        offset = retimed = resized = 0
        first_size: tuple[int, int] | None = None
        fallback_step = round(1 / (self.info.rate * tb)) if self.info.rate else 1
        streams = [self.video, *self.side_streams]
        done = False
        for packet in self.container.demux(*streams):
            if packet.stream.type != "video":
                if packet.dts is None or packet.pts is None:
                    continue
                seconds = float(packet.pts * packet.time_base) - self.origin
                if done and seconds > last_seconds + 1.0:
                    break  # past the last frame written: stop reading (a long file need not be demuxed to its end)
                if seconds + 1e-6 < self.start or (self.end is not None and seconds >= self.end) or done:
                    continue
                self.stats.side_packets += 1
                on_side_packet(packet)
                continue
            if done:
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                self.stats.bad_packets += 1
                if self.stats.bad_packets == 1:
                    warn(f"skipping undecodable video data in {self.path.name} ({exc.strerror or exc})")
                continue
            for frame in decoded:
                pts = frame.pts
                if pts is None:
                    pts = (last_pts + fallback_step) if last_pts is not None else start_pts
                if pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    done = True
                    break
                if self.window is not None and last_pts is not None and pts <= last_pts:
                    # a segment of an input whose index showed unique, increasing timestamps: a repeat here is
                    # the demuxer re-reading a packet after the seek (seen with MPEG-PS), not a new frame
                    continue
                pts += offset
                if last_pts is not None and pts <= last_pts:
                    # timestamps went back (concatenated streams restart at 0, broken muxers repeat):
                    # keep the frame, re-timed one frame after the last; the muxer needs increasing pts
                    offset += last_pts + fallback_step - pts
                    pts = last_pts + fallback_step
                    retimed += 1
                    if retimed == 1:
                        warn(
                            f"timestamps in {self.path.name} go backwards after {last_seconds:.2f} s; "
                            "following frames are re-timed to continue (none are dropped)"
                        )
                last_pts = pts
                last_seconds = float(pts * tb) - self.origin
                if self.stats.frames == 0:
                    self.info.rotation = float(getattr(frame, "rotation", 0) or 0)
                    self._say_what_is_not_kept(frame, warn)
                rgb = frame.reformat(
                    format="rgb24", src_colorspace=self.matrix, dst_colorspace=self.matrix
                ).to_ndarray()
                if first_size is None:
                    first_size = (rgb.shape[0], rgb.shape[1])
                elif (rgb.shape[0], rgb.shape[1]) != first_size:
                    # one output needs one frame size: rescale to the first frame's, and say so once
                    import cv2

                    resized += 1
                    if resized == 1:
                        warn(
                            f"the picture size in {self.path.name} changes at {last_seconds:.2f} s from "
                            f"{first_size[1]}x{first_size[0]} to {rgb.shape[1]}x{rgb.shape[0]}; "
                            f"such frames are rescaled to {first_size[1]}x{first_size[0]}"
                        )
                    rgb = cv2.resize(rgb, (first_size[1], first_size[0]), interpolation=cv2.INTER_AREA)
                self.stats.frames += 1
                # copy out of FFmpeg's frame buffer, which the decoder may reuse
                yield DecodedFrame(np.array(rgb, copy=True, order="C"), pts - zero_pts)
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    done = True
                    break
            if done and not self.side_streams:
                break
        if self.stats.bad_packets:
            warn(f"{self.stats.bad_packets} damaged video packet(s) in {self.path.name} were skipped")

    def _say_what_is_not_kept(self, frame: Any, warn: Callable[[str], None]) -> None:
        """A warning (once per input) for what the output cannot carry: transparency, and video streams after
        the first (the output has one video stream)."""
        # VP8/VP9 in WebM carry alpha beside the picture (alpha_mode), which FFmpeg's own decoders leave out
        alpha = any(c.is_alpha for c in frame.format.components)
        if alpha:  # an alpha channel that is opaque everywhere (a GIF's palette format, say) loses nothing
            alpha = bool(frame.to_ndarray(format="rgba")[:, :, 3].min() < 255)
        if alpha or self.video.metadata.get("alpha_mode") == "1":
            _warn_once(
                warn,
                f"{self.path.name} has transparency; the output video has none "
                "(transparent areas show the colour stored under them)",
            )
        if self.info.other_video:
            _warn_once(
                warn,
                f"{self.path.name} has {self.info.other_video + 1} video streams; only the first "
                f"({self.info.width}x{self.info.height}) is upscaled and the others are left out",
            )

    def side_packets(self, end_seconds: float | None) -> Iterator[tuple[float, Any]]:
        """(output seconds, packet) of the audio/subtitle tracks over the job's range, for the segment join:
        the tracks are copied once, from the source, whatever the video segments were."""
        if not self.side_streams:
            return
        for packet in self.container.demux(*self.side_streams):
            if packet.dts is None or packet.pts is None:
                continue
            seconds = float(packet.pts * packet.time_base) - self.origin - self.start
            if seconds + 1e-6 < 0 and self.start > 0:
                continue  # before a --start cut (from the file's start, encoder priming is kept)
            if end_seconds is not None and seconds >= end_seconds:
                continue
            self.stats.side_packets += 1
            yield float(packet.dts * packet.time_base) - self.origin - self.start, packet

    def start_offset(self, stream: Any) -> int:
        """The segment start in ``stream``'s time base (side packets are shifted by it)."""
        return round((self.origin + self.start) / stream.time_base)

    def close(self) -> None:
        self.container.close()


def encodable_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """The largest size up to ``width`` x ``height`` that ``pix_fmt`` can hold: chroma-subsampled formats need
    sides that are multiples of their subsampling (yuv420p: even). Why it matters now: a x3 or x1 model gives
    an odd output for an odd input, which libx264 refuses to open an encoder for."""
    import av

    try:
        probe = av.VideoFormat(pix_fmt, 16, 16)
    except (ValueError, TypeError):  # an unknown format: the encoder says so, with its own words
        return width, height
    step_w = max(16 // max(c.width, 1) for c in probe.components)
    step_h = max(16 // max(c.height, 1) for c in probe.components)
    return max(step_w, width - width % step_w), max(step_h, height - height % step_h)


_SAID: set[str] = set()


def _warn_once(warn: Callable[[str], None], message: str) -> None:
    """Once per process: every segment of a job opens its own Encoder."""
    if message not in _SAID:
        _SAID.add(message)
        warn(message)


class Encoder:
    """Encodes the upscaled frames (and copies the side streams) into ``path`` (normally a temp file)."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        decoder: Decoder,
        width: int,
        height: int,
        options: EncodeOptions,
        warn: Callable[[str], None],
    ) -> None:
        """Side streams are copied when ``decoder`` reads them (a segment's Decoder does not)."""
        import av

        self.path = path
        self.decoder = decoder
        self.warn = warn
        self.container = av.open(str(path), mode="w", format=fmt)
        codec = options.resolved_codec(fmt, warn)
        if codec.endswith("_nvenc") and not encoder_opens(codec, width, height, options.pix_fmt):
            warn(f"{codec} cannot start here (no NVIDIA GPU/driver for NVENC); falling back to libx264")
            codec = "libx264"
        info = decoder.info
        stream = self.container.add_stream(codec, rate=info.rate or Fraction(25))
        if not isinstance(stream, av.VideoStream):
            raise ConfigError(f"'{codec}' is not a video encoder")
        self.stream: av.VideoStream = stream
        fit_w, fit_h = encodable_size(width, height, options.pix_fmt)
        if (fit_w, fit_h) != (width, height):
            _warn_once(
                warn,
                f"{options.pix_fmt} stores colour at half resolution and needs even sides: the {width}x{height} "
                f"output is cropped to {fit_w}x{fit_h} (the last column/row); --pix-fmt yuv444p keeps every pixel",
            )
        self.size = (fit_h, fit_w)
        self.stream.width = fit_w
        self.stream.height = fit_h
        self.stream.pix_fmt = options.pix_fmt
        self.stream.time_base = info.time_base
        cc = self.stream.codec_context
        cc.time_base = info.time_base
        settings: dict[str, object] = {**encoder_settings(codec, options)}
        self.stream.options = settings
        self.matrix = decoder.matrix
        self.color_range = info.color["range"] if info.color["range"] in (1, 2) else 1
        cc.color_range = self.color_range
        cc.colorspace = decoder.matrix_tag
        cc.color_primaries = (
            info.color["primaries"] if info.color["primaries"] != 2 else (1 if decoder.matrix_tag == 1 else 6)
        )
        cc.color_trc = info.color["trc"] if info.color["trc"] != 2 else (1 if decoder.matrix_tag == 1 else 6)
        if info.sar is not None:  # non-square pixels stay non-square: else a 16:9 anamorphic DVD plays 4:3
            cc.sample_aspect_ratio = info.sar
        self.rotation = 0.0
        self.side = SideStreams(self.container, fmt, decoder, warn)
        self.codec = codec
        self.frames = 0

    def set_rotation(self, degrees: float) -> None:
        if degrees:
            self.stream.set_display_rotation(degrees)
            self.rotation = degrees

    def write_frame(self, rgb: np.ndarray, pts: int) -> None:
        import av

        h, w = self.size
        if rgb.shape[:2] != (h, w):  # an odd output size cropped to what the pixel format holds
            rgb = np.ascontiguousarray(rgb[:h, :w])
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(
            format=self.stream.pix_fmt,
            src_colorspace=self.matrix,
            dst_colorspace=self.matrix,
            dst_color_range=self.color_range,
        )
        frame.pts = pts
        frame.time_base = self.decoder.info.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def write_side_packet(self, packet: Any) -> None:
        self.side.write(packet)

    def finish(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.side.flush()
        self.container.close()

    def abort(self) -> None:
        # closing a half-written file may fail; the file is deleted right after, so the error is moot
        with contextlib.suppress(Exception):
            self.container.close()


class SideStreams:
    """The audio and subtitle tracks of ``decoder`` in an output container: copied packet for packet, or
    re-encoded (audio) / dropped (subtitles) where the container cannot hold the codec, with a warning.

    Shared by the single-pass writer and the segment join, so both keep the same tracks the same way."""

    def __init__(self, container: Any, fmt: str, decoder: Decoder, warn: Callable[[str], None]) -> None:
        self.container = container
        self.decoder = decoder
        self.copied: dict[int, Any] = {}
        self.transcoders: dict[int, AudioTranscoder] = {}
        for stream in decoder.side_streams:
            name = stream.codec_context.name
            allowed = (AUDIO_OK if stream.type == "audio" else SUBTITLE_OK).get(fmt)
            if allowed is not None and name not in allowed:
                if stream.type == "audio":
                    target = "libopus" if fmt == "webm" else "aac"
                    warn(f"{fmt} cannot hold {name} audio; re-encoding that track to {target}")
                    self.transcoders[stream.index] = AudioTranscoder(container, stream, target)
                else:
                    warn(f"{fmt} cannot hold {name} subtitles; dropping them (use .mkv to keep them)")
                continue
            self.copied[stream.index] = container.add_stream_from_template(stream)

    def write(self, packet: Any) -> None:
        transcoder = self.transcoders.get(packet.stream.index)
        if transcoder is not None:
            transcoder.write(packet)
            return
        out = self.copied.get(packet.stream.index)
        if out is None:
            return
        offset = self.decoder.start_offset(packet.stream)
        if packet.pts is not None:
            packet.pts -= offset
        if packet.dts is not None:
            packet.dts -= offset
        packet.stream = out
        self.container.mux(packet)

    def flush(self) -> None:
        for transcoder in self.transcoders.values():
            transcoder.flush()


class AudioTranscoder:
    """Re-encodes one audio track whose codec the output container cannot hold (decode -> encode)."""

    def __init__(self, container: Any, source: Any, codec: str) -> None:
        cc = source.codec_context
        rate = 48000 if codec == "libopus" else (cc.sample_rate or 48000)
        self.container = container
        self.out = container.add_stream(codec, rate=rate)
        self.out.layout = cc.layout.name if cc.layout is not None else "stereo"
        self.decoder = cc

    def write(self, packet: Any) -> None:
        for frame in packet.decode():
            frame.pts = None  # the encoder's own sample counter keeps the track continuous
            for out in self.out.encode(frame):
                self.container.mux(out)

    def flush(self) -> None:
        for out in self.out.encode(None):
            self.container.mux(out)
