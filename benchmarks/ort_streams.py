"""onnxruntime on the CPU: a stream of frames one at a time on all cores (before) vs several frames at once,
one per core, each on one intra-op thread (now), measured interleaved.

    python -m benchmarks.ort_streams [--pairs 6] [--frames 8]

Speed: per model, one process opens the backend the way ``video`` does and then alternates, ``--pairs``
times with the order swapped each pair, ``--frames`` frames through the path before streams
(``Backend.upscale_many``: one ``upscale`` call after another on the all-cores session, the code the
backend ran until now) and through the backend's own ``upscale_many`` (streams); then single-frame
``upscale`` calls (an image). On a shared machine other processes come and go, so every timing records
the cores they took meanwhile (/proc/stat, steal included); medians are reported over all pairs and over
the quiet ones (< 0.1 cores taken from us in both halves).

Memory: per model and mode a fresh process (its peak RSS its own): "before" has no stream session (as
the backend was), "now" is the default; peak RSS after a stream (what a video holds) and after images
too (a process doing both, as ``bench`` does: both sessions' arenas). Writes
benchmarks/results/<date>-vm-ort-streams.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from srgan_deploy.bench import machine_info

RESULTS = Path(__file__).parent / "results"
CASES = (("srgan-x4-lite", 180, 320), ("srgan-x4", 135, 240))
QUIET = 0.1  # cores other processes may take during a timing for it to count as quiet

COMMON = r"""
import json, os, sys, time
import numpy as np
import srgan_deploy.backends.ort as ort_backend
from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import peak_rss

model, h, w, frames, arg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
x = np.random.default_rng(0).integers(0, 256, (max(frames, 3), h, w, 3), dtype=np.uint8)
tick = os.sysconf("SC_CLK_TCK")

def busy():  # CPU seconds all processes spent (steal included: other VMs on the host)
    v = list(map(int, open("/proc/stat").readline().split()[1:9]))
    return (sum(v) - v[3] - v[4]) / tick

def timed(run, count):  # (ms per frame, cores that other processes took meanwhile)
    b0, c0, t0 = busy(), time.process_time(), time.perf_counter()
    run()
    dt = time.perf_counter() - t0
    return dt / count * 1e3, max(0.0, (busy() - b0 - (time.process_time() - c0)) / dt)

def stream(many):
    return lambda: sum(1 for _ in many(x[i : i + 1] for i in range(frames)))

def images():
    return [backend.upscale(x[i : i + 1]) for i in range(3)]
"""

SPEED = r"""
backend, _ = backend_for("onnxruntime", Request(device="cpu"), model)
paths = {"before": lambda batches: Backend.upscale_many(backend, batches), "now": backend.upscale_many}
pairs = []
with backend:
    label = backend.device_label
    for name in ("before", "now"):  # warm-up: both sessions' arenas
        stream(paths[name])()
    for p in range(int(arg)):
        pair = {}
        for name in (("before", "now") if p % 2 == 0 else ("now", "before")):
            pair[name], pair[f"others_{name}"] = timed(stream(paths[name]), frames)
        pair["image_ms"], pair["others_image"] = timed(images, 3)
        pairs.append(pair)
        print(json.dumps(pair), file=sys.stderr, flush=True)
print(json.dumps({"device": label, "pairs": pairs}))
"""

MEMORY = r"""
mib = lambda: (peak_rss() or 0) / 2**20
if arg == "before":  # no stream session: every frame on the all-cores session, one call at a time
    ort_backend.physical_core_count = lambda: 1
backend, _ = backend_for("onnxruntime", Request(device="cpu"), model)
with backend:
    label, opened = backend.device_label, mib()
    stream(backend.upscale_many)()
    streamed = mib()
    images()
    both = mib()
print(json.dumps({"device": label, "rss_open_mib": opened, "peak_rss_stream_mib": streamed, "peak_rss_both_mib": both}))
"""


def child(code: str, model: str, h: int, w: int, frames: int, arg: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; its last stdout line is the JSON answer, stderr its progress."""
    done = subprocess.run(
        [sys.executable, "-c", COMMON + code, model, str(h), str(w), str(frames), arg],
        stdout=subprocess.PIPE,
        stderr=None if code is SPEED else subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{model} {arg} failed:\n{(done.stderr or '')[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def summarise(model: str, h: int, w: int, speed: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    pairs = speed["pairs"]
    quiet = [p for p in pairs if p["others_before"] < QUIET and p["others_now"] < QUIET]
    row: dict[str, Any] = {"model": model, "input": [h, w], "device": speed["device"]}
    for label, chosen in (("all", pairs), ("quiet", quiet)):
        row[label] = {
            "pairs": len(chosen),
            "before_ms_per_frame": median([p["before"] for p in chosen]),
            "now_ms_per_frame": median([p["now"] for p in chosen]),
            "speedup": round(statistics.median(p["before"] / p["now"] for p in chosen), 3) if chosen else None,
            "image_ms": median([p["image_ms"] for p in chosen if p["others_image"] < QUIET or label == "all"]),
        }
    row["memory"] = memory
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--frames", type=int, default=8, help="frames per timed stream")
    args = parser.parse_args()
    import onnxruntime

    load_before = os.getloadavg()
    summary = []
    for model, h, w in CASES:
        print(f"{model} {w}x{h}: speed, {args.pairs} pairs of {args.frames} frames", flush=True)
        speed = child(SPEED, model, h, w, args.frames, str(args.pairs))
        memory = {mode: child(MEMORY, model, h, w, args.frames, mode) for mode in ("before", "now")}
        row = summarise(model, h, w, speed, memory)
        row["pairs"] = speed["pairs"]
        summary.append(row)
        for label in ("all", "quiet"):
            r = row[label]
            print(
                f"  {label:5} ({r['pairs']} pairs): {r['before_ms_per_frame']} -> {r['now_ms_per_frame']} ms/frame, "
                f"{r['speedup']}x; image {r['image_ms']} ms"
            )
        m = row["memory"]
        print(
            f"  peak RSS streaming {m['before']['peak_rss_stream_mib']:.0f} -> {m['now']['peak_rss_stream_mib']:.0f} "
            f"MiB, with images too {m['before']['peak_rss_both_mib']:.0f} -> {m['now']['peak_rss_both_mib']:.0f} MiB",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y-%m-%d')}-vm-ort-streams.json"
    report = {
        "machine": machine_info(),
        "onnxruntime": onnxruntime.__version__,
        "command": f"python -m benchmarks.ort_streams --pairs {args.pairs} --frames {args.frames}",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "quiet_means_others_took_under_cores": QUIET,
        "results": summary,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
