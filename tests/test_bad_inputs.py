"""Bad and unusual inputs across every command: one clear line, the right exit code, no traceback,
nothing left behind; and where an output is made, that it is right.

Table-driven: each case names the command line (placeholders filled from the workspace the test
builds), the exit code, a fragment the one error line must contain, and optional checks.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from srgan_deploy.cli import app
from srgan_deploy.weights import save_generator
from tests.clips import make_clip
from tests.conftest import make_generator, smooth_image

runner = CliRunner()


# ----------------------------------------------------------------------------- the workspace


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims a huge picture (the IDAT is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose EXIF says how to turn it (what phones write for portrait shots)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    data = buf.tobytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    return data[:2] + segment + data[2:]


@dataclass
class Workspace:
    root: Path
    paths: dict[str, str] = field(default_factory=dict)

    def fill(self, args: list[str]) -> list[str]:
        return [a.format(**self.paths) for a in args]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Workspace:
    root = tmp_path_factory.mktemp("bad")
    p: dict[str, str] = {"D": str(root), "W": str(tiny_weights)}
    image = smooth_image(20, 24, 1)
    good = root / "good.png"
    cv2.imwrite(str(good), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    p["IMG"] = str(good)
    (root / "text.png").write_text("not an image")
    p["TEXT_PNG"] = str(root / "text.png")
    (root / "empty.png").write_bytes(b"")
    p["EMPTY_PNG"] = str(root / "empty.png")
    data = good.read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    p["TRUNC_PNG"] = str(root / "truncated.png")
    (root / "huge.png").write_bytes(png_claiming(60000, 60000))
    p["HUGE_PNG"] = str(root / "huge.png")
    (root / "big1bit.png").write_bytes(png_claiming(16000, 16000))
    p["BIG_PNG"] = str(root / "big1bit.png")
    fifo = root / "fifo.png"
    os.mkfifo(fifo)
    p["FIFO"] = str(fifo)
    (root / "emptydir").mkdir()
    p["EMPTY_DIR"] = str(root / "emptydir")
    mixed = root / "mixed"
    mixed.mkdir()
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(mixed / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (mixed / "b.png").write_text("broken")
    p["MIXED"] = str(mixed)
    tiny = root / "one-pixel.png"
    cv2.imwrite(str(tiny), np.full((1, 1, 3), 128, np.uint8))
    p["ONE_PX"] = str(tiny)
    deep = root / "deep16.png"
    cv2.imwrite(str(deep), (smooth_image(12, 10, 2).astype(np.uint16) * 257))
    p["PNG16"] = str(deep)
    portrait = smooth_image(16, 24, 3)  # stored landscape 24x16, EXIF says rotate 90 degrees
    (root / "phone.jpg").write_bytes(jpeg_with_orientation(portrait, 6))
    p["PHONE"] = str(root / "phone.jpg")
    (root / "weird [bold]x name[rtx].png").write_bytes(data)
    p["BRACKETS"] = str(root / "weird [bold]x name[rtx].png")
    (root / "a-file").write_text("x")
    p["A_FILE"] = str(root / "a-file")
    # weights: corrupt, NaN, integer tensors, fractional config
    (root / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    p["CORRUPT_W"] = str(root / "corrupt.safetensors")
    import torch

    g = make_generator()
    with torch.no_grad():
        next(iter(g.parameters())).fill_(float("nan"))
    save_generator(g, root / "nan.safetensors", {"name": "nan"})
    p["NAN_W"] = str(root / "nan.safetensors")
    p["FRACTION_W"] = str(_weights_with_config(tiny_weights, root / "fraction.safetensors", channels=8.7))
    p["HUGE_W"] = str(_weights_with_config(tiny_weights, root / "huge.safetensors", channels=200000))
    (root / "zero.onnx").write_bytes(b"")
    p["ZERO_ONNX"] = str(root / "zero.onnx")
    (root / "lonely.plan").write_bytes(b"PLAN")
    p["LONELY_PLAN"] = str(root / "lonely.plan")
    # videos
    p["CLIP"] = str(make_clip(root / "clip.mp4", frames=12))
    (root / "existing.mp4").write_bytes(Path(p["CLIP"]).read_bytes())
    p["EXISTING_MP4"] = str(root / "existing.mp4")
    (root / "text.mp4").write_text("not a video")
    p["TEXT_MP4"] = str(root / "text.mp4")
    (root / "empty.mp4").write_bytes(b"")
    p["EMPTY_MP4"] = str(root / "empty.mp4")
    audio_only = root / "audio.m4a"
    _audio_only(audio_only)
    p["AUDIO_ONLY"] = str(audio_only)
    joined = root / "joined.ts"  # two .ts files back to back: timestamps restart, picture size changes
    first = make_clip(root / "part1.ts", width=64, height=48, frames=10, audio=False, fmt="mpegts")
    second = make_clip(root / "part2.ts", width=48, height=32, frames=10, audio=False, fmt="mpegts")
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    p["JOINED_TS"] = str(joined)
    offset = make_clip(root / "offset.ts", frames=12, audio=False, fmt="mpegts", pts=[1460 + 42 * i for i in range(12)])
    p["OFFSET_TS"] = str(offset)  # a broadcast-style clock that starts at 1.46 s
    p["ZEROED_MP4"] = str(_zeroed_payload(Path(p["CLIP"]), root / "zeroed.mp4"))  # every packet there, none decodes
    p["HEADER_ONLY_MP4"] = str(_header_only(Path(p["CLIP"]), root / "header-only.mp4"))  # an index, no media data
    (root / "a-folder.mp4").mkdir()
    p["DIR_MP4"] = str(root / "a-folder.mp4")
    # eval folders
    flat = root / "flat"
    flat.mkdir()
    cv2.imwrite(str(flat / "grey.png"), np.full((48, 48, 3), 90, np.uint8))
    p["FLAT_DIR"] = str(flat)
    small = root / "small"
    small.mkdir()
    cv2.imwrite(str(small / "s.png"), np.full((6, 6, 3), 90, np.uint8))
    p["SMALL_DIR"] = str(small)
    window = root / "window"  # big enough for the old check, but 8x8 after the shave: no 11x11 SSIM window
    window.mkdir()
    cv2.imwrite(str(window / "w.png"), smooth_image(16, 16, 5))
    p["WINDOW_DIR"] = str(window)
    train = root / "train"
    train.mkdir()
    for i in range(3):
        cv2.imwrite(str(train / f"t{i}.png"), cv2.cvtColor(smooth_image(48, 48, i), cv2.COLOR_RGB2BGR))
    p["TRAIN"] = str(train)
    return Workspace(root, p)


def _weights_with_config(source: Path, target: Path, **config: Any) -> Path:
    """Copy of a safetensors file whose metadata config is edited (header rewritten, tensors kept)."""
    data = source.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    model = json.loads(header["__metadata__"]["config"])
    model.update(config)
    header["__metadata__"]["config"] = json.dumps(model)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    target.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return target


def _zeroed_payload(source: Path, target: Path) -> Path:
    """``source`` with its media data zeroed: the index lists every packet, the decoder finds no picture."""
    data = bytearray(source.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    target.write_bytes(bytes(data))
    return target


def _header_only(source: Path, target: Path) -> Path:
    """``source`` without its media data box: what a download cut off after the header, or a copy of only the
    moov, looks like. The index lists every packet; none of their bytes exist."""
    data = source.read_bytes()
    kept, at = b"", 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        if data[at + 4 : at + 8] != b"mdat":
            kept += data[at : at + size]
        at += size
    target.write_bytes(kept)
    return target


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "stereo"
        samples = np.zeros((2, 44100 // 2), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# ----------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    message: str  # must be in the one error line (or, for code 0, in stderr/stdout)
    code: int = 2
    check: Callable[[Workspace, Path], None] | None = None


def _out(ws: Workspace, case: str) -> Path:
    return ws.root / f"out-{case}"


def _video_ok(frames: int, size: tuple[int, int]) -> Callable[[Workspace, Path], None]:
    def check(ws: Workspace, out: Path) -> None:
        with av.open(str(out)) as c:
            stream = c.streams.video[0]
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
            pts = [f.pts for f in av.open(str(out)).decode(video=0)]
        assert len(decoded) == frames
        assert decoded[0].shape[:2] == size
        assert pts == sorted(pts) and len(set(pts)) == len(pts)  # strictly increasing timestamps

    return check


def _starts_at_zero(ws: Workspace, out: Path) -> None:
    _video_ok(12, (192, 256))(ws, out)
    with av.open(str(out)) as c:
        assert c.start_time in (0, None) and c.duration is not None and c.duration / 1e6 < 0.7  # not 1.46 s + 0.5 s


def _image_ok(name: str, shape: tuple[int, ...]) -> Callable[[Workspace, Path], None]:
    def check(ws: Workspace, out: Path) -> None:
        image = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape == shape

    return check


def _mixed_folder(ws: Workspace, out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]  # the good ones were still written


def _phone(ws: Workspace, out: Path) -> None:
    image = cv2.imread(str(out / "phone.jpg"))
    assert image.shape[:2] == (96, 64)  # portrait: the EXIF rotation was applied (stored 64x96 landscape)


def _eval_json(ws: Workspace, out: Path) -> None:
    text = (ws.root / "flat.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text)


UP = ["upscale", "-w", "{W}", "-b", "torch"]
VID = ["video", "-w", "{W}", "-b", "torch"]

CASES = [
    # ------------------------------------------------------------------ upscale: inputs
    Case("up-missing", [*UP, "{D}/nope.png", "-o", "{OUT}"], "no such file"),
    Case("up-empty-dir", [*UP, "{EMPTY_DIR}", "-o", "{OUT}"], "no images"),
    Case("up-text-as-png", [*UP, "{TEXT_PNG}", "-o", "{OUT}"], "cannot decode"),
    Case("up-empty-png", [*UP, "{EMPTY_PNG}", "-o", "{OUT}"], "cannot decode"),
    Case("up-truncated-png", [*UP, "{TRUNC_PNG}", "-o", "{OUT}"], "truncated.png"),
    Case("up-header-60000", [*UP, "{HUGE_PNG}", "-o", "{OUT}"], "above the 40 MP limit"),
    Case("up-header-16000", [*UP, "{BIG_PNG}", "-o", "{OUT}"], "--max-pixels"),
    Case("up-max-pixels-small", [*UP, "{IMG}", "-o", "{OUT}", "--max-pixels", "100"], "above the 0 MP limit"),
    Case("up-max-pixels-zero", [*UP, "{IMG}", "-o", "{OUT}", "--max-pixels", "0"], "--max-pixels 0 must be positive"),
    Case("up-fifo", [*UP, "{FIFO}", "-o", "{OUT}"], "not a regular file"),
    Case("up-out-is-file", [*UP, "{IMG}", "-o", "{A_FILE}"], "not a folder"),
    Case("up-out-is-input-dir", [*UP, "{IMG}", "-o", "{D}"], "is the input itself"),
    Case("up-format-gif", [*UP, "{IMG}", "-o", "{OUT}", "--format", "gif"], "cannot write '.gif'"),
    Case(
        "up-mixed-folder", [*UP, "{MIXED}", "-o", "{OUT}"], "1 of 3 images failed: {MIXED}/b.png", check=_mixed_folder
    ),
    Case("up-brackets", [*UP, "{BRACKETS}", "-o", "{OUT}", "--format", "bmp"], "", code=0),
    Case("up-one-pixel", [*UP, "{ONE_PX}", "-o", "{OUT}"], "", code=0, check=_image_ok("one-pixel.png", (4, 4, 3))),
    Case("up-16-bit", [*UP, "{PNG16}", "-o", "{OUT}"], "", code=0, check=_image_ok("deep16.png", (48, 40, 3))),
    Case("up-exif-rotated", [*UP, "{PHONE}", "-o", "{OUT}"], "", code=0, check=_phone),
    # ------------------------------------------------------------------ upscale: options
    Case("up-tile-4", [*UP, "{IMG}", "-o", "{OUT}", "--tile", "4"], "--tile 4 is too small"),
    Case("up-threads-0", [*UP, "{IMG}", "-o", "{OUT}", "--threads", "0"], "--threads 0"),
    Case("up-threads-neg", [*UP, "{IMG}", "-o", "{OUT}", "--threads", "-1"], "--threads -1"),
    Case("up-threads-huge", [*UP, "{IMG}", "-o", "{OUT}", "--threads", "100000"], "--threads 100000"),
    Case("up-backend-unknown", ["upscale", "{IMG}", "-o", "{OUT}", "-b", "warp"], "unknown backend 'warp'"),
    Case("up-precision-fp64", [*UP, "{IMG}", "-o", "{OUT}", "--precision", "fp64"], "unknown precision 'fp64'"),
    Case("up-torch-fp16-cpu", [*UP, "{IMG}", "-o", "{OUT}", "--precision", "fp16", "--device", "cpu"], "fp16 on CPU"),
    Case(
        "up-ort-bf16",
        ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{W}", "-b", "onnxruntime", "--precision", "bf16", "--device", "cpu"],
        "try -b openvino",
    ),
    Case("up-device-bad", [*UP, "{IMG}", "-o", "{OUT}", "--device", "gpu7"], "unknown device 'gpu7'"),
    Case(
        "up-openvino-cuda",
        ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{W}", "-b", "openvino", "--device", "cuda"],
        "runs on the CPU",
    ),
    # ------------------------------------------------------------------ weights and model files
    Case("w-missing", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{D}/nope.safetensors"], "weights file not found"),
    Case("w-corrupt", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{CORRUPT_W}"], "corrupt.safetensors"),
    Case("w-nan", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{NAN_W}", "-b", "torch"], "NaN or infinite"),
    Case("w-nan-export", ["export", "-o", "{OUT}", "-w", "{NAN_W}"], "NaN or infinite"),
    Case("w-fractional-config", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{FRACTION_W}"], "must be an integer"),
    Case("w-zero-onnx", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{ZERO_ONNX}", "-b", "onnxruntime"], "zero.onnx"),
    Case("w-plan-no-sidecar", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{LONELY_PLAN}", "-b", "bicubic"], "sidecar"),
    Case(
        "w-plan-on-ort",
        ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{LONELY_PLAN}", "-b", "onnxruntime"],
        "not a TensorRT plan",
    ),
    Case(
        "w-onnx-on-torch",
        ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{ZERO_ONNX}", "-b", "torch"],
        "runs .safetensors weights",
    ),
    Case("w-missing-onnx", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{D}/gone.onnx"], "gone.onnx not found"),
    # ------------------------------------------------------------------ video
    Case("v-missing", [*VID, "{D}/nope.mp4", "{OUT}.mp4"], "nope.mp4"),
    Case("v-text", [*VID, "{TEXT_MP4}", "{OUT}.mp4"], "text.mp4"),
    Case("v-empty", [*VID, "{EMPTY_MP4}", "{OUT}.mp4"], "empty.mp4"),
    Case("v-audio-only", [*VID, "{AUDIO_ONLY}", "{OUT}.mp4"], "audio.m4a"),
    Case("v-same-file", [*VID, "{CLIP}", "{CLIP}"], "input"),
    Case("v-exists", [*VID, "{CLIP}", "{EXISTING_MP4}"], "--overwrite"),
    Case("v-not-a-video-suffix", [*VID, "{CLIP}", "{IMG}"], "must end in .mp4"),
    Case("v-crf-99", [*VID, "{CLIP}", "{OUT}.mp4", "--crf", "99"], "--crf 99"),
    Case("v-crf-neg", [*VID, "{CLIP}", "{OUT}.mp4", "--crf", "-1"], "--crf -1"),
    Case("v-pix-fmt", [*VID, "{CLIP}", "{OUT}.mp4", "--pix-fmt", "foo"], "--pix-fmt 'foo'"),
    Case("v-preset", [*VID, "{CLIP}", "{OUT}.mp4", "--preset", "very fast!"], "--preset"),
    Case("v-start-nan", [*VID, "{CLIP}", "{OUT}.mp4", "--start", "nan"], "--start nan"),
    Case("v-start-neg", [*VID, "{CLIP}", "{OUT}.mp4", "--start", "-1"], "--start -1"),
    Case("v-duration-inf", [*VID, "{CLIP}", "{OUT}.mp4", "--duration", "inf"], "--duration inf"),
    Case("v-duration-zero", [*VID, "{CLIP}", "{OUT}.mp4", "--duration", "0"], "--duration 0"),
    Case("v-max-frames-0", [*VID, "{CLIP}", "{OUT}.mp4", "--max-frames", "0"], "--max-frames"),
    Case("v-batch-0", [*VID, "{CLIP}", "{OUT}.mp4", "--batch", "0"], "--batch"),
    Case("v-codec", [*VID, "{CLIP}", "{OUT}.mp4", "--codec", "nonsense264"], "nonsense264"),
    Case("v-container", [*VID, "{CLIP}", "{OUT}.xyz"], ".xyz"),
    Case("v-start-past-end", [*VID, "{CLIP}", "{OUT}.mp4", "--start", "60"], "no video frames"),
    Case("v-threads", [*VID, "{CLIP}", "{OUT}.mp4", "--threads", "-3"], "--threads -3"),
    Case("v-out-folder-missing", [*VID, "{CLIP}", "{D}/nowhere/out.mp4"], "does not exist; create it first"),
    # a command line that does not parse is one error line too, not click's usage box
    Case("v-max-frames-text", [*VID, "{CLIP}", "{OUT}.mp4", "--max-frames", "abc"], "Invalid value for '--max-frames'"),
    Case("up-no-out", [*UP, "{IMG}"], "Missing option '--out'"),
    Case("up-unknown-option", [*UP, "{IMG}", "-o", "{OUT}", "--sharpen"], "No such option: --sharpen"),
    Case("e-no-folder", ["eval"], "Missing argument"),
    # options the encoder refuses, found before any work and said in the option's words (issue 29)
    Case("v-preset-unknown", [*VID, "{CLIP}", "{OUT}.mp4", "--preset", "veryfastt"], "--preset 'veryfastt' is not"),
    Case("v-pix-fmt-unencodable", [*VID, "{CLIP}", "{OUT}.mp4", "--pix-fmt", "gray16le"], "cannot be encoded by"),
    Case("v-out-is-folder", [*VID, "{CLIP}", "{DIR_MP4}", "--overwrite"], "a-folder.mp4 is a folder"),
    Case("v-undecodable", [*VID, "{ZEROED_MP4}", "{OUT}.mp4"], "no video frame of {ZEROED_MP4} could be decoded"),
    Case("v-header-only", [*VID, "{HEADER_ONLY_MP4}", "{OUT}.mp4"], "no video frame of {HEADER_ONLY_MP4} could be"),
    Case("v-tile-4", [*VID, "{CLIP}", "{OUT}.mp4", "--tile", "4"], "--tile 4 is too small"),
    Case("v-start-huge", [*VID, "{CLIP}", "{OUT}.mp4", "--start", "1e308"], "--start 1e+308 is longer than any"),
    Case("v-duration-huge", [*VID, "{CLIP}", "{OUT}.mp4", "--duration", "1e300"], "--duration 1e+300 is longer"),
    Case("v-segment-huge", [*VID, "{CLIP}", "{OUT}.mp4", "--segment-seconds", "1e308"], "--segment-seconds 1e+308"),
    Case("v-dedup-negative", [*VID, "{CLIP}", "{OUT}.mp4", "--dedup", "-1,0.5"], "--dedup max difference -1"),
    Case("v-memory-budget-1T", [*VID, "{CLIP}", "{OUT}.mp4", "--memory-budget", "1T"], "more than this machine has"),
    Case("v-ray-timeout-0", [*VID, "{CLIP}", "{OUT}.mp4", "--ray-timeout", "0"], "--ray-timeout 0"),
    Case("up-memory-budget-1T", [*UP, "{IMG}", "-o", "{OUT}", "--memory-budget", "1T"], "more than this machine"),
    Case("w-channels-200000", ["upscale", "{IMG}", "-o", "{OUT}", "-w", "{HUGE_W}"], "beyond this generator"),
    Case("b-backend-empty", ["bench", "-w", "{W}", "-b", ","], "names no backend"),
    Case("e-ssim-window", ["eval", "{WINDOW_DIR}", "-w", "{W}", "-b", "bicubic"], "large enough"),
    Case("v-joined-ts", [*VID, "{JOINED_TS}", "{OUT}.mp4"], "", code=0, check=_video_ok(20, (192, 256))),
    Case("v-ts-start-offset", [*VID, "{OFFSET_TS}", "{OUT}.mp4"], "", code=0, check=_starts_at_zero),
    # ------------------------------------------------------------------ export
    Case("x-format", ["export", "-o", "{OUT}", "-w", "{W}", "--format", "coreml"], "unknown --format 'coreml'"),
    Case("x-io", ["export", "-o", "{OUT}", "-w", "{W}", "--io", "int16"], "unknown --io 'int16'"),
    Case("x-precision", ["export", "-o", "{OUT}", "-w", "{W}", "--precision", "bf16"], "unknown --precision 'bf16'"),
    Case("x-sm-hopper", ["export", "-o", "{OUT}", "-w", "{W}", "-f", "tensorrt-rtx", "--sm", "90"], "Hopper"),
    Case("x-sm-without-rtx", ["export", "-o", "{OUT}", "-w", "{W}", "--sm", "89"], "--format tensorrt-rtx"),
    Case("x-out-is-file", ["export", "-o", "{A_FILE}", "-w", "{W}"], "a-file"),
    Case("x-shape-text", ["export", "-o", "{OUT}", "-w", "{W}", "--min-shape", "big"], "--min-shape 'big'"),
    Case("x-shape-order", ["export", "-o", "{OUT}", "-w", "{W}", "--min-shape", "1x3x600x600"], "min <= opt <= max"),
    Case("x-shape-channels", ["export", "-o", "{OUT}", "-w", "{W}", "--static-shape", "1x4x64x64"], "4 channels"),
    Case("x-tensorrt-missing", ["export", "-o", "{OUT}", "-w", "{W}", "-f", "tensorrt"], "pip install"),
    # ------------------------------------------------------------------ bench
    Case("b-input-zero", ["bench", "-w", "{W}", "--input", "0x0"], "positive numbers"),
    Case("b-input-text", ["bench", "-w", "{W}", "--input", "large"], "WIDTHxHEIGHT"),
    Case("b-batch-0", ["bench", "-w", "{W}", "--batch", "0"], "--batch"),
    Case("b-iters-0", ["bench", "-w", "{W}", "--iters", "0"], "--iters"),
    Case("b-json-folder", ["bench", "-w", "{W}", "-b", "bicubic", "--json", "{D}"], "is a folder"),
    Case("b-backend", ["bench", "-w", "{W}", "-b", "warp"], "unknown backend 'warp'"),
    Case("b-output-name", ["bench", "-w", "{W}", "--output", "9999p"], "9999p"),
    # ------------------------------------------------------------------ eval
    Case("e-not-folder", ["eval", "{IMG}", "-w", "{W}", "-b", "torch"], "not a folder"),
    Case("e-empty", ["eval", "{EMPTY_DIR}", "-w", "{W}", "-b", "torch"], "no images"),
    Case("e-limit-0", ["eval", "{FLAT_DIR}", "-w", "{W}", "-b", "torch", "--limit", "0"], "--limit 0"),
    Case("e-limit-neg", ["eval", "{FLAT_DIR}", "-w", "{W}", "-b", "torch", "--limit", "-1"], "--limit -1"),
    Case("e-json-folder", ["eval", "{FLAT_DIR}", "-w", "{W}", "-b", "torch", "--json", "{D}"], "is a folder"),
    Case("e-too-small", ["eval", "{SMALL_DIR}", "-w", "{W}", "-b", "torch"], "large enough"),
    Case(
        "e-flat-json",
        ["eval", "{FLAT_DIR}", "-w", "{W}", "-b", "bicubic", "--json", "{D}/flat.json"],
        "",
        code=0,
        check=_eval_json,
    ),
    # ------------------------------------------------------------------ train
    Case("t-data-missing", ["train", "--data", "{D}/none", "--out", "{OUT}"], "--data"),
    Case("t-val-missing", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--val", "{D}/none"], "--val"),
    Case("t-val-empty", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--val", "{EMPTY_DIR}"], "no images"),
    Case("t-lr-nan", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--lr", "nan"], "--lr nan"),
    Case("t-lr-neg", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--lr", "-1"], "--lr -1"),
    Case("t-crop", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--crop", "30"], "--crop 30"),
    Case("t-phase", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--phase", "gan2"], "unknown phase"),
    Case("t-loss", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--loss", "huber"], "mse or l1"),
    Case("t-milestones", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--lr-milestones", "a,b"], "--lr-milestones"),
    Case("t-steps-0", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--steps", "0"], "--steps"),
    Case("t-ema-1", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--ema", "1"], "--ema 1.0 must be in [0, 1)"),
    Case("t-ema-nan", ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--ema", "nan"], "--ema nan"),
    Case(
        "t-snapshot-neg",
        ["train", "--data", "{TRAIN}", "--out", "{OUT}", "--snapshot-every", "-5"],
        "--snapshot-every -5",
    ),
    Case(
        "t-resume-nothing",
        [
            "train",
            "--data",
            "{TRAIN}",
            "--out",
            "{OUT}",
            "--resume",
            "--crop",
            "32",
            "--channels",
            "8",
            "--blocks",
            "1",
        ],
        "nothing to resume",
    ),
    Case("t-too-small-images", ["train", "--data", "{TRAIN}", "--out", "{OUT}"], "at least 96x96"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRGAN_DEPLOY_CACHE", str(ws.root / "cache"))
    out = _out(ws, case.id)
    ws.paths["OUT"] = str(out)
    before = _partials(ws.root)
    result = runner.invoke(app, ws.fill(case.args))
    stderr = result.stderr
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    assert result.exit_code == case.code, f"exit {result.exit_code}: {stderr[-600:]}"
    if case.code:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, stderr
        assert ws.fill([case.message])[0] in errors[0], errors[0]
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
        # the user's files and options, never our temporaries (.seg-00000.<pid>.partial.mp4, .out.joining-<pid>)
        assert not any(word in errors[0] for word in (".partial", ".joining-", ".tmp", "srgan-work/.")), errors[0]
    assert "RuntimeWarning" not in stderr and "Warning:" not in stderr  # numpy's, say: ours are "warning:" lines
    assert _partials(ws.root) == before, "a partial file was left behind"
    # a run that failed before finishing any segment leaves no work folder (lock and manifest only) behind
    assert not [p for p in ws.root.rglob("*.srgan-work")], "a work folder was left behind"
    if case.code and case.id.startswith(("up-", "x-", "w-", "v-")) and "exists" not in case.id:
        leftovers = [
            p for p in (out, out.with_suffix(".mp4")) if p.exists() and any(p.rglob("*") if p.is_dir() else [p])
        ]
        assert case.id == "up-mixed-folder" or not leftovers, f"left behind: {leftovers}"
    if case.check is not None:
        case.check(ws, out.with_suffix(".mp4") if case.id.startswith("v-") else out)


def _partials(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")}


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    commands = {c.args[0] for c in CASES}
    assert commands == {"upscale", "video", "export", "bench", "eval", "train"}


def test_info_to_a_full_device_is_one_line() -> None:
    """stdout that cannot be written (a full disk, a closed pipe) is an error line, not a traceback."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "srgan_deploy.cli", "info"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "No space left on device" in done.stderr


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_icc_profiles_are_kept(tmp_path: Path, tiny_weights: Path, suffix: str) -> None:
    from srgan_deploy.images import embed_icc, icc_profile

    profile = bytes(range(256)) * 300  # 76.8 kB: a JPEG needs two APP2 segments for it
    ok, buf = cv2.imencode(suffix, smooth_image(16, 20, 4))
    assert ok
    source = tmp_path / f"wide-gamut{suffix}"
    source.write_bytes(embed_icc(buf.tobytes(), suffix, profile))
    assert icc_profile(source.read_bytes()) == profile
    result = runner.invoke(
        app, ["upscale", str(source), "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "-b", "bicubic"]
    )
    assert result.exit_code == 0, result.stderr
    written = (tmp_path / "out" / source.name).read_bytes()
    assert icc_profile(written) == profile
    assert cv2.imdecode(np.frombuffer(written, np.uint8), cv2.IMREAD_COLOR).shape == (64, 80, 3)


# ----------------------------------------------------------------------------- faults (issue 29)


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_full_disk_before_any_segment_leaves_nothing_and_names_the_folder(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first manifest cannot be written: one line naming the work folder (not our .manifest.json.<pid>
    temporary), no temporary and no work folder (a lock and nothing else) left behind."""
    import errno

    from srgan_deploy import files

    real = os.replace

    def full(src: object, dst: object) -> None:
        if str(dst).endswith("manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "replace", full)
    out = tmp_path / "full.mp4"
    result = runner.invoke(app, ["video", "-b", "bicubic", ws.paths["CLIP"], str(out), "--preset", "ultrafast"])
    assert result.exit_code == 2
    line = _one_error(result.stderr)
    assert "No space left on device" in line and ".full.mp4.srgan-work" in line and ".partial" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_mid_job_keeps_only_finished_segments(ws: Workspace, tmp_path: Path) -> None:
    """On a real full filesystem (a 48 KiB tmpfs; needs root): the segment that did not fit is named by
    its number and folder, finished ones stay for the re-run, and nothing half-written is left."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "o.mp4"
        args = ["video", "-b", "bicubic", ws.paths["CLIP"], str(out), "--preset", "ultrafast"]
        result = runner.invoke(app, [*args, "--segment-seconds", "0.1"])
        assert result.exit_code == 2
        line = _one_error(result.stderr)
        assert "No space left on device" in line and ".partial" not in line, line
        assert str(mount / ".o.mp4.srgan-work") in line, line  # where the space ran out, not just that it did
        left = sorted(p.name for p in mount.rglob("*"))
        assert not [name for name in left if "partial" in name or name.endswith(".tmp")], left
        assert not left or (".o.mp4.srgan-work" in left and "manifest.json" in left and "seg-00000.mp4" in left), left
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_training_onto_a_full_disk_is_one_line(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reports a short write as RuntimeError("... unexpected pos ..."): it was an internal error."""
    import torch

    def short_write(obj: object, f: object, *args: object, **kwargs: object) -> None:
        Path(str(f)).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 56896 vs 56788")

    monkeypatch.setattr(torch, "save", short_write)
    out = tmp_path / "run"
    args = ["train", "--data", ws.paths["TRAIN"], "--out", str(out), "--crop", "32", "--channels", "8"]
    result = runner.invoke(
        app, [*args, "--blocks", "1", "--steps", "2", "--checkpoint-every", "1", "--batch-size", "2"]
    )
    assert result.exit_code == 2, result.stderr
    line = _one_error(result.stderr)
    assert "cannot write checkpoint" in line and "--resume" in line, line
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name]


SLOW_CHECK = """
import sys, time
from pathlib import Path
import onnx.checker
marker = Path(sys.argv[1])
def slow(*args, **kwargs):
    marker.write_text("exporting")
    time.sleep(120)
onnx.checker.check_model = slow
sys.argv = ["srgan-deploy", *sys.argv[2:]]
from srgan_deploy.cli import main
main()
"""


@pytest.mark.parametrize("command", ["export", "first-use-cache"])
def test_sigterm_during_an_onnx_export_leaves_no_partial_file(
    command: str, ws: Workspace, tmp_path: Path, tiny_weights: Path
) -> None:
    """The README promises no partial file on SIGTERM; an export (and the first-use export into the cache)
    left its .onnx.<pid>.partial behind, because nothing turned SIGTERM into the Ctrl-C path."""
    import signal
    import time

    marker = tmp_path / "marker"
    cache = tmp_path / "cache"
    if command == "export":
        args = ["export", "-w", str(tiny_weights), "-o", str(tmp_path / "out"), "--no-verify"]
    else:
        args = ["upscale", ws.paths["IMG"], "-o", str(tmp_path / "up"), "-w", str(tiny_weights), "-b", "onnxruntime"]
    env = {**os.environ, "SRGAN_DEPLOY_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHECK, str(marker), *args], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=30)[1]
    partials = [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    assert partials, "the export had not started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_weights_are_checked_against_their_header_before_anything_is_allocated(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """A config that does not match its tensors is refused from the header: building the model first made a
    config claiming 200000 channels ask for 1.4 TB ("internal error"); 1024 channels x 16 blocks asks 1.2 GB."""
    wide = _weights_with_config(tiny_weights, tmp_path / "wide.safetensors", channels=1024, blocks=16)
    # the child's own peak: VmHWM belongs to its address space, while ru_maxrss carries the parent's peak
    # over fork + exec (a big pytest process made this test fail with "1465 MiB")
    script = (
        "import sys\n"
        "from srgan_deploy.errors import WeightsError\n"
        "from srgan_deploy.weights import load_generator\n"
        "try:\n    load_generator(sys.argv[1])\nexcept WeightsError as exc:\n    print(exc)\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1].split()\n"
        "print(status[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(wide)], capture_output=True, text=True, timeout=120)
    message, peak_kib = done.stdout.strip().splitlines()[-2:]
    assert "config needs" in message or "does not match its config" in message, done.stdout + done.stderr
    assert int(peak_kib) < 900 * 1024, f"{int(peak_kib) // 1024} MiB peak: the model was built before the check"


def test_ssim_needs_its_window() -> None:
    from srgan_deploy.metrics import ssim

    assert ssim(np.full((11, 11), 50.0), np.full((11, 11), 50.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


# ----------------------------------------------------------------------------- pictures that decode must come out right


def _upscale(args: list[str]) -> Any:
    result = runner.invoke(app, ["upscale", *args])
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _read_rgba(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1), (3, 5)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_a_picture_a_few_pixels_high_comes_out_like_its_bicubic(tmp_path: Path, size: tuple[int, int]) -> None:
    """The network's zero padding swamped a picture a few pixels high or wide: a 1x1 grey pixel came out
    black (134 levels from bicubic). Such pictures are mirrored out for the model and cropped back."""
    h, w = size
    image = np.full((h, w, 3), (128, 90, 200), np.uint8)
    image[:, : max(1, w // 2)] = (200, 60, 40)
    source = tmp_path / "small.png"
    cv2.imwrite(str(source), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    result = _upscale([str(source), "-o", str(tmp_path / "out"), "-b", "torch"])  # the bundled model
    assert result.exit_code == 0, result.stderr
    out = _read_rgba(tmp_path / "out" / "small.png").astype(np.float64)
    bicubic = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).astype(np.float64)
    assert out.shape == bicubic.shape
    assert np.abs(out - bicubic).mean() < 12, np.abs(out - bicubic).mean()
    assert np.abs(out.mean(axis=(0, 1)) - bicubic.mean(axis=(0, 1))).max() < 8


def test_a_video_a_few_pixels_high_comes_out_like_its_bicubic(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "tiny.mp4", width=4, height=2, frames=3, audio=False, pix_fmt="yuv444p")
    out = tmp_path / "tiny_x4.mp4"
    result = runner.invoke(app, ["video", "-b", "torch", str(source), str(out), "--pix-fmt", "yuv444p", "--crf", "0"])
    assert result.exit_code == 0, result.stderr
    with av.open(str(source)) as c:
        first = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    with av.open(str(out)) as c:
        got = next(iter(c.decode(video=0))).to_ndarray(format="rgb24").astype(np.float64)
    bicubic = cv2.resize(first, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).astype(np.float64)
    assert got.shape == bicubic.shape
    assert np.abs(got.mean(axis=(0, 1)) - bicubic.mean(axis=(0, 1))).max() < 12


def _quadrants(h: int = 24, w: int = 32) -> np.ndarray:
    """Four flat colours, one per quadrant, so where each lands says how the picture was turned."""
    image = np.zeros((h, w, 3), np.uint8)
    image[: h // 2, : w // 2] = (230, 30, 30)  # top left: red
    image[: h // 2, w // 2 :] = (30, 230, 30)  # top right: green
    image[h // 2 :, : w // 2] = (30, 30, 230)  # bottom left: blue
    image[h // 2 :, w // 2 :] = (230, 230, 30)  # bottom right: yellow
    return image


def _exif_tiff(orientation: int) -> bytes:
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HHHIHH", 1, 0x0112, 3, 1, orientation, 0) + bytes(4)


def _png_with_exif(image: np.ndarray, orientation: int) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    data = buf.tobytes()
    body = _exif_tiff(orientation)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    return data[:33] + chunk + data[33:]  # after the signature and IHDR


def _webp_with_exif(image: np.ndarray, orientation: int) -> bytes:
    """A lossless WebP in the extended layout (VP8X) with an EXIF chunk, as phones' converters write it."""
    ok, buf = cv2.imencode(".webp", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok
    data = buf.tobytes()
    bitstream = data[12:]  # the VP8L chunk
    h, w = image.shape[:2]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little")
    vp8x += (h - 1).to_bytes(3, "little")
    exif = _exif_tiff(orientation)
    chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + b"\x00" * (len(exif) & 1)
    body = b"WEBP" + vp8x + bitstream + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


# EXIF 2.3, Orientation: where the stored picture's first row and first column are for the viewer. Given as the
# corner each stored corner lands in (top left, top right), not as array operations, so the code is checked
# against the standard and not against itself.
CORNERS = {
    3: ("bottom right", "bottom left"),
    5: ("top left", "bottom left"),  # row 0 is the left edge, column 0 the top
    6: ("top right", "bottom right"),  # row 0 is the right edge, column 0 the top
    7: ("bottom right", "top right"),  # row 0 is the right edge, column 0 the bottom
    8: ("bottom left", "top left"),  # row 0 is the left edge, column 0 the bottom
}


@pytest.mark.parametrize(
    ("suffix", "orientation"),
    [(".jpg", 3), (".jpg", 5), (".jpg", 6), (".jpg", 7), (".jpg", 8), (".png", 6), (".png", 7), (".webp", 8)],
)
def test_exif_orientation_is_applied_as_the_standard_says(
    tmp_path: Path, tiny_weights: Path, suffix: str, orientation: int
) -> None:
    """Orientation 7 came out as 6 (mirrored), and a PNG (eXIf) or WebP (EXIF chunk) kept its tag unread: the
    upscaled picture lay on its side while every viewer showed the input upright."""
    stored = _quadrants()
    source = tmp_path / f"phone{suffix}"
    if suffix == ".jpg":
        source.write_bytes(jpeg_with_orientation(stored, orientation))
    elif suffix == ".png":
        source.write_bytes(_png_with_exif(stored, orientation))
    else:
        source.write_bytes(_webp_with_exif(stored, orientation))
    result = _upscale([str(source), "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "-b", "bicubic"])
    assert result.exit_code == 0, result.stderr
    out = _read_rgba(tmp_path / "out" / source.name)
    assert out.shape[:2] == ((128, 96) if orientation >= 5 else (96, 128))
    h, w = out.shape[:2]
    corner = {
        "top left": out[: h // 4, : w // 4],
        "top right": out[: h // 4, -w // 4 :],
        "bottom left": out[-h // 4 :, : w // 4],
        "bottom right": out[-h // 4 :, -w // 4 :],
    }
    first, second = CORNERS[orientation]
    assert np.abs(corner[first].reshape(-1, 3).mean(0) - (230, 30, 30)).max() < 20, first  # stored top left
    assert np.abs(corner[second].reshape(-1, 3).mean(0) - (30, 230, 30)).max() < 20, second  # stored top right


def _tiff_rgba(rgba: np.ndarray, extra_samples: int) -> bytes:
    """An uncompressed 8-bit RGBA TIFF whose ExtraSamples says what its alpha is (2: unassociated, straight
    colour: what GIMP, Photoshop and Pillow write)."""
    h, w = rgba.shape[:2]
    pixels = rgba.tobytes()
    entries = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 4, 0),  # BitsPerSample: 4 values, stored after the IFD
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 0),  # StripOffsets: after the bits
        (277, 3, 1, 4),
        (278, 3, 1, h),
        (279, 4, 1, len(pixels)),
        (338, 3, 1, extra_samples),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 8
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_at, 273: pixels_at}.get(tag, value)
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<4H", 8, 8, 8, 8) + pixels


def test_tiff_alpha_keeps_its_colours(tmp_path: Path, tiny_weights: Path) -> None:
    """OpenCV reads an 8-bit RGBA TIFF through libtiff's RGBA interface, which multiplies the colour by the
    alpha: a half-transparent orange came out half as bright (as if composited onto black)."""
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = (200, 120, 40)
    rgba[..., 3] = 128
    rgba[:, :4, 3] = 255
    source = tmp_path / "layer.tif"
    source.write_bytes(_tiff_rgba(rgba, extra_samples=2))
    result = _upscale([str(source), "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "-b", "bicubic"])
    assert result.exit_code == 0, result.stderr
    out = _read_rgba(tmp_path / "out" / "layer.tif")
    assert out.shape == (64, 64, 4)
    assert np.abs(out[8:56, 24:56].reshape(-1, 4).astype(int) - (200, 120, 40, 128)).max() <= 3
    assert np.abs(out[8:56, :8].reshape(-1, 4).astype(int) - (200, 120, 40, 255)).max() <= 3


def test_transparency_into_a_jpeg_is_flattened_onto_white_and_said(tmp_path: Path, tiny_weights: Path) -> None:
    """A .jpg cannot hold alpha: dropping it showed whatever colour the transparent pixels stored (here black
    under a fully transparent half) instead of the picture a viewer shows; now flattened onto white, with a line."""
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, 8:] = (30, 60, 200, 255)  # right half opaque blue, left half transparent (black stored under it)
    source = tmp_path / "logo.png"
    cv2.imwrite(str(source), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    opaque = tmp_path / "opaque.png"
    cv2.imwrite(str(opaque), cv2.cvtColor(rgba[:, 8:], cv2.COLOR_RGBA2BGRA))
    args = [str(source), str(opaque), "-o", str(tmp_path / "out"), "--format", "jpg"]
    result = _upscale([*args, "-w", str(tiny_weights), "-b", "bicubic"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "logo.png" in warnings[0] and "--format png" in warnings[0], result.stderr
    out = _read_rgba(tmp_path / "out" / "logo.jpg")
    assert out.shape == (64, 64, 3)
    assert out[:, :24].min() >= 245  # the transparent half is white, as a viewer on a page shows it
    assert np.abs(out[:, 40:].reshape(-1, 3).mean(0) - (30, 60, 200)).max() < 6


def test_an_animation_or_multi_page_file_says_only_the_first_picture_is_upscaled(
    tmp_path: Path, tiny_weights: Path
) -> None:
    """OpenCV decodes the first picture of an APNG, animated WebP/GIF or multi-page TIFF; the rest was dropped
    without a word."""
    pictures = [np.full((12, 16, 3), v, np.uint8) for v in (40, 120, 200)]
    ok, pages = cv2.imencodemulti(".tiff", pictures)
    assert ok
    (tmp_path / "scan.tif").write_bytes(pages.tobytes())
    animation = cv2.Animation()
    animation.frames, animation.durations = pictures, [100, 100, 100]
    ok, apng = cv2.imencodeanimation(".png", animation)
    assert ok
    (tmp_path / "spinner.png").write_bytes(apng.tobytes())
    cv2.imwrite(str(tmp_path / "still.png"), pictures[0])
    args = [str(tmp_path / n) for n in ("scan.tif", "spinner.png", "still.png")]
    result = _upscale([*args, "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "-b", "bicubic"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "scan.tif holds 3 pictures" in warnings[0] and "only the first" in warnings[0]
    assert "spinner.png holds 3 pictures" in warnings[1]
    assert _read_rgba(tmp_path / "out" / "spinner.png").mean() == pytest.approx(40, abs=1)


def test_non_square_pixels_stay_non_square(tmp_path: Path) -> None:
    """An anamorphic video (DVD, broadcast: 2:1 pixels here) lost its sample aspect ratio and played squashed."""
    from fractions import Fraction

    def wide_pixels(stream: av.VideoStream) -> None:
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)

    source = make_clip(tmp_path / "anamorphic.mp4", frames=3, audio=False, configure=wide_pixels)
    for suffix in (".mp4", ".mkv"):
        out = tmp_path / f"out{suffix}"
        result = runner.invoke(app, ["video", "-b", "bicubic", str(source), str(out), "--preset", "ultrafast"])
        assert result.exit_code == 0, result.stderr
        with av.open(str(out)) as c:
            stream = c.streams.video[0]
            assert (stream.width, stream.height) == (256, 192)
            assert stream.sample_aspect_ratio == Fraction(2, 1), suffix


def test_what_a_video_output_cannot_carry_is_said(tmp_path: Path) -> None:
    """Transparency (PNG-in-MOV RGBA here) and a second video stream were dropped without a word."""
    rgba = tmp_path / "overlay.mov"
    with av.open(str(rgba), "w") as out:
        stream = out.add_stream("png", rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "rgba"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((12, 16, 4), 60 * i, np.uint8), format="rgba")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    opaque = tmp_path / "opaque.mov"  # an alpha channel that is 255 everywhere loses nothing: no warning
    with av.open(str(opaque), "w") as out:
        stream = out.add_stream("png", rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "rgba"
        frame = av.VideoFrame.from_ndarray(np.full((12, 16, 4), 255, np.uint8), format="rgba")
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    two = tmp_path / "two.mkv"
    with av.open(str(two), "w") as out:
        streams = []
        for size in ((64, 48), (32, 24)):
            stream = out.add_stream("libx264", rate=10)
            assert isinstance(stream, av.VideoStream)
            stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
            streams.append(stream)
        for i in range(3):
            for stream in streams:
                frame = av.VideoFrame.from_ndarray(np.full((stream.height, stream.width, 3), 90, np.uint8), "rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
        for stream in streams:
            for packet in stream.encode(None):
                out.mux(packet)
    cases = ((rgba, "overlay.mov has transparency"), (two, "two.mkv has 2 video streams; only the first"), (opaque, ""))
    for source, said in cases:
        out = tmp_path / f"{source.stem}_x4.mkv"
        result = runner.invoke(app, ["video", "-b", "bicubic", str(source), str(out), "--preset", "ultrafast"])
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert (len(warnings) == 1 and said in warnings[0]) if said else not warnings, result.stderr
        assert out.exists()


def test_h264_headers_carry_the_frame_rate_not_the_time_base(tmp_path: Path) -> None:
    """x264 wrote the stream's time base (1/1000 here, 1/10240 or 1/90000 elsewhere) into the H.264 headers as
    the frame rate: the MKV said 1000 frames/s, and ffmpeg to a constant-rate format made 100 frames of 4."""
    source = make_clip(tmp_path / "ms.mp4", frames=4, fps=25, audio=False, pts=[40 * i for i in range(4)])
    out = tmp_path / "out.mkv"
    result = runner.invoke(app, ["video", "-b", "bicubic", str(source), str(out), "--preset", "ultrafast"])
    assert result.exit_code == 0, result.stderr
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == 25 and stream.codec_context.framerate == 25
        assert [f.pts for f in c.decode(stream)] == [0, 40, 80, 120]  # the timestamps themselves are kept
