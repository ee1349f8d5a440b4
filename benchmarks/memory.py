"""Memory per input pixel, per backend and model: the constants the memory budget plans with.

    python -m benchmarks.memory [--sizes 160x90,320x180]

Each measurement runs in a fresh process: open the backend, upscale one frame once (warm-up,
untiled), then read the peak RSS growth of a second call; with two sizes the slope is the cost of
one more input pixel, independent of the fixed cost (libraries, weights, compiled kernels).
Results: benchmarks/results/<date>-vm-memory.json; the planner's table is srgan_deploy/memory.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from srgan_deploy.bench import machine_info, parse_size

RESULTS = Path(__file__).parent / "results"

CHILD = r"""
import json, resource, sys
import numpy as np
from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
name, precision, weights, h, w = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
backend, _ = backend_for(name, Request(device="cpu", precision=precision, tile=100000), None if weights == "-" else weights)
frame = np.random.default_rng(0).integers(0, 255, (1, h, w, 3), dtype=np.uint8)
with backend:
    backend.upscale(frame[:, :16, :16])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    backend.upscale(frame)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak}))
"""


def measure(name: str, precision: str, weights: str, h: int, w: int) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, name, precision, weights, str(h), str(w)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="160x90,320x180")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    rows = []
    for weights, channels in (("srgan-x4-lite", 32), ("srgan-x4", 64)):
        for name, precision in (("openvino", "bf16"), ("openvino", "fp32"), ("onnxruntime", "fp32"), ("torch", "fp32")):
            points = []
            for h, w in sizes:
                r = measure(name, precision, weights, h, w)
                points.append((h * w, (r["peak_kb"] - r["base_kb"]) * 1024))
            (p0, m0), (p1, m1) = points[0], points[-1]
            slope = (m1 - m0) / (p1 - p0)
            rows.append(
                {
                    "model": weights,
                    "channels": channels,
                    "backend": name,
                    "precision": precision,
                    "bytes_per_input_pixel": round(slope),
                    "bytes_per_pixel_per_channel": round(slope / channels, 1),
                    "points": points,
                }
            )
            print(f"{weights:14s} {name:12s} {precision}: {slope / 1024:.1f} KB per input pixel", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y-%m-%d')}-vm-memory.json"
    path.write_text(json.dumps({"machine": machine_info(), "sizes": args.sizes, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
