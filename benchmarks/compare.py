"""The comparison a user cares about: PyTorch eager vs our backends vs OpenCV bicubic, at 3 input sizes.

    python -m benchmarks.compare [--sizes 160x90,320x180,480x270] [--iters 5] [--weights W]

Writes benchmarks/results/<date>-<host>-compare.json, a PNG plot beside it, and prints the Markdown
table the README's performance section is copied from. Everything in one process, one after another,
so the ratios compare like with like; the GEMM peak is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import availability, backend_for
from srgan_deploy.bench import gemm_peak_gflops, machine_info, model_gflops, parse_size
from srgan_deploy.weights import load_generator, read_info

RESULTS = Path(__file__).parent / "results"


def time_call(fn: Any, iters: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def torch_eager(weights: str | None) -> Any:
    """What a user gets from the PyTorch model as trained: BN not folded, float32 tensors in and out."""
    import torch

    generator, _ = load_generator(weights)
    generator.eval()

    def run(frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)
        with torch.no_grad():
            y = generator(x).clamp(0, 1).mul(255).round().byte()
        return y.permute(0, 2, 3, 1).numpy()

    return run


def measure_size(
    h: int, w: int, eager: Any, backends: list[str], weights: str | None, iters: int, gflop: float
) -> list[dict[str, Any]]:
    import cv2

    from srgan_deploy.images import make_input

    frames = make_input((1, h, w), seed=0)
    ref = eager(frames)
    rows: list[dict[str, Any]] = []

    def record(name: str, device: str, seconds: float, out: np.ndarray | None) -> None:
        diff = None if out is None else int(np.abs(out.astype(int) - ref.astype(int)).max())
        rows.append(
            {
                "method": name,
                "device": device,
                "input": [h, w],
                "ms": seconds * 1e3,
                "fps": 1 / seconds,
                "gflops": gflop / seconds if out is not None else 0.0,
                "max_abs_vs_eager": diff,
            }
        )

    record("torch-eager (unfolded)", "cpu", time_call(lambda: eager(frames), iters), ref)
    bicubic = time_call(lambda: cv2.resize(frames[0], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC), iters * 4)
    record("opencv-bicubic", "cpu", bicubic, None)
    for name in backends:
        backend, _ = backend_for(name, Request(), weights)
        with backend:
            out = backend.upscale(frames)
            record(name, backend.device_label, time_call(lambda b=backend: b.upscale(frames), iters), out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="160x90,320x180,480x270")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    info = read_info(args.weights)
    avail = availability()
    device_backends = [name for name in ("tensorrt", "onnxruntime", "torch") if avail[name][0]]
    peak_cpu = gemm_peak_gflops("cpu")
    eager = torch_eager(args.weights)
    rows: list[dict[str, Any]] = []
    for size in args.sizes.split(","):
        h, w = parse_size(size)
        rows += measure_size(h, w, eager, device_backends, args.weights, args.iters, model_gflops(info.config, h, w))
        print(f"{w}x{h}: done", flush=True)
    host = platform.node() or "host"
    stamp = time.strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine_info(),
        "model": info.name,
        "config": info.config.__dict__,
        "cpu_gemm_peak_gflops": peak_cpu,
        "rows": rows,
    }
    path = args.out / f"{stamp}-{host}-compare.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, path.with_suffix(".png"))
    print(markdown(report))
    print(f"wrote {path}")


def markdown(report: dict[str, Any]) -> str:
    peak = report["cpu_gemm_peak_gflops"]
    lines = [
        f"Model `{report['model']}` ({report['config']['channels']} ch × {report['config']['blocks']} blocks), "
        f"{report['machine']['cpu']} ({report['machine']['cores']} cores), {report['machine']['date']}; "
        f"same-run fp32 GEMM peak {peak:.0f} GFLOP/s.",
        "",
        "| input → output | method | device | ms/frame | frames/s | GFLOP/s | % of GEMM peak | vs torch eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_size: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in report["rows"]:
        by_size.setdefault(tuple(row["input"]), []).append(row)
    for (h, w), rows in by_size.items():
        eager = next(r for r in rows if r["method"].startswith("torch-eager"))
        for r in rows:
            pct = f"{100 * r['gflops'] / peak:.0f} %" if r["gflops"] and r["device"].startswith("cpu") else "–"
            lines.append(
                f"| {w}×{h} → {4 * w}×{4 * h} | {r['method']} | {r['device']} | {r['ms']:.1f} | {r['fps']:.2f} | "
                f"{r['gflops']:.0f} | {pct} | {eager['ms'] / r['ms']:.2f}× |"
            )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in report["rows"]})
    sizes = sorted({tuple(r["input"]) for r in report["rows"]}, key=lambda s: s[0] * s[1])
    fig, ax = plt.subplots(figsize=(7, 4))
    for method in methods:
        points = [
            (s[0] * s[1] / 1e3, r["fps"])
            for s in sizes
            for r in report["rows"]
            if r["method"] == method and tuple(r["input"]) == s
        ]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xlabel("input kilopixels")
    ax.set_ylabel("frames/s (log)")
    ax.set_yscale("log")
    ax.set_title(f"4x upscaling, {report['model']} — {report['machine']['cpu']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
