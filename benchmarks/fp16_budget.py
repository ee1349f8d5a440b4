"""What FP16 does to the model, measured without a GPU: PSNR of float16 vs float32 output.

    python -m benchmarks.fp16_budget [--weights W]

Runs the generator in torch float16 (CPU or GPU) and float32 on scikit-image's bundled photos (as LR
inputs) and on saturated / high-contrast stress patterns, and reports PSNR(fp32, fp16), the worst
uint8 error and the activation headroom below float16's 65504. The TensorRT parity check uses
export.fp16.FP16_BUDGET_DB, which must stay below the worst figure measured here.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from srgan_deploy.bench import machine_info
from srgan_deploy.export.fp16 import FP16_BUDGET_DB, measure_fp16, stress_images
from srgan_deploy.resize import imresize

RESULTS = Path(__file__).parent / "results"


def natural_images(edge: int = 96) -> dict[str, np.ndarray]:
    from skimage import data

    images = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        image = getattr(data, name)()
        h, w = image.shape[:2]
        crop = image[(h - 4 * edge) // 2 : (h + 4 * edge) // 2, (w - 4 * edge) // 2 : (w + 4 * edge) // 2]
        images[name] = imresize(np.ascontiguousarray(crop), 0.25)  # an LR input, as the model sees in use
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = measure_fp16(args.weights, {**natural_images(), **stress_images(64)})
    result = {
        "machine": machine_info(),
        "psnr_fp16_vs_fp32": report.psnr,
        "max_abs_uint8": report.max_abs,
        "min_psnr": report.min_psnr,
        "peak_activation_fp32": report.peak_activation,
        "headroom_below_fp16_max": report.headroom,
        "budget_db": FP16_BUDGET_DB,
        "budget_holds": report.min_psnr >= FP16_BUDGET_DB,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y-%m-%d')}-{platform.node() or 'host'}-fp16.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
