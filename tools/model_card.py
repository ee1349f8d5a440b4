"""Measure a bundled model the paper's way and make its comparison image.

    python tools/model_card.py [--weights srgan-x4-lite] [--shared ../shared]

Writes benchmarks/results/<date>-eval-<model>-{set5,set14}.json, docs/comparison-<model>.png
(bicubic | model | HR crops) and prints the Markdown table for the README's model card.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.evaluate import evaluate
from srgan_deploy.images import read_image, to_rgb
from srgan_deploy.metrics import mod_crop
from srgan_deploy.resize import imresize
from srgan_deploy.weights import read_info

PAPER = {
    "set5": {"SRResNet": (32.05, 0.9019), "SRGAN": (29.40, 0.8472), "bicubic": (28.43, 0.8211)},
    "set14": {"SRResNet": (28.49, 0.8184), "SRGAN": (26.02, 0.7397), "bicubic": (25.99, 0.7486)},
}
CROPS = (("set5", "butterfly", (60, 60, 120)), ("set14", "comic", (40, 100, 120)), ("set14", "zebra", (120, 200, 120)))


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def zoom(image: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    return np.asarray(
        cv2.resize(image[y : y + size, x : x + size], (2 * size, 2 * size), interpolation=cv2.INTER_NEAREST)
    )


def comparison(backend: object, shared: Path, name: str, out: Path) -> None:
    rows = []
    for dataset, image, (y, x, size) in CROPS:
        hr = mod_crop(to_rgb(read_image(shared / "data" / "eval" / dataset / f"{image}.png")), 4)
        lr = imresize(hr, 0.25)
        sr = backend.upscale(lr[None])[0]  # type: ignore[attr-defined]
        bic = imresize(lr, 4.0)
        rows.append(
            np.concatenate(
                [
                    label(zoom(bic, y, x, size), f"bicubic ({image})"),
                    label(zoom(sr, y, x, size), name),
                    label(zoom(hr, y, x, size), "HR"),
                ],
                axis=1,
            )
        )
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default="srgan-x4-lite")
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    info = read_info(args.weights)
    results = Path("benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    backend, _ = backend_for("torch", Request(device="cpu"), args.weights)
    table = ["| method | Set5 PSNR / SSIM | Set14 PSNR / SSIM |", "|---|---|---|"]
    measured = {}
    with backend:
        for dataset in ("set5", "set14"):
            report = evaluate(args.shared / "data" / "eval" / dataset, lambda img: backend.upscale(img[None])[0], 4)
            report.extra["model"] = info.name
            report.write_json(results / f"{time.strftime('%Y-%m-%d')}-eval-{info.name}-{dataset}.json")
            measured[dataset] = report
        comparison(backend, args.shared, info.name, Path("docs") / f"comparison-{info.name}.png")
    for who in ("bicubic", "model"):
        cells = [f"{measured[d].mean(who).psnr:.2f} / {measured[d].mean(who).ssim:.4f}" for d in ("set5", "set14")]
        table.append(
            f"| {'bicubic (measured)' if who == 'bicubic' else f'**{info.name}** (measured)'} | {cells[0]} | {cells[1]} |"
        )
    for method in ("SRResNet", "SRGAN", "bicubic"):
        cells = [f"{PAPER[d][method][0]:.2f} / {PAPER[d][method][1]:.4f}" for d in ("set5", "set14")]
        table.append(f"| {method} (paper, Table 2) | {cells[0]} | {cells[1]} |")
    print("\n".join(table))
    print(
        json.dumps(
            {d: {"gain_db": measured[d].mean("model").psnr - measured[d].mean("bicubic").psnr} for d in measured}
        )
    )


if __name__ == "__main__":
    main()
