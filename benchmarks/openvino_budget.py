"""What OpenVINO's bf16 does to the model: its output vs the torch fp32 reference, per image.

    python -m benchmarks.openvino_budget [--weights W]

Inputs: scikit-image photos (as LR inputs), frames of the sample clip, and saturated / high-contrast
stress patterns. Reports PSNR, the largest uint8 difference and the share of values within 1 level,
for OpenVINO bf16 and (as the control) fp32. The test budget (tests/test_runtime.py,
OPENVINO_BF16_BUDGET_DB) must stay below the worst bf16 figure measured here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.fp16_budget import natural_images
from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.bench import machine_info
from srgan_deploy.export.fp16 import stress_images
from srgan_deploy.metrics import psnr

RESULTS = Path(__file__).parent / "results"
CLIP = Path(__file__).resolve().parents[1] / "samples" / "bbb_2s_180p.mp4"


def clip_frames(count: int = 4) -> dict[str, np.ndarray]:
    from srgan_deploy.video import Decoder

    decoder = Decoder(CLIP, max_frames=48)
    frames = [f.rgb for f in decoder.frames(lambda p: None, print)]
    decoder.close()
    picks = np.linspace(0, len(frames) - 1, count).astype(int)
    return {f"bbb-frame-{i}": frames[i] for i in picks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    images = {**natural_images(), **clip_frames(), **stress_images(64)}
    ref_backend, _ = backend_for("torch", Request(device="cpu", precision="fp32"), args.weights)
    with ref_backend:
        reference = {k: ref_backend.upscale(v[None])[0] for k, v in images.items()}
    result: dict[str, object] = {"machine": machine_info(), "weights": args.weights or "default"}
    for precision in ("bf16", "fp32"):
        backend, _ = backend_for("openvino", Request(precision=precision), args.weights)
        rows = {}
        with backend:
            for name, image in images.items():
                out = backend.upscale(image[None])[0]
                diff = np.abs(out.astype(np.int16) - reference[name].astype(np.int16))
                rows[name] = {
                    "psnr": round(min(psnr(reference[name], out), 99.0), 2),
                    "max_abs": int(diff.max()),
                    "within_1": round(float(np.mean(diff <= 1)), 6),
                }
        result[precision] = {
            "images": rows,
            "min_psnr": min(r["psnr"] for r in rows.values()),
            "max_abs": max(r["max_abs"] for r in rows.values()),
            "min_within_1": min(r["within_1"] for r in rows.values()),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.weights or "default"
    path = args.out / f"{time.strftime('%Y-%m-%d')}-vm-openvino-budget-{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for precision in ("bf16", "fp32"):
        summary = result[precision]
        assert isinstance(summary, dict)
        print(
            f"{precision}: min PSNR {summary['min_psnr']} dB, max {summary['max_abs']} levels, "
            f">= {100 * summary['min_within_1']:.2f} % within 1 level"
        )


if __name__ == "__main__":
    main()
