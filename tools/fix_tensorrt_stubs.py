"""Make the installed ``tensorrt-stubs`` usable by mypy.

tensorrt-stubs 10.13.0.35.1 ships ``tensorrt/`` without ``py.typed`` (so mypy
ignores it) and a ``tensorrt_bindings/tensorrt.pyi`` with two syntax errors:
parameters named ``in`` (a keyword) and ``add_scale_nd``'s ``channel_axis``
without a default after defaulted parameters. Idempotent; run after install.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    trt_dir = site / "tensorrt"
    bindings = site / "tensorrt_bindings" / "tensorrt.pyi"
    if not bindings.is_file():
        print(f"tensorrt-stubs not found under {site}; nothing to fix", file=sys.stderr)
        return 1
    if (trt_dir / "__init__.py").exists() or any(trt_dir.glob("*.so")):
        print("a real TensorRT is installed; leaving it alone")
        return 0
    for folder in (trt_dir, site / "tensorrt_bindings"):
        (folder / "py.typed").write_text("")
    text = bindings.read_text()
    fixed = re.sub(r"\bin: (list\[)", r"in_: \1", text)
    fixed = fixed.replace(
        "power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = ...)"
    )
    if fixed != text:
        bindings.write_text(fixed)
    print(f"patched tensorrt-stubs in {site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
