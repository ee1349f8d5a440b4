"""Copy a training run's generator into the package as a bundled model (fp16 storage, provenance kept).

usage: python tools/ship_weights.py RUN/generator.safetensors NAME [eval-json ...] [key=value ...]
Eval JSON files (from `srgan-deploy eval --json`) are recorded in the provenance, and so is every
key=value (e.g. how a model was initialised).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from srgan_deploy.weights import bundled_weights_dir, load_generator, save_generator


def main(src: str, name: str, *evals: str) -> None:
    generator, info = load_generator(src)
    provenance = dict(info.provenance)
    provenance["name"] = name
    provenance["placeholder"] = False
    provenance["storage"] = "float16"
    for extra in [e for e in evals if "=" in e]:
        key, value = extra.split("=", 1)
        provenance[key] = value
    reports = []
    for path in [e for e in evals if "=" not in e]:
        data = json.loads(Path(path).read_text())
        reports.extend(data.get("sets", [data]))  # `eval A B --json` holds several sets
    for report in reports:
        entry = {
            "protocol": report["protocol"],
            "bicubic": report["mean"]["bicubic"],
            "model": report["mean"]["model"],
        }
        if "texture" in report:  # reports from before the texture measure have none
            entry["texture"] = {**report["texture"], "protocol": report["texture_protocol"]}
        provenance.setdefault("eval", {})[report["dataset"]] = entry
    target = bundled_weights_dir() / f"{name}.safetensors"
    save_generator(generator, target, provenance, half=True)
    print(f"wrote {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
