"""vs-mlrt's OpenVINO plugin as a benchmark worker. Runs in a Python >= 3.12 venv with
``pip install vapoursynth vapoursynth-mlrt-ov numpy av`` (not in the project's venv).

It calls ``core.ov.Model`` directly with what vs-mlrt's ``Backend.OV_CPU()`` passes (vsmlrt.py
v3.23.2 does not load on VapourSynth R81): device CPU, one stream, no fp16, not builtin. bf16 is
OpenVINO's own default on CPUs that have it (what a vs-mlrt user gets); fp32 is asked for through
the config callback with INFERENCE_PRECISION_HINT.

Protocol (stdin/stdout, one JSON per line):
  {"cmd": "frames", "path": "frames.npy", "onnx": "model-float32.onnx", "precision": "bf16"}  -> {"ready": ...}
  {"cmd": "run", "start": 0, "count": 4}  -> {"seconds": ...}   (frames start..start+count, fresh each time)
  {"cmd": "video", ...}                   -> {"seconds": ..., "frames": ...}   (decode -> infer -> encode)
"""

from __future__ import annotations

import json
import sys
import time
from fractions import Fraction
from typing import Any

import numpy as np
import vapoursynth as vs

core = vs.core


def to_clip(frames: np.ndarray) -> vs.VideoNode:
    """Planar float RGB clip holding ``frames`` (N, H, W, 3 uint8), as a VapourSynth source would give."""
    n, h, w, _ = frames.shape
    blank = core.std.BlankClip(width=w, height=h, format=vs.RGB24, length=n)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for plane in range(3):
            np.copyto(np.asarray(out[plane]), frames[n, :, :, plane])
        return out

    rgb = core.std.ModifyFrame(blank, blank, fill)
    return core.resize.Point(rgb, format=vs.RGBS)


def model(clip: vs.VideoNode, onnx: str, precision: str) -> vs.VideoNode:
    # "default": exactly what Backend.OV_CPU() gives a user (OpenVINO picks bf16 on bf16 CPUs)
    config: dict[str, Any] = {
        "fp32": {"INFERENCE_PRECISION_HINT": "f32"},
        "bf16": {"INFERENCE_PRECISION_HINT": "bf16"},
    }.get(precision, {})
    out = core.ov.Model(
        [clip],
        network_path=onnx,
        device="CPU",
        num_streams=1,
        fp16=False,
        config=lambda: config,
    )
    return core.resize.Point(out, format=vs.RGB24, dither_type="none")


def main() -> None:
    state: dict[str, Any] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "frames":
            frames = np.load(msg["path"])
            state["clip"] = model(to_clip(frames), msg["onnx"], msg["precision"])
            core.num_threads = 1  # frames are requested one at a time; OpenVINO uses the cores itself
            state["clip"].get_frame(0)  # compile + warm up
            reply: dict[str, Any] = {"ready": True, "vapoursynth": core.version_number()}
        elif msg["cmd"] == "run":
            clip = state["clip"]
            core.clear_cache()
            t0 = time.perf_counter()
            for i in range(msg["start"], msg["start"] + msg["count"]):
                clip.get_frame(i % clip.num_frames)
            reply = {"seconds": time.perf_counter() - t0}
        elif msg["cmd"] == "video":
            reply = run_video(msg)
        else:
            reply = {"error": f"unknown command {msg['cmd']}"}
        print(json.dumps(reply), flush=True)


def run_video(msg: dict[str, Any]) -> dict[str, Any]:
    """decode (PyAV) -> vs-mlrt -> encode (PyAV libx264, same crf/preset as srgan-deploy's default)."""
    import av

    t0 = time.perf_counter()
    with av.open(msg["input"]) as src:
        stream = src.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in src.decode(stream)])
        rate = stream.average_rate or Fraction(24)
    clip = model(to_clip(frames), msg["onnx"], msg["precision"])
    core.num_threads = 2
    with av.open(msg["output"], "w") as dst:
        out = dst.add_stream("libx264", rate=rate)
        out.width, out.height = clip.width, clip.height
        out.pix_fmt = "yuv420p"
        out.options = {"crf": "18", "preset": "medium"}
        for n, frame in enumerate(clip.frames()):
            rgb = np.dstack([np.asarray(frame[p]) for p in range(3)])
            video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            video_frame.pts = n
            for packet in out.encode(video_frame):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
    return {"seconds": time.perf_counter() - t0, "frames": int(frames.shape[0])}


if __name__ == "__main__":
    main()
