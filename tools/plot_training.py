"""Curves of a training run from its log.jsonl: losses, the discriminator's accuracy, validation PSNR.

    python tools/plot_training.py training-state/srgan-x4-gan/log.jsonl docs/gan-curves.png

Loss and accuracy lines are logged every few steps on one batch each, so they are noisy: each is drawn as a
running mean over ``--window`` log lines with the raw points faint behind it. Validation points are drawn as
logged (``psnr``: the EMA weights that get saved; ``psnr_raw``: the weights being trained).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def running_mean(values: list[float], window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--window", type=int, default=15)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "g" in r]
    val = [r["val"] for r in rows if "val" in r]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        (axes[0], [("content", "content (MSE, [-1,1] scale)")], "generator content loss"),
        (axes[1], [("adv", "G adversarial"), ("d", "D loss")], "adversarial losses"),
        (axes[2], [("d_real_acc", "D accuracy on HR"), ("d_fake_acc", "D accuracy on SR")], "discriminator"),
    ]
    for ax, keys, title in panels:
        for key, label in keys:
            values = [float(r[key]) for r in train if key in r]
            if not values:
                continue
            line = ax.plot(steps[: len(values)], running_mean(values, args.window), label=label)[0]
            ax.plot(steps[: len(values)], values, color=line.get_color(), alpha=0.15, linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    if val:
        twin = axes[0].twinx()
        twin.plot([v["step"] for v in val], [v["psnr"] for v in val], "k.-", label="val PSNR (EMA)")
        twin.plot([v["step"] for v in val], [v.get("psnr_raw", np.nan) for v in val], "k.:", label="val PSNR (raw)")
        twin.set_ylabel("validation PSNR, dB")
        twin.legend(loc="lower right", fontsize=8)
        axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{args.log.parent.name}: {len(train)} log lines, last step {steps[-1] if steps else 0}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
