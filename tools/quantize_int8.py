"""Make the int8 graph of a model: NNCF post-training quantization of its uint8-I/O ONNX, calibrated on LR crops.

    python tools/quantize_int8.py --weights srgan-x4 --calibration ../shared/data/train/bsd200 \
        ../shared/data/train/t91 --out srgan_deploy/weights/srgan-x4-int8.onnx

What ``--precision int8`` runs (``-b openvino``): for the bundled models the graphs this tool wrote, shipped in
``srgan_deploy/weights/`` (checked in CI to match the bundled weights' sha256); for your own weights, the file
it writes, given with ``-w``. Why a tool and not a runtime step: NNCF is a large dependency (scipy,
scikit-learn, pandas) the product does not need, and calibration needs natural images the package does not
carry. It runs where NNCF imports: ``pip install nncf`` into any venv beside the project's (or
``--nncf-path`` to its site-packages).

Calibration: ``--crops`` LR crops (``--crop`` px, centre of each image, images picked with a fixed seed) made
the way training and ``eval`` make LR (MATLAB bicubic /4), plus ``--synthetic`` crops of text, lines and flat
saturated colours drawn at HR and made LR the same way. Preset MIXED (symmetric int8 weights per channel,
asymmetric activations), NNCF's default activation ranges. What the alternatives cost (global min/max ranges,
fewer synthetic crops, layers kept in float) is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np


def calibration_crops(folders: list[Path], count: int, crop: int, scale: int) -> list[np.ndarray]:
    from srgan_deploy.images import list_images, read_image
    from srgan_deploy.resize import imresize

    files = [f for folder in folders for f in list_images(folder)]
    if not files:
        raise SystemExit(f"no images in {', '.join(map(str, folders))}")
    order = np.random.default_rng(0).permutation(len(files))[:count]
    crops = []
    for i in order:
        image = read_image(files[i])
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = np.ascontiguousarray(image[:, :, :3])
        lr = imresize(image, 1.0 / scale)
        h, w = lr.shape[:2]
        side = min(crop, h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crops.append(np.ascontiguousarray(lr[None, top : top + side, left : left + side]))
    return crops


def synthetic_crops(count: int, crop: int, scale: int = 4) -> list[np.ndarray]:
    """Content natural photos lack and users upscale anyway (screenshots, slides, cartoons): text and lines on
    white, black and saturated flat colours. Without them the activation ranges are calibrated too tight and
    large white areas come out grey (measured on Set14's slide ppt3: 27.9 dB and 63 levels off fp32)."""
    import cv2

    from srgan_deploy.resize import imresize

    rng = np.random.default_rng(1)
    crops = []
    lr_crop, crop = crop, crop * scale  # drawn at HR, then made LR the way eval and training make it
    backgrounds = [(255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for i in range(count):
        background = backgrounds[i % len(backgrounds)]
        image = np.empty((crop, crop, 3), np.uint8)
        image[:] = background
        for _ in range(int(rng.integers(2, 6))):
            colour = (
                tuple(int(v) for v in rng.choice([0, 255], 3))
                if rng.random() < 0.7
                else tuple(int(v) for v in rng.integers(0, 256, 3))
            )
            kind = rng.random()
            if kind < 0.5:
                org = (int(rng.integers(0, crop // 2)), int(rng.integers(crop // 4, crop)))
                size = float(rng.uniform(1.2, 3.2))
                cv2.putText(image, "Ag8", org, cv2.FONT_HERSHEY_SIMPLEX, size, colour, int(rng.integers(2, 8)))
            elif kind < 0.8:
                p1 = tuple(int(v) for v in rng.integers(0, crop, 2))
                p2 = tuple(int(v) for v in rng.integers(0, crop, 2))
                cv2.line(image, p1, p2, colour, int(rng.integers(2, 12)))
            else:
                p1 = tuple(int(v) for v in rng.integers(0, crop, 2))
                cv2.rectangle(image, p1, (p1[0] + crop // 4, p1[1] + crop // 4), colour, -1)
        crops.append(np.clip(imresize(image, 1.0 / scale), 0, 255).astype(np.uint8)[None, :lr_crop, :lr_crop])
    return crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a bundled model name or a .safetensors file")
    parser.add_argument("--calibration", nargs="+", type=Path, required=True, help="folders of HR images")
    parser.add_argument("--crops", type=int, default=128)
    parser.add_argument("--crop", type=int, default=64, help="LR crop edge in pixels")
    parser.add_argument("--synthetic", type=int, default=128, help="crops of text, lines and flat colours")
    parser.add_argument("--minmax", action="store_true", help="activation ranges from the global min/max")
    parser.add_argument("--keep-float", nargs="*", default=[], help="regex of node names left in float")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--nncf-path", help="site-packages of a venv that has nncf (appended to sys.path)")
    args = parser.parse_args()
    if args.nncf_path:
        sys.path.append(args.nncf_path)
    try:
        import nncf  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("nncf is not importable: pip install nncf into a venv and pass --nncf-path") from None
    import onnx

    from srgan_deploy.export.onnx import cached_onnx
    from srgan_deploy.files import atomic_write_bytes
    from srgan_deploy.weights import read_info

    info = read_info(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        source = cached_onnx(args.weights, Path(tmp), io="uint8")
        model = onnx.load(str(source))
    crops = calibration_crops(args.calibration, args.crops, args.crop, info.config.scale)
    photos = len(crops)
    crops += synthetic_crops(args.synthetic, args.crop, info.config.scale)
    advanced = None
    if args.minmax:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters  # type: ignore[import-not-found]
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet  # type: ignore[import-not-found]

        advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(
        model,
        nncf.Dataset([{"input": c} for c in crops]),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(crops),
        advanced_parameters=advanced,
        ignored_scope=nncf.IgnoredScope(patterns=args.keep_float, validate=False) if args.keep_float else None,
    )
    listing = "\n".join(sorted(str(f) for f in args.calibration)).encode()
    described = {
        "srgan_deploy.precision": "int8",
        "srgan_deploy.int8": (
            f"NNCF {nncf.__version__} post-training, preset MIXED{', min/max ranges' if args.minmax else ''}, "
            f"{photos} LR crops of {args.crop} px from {', '.join(f.name for f in args.calibration)} (sha256 of "
            f"the folder list {hashlib.sha256(listing).hexdigest()[:12]}) and {args.synthetic} synthetic"
            + (f"; kept in float: {', '.join(args.keep_float)}" if args.keep_float else "")
        ),
    }
    kept = {p.key: p.value for p in quantized.metadata_props}
    if kept.get("srgan_deploy.weights_sha256") != info.sha256:
        raise SystemExit("the quantized graph lost the weights' sha256 metadata (a bug)")
    for key, value in described.items():
        prop = quantized.metadata_props.add()
        prop.key, prop.value = key, value
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, quantized.SerializeToString())
    print(f"{args.out}: {info.name} int8, {args.out.stat().st_size / 1e6:.1f} MB; {described['srgan_deploy.int8']}")


if __name__ == "__main__":
    main()
