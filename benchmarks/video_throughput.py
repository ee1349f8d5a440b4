"""End-to-end video throughput vs inference alone, same frames, same backend, same process.

    python -m benchmarks.video_throughput [--clip samples/bbb_2s_180p.mp4] [--backend auto] [--frames 48]

The pipeline overlaps decode and encode with inference; its frames/s divided by inference-only
frames/s says how much the video plumbing costs (target: >= 90 % on CPU). On a CPU the stages share the
cores, so overlap cannot hide work: the report gives each stage's CPU seconds per frame (decode alone,
inference alone, encode alone), and the pipeline's ceiling when every core is busy is
inference CPU / (decode + inference + encode CPU). Rounds alternate inference-only and pipeline runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import machine_info
from srgan_deploy.video import Decoder, EncodeOptions, with_auto_preset
from srgan_deploy.video_job import VideoJob, upscale_video

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip", type=Path, default=Path("samples/bbb_2s_180p.mp4"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--preset", default="auto", help="x264 preset; auto as the video command resolves it")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cpu0 = time.process_time()
    decoder = Decoder(args.clip, max_frames=args.frames)
    frames = [f.rgb for f in decoder.frames(lambda p: None, print)]
    decoder.close()
    decode_cpu = time.process_time() - cpu0
    backend, choice = backend_for(args.backend, Request(precision=args.precision), args.weights)
    options = EncodeOptions(preset=args.preset)
    runs: dict[str, list[float]] = {"inference_s": [], "inference_cpu_s": [], "pipeline_s": [], "pipeline_cpu_s": []}
    with backend:
        device = backend.device_label
        options = with_auto_preset(options, model_on_cpu=device.startswith("cpu"))
        backend.upscale(frames[0][None])  # warm-up (engine build / caches)
        for _ in range(args.rounds):
            cpu0, t0 = time.process_time(), time.perf_counter()
            outputs = list(backend.upscale_many(f[None] for f in frames))
            runs["inference_s"].append(time.perf_counter() - t0)
            runs["inference_cpu_s"].append(time.process_time() - cpu0)
            with tempfile.TemporaryDirectory() as tmp:
                job = VideoJob(args.clip, Path(tmp) / "out.mp4", options, max_frames=len(frames))
                cpu0, t0 = time.process_time(), time.perf_counter()
                result = upscale_video(job, backend)
                runs["pipeline_s"].append(time.perf_counter() - t0)
                runs["pipeline_cpu_s"].append(time.process_time() - cpu0)
    encode_cpu = encode_cpu_seconds([o[0] for o in outputs], options)
    med = {k: statistics.median(v) for k, v in runs.items()}
    n = len(frames)
    per_frame = {
        "decode": decode_cpu / n,
        "inference": med["inference_cpu_s"] / n,
        "encode": encode_cpu / n,
        "pipeline": med["pipeline_cpu_s"] / n,
    }
    inference_fps = n / med["inference_s"]
    pipeline_fps = n / med["pipeline_s"]
    report = {
        "machine": machine_info(),
        "clip": str(args.clip),
        "frames": n,
        "input": list(np.asarray(frames[0]).shape[:2]),
        "backend": choice.name,
        "device": device,
        "encoder": f"libx264 preset {options.preset} crf 18",
        "inference_fps": inference_fps,
        "pipeline_fps": pipeline_fps,
        "pipeline_vs_inference": pipeline_fps / inference_fps,
        "cpu_seconds_per_frame": per_frame,
        "ceiling_when_cores_are_shared": per_frame["inference"]
        / (per_frame["decode"] + per_frame["inference"] + per_frame["encode"]),
        "rounds": runs,
        "frames_written": result.frames,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y-%m-%d')}-{platform.node() or 'host'}-video.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")


def encode_cpu_seconds(frames: list[np.ndarray], options: EncodeOptions) -> float:
    """CPU seconds the encoder alone spends on these frames, with the settings the video command uses."""
    import av

    from srgan_deploy.video import encoder_settings

    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = time.process_time()
        with av.open(str(Path(tmp) / "enc.mp4"), "w") as out:
            stream = out.add_stream(options.codec, rate=24)
            assert isinstance(stream, av.VideoStream)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = options.pix_fmt
            stream.options = dict(encoder_settings(options.codec, options).items())
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return time.process_time() - cpu0


if __name__ == "__main__":
    main()
