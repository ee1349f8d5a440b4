"""``make gpu-check`` on a machine without a GPU: one line that says it needs one, and exit code 2 (not 0:
a check that did not run must not look passed). GPUs are hidden from the subprocess, so this holds on any
machine, one with a GPU included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent),  # no nvidia-smi on it
        "CUDA_VISIBLE_DEVICES": "",  # and CUDA sees no device
    }
    report = tmp_path / "gpu-check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--json", str(report), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and "needs an NVIDIA GPU" in lines[0], lines
    assert not report.exists() and not (tmp_path / "w").exists()  # nothing that could pass for a result


def test_make_has_a_gpu_check_target_that_runs_the_tool() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^gpu-check:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None and "tools/gpu_check.py" in recipe.group(1)
    assert re.search(r"^\.PHONY:.*\bgpu-check\b", makefile, re.MULTILINE)
