"""Temporal stability on video: frame-to-frame flicker of each model against bicubic's, on one clip.

    python -m benchmarks.flicker [--clip ../shared/data/video/bbb_5s_180p.mp4] [-w srgan-x4-lite -w srgan-x4 ...]
        [--max-frames 40] [--backend openvino|torch|...] [--precision fp32] [--json out.json]

Every model (``-w``, repeatable: a bundled name or a weights file) and bicubic (``-b bicubic``, what
``--side-by-side`` shows) upscale the same decoded frames, in lock-step, so one pass of the clip serves
all of them. Per stream (``srgan_deploy.flicker``):

- ``flicker``: mean over consecutive frame pairs of mean |out_t - out_t-1| on Y, over bicubic's (1.0 =
  as stable as bicubic); ``flicker_vs_input``: the same over the LR input's own change;
- ``flicker_warped``: the same after moving frame t-1 onto frame t along the LR input's optical flow,
  so motion cancels and a sharper output is not counted as a less stable one.

The JSON also holds every frame pair's values. 40 frames at 180p take a minute or two per model on a
CPU; the default backend is openvino in fp32 where it is installed (the fastest CPU backend, at full
precision so the numbers match torch's), else torch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.options import Request
from srgan_deploy.backends.registry import availability, backend_for
from srgan_deploy.bench import machine_info
from srgan_deploy.errors import ConfigError, InputFileError, SrganDeployError
from srgan_deploy.flicker import FlickerMeter
from srgan_deploy.video import Decoder

RESULTS = Path(__file__).parent / "results"
CLIPS = (Path("../shared/data/video/bbb_5s_180p.mp4"), Path("samples/bbb_2s_180p.mp4"))
DEFAULT_WEIGHTS = ("srgan-x4-lite", "srgan-x4")


def default_clip() -> Path:
    """The 5 s clip from the shared data where it is checked out beside the repo, else the bundled sample."""
    return next((c for c in CLIPS if c.is_file()), CLIPS[-1])


def default_backend() -> str:
    return "openvino" if availability()["openvino"][0] else "torch"


def measure(
    clip: Path, weights: list[str], backend: str, precision: str, max_frames: int, threads: int | None
) -> dict[str, Any]:
    """Decode once, upscale each frame with bicubic and every model, feed the meter; the report as a dict."""
    if not clip.is_file():
        raise InputFileError(f"no clip at {clip}; pass --clip PATH to a video file")
    if max_frames < 2:
        raise ConfigError(f"--max-frames {max_frames}: flicker compares consecutive frames, so use at least 2")
    if len(set(weights)) != len(weights) or "bicubic" in weights:
        raise ConfigError("each -w must name a different model, and not 'bicubic' (it is always measured)")
    bicubic, _ = backend_for("bicubic", Request())
    streams: dict[str, Backend[Any]] = {"bicubic": bicubic.open()}
    choices: dict[str, str] = {}
    lr_size = [0, 0]
    try:
        for name in weights:
            engine, choice = backend_for(backend, Request(device="cpu", precision=precision, threads=threads), name)
            streams[name] = engine.open()
            choices[name] = f"{choice.name} ({choice.reason})"
        meter = FlickerMeter()
        seconds = dict.fromkeys(streams, 0.0)
        decoder = Decoder(clip, max_frames=max_frames)
        try:
            for index, frame in enumerate(decoder.frames(lambda packet: None, print)):
                upscaled = {}
                for name, engine in streams.items():
                    t0 = time.perf_counter()
                    upscaled[name] = engine.upscale(frame.rgb[None])[0]
                    if index > 0:  # the first frame pays for compilation
                        seconds[name] += time.perf_counter() - t0
                meter.add(frame.rgb, upscaled)
                lr_size = [frame.rgb.shape[1], frame.rgb.shape[0]]
        finally:
            decoder.close()
    finally:
        for engine in streams.values():
            engine.close()
    if meter.pairs == 0:
        raise InputFileError(f"{clip} gave fewer than two frames; flicker needs at least two")
    results = meter.results()
    frames = meter.pairs + 1
    return {
        "clip": str(clip),
        "frames": frames,
        "lr_size": lr_size,
        "backends": choices,
        "definition": {
            "flicker": "mean over frame pairs of mean |Y_t - Y_t-1| (BT.601), over bicubic's (OpenCV bicubic)",
            "flicker_vs_input": "the same over the LR input's mean |Y_t - Y_t-1|",
            "flicker_warped": "Y_t-1 first moved onto Y_t along Farneback flow of the LR input, over bicubic's",
        },
        "input_change": _num(sum(meter.input_change) / meter.pairs),
        "models": {
            name: {
                "flicker": _num(r.flicker),
                "flicker_vs_input": _num(r.flicker_vs_input),
                "flicker_warped": _num(r.flicker_warped),
                "mean_change": _num(sum(r.change) / len(r.change)),
                "mean_warped_change": _num(sum(r.warped_change) / len(r.warped_change)),
                "seconds_per_frame": _num(seconds[name] / meter.pairs, 3),
            }
            for name, r in results.items()
        },
        "pairs": {
            "input_change": [_num(v) for v in meter.input_change],
            **{
                name: {
                    "change": [_num(v) for v in r.change],
                    "warped_change": [_num(v) for v in r.warped_change],
                }
                for name, r in results.items()
            },
        },
        "machine": machine_info(),
    }


def _num(value: float, digits: int = 4) -> float | None:
    """Rounded for the report; a ratio with nothing to compare with (NaN) is written as null, strict JSON."""
    return round(value, digits) if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("-w", "--weights", action="append", help="model to measure (repeatable)")
    parser.add_argument("--max-frames", type=int, default=40)
    parser.add_argument("-b", "--backend", default=None, help="default: openvino if installed, else torch")
    parser.add_argument("-p", "--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args()
    try:
        report = measure(
            args.clip,
            args.weights or list(DEFAULT_WEIGHTS),
            args.backend or default_backend(),
            args.precision,
            args.max_frames,
            args.threads,
        )
    except SrganDeployError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{report['clip']}: {report['frames']} frames at {report['lr_size'][0]}x{report['lr_size'][1]}")
    print(f"{'stream':<40} {'flicker':>8} {'vs input':>9} {'warped':>8} {'s/frame':>8}")
    for name, m in report["models"].items():
        print(
            f"{name:<40} {_fmt(m['flicker']):>8} {_fmt(m['flicker_vs_input']):>9} "
            f"{_fmt(m['flicker_warped']):>8} {_fmt(m['seconds_per_frame']):>8}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
