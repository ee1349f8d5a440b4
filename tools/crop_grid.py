"""A labelled crop grid for the README: bicubic | model 1 | model 2 ... | HR, on Set14 images.

    python tools/crop_grid.py [--shared ../shared] [--out docs/crops-set14.png]
    python tools/crop_grid.py --models srgan-x4,training-state/srgan-x4-gan/generator.safetensors \
        --labels srgan-x4,srgan-x4-gan --texture --out docs/crops-gan.png

Each row is one image: the same HR crop, with the LR made by the paper's protocol (MATLAB bicubic
x1/4), upscaled by bicubic and by each model (torch backend, fp32; default: both bundled models),
labelled, nearest-neighbour enlarged so pixels can be judged. The dB figures are the whole image's
Y-PSNR (paper protocol). ``--texture`` adds each whole image's texture ratio (``srgan_deploy.texture``:
fine detail vs HR's, 1 = HR's) at the bottom of its cell, because PSNR alone ranks a GAN's texture
below a blur.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import backend_for
from srgan_deploy.errors import ConfigError, InputFileError, SrganDeployError
from srgan_deploy.images import read_image, to_rgb
from srgan_deploy.metrics import mod_crop, y_psnr_ssim
from srgan_deploy.resize import imresize
from srgan_deploy.texture import texture_ratio
from srgan_deploy.video_job import burn_label

CROPS = {  # image: (top, left) of a 96x96 HR crop with texture and edges
    "baboon": (40, 300),
    "comic": (120, 120),
    "zebra": (150, 250),
    "barbara": (300, 380),
}


DEFAULT_MODELS = "srgan-x4-lite,srgan-x4"
LABEL_STRIP = 28  # rows of the bottom label (burn_label's smallest text and its padding)


def column_label(model: str) -> str:
    """A bundled name as it is; a weights file by its name, or by its run folder's for a run's generator."""
    path = Path(model)
    if path.suffix != ".safetensors":
        return model
    return path.parent.name if path.stem == "generator" and path.parent.name else path.stem


def columns(models: str, labels: str | None) -> dict[str, str]:
    """label -> model, in the order given; labels must be as many as models and all different."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models needs at least one model, e.g. --models srgan-x4")
    titles = [t.strip() for t in labels.split(",")] if labels is not None else [column_label(n) for n in names]
    if len(titles) != len(names):
        raise ConfigError(f"--labels has {len(titles)} labels for {len(names)} models; give one per model")
    if len(set(titles)) != len(titles) or {"bicubic", "HR"} & set(titles):
        raise ConfigError("column labels must differ from each other and from bicubic and HR; set them with --labels")
    return dict(zip(titles, names, strict=True))


def burn_bottom_label(cell: np.ndarray, text: str) -> np.ndarray:
    out = cell.copy()
    out[-LABEL_STRIP:] = burn_label(out[-LABEL_STRIP:].copy(), text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("docs/crops-set14.png"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated bundled names or weights files")
    parser.add_argument("--labels", default=None, help="comma-separated column labels, one per model")
    parser.add_argument("--texture", action="store_true", help="add each image's texture ratio to its cells")
    args = parser.parse_args()
    try:
        run(args)
    except SrganDeployError as error:
        raise SystemExit(f"error: {error}") from None


def grid_row(
    folder: Path, image_name: str, top: int, left: int, models: dict[str, Backend[Any]], args: argparse.Namespace
) -> np.ndarray:
    """One image's cells: bicubic, each model, HR; labelled with whole-image PSNR (and texture)."""
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
        cell = burn_label(big, f"{image_name}: {text}" if label == "bicubic" else text)
        if args.texture and label != "HR":
            cell = burn_bottom_label(cell, f"texture {texture_ratio(hr, image, 4):.2f}")
        cells.append(cell)
    return np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1)


def run(args: argparse.Namespace) -> None:
    folder = args.shared / "data" / "eval" / "set14"
    if not folder.is_dir():
        raise InputFileError(f"no Set14 at {folder}; point --shared at the folder holding data/eval/set14")
    models: dict[str, Backend[Any]] = {}
    try:
        for label, name in columns(args.models, args.labels).items():
            backend, _ = backend_for("torch", Request(device="cpu"), name)
            models[label] = backend.open()
        rows = [grid_row(folder, image_name, top, left, models, args) for image_name, (top, left) in CROPS.items()]
    finally:
        for backend in models.values():
            backend.close()
    grid = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
