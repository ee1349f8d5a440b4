"""A labelled crop grid for the README: bicubic | srgan-x4-lite | srgan-x4 | HR, on Set14 images.

    python tools/crop_grid.py [--shared ../shared] [--out docs/crops-set14.png]

Each row is one image: the same HR crop, with the LR made by the paper's protocol (MATLAB bicubic
x1/4), upscaled by bicubic and by both bundled models (torch backend, fp32), labelled, nearest-neighbour
enlarged so pixels can be judged. The dB figures are the whole image's Y-PSNR (paper protocol).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.images import read_image, to_rgb
from srgan_deploy.metrics import mod_crop, y_psnr_ssim
from srgan_deploy.pipeline import burn_label
from srgan_deploy.resize import imresize

CROPS = {  # image: (top, left) of a 96x96 HR crop with texture and edges
    "baboon": (40, 300),
    "comic": (120, 120),
    "zebra": (150, 250),
    "barbara": (300, 380),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("docs/crops-set14.png"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--zoom", type=int, default=2)
    args = parser.parse_args()
    folder = args.shared / "data" / "eval" / "set14"
    models = {}
    for name in ("srgan-x4-lite", "srgan-x4"):
        backend, _ = backend_for("torch", Request(device="cpu"), name)
        models[name] = backend.open()
    rows = []
    for image_name, (top, left) in CROPS.items():
        hr = mod_crop(to_rgb(read_image(folder / f"{image_name}.png")), 4)
        lr = imresize(hr, 0.25)
        outputs = {"bicubic": imresize(lr, 4.0)}
        for name, backend in models.items():
            outputs[name] = backend.upscale(lr[None])[0]
        outputs["HR"] = hr
        s = args.size
        cells = []
        for label, image in outputs.items():
            crop = image[top : top + s, left : left + s]
            big = cv2.resize(crop, None, fx=args.zoom, fy=args.zoom, interpolation=cv2.INTER_NEAREST)
            text = label if label == "HR" else f"{label} {y_psnr_ssim(hr, image, 4)[0]:.2f} dB"
            cells.append(burn_label(big, f"{image_name}: {text}" if label == "bicubic" else text))
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1))
    for backend in models.values():
        backend.close()
    grid = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
