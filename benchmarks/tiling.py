"""Tiling's cost on one large frame: whole frame vs fixed tiles vs the memory planner's choice.

    python -m benchmarks.tiling [--weights W] [--size 1920x1080] [--backend openvino]

Interleaved rounds in one process (the VM's timings move +-20 % between runs); the planner's
tiling should be within 10 % of the fastest option. Results: benchmarks/results/<date>-vm-tiling-*.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import machine_info, parse_size
from srgan_deploy.images import make_input

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    height, width = parse_size(args.size)
    frame = make_input((1, height, width), seed=0)
    options = {
        "whole frame": Request(memory_budget=64 * 2**30),
        "tile 256": Request(tile=256, memory_budget=64 * 2**30),
        "tile 512": Request(tile=512, memory_budget=64 * 2**30),
        "planner (default budget)": Request(),
    }
    backends = {k: backend_for(args.backend, v, args.weights)[0] for k, v in options.items()}
    times: dict[str, list[float]] = {k: [] for k in backends}
    plans: dict[str, str] = {}
    for name, backend in backends.items():
        backend.open()
        plans[name] = str(backend.memory_plan(height, width))
        backend.upscale(frame)  # warm-up at the real size: shape-specific compilation is not timed
    for _ in range(args.rounds):
        for name, backend in backends.items():
            t0 = time.perf_counter()
            backend.upscale(frame)
            times[name].append(time.perf_counter() - t0)
    for backend in backends.values():
        backend.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    fastest = min(med.values())
    report = {
        "machine": machine_info(),
        "backend": args.backend,
        "weights": args.weights or "default",
        "input": [height, width],
        "seconds_median": med,
        "seconds_rounds": times,
        "plans": plans,
        "planner_vs_fastest": med["planner (default budget)"] / fastest,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-vm-tiling-{report['weights']}-{width}x{height}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for k, v in med.items():
        print(f"{k:26s} {v:6.2f} s  {plans[k]}")
    print(f"planner / fastest = {report['planner_vs_fastest']:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
