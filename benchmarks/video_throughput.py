"""End-to-end video throughput vs inference alone, same frames, same backend, same process.

    python -m benchmarks.video_throughput [--clip samples/bbb_2s_180p.mp4] [--backend auto] [--frames 48]

The pipeline overlaps decode and encode with inference; its frames/s divided by inference-only
frames/s says how much the video plumbing costs (target: >= 90 % on CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import machine_info
from srgan_deploy.pipeline import VideoJob, upscale_video
from srgan_deploy.video import EncodeOptions, Source

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clip", type=Path, default=Path("samples/bbb_2s_180p.mp4"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    source = Source(args.clip, max_frames=args.frames)
    frames = [f.rgb for f in source.frames(lambda p: None, print)]
    source.close()
    backend, choice = backend_for(args.backend, Request(), args.weights)
    with backend:
        device = backend.device_label
        backend.upscale(frames[0][None])  # warm-up (engine build / caches)
        t0 = time.perf_counter()
        for _ in backend.upscale_many(f[None] for f in frames):
            pass
        inference_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            job = VideoJob(args.clip, Path(tmp) / "out.mp4", EncodeOptions(preset=args.preset), max_frames=len(frames))
            result = upscale_video(job, backend)
    inference_fps = len(frames) / inference_s
    report = {
        "machine": machine_info(),
        "clip": str(args.clip),
        "frames": len(frames),
        "input": list(np.asarray(frames[0]).shape[:2]),
        "backend": choice.name,
        "device": device,
        "encoder": f"libx264 preset {args.preset} crf 18",
        "inference_fps": inference_fps,
        "pipeline_fps": result.fps,
        "pipeline_vs_inference": result.fps / inference_fps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y-%m-%d')}-{platform.node() or 'host'}-video.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
