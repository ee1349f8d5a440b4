"""Install mypy stubs for TensorRT-RTX, generated from the real module, as a PEP 561 stub package.

The ``tensorrt_rtx_bindings`` wheel ships no type information. ``pybind11-stubgen`` writes stubs
from the compiled module itself, so they always match the installed version; they go to
``site-packages/tensorrt_rtx_bindings-stubs``, where mypy finds them without configuration.
Run by ``make install-dev`` after the wheels are installed (about 500 kB, so not committed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

MODULE = "tensorrt_rtx_bindings"


def fix_syntax(text: str) -> str:
    """The two things pybind11 signatures carry that are not Python: a parameter named ``in``, and
    ``add_scale_nd``'s required ``channel_axis`` after defaulted parameters (same as tensorrt-stubs)."""
    text = re.sub(r"([(,] ?)in: ", r"\1in_: ", text)
    return re.sub(r"(power: Weights = None, channel_axis: [\w.]+)\)", r"\1 = ...)", text)


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    target = site / f"{MODULE}-stubs"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pybind11_stubgen", MODULE, "-o", tmp, "--ignore-all-errors"],
            capture_output=True,
            text=True,
        )
        generated = Path(tmp) / MODULE
        if done.returncode != 0 or not generated.is_dir():
            print(f"pybind11-stubgen failed for {MODULE}:\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(generated, target)
    for stub in target.rglob("*.pyi"):
        stub.write_text(fix_syntax(stub.read_text()))
    (target / "py.typed").write_text("partial\n")
    print(f"wrote {MODULE} stubs to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
