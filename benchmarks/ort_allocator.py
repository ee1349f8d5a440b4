"""onnxruntime's CPU allocator with dynamic shapes: arena and memory patterns on/off, measured.

    python -m benchmarks.ort_allocator [--weights W]

A sequence of different frame sizes (what tiling and mixed inputs produce) runs through one session
per setting, each in a fresh process; reported: peak RSS, RSS after the sequence, and time. The
onnxruntime backend's settings follow from this (srgan_deploy/backends/ort.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from srgan_deploy.bench import machine_info

RESULTS = Path(__file__).parent / "results"
CHILD = r"""
import json, resource, sys, time
import numpy as np, onnxruntime as ort
path, arena, pattern = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
opts = ort.SessionOptions()
opts.enable_cpu_mem_arena = arena
opts.enable_mem_pattern = pattern
opts.intra_op_num_threads = 2
s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def current():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4
sizes = [(270, 480), (135, 240), (300, 300), (180, 320), (270, 480), (97, 131)]
t0 = time.perf_counter()
for h, w in sizes:
    s.run(None, {"input": np.zeros((1, h, w, 3), np.uint8)})
print(json.dumps({"peak_kb": rss(), "after_kb": current(), "seconds": time.perf_counter() - t0}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    from srgan_deploy.cache import cache_dir
    from srgan_deploy.export.onnx import cached_onnx

    onnx = cached_onnx(args.weights, cache_dir(), io="uint8")
    rows = []
    for arena in (1, 0):
        for pattern in (1, 0):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(onnx), str(arena), str(pattern)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"arena": bool(arena), "mem_pattern": bool(pattern), **result})
            print(
                f"arena={arena} mem_pattern={pattern}: peak {result['peak_kb'] / 1e6:.2f} GB, "
                f"after {result['after_kb'] / 1e6:.2f} GB, {result['seconds']:.1f} s",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-vm-ort-allocator.json"
    path.write_text(json.dumps({"machine": machine_info(), "onnx": onnx.name, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
